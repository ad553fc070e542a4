//! `nimbus-bench`: a load generator that speaks the Atmosphere protocol (as atmosphere.js 5
//! does) over WebSocket and long-polling, and prints one row of figures.
//!
//! The subscribers run on `--threads` threads, each with its share of them (WebSocket
//! subscribers on one readiness loop per thread, long-pollers as tasks on a single-threaded
//! runtime); the publisher and the measurements run on the main thread. Latency is measured
//! twice: when a subscriber reads a message, and when its bytes arrived in the socket (the
//! kernel's stamp, [`stamped`]), which leaves out the load generator's own queueing. Its own
//! CPU use is measured over all threads (getrusage). Server CPU per delivered message comes
//! from the server process's own counters (`/proc/<pid>/stat`), read at the start and the end
//! of the measured window.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use nimbus_bench::measure::{clock_ticks, cpu_ticks, own_cpu_us, status_kib, unframe};
use stamped::{now_us, StampedStream};

mod stamped;
mod ws_subscribers;

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
    /// Threads running the subscribers, each with its share; the publisher and the
    /// measurements run on the main thread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Sign every client in with an HS256 token of this secret (the node's
    /// `--jwt-hmac-secret`), as `X-Atmosphere-Auth`; without it, clients are anonymous.
    #[arg(long)]
    jwt_secret: Option<String>,
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

/// `&X-Atmosphere-Auth=<token>` when the run signs in (`--jwt-secret`), set once at the start.
static AUTH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn query(transport: &str, id: &str) -> String {
    format!(
        "X-Atmosphere-tracking-id={id}&X-Atmosphere-Framework=5.0.7&X-Atmosphere-Transport={transport}\
         &X-Atmosphere-TrackMessageSize=true&X-atmo-protocol=true{}",
        AUTH.get().map_or("", String::as_str)
    )
}

/// What the subscribers of one thread record (merged at the end).
#[derive(Default)]
struct Tally {
    received: u64,
    duplicates: u64,
    latencies_us: Vec<u32>,
    /// Publish-to-arrival in the subscriber's socket (the kernel's receive stamp), per message.
    arrivals_us: Vec<u32>,
    /// How late the thread's 5 ms timer fired, each time.
    lag_us: Vec<u32>,
}

// === impl Tally ===

impl Tally {
    /// Move `other`'s figures into this one.
    fn absorb(&mut self, other: &mut Tally) {
        self.received += std::mem::take(&mut other.received);
        self.duplicates += std::mem::take(&mut other.duplicates);
        self.latencies_us.append(&mut other.latencies_us);
        self.arrivals_us.append(&mut other.arrivals_us);
        self.lag_us.append(&mut other.lag_us);
    }
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

/// One subscriber thread: its share of the subscribers, and how late its own timer fires (the
/// part of the latency figures that is the load generator's own queueing). WebSocket
/// subscribers share one readiness loop ([`ws_subscribers`]); long-pollers are tasks on a
/// single-threaded runtime (their cost is the server's HTTP round trips, not this).
fn subscriber_thread(
    scenario: Scenario,
    tally: Arc<Mutex<Tally>>,
    mut spawns: tokio::sync::mpsc::UnboundedReceiver<Spawn>,
) {
    if scenario != Scenario::Longpoll {
        return ws_subscribers::run(tally, spawns);
    }
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
            tokio::task::spawn_local(lp_subscriber(addr, tally.clone(), ready));
        }
        std::future::pending::<()>().await
    });
}

async fn run(args: Args) {
    if let Some(secret) = &args.jwt_secret {
        let token = nimbus_bench::jwt::hs256(secret, "bench");
        AUTH.set(format!("&X-Atmosphere-Auth={token}")).unwrap();
    }
    let rss_before = status_kib(args.server_pids[0], "VmRSS:");
    // The subscribers run on their own threads; this one only publishes and measures.
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let tally = Arc::new(Mutex::new(Tally::default()));
            let (spawn, spawns) = tokio::sync::mpsc::unbounded_channel::<Spawn>();
            let scenario = args.scenario;
            let thread_tally = tally.clone();
            std::thread::spawn(move || subscriber_thread(scenario, thread_tally, spawns));
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
    let connecting = Instant::now();
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
    let connect_secs = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;

    if args.scenario == Scenario::Idle {
        let rss_after = status_kib(args.server_pids[0], "VmRSS:");
        let per_conn =
            (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / args.subscribers as f64;
        println!(
            "| idle websocket | {} | - | - | - | - | - | - | - | - | RSS {:.0} bytes/connection ({} KiB → {} KiB) | - |",
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
        let sent_us = now_us();
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
        t.absorb(&mut tally.lock().unwrap());
    }
    let lag = percentiles(std::mem::take(&mut t.lag_us));
    let own_cpu_us = own_cpu_us() - own_cpu_start;

    let delivered = t.received - received_start;
    let latency = percentiles(std::mem::take(&mut t.latencies_us));
    let arrival = percentiles(std::mem::take(&mut t.arrivals_us));
    let name = args.label.clone().unwrap_or_else(|| {
        match args.scenario {
            Scenario::Ws => "websocket fan-out",
            _ => "long-polling fan-out",
        }
        .to_string()
    });
    println!(
        "| {name} | {} | {}/s | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} / {:.1} | {:.2} | {:.0}% | {:.0}% | {:.1} / {:.1} |",
        args.subscribers,
        args.rate,
        delivered as f64 / window,
        expected.saturating_sub(delivered),
        t.duplicates,
        latency(0.50),
        latency(0.99),
        arrival(0.50),
        arrival(0.99),
        server_cpu_us / delivered.max(1) as f64,
        server_cpu_us / window / 1e4,
        own_cpu_us as f64 / window / 1e4,
        lag(0.50),
        lag(0.99),
    );
    // Apart from the row, so the scripts that read its columns are unchanged.
    println!(
        "connect | {name} | {} connections in {connect_secs:.2} s | {:.0}/s",
        args.subscribers,
        args.subscribers as f64 / connect_secs
    );
}

/// The `p`-quantile of microsecond samples, in milliseconds (NaN without samples).
fn percentiles(mut samples_us: Vec<u32>) -> impl Fn(f64) -> f64 {
    samples_us.sort_unstable();
    move |p| {
        let at = ((samples_us.len() as f64 * p) as usize).min(samples_us.len().saturating_sub(1));
        samples_us
            .get(at)
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    }
}

/// Parse `seq:sent_us:...` (µs since the Unix epoch) and record it, noting duplicates per
/// subscriber; `arrived` is when the kernel received the bytes that completed it.
fn record(t: &mut Tally, seen: &mut Vec<bool>, arrived: Option<u64>, message: &str) {
    let mut parts = message.splitn(3, ':');
    let (Some(seq), Some(sent)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(seq), Ok(sent)) = (seq.parse::<usize>(), sent.parse::<u64>()) else {
        return;
    };
    let now = now_us();
    if seen.len() <= seq {
        seen.resize(seq + 1, false);
    }
    if seen[seq] {
        t.duplicates += 1;
        return;
    }
    seen[seq] = true;
    t.received += 1;
    let since_sent = |at: u64| at.saturating_sub(sent).min(u32::MAX as u64) as u32;
    t.latencies_us.push(since_sent(now));
    if let Some(arrived) = arrived {
        t.arrivals_us.push(since_sent(arrived));
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
    tally: Arc<Mutex<Tally>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut stream = StampedStream::connect(addr)
        .await
        .expect("long-poller connects");
    let (_, body, _) = http_get(
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
        let (headers, body, arrived) = http_get(&mut stream, &path).await;
        if let Some(t) = header(&headers, "x-atmosphere-session-token") {
            token = t;
        }
        unframe(&body, |m| {
            record(&mut tally.lock().unwrap(), &mut seen, arrived, m)
        });
    }
}

/// One keep-alive GET; the node answers long-polls with `Content-Length`. Returns the headers,
/// the body, and when the response's last bytes arrived.
async fn http_get(stream: &mut StampedStream, path: &str) -> (String, String, Option<u64>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send poll");
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    let mut arrived = None;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = header(&headers, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return (headers, body, arrived);
            }
        }
        let (n, stamp) = stream.read(&mut chunk).await.expect("read poll");
        assert!(n > 0, "node closed a long-poll connection");
        buf.extend_from_slice(&chunk[..n]);
        arrived = stamp;
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
