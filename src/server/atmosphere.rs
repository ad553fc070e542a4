//! Every path Nimbus does not reserve: an Atmosphere topic.
//!
//! GET opens or polls a transport, POST sends a message (or, with `X-Atmosphere-Transport=close`,
//! announces the client's departure).
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use bytestring::ByteString;
use futures_util::StreamExt;

use crate::broker::{BrokerError, Published, SessionRecord};
use crate::error::HttpError;
use crate::node::Node;
use crate::node::Stats;
use crate::protocol::atmosphere::{AtmosphereRequest, RequestError, TransportKind};
use crate::topic::Audience;
use crate::topic::SessionId;
use crate::transport::{
    client_message, long_polling, sse_streaming, websocket, Close, Connection, Mode,
};

/// Longest topic path accepted.
const MAX_TOPIC_LEN: usize = 512;

pub async fn topic(req: HttpRequest, body: web::Payload, node: web::Data<Node>) -> HttpResponse {
    // Answer errors here rather than returning them, so the node's headers are added to them.
    match handle(req, body, node).await {
        Ok(response) => response,
        Err(error) => error.error_response(),
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Payload,
    node: web::Data<Node>,
) -> Result<HttpResponse, actix_web::Error> {
    let node = node.into_inner();
    let topic = req.path().to_string();
    if topic.len() > MAX_TOPIC_LEN {
        return Ok(HttpResponse::UriTooLong()
            .body(format!("topic paths are at most {MAX_TOPIC_LEN} bytes\n")));
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let header_value = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let parsed = AtmosphereRequest::parse(req.query_string(), header_value, upgrade);

    match *req.method() {
        Method::GET => {
            let request = parsed.map_err(HttpError::from)?;
            open(&node, &topic, request, &req).await
        }
        Method::POST => match parsed {
            Ok(request) if request.transport == TransportKind::Close => Ok(close(&node, &request)),
            // A POST is a message whatever else it says; only a malformed request is refused.
            Ok(_) | Err(RequestError::NotAtmosphere) => post_message(&node, &topic, body).await,
            Err(error) => Err(HttpError::from(error).into()),
        },
        ref other => Err(HttpError::MethodNotAllowed(other.to_string()).into()),
    }
}

fn mode_for(node: &Node, request: &AtmosphereRequest) -> Mode {
    let configured = node.config.heartbeat();
    let heartbeat = match (configured, request.heartbeat_server) {
        (_, Some(0)) => None,
        // A client may ask for a longer interval, never a shorter one.
        (Some(hb), Some(asked)) => Some(hb.max(Duration::from_secs(asked))),
        (None, Some(asked)) => Some(Duration::from_secs(asked)),
        (hb, None) => hb,
    };
    Mode {
        framing: request.framing(),
        protocol: request.protocol,
        heartbeat,
    }
}

/// The connection for this request's tracking id (a new one, with a fresh id, for `0`).
fn connection_for(
    node: &Arc<Node>,
    topic: &str,
    request: &AtmosphereRequest,
) -> (SessionId, Addr<Connection>, bool) {
    let id: SessionId = match &request.tracking_id {
        Some(id) => id.as_str().into(),
        None => uuid::Uuid::new_v4().to_string().into(),
    };
    let mode = mode_for(node, request);
    let (addr, created) = node.connections.get_or_start(&id, topic, || {
        Connection::new(id.clone(), topic.into(), node.clone(), mode).start()
    });
    (id, addr, created)
}

async fn open(
    node: &Arc<Node>,
    topic: &str,
    request: AtmosphereRequest,
    req: &HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    if request.transport == TransportKind::Close {
        return Ok(close(node, &request));
    }
    // Browsers do not apply CORS to WebSocket upgrades, so the allow-list is enforced here:
    // otherwise any site could open a socket with the user's cookies (cross-site hijacking).
    if request.transport == TransportKind::WebSocket {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            if !super::headers::origin_allowed(node, origin) {
                return Ok(HttpResponse::Forbidden()
                    .content_type("text/plain; charset=utf-8")
                    .body("this origin is not in the node's CORS allow-list\n"));
            }
        }
    }
    if request.transport == TransportKind::WebSocket && node.config.disable_websocket {
        return Ok(HttpResponse::NotImplemented()
            .insert_header(("X-Atmosphere-error", "Websocket protocol not supported"))
            .body("WebSocket is disabled on this node; use sse, streaming or long-polling\n"));
    }
    let first_request = request.tracking_id.is_none();
    let (id, connection, created) = connection_for(node, topic, &request);
    let mode = mode_for(node, &request);
    let clustered = node.broker.numbers_messages() && !first_request;
    let mut response = match request.transport {
        TransportKind::WebSocket | TransportKind::Sse | TransportKind::Streaming => {
            // Clustered: where the client stood when it left another node.
            let resume = if clustered {
                session_record(topic, &id, node.broker.load_session(id.clone())).await
            } else {
                None
            };
            if request.transport == TransportKind::WebSocket {
                let limit = node.config.max_message_bytes;
                websocket::attach(req, connection, mode, limit, resume, node.clone()).await?
            } else {
                sse_streaming::attach(connection, mode, resume).await?
            }
        }
        TransportKind::LongPolling => {
            // A client holds one poll at a time and re-polls only after an answer: a poll that
            // finds its previous one unanswered (still parked, dropped by the client, or on a
            // node that died) comes from a client that is reconnecting. In a cluster the
            // session record knows that, whichever node had the previous poll.
            let resume = if clustered {
                session_record(topic, &id, node.broker.begin_poll(id.clone())).await
            } else {
                None
            };
            let reconnect = match &resume {
                Some(record) => record.polling,
                None => created && !first_request,
            };
            // Only a client that asked for the protocol gets the handshake-only answer; without
            // `X-atmo-protocol` (atmosphere.js 5's default) the first poll is an ordinary poll,
            // or the client would deliver `uuid|hb|X|` to its application as a message.
            let handshake_only = first_request && request.protocol;
            let poll = long_polling::PollRequest {
                mode,
                handshake_only,
                reconnect,
                session_token: request.session_token,
                resume,
            };
            long_polling::poll(node, &id, topic, connection, poll).await
        }
        TransportKind::Close => unreachable!("handled above"),
    };
    let headers = response.headers_mut();
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        headers.insert(
            header::HeaderName::from_static("x-atmosphere-tracking-id"),
            value,
        );
    }
    if first_request {
        headers.insert(
            header::HeaderName::from_static("x-atmosphere-first-request"),
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// A session record read from the cluster; an unreachable cluster reads as none (the node then
/// treats the client as it would on a single node).
/// A record of another topic (the same tracking id used on another path) does not apply.
async fn session_record(
    topic: &str,
    id: &SessionId,
    read: impl std::future::Future<Output = Result<Option<SessionRecord>, BrokerError>>,
) -> Option<SessionRecord> {
    match read.await {
        Ok(record) => record.filter(|r| r.topic.as_deref().is_none_or(|t| t == topic)),
        Err(error) => {
            tracing::warn!(session = %id, %error, "cannot read the session record");
            None
        }
    }
}

/// `X-Atmosphere-Transport=close`: the client leaves; its connection ends now.
fn close(node: &Node, request: &AtmosphereRequest) -> HttpResponse {
    if let Some(connection) = request
        .tracking_id
        .as_deref()
        .and_then(|id| node.connections.get(id))
    {
        connection.do_send(Close);
    }
    HttpResponse::Ok().finish()
}

async fn post_message(
    node: &Node,
    topic: &str,
    mut body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let limit = node.config.max_message_bytes;
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| HttpError::Body(e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(HttpError::TooLarge {
                size: bytes.len() + chunk.len(),
                limit,
            }
            .into());
        }
        bytes.extend_from_slice(&chunk);
    }
    let text = ByteString::try_from(bytes.freeze()).map_err(|_| HttpError::InvalidUtf8)?;
    let Some(message) = client_message(node, text) else {
        return Ok(HttpResponse::Ok().finish());
    };
    let published = node
        .broker
        .publish_confirmed(topic, Audience::All, message)
        .await
        .map_err(HttpError::Publish)?;
    Stats::add(&node.stats.published, 1);
    Ok(published_response(published))
}

/// `200` once the message is numbered (it reaches every subscriber); `202` while it waits on
/// this node for an unreachable cluster.
pub fn published_response(published: Published) -> HttpResponse {
    match published {
        Published::Numbered => HttpResponse::Ok().finish(),
        Published::Queued => HttpResponse::Accepted()
            .content_type("text/plain; charset=utf-8")
            .body("queued: the cluster is unreachable; the message goes out when it is back\n"),
    }
}
