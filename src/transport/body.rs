//! Server-Sent Events and HTTP streaming bodies: one long response whose chunks a session
//! pushes into a bounded channel.
//!
//! The channel's bound is the transport's: a client that reads slower than its session writes
//! fills it, and the session's slow-consumer policy takes over (see [`super::Sink`]). The
//! response ends when the session drops its sender; the session learns that the client left
//! when [`Body::closed`] resolves.
use std::convert::Infallible;

use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;

use super::Sink;

/// Chunks queued for a body before its session counts the client as slow.
pub const BODY_CHANNEL: usize = 64;

/// The session's end of a streaming body.
pub struct Body {
    sender: mpsc::Sender<Bytes>,
}

/// The response's end: becomes the streaming response.
pub struct BodyStream {
    receiver: mpsc::Receiver<Bytes>,
}

/// A new body: the session's end and the response's end.
pub fn channel() -> (Body, BodyStream) {
    let (sender, receiver) = mpsc::channel(BODY_CHANNEL);
    (Body { sender }, BodyStream { receiver })
}

// === impl Body ===

impl Body {
    /// Queue `chunk` before the session writes anything (a preamble); `false` if it does not fit.
    pub fn preface(&self, chunk: Bytes) -> bool {
        self.sender.try_send(chunk).is_ok()
    }

    /// The sink the session writes chunks into.
    pub fn sink<L>(&self) -> Sink<L> {
        Sink::Body(PollSender::new(self.sender.clone()))
    }

    /// Resolves when the client is gone (the response was dropped).
    pub async fn closed(self) {
        self.sender.closed().await
    }
}

// === impl BodyStream ===

impl BodyStream {
    /// The `200` response streaming the body, of `content_type`. Proxies in the nginx style are
    /// asked not to buffer it when `unbuffered`.
    pub fn respond(self, content_type: &str, unbuffered: bool) -> HttpResponse {
        let mut response = HttpResponse::Ok();
        response.content_type(content_type);
        if unbuffered {
            response.insert_header(("X-Accel-Buffering", "no"));
        }
        response.streaming(ReceiverStream::new(self.receiver).map(Ok::<_, Infallible>))
    }
}
