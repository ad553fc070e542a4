//! The Atmosphere WebSocket transport: the WebSocket's write half is the connection's sink, and its
//! messages go to the connection actor one at a time (see [`crate::session::websocket`]).
use std::sync::Arc;

use actix::Addr;
use actix_http::ws::CloseCode;
use actix_web::{HttpRequest, HttpResponse};
use bytestring::ByteString;

use super::connection::Connection;
use super::messages::{Attach, Detach, Inbound, Mode};
use crate::broker::SessionRecord;
use crate::node::Node;
use crate::session::websocket::{self, gone, refusal, UpgradeRefused};
use crate::transport::ws::{close_reason, WsMessage};

/// Accept the upgrade in `req` and attach the WebSocket to `connection`; returns the `101` response.
pub async fn attach(
    req: &HttpRequest,
    connection: Addr<Connection>,
    mode: Mode,
    resume: Option<SessionRecord>,
    node: &Arc<Node>,
) -> Result<HttpResponse, UpgradeRefused> {
    let attaching = connection.clone();
    let detaching = connection.clone();
    websocket::attach(
        req,
        node,
        move |sink| {
            attaching.send(Attach {
                sink,
                mode,
                body: None,
                resume,
            })
        },
        move |_generation, message| {
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
                    Ok(Err(refused)) => Err(refusal(&refused)),
                    Err(error) => Err(gone(error)),
                }
            }
        },
        move |generation| detaching.do_send(Detach(generation)),
    )
    .await
}
