//! The WebSocket subscribers of one load-generator thread, driven by one readiness loop.
//!
//! On two shared cores the load generator competes with the server it measures: every
//! microsecond it spends per received message is a microsecond the server's fan-out waits for a
//! core, and shows up in the latency figures. So the subscribers are plain sockets on one
//! edge-triggered `epoll` (mio) per thread, read straight into a buffer, with no task, waker or
//! timer per subscriber: against the floor with 5,000 subscribers at 20 msg/s, alternating, the
//! load generator used 69–72 % of a core where a tokio task per subscriber used 82–83 %
//! (≈ 7.0 against 8.2 µs per message received, most of it now the kernel's receive path and
//! ACKs). A subscriber is a minimal client: the upgrade by hand, frames read straight off the
//! socket.
//!
//! One subscriber in [`STAMP_EVERY`] reads with the kernel's receive stamps (see
//! [`crate::stamped`]), which cost a little more per read; their messages give the
//! publish-to-arrival figures.
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::stamped;
use crate::{parse_frame, query, record, unframe, Spawn, Tally, TOPIC};

/// One subscriber in this many reads with receive stamps.
const STAMP_EVERY: usize = 8;
/// How often the loop measures its own lateness (as a timer would fire).
const TICK: Duration = Duration::from_millis(5);

/// Run the subscribers `spawns` asks for, recording into `tally`, until the process ends.
pub fn run(tally: Arc<Mutex<Tally>>, mut spawns: tokio::sync::mpsc::UnboundedReceiver<Spawn>) {
    let mut poll = Poll::new().expect("epoll instance");
    let mut events = Events::with_capacity(1024);
    let mut subscribers: Vec<Subscriber> = Vec::new();
    let mut local = Tally::default();
    let mut chunk = vec![0u8; 4096];
    let mut control = stamped::control_buffer();
    let mut due = Instant::now() + TICK;
    loop {
        // New subscribers are picked up at least every tick.
        while let Ok((addr, ready)) = spawns.try_recv() {
            let token = Token(subscribers.len());
            let mut stream = TcpStream::connect(addr).expect("subscriber connects");
            let stamped = token.0.is_multiple_of(STAMP_EVERY);
            if stamped {
                stamped::enable(&stream).expect("receive stamps");
            }
            poll.registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .expect("register subscriber");
            subscribers.push(Subscriber {
                stream,
                phase: Phase::Connecting,
                ready: Some(ready),
                buf: Vec::new(),
                seen: Vec::new(),
                stamped,
            });
        }
        match poll.poll(
            &mut events,
            Some(due.saturating_duration_since(Instant::now())),
        ) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => panic!("epoll: {error}"),
        }
        for event in &events {
            let token = event.token();
            let subscriber = &mut subscribers[token.0];
            if event.is_writable() && subscriber.phase == Phase::Connecting {
                subscriber.send_upgrade(&poll, token);
            }
            if event.is_readable() || event.is_read_closed() {
                subscriber.read(&mut chunk, &mut control, &mut local);
            }
        }
        let now = Instant::now();
        if now >= due {
            local.lag_us.push((now - due).as_micros() as u32);
            due = now + TICK;
        }
        if local.received + local.duplicates > 0 || !local.lag_us.is_empty() {
            tally.lock().unwrap().absorb(&mut local);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, waiting for `101`.
    Upgrading,
    /// Upgraded, waiting for the Atmosphere handshake frame.
    Handshaking,
    /// Handshake received: every text frame carries messages.
    Streaming,
    Closed,
}

struct Subscriber {
    stream: TcpStream,
    phase: Phase,
    /// Told once the Atmosphere handshake arrived.
    ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// Bytes read and not yet a whole frame.
    buf: Vec<u8>,
    /// Sequence numbers received, for duplicates.
    seen: Vec<bool>,
    stamped: bool,
}

// === impl Subscriber ===

impl Subscriber {
    fn send_upgrade(&mut self, poll: &Poll, token: Token) {
        if let Some(error) = self.stream.take_error().expect("socket error") {
            panic!("subscriber connects: {error}");
        }
        if self.stream.peer_addr().is_err() {
            return; // not connected yet
        }
        let request = format!(
            "GET {TOPIC}?{} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            query("websocket", "0")
        );
        // A fresh socket's send buffer takes a few hundred bytes whole.
        let written = self.stream.write(request.as_bytes()).expect("upgrade sent");
        assert_eq!(written, request.len(), "upgrade request sent whole");
        self.stream.set_nodelay(true).expect("nodelay");
        poll.registry()
            .reregister(&mut self.stream, token, Interest::READABLE)
            .expect("reregister subscriber");
        self.phase = Phase::Upgrading;
    }

    /// Read until the socket is drained, handling every whole frame.
    fn read(&mut self, chunk: &mut [u8], control: &mut [u8], tally: &mut Tally) {
        while self.phase != Phase::Closed {
            let read = if self.stamped {
                stamped::recv_stamped(&self.stream, chunk, control)
            } else {
                self.stream.read(chunk).map(|n| (n, None))
            };
            match read {
                Ok((0, _)) => self.close(),
                Ok((n, arrived)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.consume(arrived, tally);
                    // Edge-triggered: a short read drained the socket, and bytes arriving
                    // later raise a new edge. Spares a system call that would say "would block".
                    if n < chunk.len() {
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.close(),
            }
        }
    }

    fn consume(&mut self, arrived: Option<u64>, tally: &mut Tally) {
        if self.phase == Phase::Upgrading {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            assert!(self.buf.starts_with(b"HTTP/1.1 101"), "upgrade refused");
            self.buf.drain(..end + 4);
            self.phase = Phase::Handshaking;
        }
        let mut at = 0;
        while let Some((opcode, start, end)) = parse_frame(&self.buf[at..]) {
            match opcode {
                // The first text frame is the Atmosphere handshake.
                1 if self.phase == Phase::Handshaking => {
                    self.phase = Phase::Streaming;
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(());
                    }
                }
                1 => {
                    if let Ok(text) = std::str::from_utf8(&self.buf[at + start..at + end]) {
                        unframe(text, |m| record(tally, &mut self.seen, arrived, m));
                    }
                }
                8 => {
                    self.close();
                    return;
                }
                _ => {}
            }
            at += end;
        }
        self.buf.drain(..at);
    }

    fn close(&mut self) {
        assert!(self.ready.is_none(), "node closed the upgrade");
        self.phase = Phase::Closed;
        self.buf = Vec::new();
    }
}
