//! `nimbus-bench`: a load generator that speaks the Atmosphere protocol (as atmosphere.js 5
//! does) over WebSocket and long-polling, and prints one row of figures.
//!
//! The subscribers run on `--threads` single-threaded runtimes, each with its share of them;
//! the publisher and the measurements run on the main thread. Its own CPU use is measured over
//! all threads (getrusage). Server CPU per delivered message comes from the server process's
//! own counters (`/proc/<pid>/stat`), read at the start and the end of the measured window.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// Where subscribers connect: a node, or several (repeat the flag; subscribers are spread
    /// round-robin), or a load balancer.
    #[arg(long = "addr", default_value = "127.0.0.1:8080")]
    addrs: Vec<SocketAddr>,
    /// Where the publisher connects (default: the first `--addr`).
    #[arg(long)]
    publish_addr: Option<SocketAddr>,
    /// The server-side processes (nodes, and Redis in a cluster), for their CPU and RSS; repeat
    /// the flag to sum several.
    #[arg(long = "server-pid", required = true)]
    server_pids: Vec<u32>,
    /// Label of the row.
    #[arg(long)]
    label: Option<String>,
    #[arg(long, value_enum)]
    scenario: Scenario,
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages published per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Payload bytes per message (beyond the sequence and timestamp).
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
    /// Threads running the subscribers (each a single-threaded runtime with its share); the
    /// publisher and the measurements run on the main thread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Scenario {
    /// Hold idle WebSocket connections and report RSS per connection.
    Idle,
    /// One topic, WebSocket subscribers, one WebSocket publisher.
    Ws,
    /// One topic, long-polling subscribers, one WebSocket publisher.
    Longpoll,
}

const TOPIC: &str = "/bench";

fn query(transport: &str, id: &str) -> String {
    format!(
        "X-Atmosphere-tracking-id={id}&X-Atmosphere-Framework=5.0.7&X-Atmosphere-Transport={transport}\
         &X-Atmosphere-TrackMessageSize=true&X-atmo-protocol=true"
    )
}

/// What the subscribers of one thread record (merged at the end).
#[derive(Default)]
struct Tally {
    received: u64,
    duplicates: u64,
    latencies_us: Vec<u32>,
    /// How late the thread's 5 ms timer fired, each time.
    lag_us: Vec<u32>,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args));
}

/// A subscriber for a subscriber thread to start, and where it says it is connected.
type Spawn = (SocketAddr, tokio::sync::oneshot::Sender<()>);

/// One subscriber thread: a single-threaded runtime running its share of the subscribers and a
/// timer that measures how late this thread's own timers fire (the part of the latency figures
/// that is the load generator's own queueing).
fn subscriber_thread(
    scenario: Scenario,
    epoch: Instant,
    tally: Arc<Mutex<Tally>>,
    mut spawns: tokio::sync::mpsc::UnboundedReceiver<Spawn>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let lag_tally = tally.clone();
        tokio::task::spawn_local(async move {
            let tick = Duration::from_millis(5);
            loop {
                let due = Instant::now() + tick;
                tokio::time::sleep_until(due.into()).await;
                let late = Instant::now().saturating_duration_since(due).as_micros() as u32;
                lag_tally.lock().unwrap().lag_us.push(late);
            }
        });
        while let Some((addr, ready)) = spawns.recv().await {
            let tally = tally.clone();
            match scenario {
                Scenario::Idle | Scenario::Ws => {
                    tokio::task::spawn_local(ws_subscriber(addr, epoch, tally, ready))
                }
                Scenario::Longpoll => {
                    tokio::task::spawn_local(lp_subscriber(addr, epoch, tally, ready))
                }
            };
        }
        std::future::pending::<()>().await
    });
}

async fn run(args: Args) {
    let epoch = Instant::now();
    let rss_before = rss_kib(args.server_pids[0]);
    // The subscribers run on their own threads; this one only publishes and measures.
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let tally = Arc::new(Mutex::new(Tally::default()));
            let (spawn, spawns) = tokio::sync::mpsc::unbounded_channel::<Spawn>();
            let scenario = args.scenario;
            let thread_tally = tally.clone();
            std::thread::spawn(move || subscriber_thread(scenario, epoch, thread_tally, spawns));
            (tally, spawn)
        })
        .collect();
    let received = || -> u64 {
        threads
            .iter()
            .map(|(t, _)| t.lock().unwrap().received)
            .sum()
    };

    // Connect every subscriber (bounded concurrency) and wait for its handshake.
    let mut connected = 0;
    let batch = 200;
    while connected < args.subscribers {
        let n = batch.min(args.subscribers - connected);
        let mut ready = Vec::new();
        for i in 0..n {
            let (tx, rx) = tokio::sync::oneshot::channel();
            ready.push(rx);
            let addr = args.addrs[(connected + i) % args.addrs.len()];
            let (_, spawn) = &threads[(connected + i) % threads.len()];
            spawn.send((addr, tx)).expect("subscriber thread runs");
        }
        for rx in ready {
            tokio::time::timeout(Duration::from_secs(30), rx)
                .await
                .expect("subscriber handshake in time")
                .expect("subscriber connected");
        }
        connected += n;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    if args.scenario == Scenario::Idle {
        let rss_after = rss_kib(args.server_pids[0]);
        let per_conn =
            (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / args.subscribers as f64;
        println!(
            "| idle websocket | {} | - | - | - | - | - | - | - | RSS {:.0} bytes/connection ({} KiB → {} KiB) | - |",
            args.subscribers, per_conn, rss_before, rss_after
        );
        return;
    }

    let (mut publisher, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}{}?{}",
        args.publish_addr.unwrap_or(args.addrs[0]),
        TOPIC,
        query("websocket", "0")
    ))
    .await
    .expect("publisher connects");
    publisher.next().await; // handshake
    let (mut publish, mut publisher_rx) = publisher.split();
    tokio::spawn(async move { while publisher_rx.next().await.is_some() {} });

    let server_cpu_start: u64 = args.server_pids.iter().map(|&p| cpu_ticks(p)).sum();
    for (tally, _) in &threads {
        tally.lock().unwrap().lag_us.clear(); // only the measured window counts
    }
    let own_cpu_start = own_cpu_us();
    let received_start = received();
    let start = Instant::now();
    let total = args.rate as u64 * args.duration_secs;
    let pad = "x".repeat(args.message_bytes);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    for seq in 0..total {
        let due = start + interval * seq as u32;
        tokio::time::sleep_until(due.into()).await;
        let sent_us = epoch.elapsed().as_micros() as u64;
        publish
            .send(Message::text(format!("{seq}:{sent_us}:{pad}")))
            .await
            .expect("publish");
    }
    // Drain: wait until everything arrived or 5 s passed.
    let expected = total * args.subscribers as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while received() - received_start < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = start.elapsed().as_secs_f64();
    let server_cpu_end: u64 = args.server_pids.iter().map(|&p| cpu_ticks(p)).sum();
    let server_cpu_us = (server_cpu_end - server_cpu_start) as f64 * 1e6 / clock_ticks() as f64;
    // Every thread's figures together.
    let mut t = Tally::default();
    for (tally, _) in &threads {
        let mut tally = tally.lock().unwrap();
        t.received += tally.received;
        t.duplicates += tally.duplicates;
        t.latencies_us.append(&mut tally.latencies_us);
        t.lag_us.append(&mut tally.lag_us);
    }
    let mut lag = std::mem::take(&mut t.lag_us);
    lag.sort_unstable();
    let lag_pct = |p: f64| {
        lag.get(((lag.len() as f64 * p) as usize).min(lag.len().saturating_sub(1)))
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    let own_cpu_us = own_cpu_us() - own_cpu_start;

    let delivered = t.received - received_start;
    t.latencies_us.sort_unstable();
    let pct = |p: f64| {
        t.latencies_us
            .get(
                ((t.latencies_us.len() as f64 * p) as usize)
                    .min(t.latencies_us.len().saturating_sub(1)),
            )
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    let name = args.label.clone().unwrap_or_else(|| {
        match args.scenario {
            Scenario::Ws => "websocket fan-out",
            _ => "long-polling fan-out",
        }
        .to_string()
    });
    println!(
        "| {name} | {} | {}/s | {:.0} | {} | {} | {:.1} | {:.1} | {:.2} | {:.0}% | {:.0}% | {:.1} / {:.1} |",
        args.subscribers,
        args.rate,
        delivered as f64 / window,
        expected.saturating_sub(delivered),
        t.duplicates,
        pct(0.50),
        pct(0.99),
        server_cpu_us / delivered.max(1) as f64,
        server_cpu_us / window / 1e4,
        own_cpu_us as f64 / window / 1e4,
        lag_pct(0.50),
        lag_pct(0.99),
    );
}

/// Parse `seq:sent_us:...` and record it, noting duplicates per subscriber.
fn record(tally: &Mutex<Tally>, seen: &mut Vec<bool>, epoch: Instant, message: &str) {
    let mut parts = message.splitn(3, ':');
    let (Some(seq), Some(sent)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(seq), Ok(sent)) = (seq.parse::<usize>(), sent.parse::<u64>()) else {
        return;
    };
    let now = epoch.elapsed().as_micros() as u64;
    let mut t = tally.lock().unwrap();
    if seen.len() <= seq {
        seen.resize(seq + 1, false);
    }
    if seen[seq] {
        t.duplicates += 1;
        return;
    }
    seen[seq] = true;
    t.received += 1;
    t.latencies_us
        .push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
}

/// Split a `len|msg` body (lengths in UTF-16 units; the bench sends ASCII) into messages.
fn unframe(mut body: &str, mut each: impl FnMut(&str)) {
    while let Some(bar) = body.find('|') {
        let Ok(len) = body[..bar].parse::<usize>() else {
            return;
        };
        let rest = &body[bar + 1..];
        if rest.len() < len {
            return;
        }
        each(&rest[..len]);
        body = &rest[len..];
    }
}

async fn ws_subscriber(
    addr: SocketAddr,
    epoch: Instant,
    tally: Arc<Mutex<Tally>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    // A minimal client: the upgrade by hand, then frames read straight off the socket. A full
    // WebSocket client per subscriber would make the load generator, not the server, the
    // bottleneck of the latency figures.
    let mut stream = TcpStream::connect(addr).await.expect("subscriber connects");
    let request = format!(
        "GET {TOPIC}?{} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        query("websocket", "0")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("upgrade sent");
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut handshake_pending = true;
    let mut ready = Some(ready);
    loop {
        let n = stream.read(&mut chunk).await.expect("upgrade answered");
        assert!(n > 0, "node closed the upgrade");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(buf.starts_with(b"HTTP/1.1 101"), "upgrade refused");
            buf.drain(..end + 4);
            break;
        }
    }
    let mut seen = Vec::new();
    loop {
        // Consume every whole frame in the buffer; the first is the Atmosphere handshake.
        let mut at = 0;
        while let Some((opcode, start, end)) = parse_frame(&buf[at..]) {
            if opcode == 1 && handshake_pending {
                handshake_pending = false;
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            } else if opcode == 1 {
                if let Ok(text) = std::str::from_utf8(&buf[at + start..at + end]) {
                    unframe(text, |m| record(&tally, &mut seen, epoch, m));
                }
            } else if opcode == 8 {
                return;
            }
            at += end;
        }
        buf.drain(..at);
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An unmasked server frame at the start of `buf`: its opcode and where its payload starts and
/// ends; `None` until the whole frame is there.
fn parse_frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= header + len).then_some((opcode, header, header + len))
}

async fn lp_subscriber(
    addr: SocketAddr,
    epoch: Instant,
    tally: Arc<Mutex<Tally>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("long-poller connects");
    let (_, body) = http_get(
        &mut stream,
        &format!("{TOPIC}?{}", query("long-polling", "0")),
    )
    .await;
    let id = body.split('|').nth(1).expect("handshake uuid").to_string();
    let _ = ready.send(());
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let mut path = format!("{TOPIC}?{}", query("long-polling", &id));
        if !token.is_empty() {
            path.push_str(&format!("&X-Atmosphere-Session-Token={token}"));
        }
        let (headers, body) = http_get(&mut stream, &path).await;
        if let Some(t) = header(&headers, "x-atmosphere-session-token") {
            token = t;
        }
        unframe(&body, |m| record(&tally, &mut seen, epoch, m));
    }
}

/// One keep-alive GET; the node answers long-polls with `Content-Length`.
async fn http_get(stream: &mut TcpStream, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send poll");
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = header(&headers, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.expect("read poll");
                assert!(n > 0, "node closed a long-poll connection");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            return (headers, body);
        }
        let n = stream.read(&mut chunk).await.expect("read poll");
        assert!(n > 0, "node closed a long-poll connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("server process");
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as u64
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// This process's user + system CPU, in microseconds.
fn own_cpu_us() -> u64 {
    // SAFETY: rusage is plain data (all-zero is valid) and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}
