//! The Atmosphere WebSocket transport: the socket's write half is the connection's sink, and its
//! messages go to the connection actor one at a time (see [`super::ws`]).
use actix::Addr;
use actix_http::ws::CloseCode;
use actix_web::{HttpRequest, HttpResponse};
use bytestring::ByteString;

use std::sync::Arc;

use crate::broker::SessionRecord;
use crate::node::Node;

use super::ws::{self, close_reason, WsMessage};
use super::{Attach, Connection, Detach, Inbound, Sink};

/// Accept the upgrade in `req` and attach the socket to `connection`; returns the `101` response.
pub async fn attach(
    req: &HttpRequest,
    connection: Addr<Connection>,
    mode: super::Mode,
    max_message_bytes: usize,
    resume: Option<SessionRecord>,
    node: Arc<Node>,
) -> actix_web::Result<HttpResponse> {
    let (response, outbox, socket) = ws::accept(req, &node)?;
    let generation = connection
        .send(Attach {
            sink: Sink::Socket(outbox.clone()),
            mode,
            body_closed: None,
            resume,
        })
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    actix_web::rt::spawn(async move {
        ws::serve(socket, outbox, max_message_bytes, node, |message| {
            let connection = connection.clone();
            async move {
                // Atmosphere messages are text; a binary message must be UTF-8 too.
                let text = match message {
                    WsMessage::Text(text) => text,
                    WsMessage::Binary(bytes) => ByteString::try_from(bytes).map_err(|_| {
                        close_reason(CloseCode::Invalid, "message is not valid UTF-8")
                    })?,
                };
                match connection.send(Inbound(text)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(refused)) => Err(close_reason(CloseCode::Again, &refused.to_string())),
                    Err(_) => Err(close_reason(CloseCode::Away, "connection closed")),
                }
            }
        })
        .await;
        connection.do_send(Detach(generation));
    });
    Ok(response)
}
