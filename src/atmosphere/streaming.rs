//! Server-Sent Events and HTTP streaming: one long response body per connection.
//!
//! Both push frames into a bounded body (see [`crate::transport::body`]); they differ only in
//! framing (SSE wraps each message in `data:` lines) and content type. No whitespace padding is
//! sent: atmosphere.js 5 would deliver it as a message.
use actix::Addr;
use actix_web::HttpResponse;

use super::connection::Connection;
use super::messages::{Attach, Mode};
use crate::broker::SessionRecord;
use crate::error::HttpError;
use crate::transport::body;

/// Attach a new streaming body to `connection`; the returned response carries it.
pub async fn attach(
    connection: Addr<Connection>,
    mode: Mode,
    resume: Option<SessionRecord>,
) -> Result<HttpResponse, HttpError> {
    let (body, stream) = body::channel();
    connection
        .send(Attach {
            sink: body.sink(),
            mode,
            body: Some(body),
            resume,
        })
        .await
        .map_err(|_| HttpError::Unavailable("the session closed; retry".into()))?;
    let content_type = if mode.framing.sse {
        "text/event-stream; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    Ok(stream.respond(content_type, true))
}
