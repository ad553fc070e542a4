//! Server-Sent Events and HTTP streaming: one long response body per connection.
//!
//! Both push frames into a bounded channel that feeds the body; they differ only in framing
//! (SSE wraps each message in `data:` lines) and content type. No whitespace padding is sent:
//! atmosphere.js 5 would deliver it as a message.
use std::convert::Infallible;

use actix::Addr;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;

use crate::broker::SessionRecord;

use super::{Attach, Connection, Mode, Sink};

/// Chunks queued for the body before the connection counts the client as slow.
const BODY_CHANNEL: usize = 64;

/// Attach a new streaming body to `connection`; the returned response carries it.
pub async fn attach(
    connection: Addr<Connection>,
    mode: Mode,
    resume: Option<SessionRecord>,
) -> actix_web::Result<HttpResponse> {
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_CHANNEL);
    connection
        .send(Attach {
            sink: Sink::Body(PollSender::new(tx.clone())),
            mode,
            body_closed: Some(tx),
            resume,
        })
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    let content_type = if mode.framing.sse {
        "text/event-stream; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        // Ask nginx-style proxies not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(ReceiverStream::new(rx).map(Ok::<_, Infallible>)))
}
