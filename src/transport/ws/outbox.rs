//! The write half of a WebSocket: frames go to the WebSocket at once when it can take them, and
//! into a small bounded queue drained by the WebSocket's writer task when it cannot.
//!
//! Whoever delivers a frame (a connection actor, or a topic on the fast path) writes it to the
//! kernel directly: the topic a whole frame built once and shared by every recipient (one
//! `send`), an actor a header from the stack and the payload (one `sendmsg`), so a delivery
//! costs no copy, no allocation and no task wake-up.
//! Only a WebSocket that pushes back queues, and only a queue over [`QUEUE_LIMIT`] reports
//! [`Full`](WriteOutcome::Full) to its writer, whose slow-consumer policy
//! decides what happens next.
//!
//! The outbox is also the WebSocket's **fast lane**: while its client is caught up, the session
//! actor lends it (a lane of its own type `L`, lent with [`Outbox::lend`]) to whoever may write
//! without messaging the actor, which then writes through [`Shared::through_lane`]. The lane's
//! state sits under the same lock as the queue, so a direct delivery touches little memory.
//! What a lane holds and when it may write belong to the session; this file knows neither
//! topics nor protocols.
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_http::ws::{CloseReason, OpCode};
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::super::write::WriteOutcome;

/// Bytes a WebSocket may hold queued before writers are told it is full. One frame is always
/// accepted into an empty queue, whatever its size.
pub const QUEUE_LIMIT: usize = 64 * 1024;
/// Most queued frames handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// The WebSocket's write half, shared by everyone who writes to it; `L` is the fast lane's state
/// (`()` for WebSockets that never lend one).
pub struct Outbox<L = ()> {
    shared: Arc<Shared<L>>,
}

impl<L> Clone for Outbox<L> {
    fn clone(&self) -> Self {
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

/// What the writers of one WebSocket share: the queue, the WebSocket and the lane, under one lock.
pub struct Shared<L = ()> {
    state: Mutex<State<L>>,
    /// Notified when the write half is finished (close frame written, or a write failed).
    finished: Notify,
    /// Notified when a close frame is queued.
    closing: Notify,
}

struct State<L> {
    /// The fast lane, when lent. Kept apart from `io` so a lane writer borrows the WebSocket
    /// while the lane is edited in place.
    lane: Option<L>,
    io: Io,
}

/// The WebSocket and its queue: everything a write touches.
struct Io {
    /// Set when the server hands the upgraded connection over; frames queue until then.
    stream: Option<RawStream>,
    queue: VecDeque<Pending>,
    queued_bytes: usize,
    /// A close frame is queued: nothing is written after it.
    closing: bool,
    /// The write half is gone (closed or failed).
    finished: bool,
    /// A write failed: the WebSocket is to be finished by whoever saw it.
    broken: bool,
    /// The writer task, waiting for something to write.
    writer: Option<Waker>,
    /// Someone waiting for room in the queue.
    room: Option<Waker>,
}

/// The handed-over TCP stream, with its descriptor kept inline: a direct write reaches the kernel
/// without loading the stream's own allocation, which with thousands of WebSockets is a cache
/// (and TLB) miss per delivery (`perf`: ~4 % of a node's CPU in the 5,000-subscriber bench).
struct RawStream {
    fd: RawFd,
    /// Owns `fd`: it stays open for as long as this is held.
    _owner: Arc<TcpStream>,
}

/// A frame (or what is left of it) waiting in the queue.
struct Pending {
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
    /// Bytes of header then payload already written.
    written: usize,
}

// === impl RawStream ===

impl RawStream {
    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is `_owner`'s descriptor, and `_owner` is held by `self`, so the
        // descriptor stays open for the borrow's lifetime.
        #[allow(unsafe_code)]
        unsafe {
            BorrowedFd::borrow_raw(self.fd)
        }
    }
}

// === impl Pending ===

impl Pending {
    fn new(opcode: OpCode, payload: Bytes) -> Self {
        let (header, header_len) = frame_header(opcode, payload.len());
        Pending {
            header,
            header_len: header_len as u8,
            payload,
            written: 0,
        }
    }

    /// A frame built whole beforehand, header included.
    fn whole(frame: Bytes) -> Self {
        Pending {
            header: [0; 10],
            header_len: 0,
            payload: frame,
            written: 0,
        }
    }

    fn len(&self) -> usize {
        self.header_len as usize + self.payload.len()
    }

    /// The unwritten parts, as at most two slices.
    fn slices<'a>(&'a self, out: &mut Vec<IoSlice<'a>>) {
        let header_len = self.header_len as usize;
        if self.written < header_len {
            out.push(IoSlice::new(&self.header[self.written..header_len]));
            if !self.payload.is_empty() {
                out.push(IoSlice::new(&self.payload));
            }
        } else if self.written < self.len() {
            out.push(IoSlice::new(&self.payload[self.written - header_len..]));
        }
    }
}

/// A frame to write: a message whose header is built here, or one built whole beforehand
/// (shared by every recipient, so the kernel gets one buffer and `send` rather than
/// `sendmsg`, which costs the kernel an iovec import per call).
#[derive(Clone, Copy)]
enum Frame<'a> {
    Message(OpCode, &'a Bytes),
    Whole(&'a Bytes),
}

// === impl Frame ===

impl Frame<'_> {
    fn len(&self) -> usize {
        match self {
            Frame::Message(opcode, payload) => {
                frame_header(*opcode, payload.len()).1 + payload.len()
            }
            Frame::Whole(frame) => frame.len(),
        }
    }

    fn write(&self, stream: &RawStream) -> io::Result<usize> {
        let fd = stream.fd();
        let sock = socket2::SockRef::from(&fd);
        match self {
            Frame::Message(opcode, payload) => {
                let (header, header_len) = frame_header(*opcode, payload.len());
                sock.send_vectored(&[IoSlice::new(&header[..header_len]), IoSlice::new(payload)])
            }
            Frame::Whole(frame) => sock.send(frame),
        }
    }

    fn pending(&self) -> Pending {
        match self {
            Frame::Message(opcode, payload) => Pending::new(*opcode, (*payload).clone()),
            Frame::Whole(frame) => Pending::whole((*frame).clone()),
        }
    }
}

/// A whole unmasked text frame around `payload`, to share between recipients.
pub fn whole_text_frame(payload: &[u8]) -> Bytes {
    let (header, header_len) = frame_header(OpCode::Text, payload.len());
    let mut frame = BytesMut::with_capacity(header_len + payload.len());
    frame.put_slice(&header[..header_len]);
    frame.put_slice(payload);
    frame.freeze()
}

/// The header of an unmasked, final server frame (RFC 6455, 5.2).
fn frame_header(opcode: OpCode, len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | u8::from(opcode);
    if len < 126 {
        header[1] = len as u8;
        (header, 2)
    } else if len <= u16::MAX as usize {
        header[1] = 126;
        header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

/// A close frame's payload: the status code, then a reason cut to fit a control frame.
fn close_payload(reason: Option<CloseReason>) -> Bytes {
    let Some(reason) = reason else {
        return Bytes::new();
    };
    let mut payload = BytesMut::with_capacity(125);
    payload.put_u16(u16::from(reason.code));
    if let Some(description) = &reason.description {
        let mut end = description.len().min(123);
        while !description.is_char_boundary(end) {
            end -= 1;
        }
        payload.put_slice(&description.as_bytes()[..end]);
    }
    payload.freeze()
}

// === impl Outbox ===

impl<L> Outbox<L> {
    /// An outbox whose WebSocket is not handed over yet: frames queue until [`Outbox::connect`].
    pub fn new() -> Self {
        Outbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    lane: None,
                    io: Io {
                        stream: None,
                        queue: VecDeque::new(),
                        queued_bytes: 0,
                        closing: false,
                        finished: false,
                        broken: false,
                        writer: None,
                        room: None,
                    },
                }),
                finished: Notify::new(),
                closing: Notify::new(),
            }),
        }
    }

    /// Write a text (or binary) message frame now if the WebSocket takes it, or queue it.
    pub fn send(&self, opcode: OpCode, payload: &Bytes) -> WriteOutcome {
        let mut state = self.shared.state.lock();
        let outcome = state.io.send(Frame::Message(opcode, payload));
        if state.io.broken {
            drop(state);
            self.finish();
        }
        outcome
    }

    /// A pong answering a client's ping; control frames ignore the queue limit.
    pub fn pong(&self, payload: Bytes) {
        let mut state = self.shared.state.lock();
        if !state.io.closing && !state.io.finished {
            state.io.push(Pending::new(OpCode::Pong, payload));
        }
    }

    /// Queue a close frame (once) after what is queued; the WebSocket's write half ends after it.
    pub fn close(&self, reason: Option<CloseReason>) {
        let mut state = self.shared.state.lock();
        if state.io.closing || state.io.finished {
            return;
        }
        state
            .io
            .push(Pending::new(OpCode::Close, close_payload(reason)));
        state.io.closing = true;
        drop(state);
        self.shared.closing.notify_waiters();
    }

    /// Ready when there is room in the queue (or the WebSocket is gone); registers `cx` otherwise.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let mut state = self.shared.state.lock();
        if state.io.closing || state.io.finished {
            Poll::Ready(Err(()))
        } else if state.io.queued_bytes < QUEUE_LIMIT {
            Poll::Ready(Ok(()))
        } else {
            state.io.room = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Whether the write half is gone.
    pub fn is_finished(&self) -> bool {
        self.shared.state.lock().io.finished
    }

    /// Wait until the write half is finished.
    pub async fn finished(&self) {
        let notified = self.shared.finished.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_finished() {
            return;
        }
        notified.await;
    }

    /// Wait until a close frame is queued (or the write half is finished).
    pub async fn closing(&self) {
        let closing = self.shared.closing.notified();
        let finished = self.shared.finished.notified();
        tokio::pin!(closing, finished);
        closing.as_mut().enable();
        finished.as_mut().enable();
        {
            let state = self.shared.state.lock();
            if state.io.closing || state.io.finished {
                return;
            }
        }
        tokio::select! {
            _ = closing => {}
            _ = finished => {}
        }
    }

    /// The handed-over WebSocket: from now on frames are written to it, and the queue drains.
    pub fn connect(&self, stream: Arc<TcpStream>) {
        let mut state = self.shared.state.lock();
        if !state.io.finished {
            state.io.stream = Some(RawStream {
                fd: stream.as_raw_fd(),
                _owner: stream,
            });
            state.io.wake_writer();
        }
    }

    /// Lend the fast lane: from now on [`Shared::through_lane`] writes with `lane`.
    pub fn lend(&self, lane: L) {
        self.shared.state.lock().lane = Some(lane);
    }

    /// Read the lane while it stays lent; `None` if it is not.
    pub fn peek_lane<R>(&self, read: impl FnOnce(&L) -> R) -> Option<R> {
        self.shared.state.lock().lane.as_ref().map(read)
    }

    /// Take the lane back; `None` if it was not lent.
    pub fn take_back(&self) -> Option<L> {
        self.shared.state.lock().lane.take()
    }

    /// What every writer of this WebSocket shares, for whoever writes through the lane.
    pub fn shared(&self) -> Arc<Shared<L>> {
        self.shared.clone()
    }

    /// Whether `self` and `other` are the same WebSocket's outbox.
    pub fn same(&self, other: &Outbox<L>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The write half ended (close written, write error, or the WebSocket never came).
    pub fn finish(&self) {
        self.shared.finish();
    }

    /// The writer task: drains the queue whenever the WebSocket is writable, until the close
    /// frame is written or a write fails.
    pub async fn drain(&self, stream: Arc<TcpStream>) {
        loop {
            let work = std::future::poll_fn(|cx| {
                let mut state = self.shared.state.lock();
                if state.io.finished {
                    Poll::Ready(false)
                } else if state.io.queue.is_empty() {
                    state.io.writer = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(true)
                }
            });
            if !work.await {
                return;
            }
            // A client that stops reading is let go by the read half (see `ws::serve`), which
            // finishes the outbox: stop waiting then.
            tokio::select! {
                writable = stream.writable() => if writable.is_err() {
                    self.finish();
                    return;
                },
                _ = self.finished() => return,
            }
            match self.write_queued(&stream) {
                Ok(true) => {
                    // The close frame is out: end the write half; the read half waits for
                    // the client's answer (or gives up after a grace period).
                    let _ = socket2::SockRef::from(&*stream).shutdown(std::net::Shutdown::Write);
                    self.finish();
                    return;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(%error, "websocket write failed");
                    self.finish();
                    return;
                }
            }
        }
    }

    /// One `writev` of queued frames. Returns whether the queue ran dry after a close frame.
    fn write_queued(&self, stream: &TcpStream) -> io::Result<bool> {
        let mut state = self.shared.state.lock();
        let mut slices = Vec::with_capacity(MAX_IOVECS);
        for pending in state.io.queue.iter() {
            if slices.len() + 2 > MAX_IOVECS {
                break;
            }
            pending.slices(&mut slices);
        }
        let mut n = match stream.try_write_vectored(&slices) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) => return Err(error),
        };
        drop(slices);
        while n > 0 {
            let Some(front) = state.io.queue.front_mut() else {
                break;
            };
            let left = front.len() - front.written;
            if n >= left {
                n -= left;
                state.io.queued_bytes -= front.len();
                state.io.queue.pop_front();
            } else {
                front.written += n;
                n = 0;
            }
        }
        if state.io.queued_bytes < QUEUE_LIMIT {
            if let Some(room) = state.io.room.take() {
                room.wake();
            }
        }
        if state.io.queue.is_empty() {
            // Give the queue's memory back: an idle WebSocket holds none.
            state.io.queue = VecDeque::new();
            return Ok(state.io.closing);
        }
        Ok(false)
    }
}

impl<L> Default for Outbox<L> {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Shared ===

impl<L> Shared<L> {
    fn finish(&self) {
        let mut state = self.state.lock();
        state.io.finished = true;
        state.io.broken = false;
        state.io.queue.clear();
        state.io.queued_bytes = 0;
        state.io.stream = None;
        if let Some(room) = state.io.room.take() {
            room.wake();
        }
        drop(state);
        self.finished.notify_waiters();
    }
}

// === impl Shared (the fast lane) ===

impl<L> Shared<L> {
    /// Deliver through the lent lane, under the WebSocket's lock: `deliver` gets the lane and a
    /// writer for whole frames, and says whether it delivered. `false` when no lane is lent.
    pub fn through_lane(&self, deliver: impl FnOnce(&mut L, &mut LaneWriter<'_>) -> bool) -> bool {
        let mut state = self.state.lock();
        let State { lane, io } = &mut *state;
        let Some(lane) = lane.as_mut() else {
            return false;
        };
        let delivered = deliver(lane, &mut LaneWriter(io));
        if state.io.broken {
            drop(state);
            self.finish();
        }
        delivered
    }
}

/// Writes whole frames for [`Shared::through_lane`].
pub struct LaneWriter<'a>(&'a mut Io);

impl LaneWriter<'_> {
    /// Write `frame` (built whole with [`whole_text_frame`]) now, or queue it within the bound.
    pub fn write_whole(&mut self, frame: &Bytes) -> WriteOutcome {
        self.0.send(Frame::Whole(frame))
    }
}

// === impl Io ===

impl Io {
    /// Write a frame now if the WebSocket takes it, or queue it (see [`Outbox::send`]). A failed
    /// write marks the WebSocket closed; the caller finishes the outbox.
    fn send(&mut self, frame: Frame<'_>) -> WriteOutcome {
        if self.closing || self.finished {
            return WriteOutcome::Closed;
        }
        if self.queued_bytes >= QUEUE_LIMIT {
            return WriteOutcome::Full;
        }
        if let (true, Some(stream)) = (self.queue.is_empty(), &self.stream) {
            // Straight to the descriptor: the runtime's readiness bookkeeping is for the
            // writer task, which waits only when this fails.
            match frame.write(stream) {
                Ok(n) if n == frame.len() => return WriteOutcome::Written,
                Ok(n) => {
                    let mut rest = frame.pending();
                    rest.written = n;
                    self.push(rest);
                    return WriteOutcome::Written;
                }
                // The writer task waits for the WebSocket (tokio learns it is not writable when
                // the writer's own attempt fails the same way).
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!(%error, "websocket write failed");
                    self.broken = true;
                    return WriteOutcome::Closed;
                }
            }
        }
        self.push(frame.pending());
        WriteOutcome::Written
    }

    fn push(&mut self, pending: Pending) {
        self.queued_bytes += pending.len();
        self.queue.push_back(pending);
        self.wake_writer();
    }

    fn wake_writer(&mut self) {
        if self.stream.is_some() {
            if let Some(writer) = self.writer.take() {
                writer.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_rfc_6455_length_forms() {
        assert_eq!(&frame_header(OpCode::Text, 5).0[..2], &[0x81, 5]);
        let (h, n) = frame_header(OpCode::Binary, 300);
        assert_eq!(&h[..n], &[0x82, 126, 1, 44]);
        let (h, n) = frame_header(OpCode::Text, 70_000);
        assert_eq!(&h[..n], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn a_whole_frame_queues_what_the_stream_did_not_take() {
        let payload = Bytes::from_static(b"5|hello");
        let whole = whole_text_frame(&payload);
        assert_eq!(&whole[..], b"\x81\x075|hello");
        let message = Frame::Message(OpCode::Text, &payload);
        assert_eq!(Frame::Whole(&whole).len(), message.len());

        // The same bytes are left whichever way the frame was built.
        for frame in [Frame::Whole(&whole), message] {
            let mut rest = frame.pending();
            rest.written = 3;
            let mut slices = Vec::new();
            rest.slices(&mut slices);
            let left: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(left, b"|hello");
        }
    }
}
