//! `chat-bench`: the chat-hosting shape. Many small rooms whose members sit on different nodes,
//! every member publishing into its room, optionally one big room; the same load for Nimbus
//! (Atmosphere over WebSocket) and for socket.io (`../shared/peers/sioxide`), so one run can
//! alternate the two.
//!
//! Member `k` of room `r` connects to node `(r + k) % nodes`, so a room's members are spread
//! over the nodes and every message crosses the cluster. Each member publishes one message per
//! `--interval-ms` (the first at a random phase within it); every member of the room, the sender
//! included, should receive it. Server CPU is split into the nodes' and Redis's, each read from
//! `/proc/<pid>/stat` at the start and end of the measured window.
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use nimbus_bench::measure::{clock_ticks, cpu_ticks, own_cpu_us, status_kib, unframe};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum)]
    server: Server,
    /// The nodes (repeat the flag); a room's members are spread over them.
    #[arg(long = "addr", required = true)]
    addrs: Vec<SocketAddr>,
    /// The node processes, for their CPU and RSS (repeat the flag).
    #[arg(long = "node-pid", required = true)]
    node_pids: Vec<u32>,
    /// The Redis process, for its CPU.
    #[arg(long)]
    redis_pid: u32,
    #[arg(long, default_value_t = 1000)]
    rooms: usize,
    #[arg(long, default_value_t = 5)]
    members: usize,
    /// Milliseconds between two messages of one member of a small room.
    #[arg(long, default_value_t = 2000)]
    interval_ms: u64,
    /// Members of one extra big room (0: none).
    #[arg(long, default_value_t = 0)]
    big_room: usize,
    /// Messages per second into the big room, from its members in turn.
    #[arg(long, default_value_t = 2.0)]
    big_room_rate: f64,
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Bytes per message on the wire (the sender, sequence and timestamp included).
    #[arg(long, default_value_t = 90)]
    message_bytes: usize,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long)]
    label: Option<String>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Server {
    /// Nimbus: Atmosphere over WebSocket, one topic per room.
    Nimbus,
    /// socket.io v4 over WebSocket (the sioxide peer's events).
    Socketio,
}

/// One member: where it connects, its room, and when it publishes.
#[derive(Clone)]
struct Member {
    server: Server,
    addr: SocketAddr,
    room: String,
    room_size: u64,
    id: u32,
    /// First message after the start, then one per `every`.
    phase: Duration,
    every: Duration,
}

/// Where the run stands, as every member sees it.
#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Connecting,
    /// Publish from this instant on.
    Publishing(Instant),
    /// Stop publishing, keep reading.
    Draining,
    /// Hand over the figures and leave.
    Done,
}

/// What every member adds to (read live for the drain, merged at the end).
#[derive(Default)]
struct Totals {
    published: AtomicU64,
    /// Deliveries owed: each published message times its room's size.
    expected: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    /// Connections the server closed while the run was on.
    closed: AtomicU64,
    /// Members that stopped publishing (what they published is counted in `expected`).
    stopped: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn main() {
    if std::env::args().any(|a| a == "--header") {
        println!("{HEADER}");
        println!(
            "{}",
            HEADER
                .replace(|c| c != '|', "")
                .replace('|', "|---")
                .trim_end_matches("---")
        );
        return;
    }
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args));
}

fn members(args: &Args) -> Vec<Member> {
    let nodes = args.addrs.len();
    let mut out = Vec::new();
    let every = Duration::from_millis(args.interval_ms);
    // A cheap spread of phases (no dependency on a random crate): a multiplicative hash.
    let phase = |id: u32, every: Duration| {
        let fraction = (id.wrapping_mul(2_654_435_761) >> 8) as f64 / (1u32 << 24) as f64;
        every.mul_f64(fraction)
    };
    for room in 0..args.rooms {
        for k in 0..args.members {
            let id = out.len() as u32;
            out.push(Member {
                server: args.server,
                addr: args.addrs[(room + k) % nodes],
                room: format!("room-{room}"),
                room_size: args.members as u64,
                id,
                phase: phase(id, every),
                every,
            });
        }
    }
    if args.big_room > 0 {
        // Its members take turns: member k first at k / rate seconds, then once per size / rate.
        let every = Duration::from_secs_f64(args.big_room as f64 / args.big_room_rate);
        for k in 0..args.big_room {
            let id = out.len() as u32;
            out.push(Member {
                server: args.server,
                addr: args.addrs[k % nodes],
                room: "room-big".to_string(),
                room_size: args.big_room as u64,
                id,
                phase: Duration::from_secs_f64(k as f64 / args.big_room_rate),
                every,
            });
        }
    }
    out
}

async fn run(args: Args) {
    let members = members(&args);
    let totals = Arc::new(Totals::default());
    let rss_before: u64 = args
        .node_pids
        .iter()
        .map(|&p| status_kib(p, "VmRSS:"))
        .sum();
    let (stage_tx, stage_rx) = watch::channel(Stage::Connecting);
    let pad = args.message_bytes;
    let mut tasks = tokio::task::JoinSet::new();
    // Connect in waves, each member's handshake awaited.
    for wave in members.chunks(200) {
        let mut ready = Vec::new();
        for member in wave {
            let (tx, rx) = tokio::sync::oneshot::channel();
            ready.push(rx);
            tasks.spawn(run_member(
                member.clone(),
                pad,
                totals.clone(),
                tx,
                stage_rx.clone(),
            ));
        }
        for rx in ready {
            tokio::time::timeout(Duration::from_secs(30), rx)
                .await
                .expect("member handshake in time")
                .expect("member connected");
        }
    }
    // Let joins settle on every node (socket.io acknowledges a connect before its handler runs).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after: u64 = args
        .node_pids
        .iter()
        .map(|&p| status_kib(p, "VmRSS:"))
        .sum();

    let node_start: u64 = args.node_pids.iter().map(|&p| cpu_ticks(p)).sum();
    let redis_start = cpu_ticks(args.redis_pid);
    let own_start = own_cpu_us();
    let start = Instant::now();
    let _ = stage_tx.send(Stage::Publishing(start));
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    let _ = stage_tx.send(Stage::Draining);
    // Every member's last message counted before the drain compares.
    let deadline = Instant::now() + Duration::from_secs(5);
    while totals.stopped.load(Ordering::Relaxed) < members.len() as u64 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Drain: until every owed delivery arrived, or 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while totals.received.load(Ordering::Relaxed) < totals.expected.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = start.elapsed().as_secs_f64();
    let ticks = clock_ticks() as f64;
    let node_us = (args.node_pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>() - node_start) as f64
        * 1e6
        / ticks;
    let redis_us = (cpu_ticks(args.redis_pid) - redis_start) as f64 * 1e6 / ticks;
    let own_us = (own_cpu_us() - own_start) as f64;
    let peak_mb = args
        .node_pids
        .iter()
        .map(|&p| status_kib(p, "VmHWM:"))
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    let _ = stage_tx.send(Stage::Done);
    let mut finished = Vec::new();
    while let Some(done) = tasks.join_next().await {
        finished.extend(done.ok());
    }
    if std::env::var_os("CHAT_BENCH_MISSING").is_some() {
        print_missing(&finished);
    }

    let published = totals.published.load(Ordering::Relaxed);
    let expected = totals.expected.load(Ordering::Relaxed);
    let received = totals.received.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *totals.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let quantile = |p: f64| {
        let at = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(at).map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    let delivered = received.max(1) as f64;
    let label = args.label.clone().unwrap_or_else(|| {
        match args.server {
            Server::Nimbus => "nimbus",
            Server::Socketio => "socketioxide",
        }
        .to_string()
    });
    let big = if args.big_room > 0 {
        format!(" + {}", args.big_room)
    } else {
        String::new()
    };
    println!(
        "| {label} | {} x {}{big} | {:.0} | {:.0} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0}% |",
        args.rooms,
        args.members,
        published as f64 / args.duration_secs as f64,
        received as f64 / window,
        expected.saturating_sub(received),
        totals.duplicates.load(Ordering::Relaxed),
        totals.closed.load(Ordering::Relaxed),
        quantile(0.50),
        quantile(0.99),
        node_us / delivered,
        redis_us / delivered,
        (node_us + redis_us) / delivered,
        rss_after.saturating_sub(rss_before) as f64 * 1.024 / members.len() as f64,
        peak_mb,
        own_us / window / 1e4,
    );
}

/// The header of the rows `run` prints (`chat-bench --header`).
const HEADER: &str = "| server | rooms x members | msg/s in | deliveries/s | lost | dups | closed | p50 ms | p99 ms | node CPU µs/delivery | Redis CPU µs/delivery | node + Redis µs/delivery | RSS KB/connection | peak RSS MB/node | loadgen CPU |";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(member: &Member) -> Socket {
    let url = match member.server {
        Server::Nimbus => format!(
            "ws://{}/chat/{}?X-Atmosphere-tracking-id=0&X-Atmosphere-Framework=5.0.7\
             &X-Atmosphere-Transport=websocket&X-Atmosphere-TrackMessageSize=true&X-atmo-protocol=true",
            member.addr, member.room
        ),
        Server::Socketio => format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&room={}",
            member.addr, member.room
        ),
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("member connects");
    match member.server {
        // The handshake frame (tracking id) says the member has joined.
        Server::Nimbus => {
            ws.next().await;
        }
        // Engine.IO open, then the namespace connect and its acknowledgement.
        Server::Socketio => {
            ws.next().await;
            ws.send(Message::text("40")).await.expect("connect");
            // engineioxide pings at once, before the acknowledgement: unanswered, it closes the
            // connection a ping timeout later.
            while let Some(Ok(frame)) = ws.next().await {
                match frame.to_text() {
                    Ok("2") => ws.send(Message::text("3")).await.expect("pong"),
                    Ok(text) if text.starts_with("40") => break,
                    _ => {}
                }
            }
        }
    }
    ws
}

async fn run_member(
    member: Member,
    message_bytes: usize,
    totals: Arc<Totals>,
    ready: tokio::sync::oneshot::Sender<()>,
    mut stage: watch::Receiver<Stage>,
) -> Finished {
    let mut ws = connect(&member).await;
    let _ = ready.send(());
    let mut seen = HashSet::new();
    let mut latencies = Vec::new();
    let mut next_due: Option<tokio::time::Instant> = None;
    let mut seq: u64 = 0;
    let mut stopped = false;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let frame = match frame {
                    Some(Ok(Message::Close(reason))) => {
                        report_close(&format!("{reason:?}"));
                        None
                    }
                    Some(Err(error)) => {
                        report_close(&error.to_string());
                        None
                    }
                    other => other.and_then(Result::ok),
                };
                let Some(frame) = frame else {
                    if *stage.borrow() != Stage::Done {
                        totals.closed.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                };
                let Ok(text) = frame.to_text() else { continue };
                match member.server {
                    Server::Nimbus => unframe(text, |m| {
                        record(&totals, &mut seen, &mut latencies, m)
                    }),
                    Server::Socketio => {
                        if text == "2" {
                            let _ = ws.send(Message::text("3")).await;
                        } else if let Some(m) = text
                            .strip_prefix("42[\"msg\",\"")
                            .and_then(|m| m.strip_suffix("\"]"))
                        {
                            record(&totals, &mut seen, &mut latencies, m);
                        }
                    }
                }
            }
            _ = sleep_until(next_due), if next_due.is_some() => {
                let body = message(member.id, seq, message_bytes);
                let frame = match member.server {
                    Server::Nimbus => body,
                    Server::Socketio => format!(
                        "42[\"publish\",{{\"room\":\"{}\",\"data\":\"{body}\"}}]",
                        member.room
                    ),
                };
                if ws.send(Message::text(frame)).await.is_err() {
                    totals.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                seq += 1;
                totals.published.fetch_add(1, Ordering::Relaxed);
                totals.expected.fetch_add(member.room_size, Ordering::Relaxed);
                next_due = next_due.map(|at| at + member.every);
            }
            changed = stage.changed() => {
                if changed.is_err() {
                    break;
                }
                match *stage.borrow() {
                    Stage::Connecting => {}
                    Stage::Publishing(at) => next_due = Some((at + member.phase).into()),
                    Stage::Draining => {
                        next_due = None;
                        stopped = true;
                        totals.stopped.fetch_add(1, Ordering::Relaxed);
                    }
                    Stage::Done => break,
                }
            }
        }
    }
    if !stopped {
        totals.stopped.fetch_add(1, Ordering::Relaxed);
    }
    totals.latencies_us.lock().unwrap().append(&mut latencies);
    Finished {
        room: member.room,
        id: member.id,
        published: seq,
        seen,
    }
}

/// What a member sent and received, for `CHAT_BENCH_MISSING`.
struct Finished {
    room: String,
    id: u32,
    published: u64,
    seen: HashSet<(u32, u64)>,
}

/// Every delivery that did not arrive: receiver, room, sender and the message's sequence.
fn print_missing(finished: &[Finished]) {
    let mut rooms: std::collections::HashMap<&str, Vec<&Finished>> = Default::default();
    for member in finished {
        rooms.entry(&member.room).or_default().push(member);
    }
    for (room, members) in rooms {
        for receiver in &members {
            for sender in &members {
                for seq in 0..sender.published {
                    if !receiver.seen.contains(&(sender.id, seq)) {
                        eprintln!(
                            "missing: {room} receiver {} sender {} seq {seq}",
                            receiver.id, sender.id
                        );
                    }
                }
            }
        }
    }
}

/// The first way a connection ended, once per run (the server's close reason, or the error).
fn report_close(how: &str) {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    REPORTED.call_once(|| eprintln!("a connection ended: {how}"));
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `<sender>:<seq>:<sent µs>:` padded with `x` to `bytes`.
fn message(sender: u32, seq: u64, bytes: usize) -> String {
    let mut text = format!("{sender}:{seq}:{}:", now_us());
    while text.len() < bytes {
        text.push('x');
    }
    text
}

fn record(totals: &Totals, seen: &mut HashSet<(u32, u64)>, latencies: &mut Vec<u32>, m: &str) {
    let mut parts = m.splitn(4, ':');
    let (Some(Ok(sender)), Some(Ok(seq)), Some(Ok(sent))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return;
    };
    if !seen.insert((sender, seq)) {
        totals.duplicates.fetch_add(1, Ordering::Relaxed);
        return;
    }
    totals.received.fetch_add(1, Ordering::Relaxed);
    latencies.push(now_us().saturating_sub(sent).min(u32::MAX as u64) as u32);
}
