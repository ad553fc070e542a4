//! Cettia and Vibe over WebSocket: a text frame is a text message, a binary frame a binary one.
use actix::Addr;
use actix_http::ws::CloseCode;
use actix_web::{HttpRequest, HttpResponse};

use super::socket::{
    AttachPush, InboundError, PushFraming, SocketActor, TransportClosed, TransportInbound,
};
use std::sync::Arc;

use crate::node::Node;
use crate::protocol::cettia::WireMessage;
use crate::transport::ws::{self, close_reason, WsMessage};
use crate::transport::Sink;

/// Accept the upgrade in `req` and attach the socket to `socket`; returns the `101` response.
pub async fn attach(
    req: &HttpRequest,
    socket: Addr<SocketActor>,
    max_message_bytes: usize,
    heartbeat_ms: Option<u64>,
    node: Arc<Node>,
) -> actix_web::Result<HttpResponse> {
    let (response, outbox, pending) = ws::accept(req, &node)?;
    let generation = socket
        .send(AttachPush {
            sink: Sink::Socket(outbox.clone()),
            framing: PushFraming::WebSocket,
            body_closed: None,
            transport_id: None,
            heartbeat_ms,
        })
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    actix_web::rt::spawn(async move {
        ws::serve(pending, outbox, max_message_bytes, node, |message| {
            let socket = socket.clone();
            async move {
                let message = match message {
                    WsMessage::Text(text) => WireMessage::Text(text),
                    WsMessage::Binary(bytes) => WireMessage::Binary(bytes),
                };
                match socket
                    .send(TransportInbound {
                        generation,
                        transport: None,
                        message,
                    })
                    .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(InboundError::Event(error))) => {
                        Err(close_reason(CloseCode::Invalid, &error.to_string()))
                    }
                    Ok(Err(InboundError::TransportClosed | InboundError::Moved)) | Err(_) => {
                        Err(close_reason(CloseCode::Away, "socket closed"))
                    }
                }
            }
        })
        .await;
        socket.do_send(TransportClosed(generation));
    });
    Ok(response)
}
