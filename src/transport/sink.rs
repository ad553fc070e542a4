//! The transport contract for pushed frames: a bounded sink a session writes into without
//! waiting, and a way to be woken when it can take more.
//!
//! WebSocket frames go to the WebSocket's [`Outbox`] (written at once when the WebSocket can take
//! them); SSE and streaming chunks go into the bounded channel behind the response body, polled
//! with a no-op waker first. Only a full sink makes the session wait.
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use actix_http::ws::{CloseReason, OpCode};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::Sink as _;
use tokio_util::sync::PollSender;

use super::write::WriteOutcome;
use super::ws::Outbox;

/// Where a session's frames go; `L` is the fast lane a WebSocket may lend (see [`Outbox`]).
pub enum Sink<L = ()> {
    /// A WebSocket's write half.
    WebSocket(Outbox<L>),
    /// The body of an SSE or streaming response.
    Body(PollSender<Bytes>),
}

impl<L> Sink<L> {
    /// Write `frame` if the sink can take it now (a text frame on a WebSocket).
    pub fn try_write(&mut self, frame: &ByteString) -> WriteOutcome {
        self.try_send(OpCode::Text, frame.as_bytes())
    }

    /// Write raw bytes if the sink can take them now: a binary WebSocket frame, or a chunk of
    /// the response body as is (used by the Cettia transports, whose frames may be binary).
    pub fn try_write_bytes(&mut self, bytes: Bytes) -> WriteOutcome {
        self.try_send(OpCode::Binary, &bytes)
    }

    /// The one write path: a WebSocket frame of `opcode`, or a body chunk.
    fn try_send(&mut self, opcode: OpCode, payload: &Bytes) -> WriteOutcome {
        match self {
            Sink::WebSocket(outbox) => outbox.send(opcode, payload),
            Sink::Body(body) => {
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(&mut *body).poll_ready(&mut cx) {
                    Poll::Pending => WriteOutcome::Full,
                    Poll::Ready(Err(_)) => WriteOutcome::Closed,
                    Poll::Ready(Ok(())) => match Pin::new(body).start_send(payload.clone()) {
                        Ok(()) => WriteOutcome::Written,
                        Err(_) => WriteOutcome::Closed,
                    },
                }
            }
        }
    }

    /// Ready when a frame can be written; registers `cx` to be woken otherwise.
    pub fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        match self {
            Sink::WebSocket(outbox) => outbox.poll_room(cx),
            Sink::Body(body) => Pin::new(body).poll_ready(cx).map_err(|_| ()),
        }
    }

    /// Close the transport: a WebSocket close frame with `reason`, or the end of the body.
    pub fn close(self, reason: Option<CloseReason>) {
        match self {
            Sink::WebSocket(outbox) => outbox.close(reason),
            // Dropping the sender ends the response body once the queued chunks are written.
            Sink::Body(body) => drop(body),
        }
    }
}
