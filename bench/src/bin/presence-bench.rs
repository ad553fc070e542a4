//! Presence at scale: a room of `--members` users (default 50,000), one Atmosphere SSE
//! connection each, spread round-robin over the cluster's nodes. Measures how fast the room
//! fills and empties (joins and leaves per second, until every node's `presence_stats` agrees),
//! the latency of `presence_stats` (the online count) and of one member page (`presence`,
//! 100 members after a random cursor), and beside them what reading the whole member list costs
//! (every page of 1,000, the closest the API comes to Centrifugo's full `presence` map).
//!
//! `bench/presence.sh` starts the local cluster and runs this: one process per node holds that
//! node's share of the connections (`--hold`, a process may open only so many descriptors here),
//! one more measures (and tells the holders to let go through `--release-file`). Redis memory
//! per member is measured by the script (`INFO memory` before and with the room full).
use std::time::Duration;

use tokio::time::Instant;

use clap::Parser;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// The nodes' base URLs, comma-separated (`http://127.0.0.1:PORT`).
    #[arg(long, default_value = "")]
    nodes: String,
    #[arg(long, default_value = "")]
    api_key: String,
    #[arg(long)]
    jwt_secret: String,
    #[arg(long, default_value_t = 50_000)]
    members: usize,
    #[arg(long, default_value = "/room/presence-bench")]
    topic: String,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Calls per latency figure.
    #[arg(long, default_value_t = 300)]
    reads: usize,
    /// Hold connections to this node only: members `--first` .. `--first + --count`.
    #[arg(long)]
    hold: Option<String>,
    #[arg(long, default_value_t = 0)]
    first: usize,
    #[arg(long, default_value_t = 0)]
    count: usize,
    /// Holders let go of their connections when this file appears; the measurer creates it.
    #[arg(long)]
    release_file: std::path::PathBuf,
    /// With the room full, create this file and wait for `<file's dir>/measured` (the script
    /// reads Redis memory meanwhile).
    #[arg(long)]
    memory_probe: Option<std::path::PathBuf>,
}

/// Open member `n`'s SSE connection and wait for the response head (the member is in). Each
/// member connects from its own loopback address (`127.2.x.y`), so 50,000 connections and
/// those of a run a minute ago (in `TIME_WAIT`) do not exhaust one address's ephemeral ports.
async fn open(node: &str, topic: &str, token: &str, n: usize) -> std::io::Result<TcpStream> {
    let authority = node.trim_start_matches("http://");
    let target: std::net::SocketAddr = authority.parse().map_err(std::io::Error::other)?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    let source = std::net::Ipv4Addr::new(127, 2, ((n / 250) % 250) as u8, (n % 250 + 1) as u8);
    socket.bind((source, 0).into())?;
    let mut stream = socket.connect(target).await?;
    let request = format!(
        "GET {topic}?X-Atmosphere-Transport=sse&X-Atmosphere-Framework=5.0.0&X-atmo-protocol=true\
         &X-Atmosphere-tracking-id=0&X-Atmosphere-TrackMessageSize=true&X-Atmosphere-Auth={token} \
         HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the response"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        let line = String::from_utf8_lossy(&head);
        return Err(std::io::Error::other(format!(
            "refused: {}",
            line.lines().next().unwrap_or_default()
        )));
    }
    Ok(stream)
}

struct Api {
    client: reqwest::Client,
    key: String,
}

impl Api {
    async fn call(&self, node: &str, method: &str, body: Value) -> (Value, usize) {
        let text = self
            .client
            .post(format!("{node}/api/{method}"))
            .header("Authorization", format!("apikey {}", self.key))
            .body(body.to_string())
            .send()
            .await
            .expect("the API answers")
            .text()
            .await
            .unwrap();
        (serde_json::from_str(&text).expect("JSON"), text.len())
    }

    async fn users(&self, node: &str, topic: &str) -> u64 {
        let (body, _) = self
            .call(node, "presence_stats", json!({ "topic": topic }))
            .await;
        body["result"]["users"].as_u64().unwrap_or(0)
    }

    /// Wait until every node counts `want` users; returns when.
    async fn await_users(&self, nodes: &[String], topic: &str, want: u64, secs: u64) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let mut all = true;
            for node in nodes {
                all &= self.users(node, topic).await == want;
            }
            if all {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "presence did not reach {want} users within {secs} s (node 1 says {})",
                self.users(&nodes[0], topic).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    format!("{:.2} / {:.2} / {:.2}", at(0.5), at(0.99), at(1.0))
}

fn raise_descriptor_limit() {
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Open members `first .. first + count` on `node`, hold them until the release file appears.
async fn hold(args: &Args, node: &str) {
    let connections: Vec<TcpStream> = stream::iter(args.first..args.first + args.count)
        .map(|n| async move {
            let token = nimbus_bench::jwt::hs256(&args.jwt_secret, &format!("user{n:06}"));
            // A node swamped by the storm of connections may time a request out: retry, as a
            // client would (counted in the join time).
            let mut tries = 0;
            loop {
                match open(node, &args.topic, &token, n).await {
                    Err(error) if tries < 5 => {
                        tries += 1;
                        eprintln!("retrying member {n}: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    done => break done,
                }
            }
        })
        .buffer_unordered(args.concurrency)
        .map(|r| r.expect("a member's connection"))
        .collect()
        .await;
    while !args.release_file.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(connections);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    raise_descriptor_limit();
    if let Some(node) = &args.hold {
        return hold(&args, node).await;
    }
    let nodes: Vec<String> = args.nodes.split(',').map(str::to_string).collect();
    let api = Api {
        client: reqwest::Client::new(),
        key: args.api_key.clone(),
    };
    let topic = args.topic.as_str();

    // Join: the holders, started with this process, open every connection; wait until every
    // node counts every member.
    let started = Instant::now();
    let joined = api
        .await_users(&nodes, topic, args.members as u64, 120)
        .await
        .duration_since(started);
    let join_rate = args.members as f64 / joined.as_secs_f64();
    if let Some(probe) = &args.memory_probe {
        std::fs::write(probe, b"").unwrap();
        let measured = probe.with_file_name("measured");
        for _ in 0..600 {
            if measured.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Reads, round-robin over the nodes.
    let mut stats = Vec::with_capacity(args.reads);
    let mut pages = Vec::with_capacity(args.reads);
    let mut page_bytes = 0;
    for n in 0..args.reads {
        let node = &nodes[n % nodes.len()];
        let t = Instant::now();
        let users = api.users(node, topic).await;
        stats.push(t.elapsed());
        assert_eq!(users, args.members as u64);
        let after = format!("user{:06}", (n * 7919) % args.members);
        let t = Instant::now();
        let (page, bytes) = api
            .call(
                node,
                "presence",
                json!({"topic": topic, "limit": 100, "cursor": after}),
            )
            .await;
        pages.push(t.elapsed());
        page_bytes = bytes;
        assert!(page["result"]["members"]
            .as_array()
            .is_some_and(|m| !m.is_empty()));
    }

    // The whole list, page by page of 1,000.
    let mut full = Vec::new();
    let mut full_bytes = 0;
    let mut round_trips = 0;
    for n in 0..5 {
        let node = &nodes[n % nodes.len()];
        let t = Instant::now();
        let (mut cursor, mut seen, mut bytes, mut trips) = (Value::Null, 0, 0, 0);
        loop {
            let mut call = json!({"topic": topic, "limit": 1000});
            if !cursor.is_null() {
                call["cursor"] = cursor.clone();
            }
            let (page, size) = api.call(node, "presence", call).await;
            trips += 1;
            bytes += size;
            seen += page["result"]["members"].as_array().map_or(0, Vec::len);
            cursor = page["result"]["cursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        full.push(t.elapsed());
        assert_eq!(seen, args.members, "the full list holds every member");
        (full_bytes, round_trips) = (bytes, trips);
    }

    // Leave: close every connection, then wait until every node counts none.
    let t = Instant::now();
    std::fs::write(&args.release_file, b"").unwrap();
    let left = api
        .await_users(&nodes, topic, 0, 120)
        .await
        .duration_since(t);
    let leave_rate = args.members as f64 / left.as_secs_f64();

    println!("| measure | figure |");
    println!("|---|---|");
    println!("| members (nodes) | {} ({}) |", args.members, nodes.len());
    println!(
        "| join: all {} connections opened and counted on every node | {:.1} s ({join_rate:.0} joins/s) |",
        args.members,
        joined.as_secs_f64()
    );
    println!(
        "| leave: all counted out on every node | {:.1} s ({leave_rate:.0} leaves/s, incl. the 1 s reconnect window) |",
        left.as_secs_f64()
    );
    println!(
        "| `presence_stats` ms p50 / p99 / max ({} calls) | {} |",
        args.reads,
        percentiles(stats)
    );
    println!(
        "| `presence` page of 100 ms p50 / p99 / max ({} calls, {page_bytes} B) | {} |",
        args.reads,
        percentiles(pages)
    );
    println!(
        "| full list ({round_trips} pages of 1,000, {full_bytes} B) ms p50 / p99 / max (5 reads) | {} |",
        percentiles(full)
    );
}
