//! Every path Nimbus does not reserve: an Atmosphere topic.
//!
//! GET opens or polls a transport, POST sends a message (or, with `X-Atmosphere-Transport=close`,
//! announces the client's departure).
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use bytestring::ByteString;

use super::connection::Connection;
use super::messages::{Close, Identify, Mode, PollRequest};
use super::{long_polling, streaming, websocket, Atmosphere, Client};
use crate::broker::{Published, SessionRecord};
use crate::error::HttpError;
use crate::node::{Node, Stats};
use crate::protocol::atmosphere::{AtmosphereRequest, RequestError, TransportKind};
use crate::session::{self, Cleared, Counted, Identity, Refused};
use crate::topic::{Audience, SessionId, StoreError};
use crate::transport::request_body;

/// Every path Nimbus does not reserve.
pub async fn topic(
    req: HttpRequest,
    body: web::Payload,
    atmosphere: web::Data<Atmosphere>,
) -> HttpResponse {
    // Answer errors here rather than returning them, so the node's headers are added to them.
    match handle(req, body, atmosphere.get_ref()).await {
        Ok(response) => response,
        Err(error) => error.atmosphere(),
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Payload,
    atmosphere: &Atmosphere,
) -> Result<HttpResponse, HttpError> {
    let topic = req.path().to_string();
    crate::topic::check_name(&topic).map_err(HttpError::Path)?;
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
    let node = atmosphere.node();

    match *req.method() {
        Method::GET => {
            let request = parsed?;
            let who = door(
                node,
                &req,
                request.auth.as_deref(),
                request.tracking_id.as_deref(),
            )?;
            open(atmosphere, &topic, request, who, &req).await
        }
        Method::POST => {
            // A POST is a message whatever else it says; only a malformed request is refused.
            let (request, token) = match parsed {
                Ok(request) => {
                    let token = request.auth.clone();
                    (Some(request), token)
                }
                Err(RequestError::NotAtmosphere) => (None, bearer(&req)),
                Err(error) => return Err(error.into()),
            };
            let id = request.as_ref().and_then(|r| r.tracking_id.as_deref());
            let who = door(node, &req, token.as_deref(), id)?;
            match request {
                Some(request) if request.transport == TransportKind::Close => {
                    Ok(close(atmosphere, &request))
                }
                _ => {
                    // A POST without a tracking id is no session's: its rate is its user's, or
                    // its address's.
                    if id.is_none() {
                        node.gate.rate(&who, "ip:unknown", 1)?;
                    }
                    let from = sender(atmosphere, &topic, id).with_identity(who);
                    post_message(atmosphere, from, body).await
                }
            }
        }
        ref other => Err(HttpError::MethodNotAllowed {
            method: other.to_string(),
            allowed: "GET or POST",
        }),
    }
}

/// Who the request comes from, and whether the tracking id it carries is its own (the gate).
fn door(
    node: &Node,
    req: &HttpRequest,
    token: Option<&str>,
    id: Option<&str>,
) -> Result<Identity, Refused> {
    node.gate.enter(token, session::caller(node, req), &[id])
}

/// A plain POST's token: `X-Atmosphere-Auth`, or `Authorization: Bearer`.
fn bearer(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    value("X-Atmosphere-Auth")
        .or_else(|| value("Authorization").and_then(|v| v.strip_prefix("Bearer ")))
        .map(str::to_string)
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

/// The connection for this request's tracking id (a new one, with an id issued to `who`, for
/// `0`), told who its client is on this request.
fn connection_for(
    atmosphere: &Atmosphere,
    topic: &Cleared,
    request: &AtmosphereRequest,
    who: Identity,
    counted: Counted,
) -> (SessionId, Addr<Connection>, bool) {
    let node = atmosphere.node();
    let id: SessionId = match &request.tracking_id {
        Some(id) => id.as_str().into(),
        None => node.gate.issue(&who).into(),
    };
    let mode = mode_for(node, request);
    let history = crate::session::history_on_join(node, topic, request.history);
    let (addr, created) =
        atmosphere
            .registry()
            .get_or_start(&id, topic.topic(), who.user_id(), || {
                let present = crate::session::present(node, topic, &who);
                Connection::new(id.clone(), topic.clone(), atmosphere.clone(), mode)
                    .joining(history, present, request.presence)
                    .counted(counted)
                    .start()
            });
    addr.do_send(Identify(who));
    (id, addr, created)
}

/// Who POSTed a message: the client of `tracking_id` (atmosphere.js always sends it), or an
/// anonymous sender of the topic.
fn sender(atmosphere: &Atmosphere, topic: &str, tracking_id: Option<&str>) -> Client {
    let id = tracking_id.unwrap_or_default();
    Client::new(id.into(), topic.into(), atmosphere.clone())
}

async fn open(
    atmosphere: &Atmosphere,
    topic: &str,
    request: AtmosphereRequest,
    who: Identity,
    req: &HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let node = atmosphere.node();
    if request.transport == TransportKind::Close {
        return Ok(close(atmosphere, &request));
    }
    if request.transport == TransportKind::WebSocket {
        if let Some(refused) = session::websocket::upgrade_refused(node, req) {
            return Err(refused.into());
        }
    }
    let topic = node.gate.subscribe(&who, 0, [topic])?.remove(0);
    let first_request = request.tracking_id.is_none();
    let counted = admission(atmosphere, &request, &who).await?;
    let (id, connection, created) = connection_for(atmosphere, &topic, &request, who, counted);
    let topic: &str = topic.topic();
    let mut response = match request.transport {
        TransportKind::WebSocket | TransportKind::Sse | TransportKind::Streaming => {
            push(node, topic, &id, connection, &request, req).await?
        }
        TransportKind::LongPolling => {
            long_poll(node, topic, &id, connection, request, created).await
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

/// A request that opens a session (no tracking id, or one this node has no connection for
/// and the cluster never issued: a client-chosen id) is a new connection, let in by
/// [`session::admit`]; one that resumes a session issued before is counted, never refused
/// (a session live here already counts).
async fn admission(
    atmosphere: &Atmosphere,
    request: &AtmosphereRequest,
    who: &Identity,
) -> Result<Counted, Refused> {
    let node = atmosphere.node();
    match request.tracking_id.as_deref() {
        Some(id) if atmosphere.registry().get(id).is_some() => Ok(Counted::default()),
        Some(id) if node.gate.was_issued(id, who) => Ok(session::count(node, who)),
        _ => session::admit(node, who).await,
    }
}

/// Attach a pushing transport (WebSocket, SSE, streaming) to the client's connection.
async fn push(
    node: &Arc<Node>,
    topic: &str,
    id: &SessionId,
    connection: Addr<Connection>,
    request: &AtmosphereRequest,
    req: &HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let mode = mode_for(node, request);
    // Clustered: where the client stood when it left another node.
    let resume = if node.is_clustered() && request.tracking_id.is_some() {
        session_record(topic, id, node.broker.load_session(id.clone())).await
    } else {
        None
    };
    if request.transport == TransportKind::WebSocket {
        Ok(websocket::attach(req, connection, mode, resume, node).await?)
    } else {
        streaming::attach(connection, mode, resume).await
    }
}

/// One long-poll of the client's connection.
async fn long_poll(
    node: &Arc<Node>,
    topic: &str,
    id: &SessionId,
    connection: Addr<Connection>,
    request: AtmosphereRequest,
    created: bool,
) -> HttpResponse {
    let first_request = request.tracking_id.is_none();
    // A client holds one poll at a time and re-polls only after an answer: a poll that finds
    // its previous one unanswered (still parked, dropped by the client, or on a node that
    // died) comes from a client that is reconnecting. In a cluster the session record knows
    // that, whichever node had the previous poll.
    let resume = if node.is_clustered() && !first_request {
        session_record(topic, id, node.broker.begin_poll(id.clone())).await
    } else {
        None
    };
    let reconnect = match &resume {
        Some(record) => record.polling,
        None => created && !first_request,
    };
    // Only a client that asked for the protocol gets the handshake-only answer; without
    // `X-atmo-protocol` (atmosphere.js 5's default) the first poll is an ordinary poll, or the
    // client would deliver `uuid|hb|X|` to its application as a message.
    let poll = PollRequest {
        mode: mode_for(node, &request),
        handshake_only: first_request && request.protocol,
        reconnect,
        session_token: request.session_token,
        resume,
    };
    long_polling::poll(node, id, topic, connection, poll).await
}

/// A session record read from the cluster; an unreachable cluster reads as none (the node then
/// treats the client as it would on a single node).
/// A record of another topic (the same tracking id used on another path) does not apply.
async fn session_record(
    topic: &str,
    id: &SessionId,
    read: impl std::future::Future<Output = Result<Option<SessionRecord>, StoreError>>,
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
fn close(atmosphere: &Atmosphere, request: &AtmosphereRequest) -> HttpResponse {
    if let Some(connection) = request
        .tracking_id
        .as_deref()
        .and_then(|id| atmosphere.registry().get(id))
    {
        connection.do_send(Close);
    }
    HttpResponse::Ok().finish()
}

async fn post_message(
    atmosphere: &Atmosphere,
    from: Client,
    body: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let node = atmosphere.node();
    let (limit, timeout) = (node.config.max_message_bytes, node.config.body_timeout());
    let bytes = request_body::read(body, limit, timeout).await?;
    let text = ByteString::try_from(bytes)
        .map_err(|_| HttpError::Malformed("message body is not valid UTF-8".into()))?;
    let Some(message) = atmosphere.judge(&from, text)? else {
        return Ok(HttpResponse::Ok().finish());
    };
    let published = node
        .broker
        .publish_confirmed(from.topic(), Audience::All, message)
        .await?;
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
