//! Cettia and Vibe over WebSocket: a text frame is a text message, a binary frame a binary one.
use std::sync::Arc;

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse};

use super::messages::{AttachPush, PushFraming, TransportClosed, TransportInbound};
use super::socket::SocketActor;
use crate::node::Node;
use crate::protocol::cettia::WireMessage;
use crate::session::websocket::{self, gone, refusal, UpgradeRefused};
use crate::transport::ws::WsMessage;

/// Accept the upgrade in `req` and attach the socket to `socket`; returns the `101` response.
pub async fn attach(
    req: &HttpRequest,
    socket: Addr<SocketActor>,
    heartbeat_ms: Option<u64>,
    node: &Arc<Node>,
) -> Result<HttpResponse, UpgradeRefused> {
    let attaching = socket.clone();
    let closing = socket.clone();
    websocket::attach(
        req,
        node,
        move |sink| {
            attaching.send(AttachPush {
                sink,
                framing: PushFraming::WebSocket,
                kind: crate::transport::TransportKind::WebSocket,
                body: None,
                transport_id: None,
                heartbeat_ms,
            })
        },
        move |generation, message| {
            let socket = socket.clone();
            async move {
                let message = match message {
                    WsMessage::Text(text) => WireMessage::Text(text),
                    WsMessage::Binary(bytes) => WireMessage::Binary(bytes),
                };
                let inbound = TransportInbound {
                    generation,
                    transport: None,
                    message,
                };
                match socket.send(inbound).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(refused)) => Err(refusal(&refused)),
                    Err(error) => Err(gone(error)),
                }
            }
        },
        move |generation| closing.do_send(TransportClosed(generation)),
    )
    .await
}
