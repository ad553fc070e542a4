//! The transport contract for pushed frames: a bounded sink a connection writes into without
//! waiting, and a way to be woken when it can take more.
//!
//! WebSocket frames go into actix-ws's session (a bounded channel drained by the HTTP
//! dispatcher); SSE and streaming chunks go into the bounded channel behind the response body.
//! Both are polled with a no-op waker first, so a frame for a socket that can take it costs no
//! task wake-up beyond the dispatcher's; only a full sink makes the connection wait.
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use bytestring::ByteString;
use futures_util::Sink as _;
use tokio_util::sync::PollSender;

/// Where a connection's frames go.
pub enum Sink {
    WebSocket(actix_ws::Session),
    /// The body of an SSE or streaming response.
    Body(PollSender<Bytes>),
}

/// Result of a non-blocking write.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The sink is full; poll [`Sink::poll_writable`] before writing again.
    Full,
    /// The client is gone.
    Closed,
}

impl Sink {
    /// Write `frame` if the sink can take it now.
    pub fn try_write(&mut self, frame: &ByteString) -> WriteOutcome {
        self.try_send(
            || actix_ws::Message::Text(frame.clone()),
            || frame.as_bytes().clone(),
        )
    }

    /// Write raw bytes if the sink can take them now: a binary WebSocket frame, or a chunk of
    /// the response body as is (used by the Cettia transports, whose frames may be binary).
    pub fn try_write_bytes(&mut self, bytes: Bytes) -> WriteOutcome {
        let chunk = bytes.clone();
        self.try_send(|| actix_ws::Message::Binary(bytes), || chunk)
    }

    /// The one write path: poll readiness with a no-op waker, then hand over the WebSocket
    /// message or the body chunk (built only for the sink that takes it).
    fn try_send(
        &mut self,
        message: impl FnOnce() -> actix_ws::Message,
        chunk: impl FnOnce() -> Bytes,
    ) -> WriteOutcome {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_writable(&mut cx) {
            Poll::Pending => return WriteOutcome::Full,
            Poll::Ready(Err(())) => return WriteOutcome::Closed,
            Poll::Ready(Ok(())) => {}
        }
        let sent = match self {
            Sink::WebSocket(session) => Pin::new(session).start_send(message()).is_ok(),
            Sink::Body(body) => Pin::new(body).start_send(chunk()).is_ok(),
        };
        if sent {
            WriteOutcome::Written
        } else {
            WriteOutcome::Closed
        }
    }

    /// Ready when a frame can be written; registers `cx` to be woken otherwise.
    pub fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        match self {
            Sink::WebSocket(session) => Pin::new(session).poll_ready(cx).map_err(|_| ()),
            Sink::Body(body) => Pin::new(body).poll_ready(cx).map_err(|_| ()),
        }
    }

    /// Close the transport: a WebSocket close frame with `reason`, or the end of the body.
    pub fn close(self, reason: Option<actix_ws::CloseReason>) {
        match self {
            Sink::WebSocket(session) => {
                actix_web::rt::spawn(async move {
                    let _ = session.close(reason).await;
                });
            }
            // Dropping the sender ends the response body once the queued chunks are written.
            Sink::Body(body) => drop(body),
        }
    }
}
