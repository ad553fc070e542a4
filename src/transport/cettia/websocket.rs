//! Cettia and Vibe over WebSocket: a text frame is a text message, a binary frame a binary one.
use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use futures_util::StreamExt;

use super::socket::{
    AttachPush, InboundError, PushFraming, SocketActor, TransportClosed, TransportInbound,
};
use crate::protocol::cettia::WireMessage;
use crate::transport::Sink;

/// Upgrade `req` and attach the socket to `socket`; returns the `101` response.
pub async fn attach(
    req: &HttpRequest,
    body: web::Payload,
    socket: Addr<SocketActor>,
    max_message_bytes: usize,
    heartbeat_ms: Option<u64>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, stream) = actix_ws::handle(req, body)?;
    let generation = socket
        .send(AttachPush {
            sink: Sink::WebSocket(session.clone()),
            framing: PushFraming::WebSocket,
            body_closed: None,
            transport_id: None,
            heartbeat_ms,
        })
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    let stream = stream
        .max_frame_size(max_message_bytes)
        .aggregate_continuations()
        .max_continuation_size(max_message_bytes);
    actix_web::rt::spawn(async move {
        let mut stream = stream;
        let mut session = session;
        let close = |code: CloseCode, why: &str| {
            Some(CloseReason {
                code,
                description: Some(why.to_string()),
            })
        };
        while let Some(item) = stream.next().await {
            let message = match item {
                Ok(AggregatedMessage::Text(text)) => WireMessage::Text(text),
                Ok(AggregatedMessage::Binary(bytes)) => WireMessage::Binary(bytes),
                Ok(AggregatedMessage::Ping(payload)) => {
                    let _ = session.pong(&payload).await;
                    continue;
                }
                Ok(AggregatedMessage::Pong(_)) => continue,
                Ok(AggregatedMessage::Close(_)) => break,
                Err(error) => {
                    tracing::debug!(%error, "closing a Cettia websocket after a protocol error");
                    let reason = match error {
                        actix_ws::ProtocolError::Overflow => {
                            close(CloseCode::Size, "message too large")
                        }
                        _ => close(CloseCode::Protocol, "protocol error"),
                    };
                    let _ = session.close(reason).await;
                    break;
                }
            };
            match socket
                .send(TransportInbound {
                    generation,
                    message,
                })
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(InboundError::Event(error))) => {
                    let _ = session
                        .close(close(CloseCode::Invalid, &error.to_string()))
                        .await;
                    break;
                }
                Ok(Err(InboundError::TransportClosed)) | Err(_) => break,
            }
        }
        socket.do_send(TransportClosed(generation));
    });
    Ok(response)
}
