//! The WebSocket transport: actix-ws for the socket, the connection actor for everything else.
//!
//! Outbound frames go from the connection actor straight into actix-ws's bounded session
//! channel. Inbound frames are read by a small task on the worker that accepted the socket
//! (actix-ws's stream is not `Send`) and handed to the connection actor one at a time.
use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Item, Message, ProtocolError};
use bytes::BytesMut;
use bytestring::ByteString;
use futures_util::StreamExt;

use crate::broker::SessionRecord;

use super::{Attach, Connection, Detach, Inbound, Sink};

/// Upgrade `req` and attach the socket to `connection`; returns the `101` response.
pub async fn attach(
    req: &HttpRequest,
    body: web::Payload,
    connection: Addr<Connection>,
    mode: super::Mode,
    max_message_bytes: usize,
    resume: Option<SessionRecord>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, stream) = actix_ws::handle(req, body)?;
    let generation = connection
        .send(Attach {
            sink: Sink::WebSocket(session.clone()),
            mode,
            body_closed: None,
            resume,
        })
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    let stream = stream.max_frame_size(max_message_bytes);
    actix_web::rt::spawn(read_inbound(
        stream,
        session,
        connection,
        generation,
        max_message_bytes,
    ));
    Ok(response)
}

async fn read_inbound(
    mut stream: actix_ws::MessageStream,
    mut session: actix_ws::Session,
    connection: Addr<Connection>,
    generation: u64,
    max_message_bytes: usize,
) {
    let close = |code: CloseCode, why: &str| {
        Some(CloseReason {
            code,
            description: Some(why.to_string()),
        })
    };
    // A message the client sent in several frames (a first frame, then continuations): actix-ws
    // hands over the pieces one by one; they are gathered here, up to `max_message_bytes` in
    // all (the per-frame limit alone would let a fragmented message grow without bound).
    let mut fragments: Option<BytesMut> = None;
    while let Some(message) = stream.next().await {
        // Each frame yields a whole message's bytes, nothing (control frames, unfinished
        // fragments), or a reason to close.
        let bytes = match message {
            Ok(Message::Text(text)) => text.into_bytes(),
            Ok(Message::Binary(bytes)) => bytes,
            Ok(Message::Ping(payload)) => {
                let _ = session.pong(&payload).await;
                continue;
            }
            Ok(Message::Continuation(item)) => {
                let (bytes, last) = match item {
                    Item::FirstText(bytes) | Item::FirstBinary(bytes) => {
                        fragments = Some(BytesMut::new());
                        (bytes, false)
                    }
                    Item::Continue(bytes) => (bytes, false),
                    Item::Last(bytes) => (bytes, true),
                };
                // actix-http rejects continuations out of order; this is only a safety net.
                let Some(buffer) = fragments.as_mut() else {
                    let reason = close(CloseCode::Protocol, "continuation without a first frame");
                    let _ = session.close(reason).await;
                    break;
                };
                if buffer.len() + bytes.len() > max_message_bytes {
                    let _ = session
                        .close(close(CloseCode::Size, "message too large"))
                        .await;
                    break;
                }
                buffer.extend_from_slice(&bytes);
                if !last {
                    continue;
                }
                fragments.take().unwrap_or_default().freeze()
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(error) => {
                let reason = match &error {
                    ProtocolError::Overflow => close(CloseCode::Size, "message too large"),
                    // actix-ws reports a text frame that is not UTF-8 as an `InvalidData` I/O
                    // error; RFC 6455 (7.4.1) closes that with 1007, like a binary frame below.
                    ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                        close(CloseCode::Invalid, "message is not valid UTF-8")
                    }
                    _ => close(CloseCode::Protocol, "protocol error"),
                };
                tracing::debug!(%error, "closing websocket after a protocol error");
                let _ = session.close(reason).await;
                break;
            }
        };
        // Atmosphere messages are text; a binary or reassembled message must be UTF-8 too.
        let Ok(text) = ByteString::try_from(bytes) else {
            let _ = session
                .close(close(CloseCode::Invalid, "message is not valid UTF-8"))
                .await;
            break;
        };
        match connection.send(Inbound(text)).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                let _ = session
                    .close(close(CloseCode::Again, &refused.to_string()))
                    .await;
                break;
            }
            Err(_) => break,
        }
    }
    connection.do_send(Detach(generation));
}
