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
use crate::session::websocket::UpgradeRefused;
use crate::session::{self, AuthError, Cleared, Counted, Identity, Refused};
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
        Err(error) => error.error_response(),
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Payload,
    atmosphere: &Atmosphere,
) -> Result<HttpResponse, actix_web::Error> {
    let topic = req.path().to_string();
    if let Err(bad) = crate::topic::check_name(&topic) {
        return Ok(HttpResponse::UriTooLong().body(format!("{bad}\n")));
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
    let node = atmosphere.node();

    match *req.method() {
        Method::GET => {
            let request = parsed.map_err(HttpError::from)?;
            let who = match door(
                node,
                &req,
                request.auth.as_deref(),
                request.tracking_id.as_deref(),
            ) {
                Ok(who) => who,
                Err(refused) => return Ok(*refused),
            };
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
                Err(error) => return Err(HttpError::from(error).into()),
            };
            let id = request.as_ref().and_then(|r| r.tracking_id.as_deref());
            let who = match door(node, &req, token.as_deref(), id) {
                Ok(who) => who,
                Err(refused) => return Ok(*refused),
            };
            match request {
                Some(request) if request.transport == TransportKind::Close => {
                    Ok(close(atmosphere, &request))
                }
                _ => {
                    // A POST without a tracking id is no session's: its rate is its user's, or
                    // its address's.
                    if id.is_none() {
                        if let Err(limited) = node.gate.rate(&who, "ip:unknown", 1) {
                            return Err(HttpError::Gate(limited).into());
                        }
                    }
                    let from = sender(atmosphere, &topic, id).with_identity(who);
                    post_message(atmosphere, from, body).await
                }
            }
        }
        ref other => Err(HttpError::MethodNotAllowed(other.to_string()).into()),
    }
}

/// Who the request comes from, and whether the tracking id it carries is its own (the gate).
fn door(
    node: &Node,
    req: &HttpRequest,
    token: Option<&str>,
    id: Option<&str>,
) -> Result<Identity, Box<HttpResponse>> {
    node.gate
        .enter(token, session::caller(node, req), &[id])
        .map_err(|refused| Box::new(refusal(refused)))
}

/// A refusal of the gate on Atmosphere's wire: a missing, expired or forged token is `401`
/// (with `X-Atmosphere-Auth-Expired` for an expired one, which atmosphere.js reports through
/// `authExpired`), an id issued to someone else (or never issued) or a namespace that forbids
/// it `403`, a limit `429`; each with `X-Atmosphere-error` saying why, which atmosphere.js
/// hands to its error callback.
fn refusal(refused: Refused) -> HttpResponse {
    let mut response = HttpResponse::build(refused.status());
    response.insert_header(("X-Atmosphere-error", refused.to_string()));
    if refused == Refused::Auth(AuthError::Expired) {
        response.insert_header(("X-Atmosphere-Auth-Expired", "true"));
    }
    if refused.status() == actix_web::http::StatusCode::TOO_MANY_REQUESTS {
        response.insert_header((header::RETRY_AFTER, "1"));
    }
    response
        .content_type("text/plain; charset=utf-8")
        .body(format!("{refused}\n"))
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
) -> Result<HttpResponse, actix_web::Error> {
    let node = atmosphere.node();
    if request.transport == TransportKind::Close {
        return Ok(close(atmosphere, &request));
    }
    if request.transport == TransportKind::WebSocket {
        if let Some(refused) = websocket_refused(node, req) {
            return Ok(refused);
        }
    }
    let topic = match node.gate.subscribe(&who, 0, [topic]) {
        Ok(mut cleared) => cleared.remove(0),
        Err(refused) => return Ok(refusal(refused)),
    };
    let first_request = request.tracking_id.is_none();
    let counted = match admission(atmosphere, &request, &who).await {
        Ok(counted) => counted,
        Err(refused) => return Ok(refusal(refused)),
    };
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

/// The upgrade checks both protocols share (`session::websocket::upgrade_refused`), on
/// Atmosphere's wire: a disabled WebSocket is `501` with the `X-Atmosphere-error` atmosphere.js
/// answers by falling back to another transport.
fn websocket_refused(node: &Node, req: &HttpRequest) -> Option<HttpResponse> {
    let refused = crate::session::websocket::upgrade_refused(node, req)?;
    let mut response = match refused {
        UpgradeRefused::Disabled => {
            let mut response = HttpResponse::NotImplemented();
            response.insert_header(("X-Atmosphere-error", "Websocket protocol not supported"));
            response
        }
        UpgradeRefused::Origin => HttpResponse::Forbidden(),
    };
    Some(
        response
            .content_type("text/plain; charset=utf-8")
            .body(format!("{refused}\n")),
    )
}

/// Attach a pushing transport (WebSocket, SSE, streaming) to the client's connection.
async fn push(
    node: &Arc<Node>,
    topic: &str,
    id: &SessionId,
    connection: Addr<Connection>,
    request: &AtmosphereRequest,
    req: &HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    let mode = mode_for(node, request);
    // Clustered: where the client stood when it left another node.
    let resume = if node.is_clustered() && request.tracking_id.is_some() {
        session_record(topic, id, node.broker.load_session(id.clone())).await
    } else {
        None
    };
    if request.transport == TransportKind::WebSocket {
        websocket::attach(req, connection, mode, resume, node).await
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
) -> Result<HttpResponse, actix_web::Error> {
    let node = atmosphere.node();
    let (limit, timeout) = (node.config.max_message_bytes, node.config.body_timeout());
    let bytes = request_body::read(body, limit, timeout)
        .await
        .map_err(HttpError::from)?;
    let text = ByteString::try_from(bytes).map_err(|_| HttpError::InvalidUtf8)?;
    let message = match atmosphere.judge(&from, text) {
        Ok(Some(message)) => message,
        Ok(None) => return Ok(HttpResponse::Ok().finish()),
        Err(refused) => return Err(HttpError::from_inbound(refused).into()),
    };
    let published = node
        .broker
        .publish_confirmed(from.topic(), Audience::All, message)
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
