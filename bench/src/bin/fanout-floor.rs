//! `fanout-floor`: the smallest WebSocket fan-out server that `nimbus-bench` can drive, measured
//! in the same run as Nimbus so that Nimbus's figures can be read against this machine's floor
//! at that moment (the shared VM's speed drifts by ~15 % from hour to hour).
//!
//! It does only what a fan-out must: the upgrade, an Atmosphere-looking handshake frame, and
//! for every text frame a client sends, one `len|msg` frame encoded once and written to every
//! connected socket, straight from the publisher's task (one `try_write` of the whole frame: no
//! per-recipient task, lock, allocation or copy). No topics, tracking ids, history, heartbeats
//! or limits: it is a yardstick, not a server.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The allocator Nimbus uses (same-size objects packed together: the fan-out's walk over the
/// connections touches fewer pages), so that the floor is not dearer for want of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:18800")]
    bind: SocketAddr,
    /// Runtime worker threads (Nimbus's bench runs with two).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// One connected socket: writes go straight to it; only a socket that pushes back queues.
struct Conn {
    stream: TcpStream,
    backlog: Mutex<VecDeque<Vec<u8>>>,
    wake_writer: Notify,
}

/// Every connected socket, copied on change so a fan-out walks it without holding a lock.
type Members = RwLock<Arc<Vec<Arc<Conn>>>>;

fn main() {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .unwrap()
        .block_on(serve(args.bind));
}

async fn serve(bind: SocketAddr) {
    let listener = TcpListener::bind(bind).await.expect("bind");
    let members: Arc<Members> = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(connection(stream, members.clone()));
    }
}

async fn connection(mut stream: TcpStream, members: Arc<Members>) {
    // The request head, then `101` and the handshake frame.
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 || head.len() > 16 * 1024 {
            return;
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    if text.starts_with("GET /healthz") {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        return;
    }
    let Some(key) = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    }) else {
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        return;
    };
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes();
    answer.extend_from_slice(&frame(&atmosphere("floor|60000|X|")));
    if stream.write_all(&answer).await.is_err() {
        return;
    }
    let mut buf = head.split_off(end);

    let conn = Arc::new(Conn {
        stream,
        backlog: Mutex::new(VecDeque::new()),
        wake_writer: Notify::new(),
    });
    {
        let mut list = members.write().unwrap();
        let mut next = Vec::clone(&list);
        next.push(conn.clone());
        *list = Arc::new(next);
    }
    let writer = tokio::spawn(drain(conn.clone()));

    // Read client frames; every text frame is broadcast to every socket.
    'read: loop {
        while let Some((opcode, payload, used)) = client_frame(&buf) {
            buf.drain(..used);
            match opcode {
                1 => {
                    let Ok(text) = String::from_utf8(payload) else {
                        break 'read;
                    };
                    if text == "X" {
                        continue; // a client heartbeat
                    }
                    let whole = frame(&atmosphere(&text));
                    let all = members.read().unwrap().clone();
                    for member in all.iter() {
                        member.deliver(&whole);
                    }
                }
                8 => break 'read,
                _ => {}
            }
        }
        if conn.stream.readable().await.is_err() {
            break;
        }
        match conn.stream.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    writer.abort();
    let mut list = members.write().unwrap();
    let next: Vec<_> = list
        .iter()
        .filter(|m| !Arc::ptr_eq(m, &conn))
        .cloned()
        .collect();
    *list = Arc::new(next);
}

impl Conn {
    fn deliver(&self, frame: &[u8]) {
        let mut backlog = self.backlog.lock().unwrap();
        if backlog.is_empty() {
            match self.stream.try_write(frame) {
                Ok(n) if n == frame.len() => return,
                Ok(n) => backlog.push_back(frame[n..].to_vec()),
                Err(_) => backlog.push_back(frame.to_vec()),
            }
        } else {
            backlog.push_back(frame.to_vec());
        }
        self.wake_writer.notify_one();
    }
}

/// Writes what a socket could not take at once.
async fn drain(conn: Arc<Conn>) {
    loop {
        conn.wake_writer.notified().await;
        loop {
            let Some(front) = conn.backlog.lock().unwrap().pop_front() else {
                break;
            };
            if conn.stream.writable().await.is_err() {
                return;
            }
            let mut at = 0;
            while at < front.len() {
                match conn.stream.try_write(&front[at..]) {
                    Ok(n) => at += n,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        if conn.stream.writable().await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

/// `len|msg`, the length in UTF-16 code units (Atmosphere's TrackMessageSize).
fn atmosphere(text: &str) -> Vec<u8> {
    format!("{}|{text}", text.encode_utf16().count()).into_bytes()
}

/// An unmasked final text frame's header.
fn header(len: usize) -> Vec<u8> {
    match len {
        0..=125 => vec![0x81, len as u8],
        126..=65535 => vec![0x81, 126, (len >> 8) as u8, len as u8],
        _ => {
            let mut h = vec![0x81, 127];
            h.extend_from_slice(&(len as u64).to_be_bytes());
            h
        }
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = header(payload.len());
    out.extend_from_slice(payload);
    out
}

/// A masked client frame at the start of `buf`: opcode, unmasked payload, bytes used.
fn client_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let mask = if masked {
        let mask: [u8; 4] = buf.get(at..at + 4)?.try_into().unwrap();
        at += 4;
        Some(mask)
    } else {
        None
    };
    let payload = buf.get(at..at + len)?;
    let payload = match mask {
        Some(mask) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Some((opcode, payload, at + len))
}
