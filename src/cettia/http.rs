//! `/cettia` (Cettia 1.0) and `/vibe` (Vibe 3.0.0-Alpha1): HTTP transports and WebSocket
//! upgrades handed to the socket actors of [`crate::cettia`].
//!
//! Errors are [`HttpError`]s rendered on Cettia's wire; their statuses follow the reference
//! server: an unknown transport or `when` → 501, an unknown transport id or an unsupported POST
//! content type → 500, other methods → 405; plus 400 for a malformed request (query string,
//! JSONP callback, topic) and 413 for a message over `--max-message-bytes`. Every error has a
//! plain-text body saying what is wrong.
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::sync::oneshot;

use super::cluster::Handled;
use super::messages::Identify;
use super::messages::{
    AttachLongPoll, AttachPush, LongPoll, PollAnswer, PushFraming, TransportClosed,
    TransportInbound,
};
use super::socket::SocketActor;
use super::{websocket, Cettia, ForwardError};
use crate::error::HttpError;
use crate::node::Node;
use crate::protocol::cettia::vibe::{self, VibeRequest, VibeTransport};
use crate::protocol::cettia::{framing, CettiaRequest, Dialect, TransportName, When, WireMessage};
use crate::session::{Identity, InboundError, Refused};
use crate::transport::{body, request_body};

const TEXT: &str = "text/plain; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The Cettia CORS headers: the middleware echoes an allowed `Origin`; without one, any.
fn cors(req: &HttpRequest, response: &mut HttpResponse, allow_headers: bool) {
    let headers = response.headers_mut();
    if !req.headers().contains_key(header::ORIGIN) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::HeaderValue::from_static("true"),
        );
    }
    if allow_headers {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::HeaderValue::from_static("content-type"),
        );
    }
}

fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The upgrade checks both protocols share (`session::websocket::upgrade_refused`).
fn upgrade_checks(node: &Node, req: &HttpRequest) -> Result<(), HttpError> {
    match crate::session::websocket::upgrade_refused(node, req) {
        Some(refused) => Err(refused.into()),
        None => Ok(()),
    }
}

/// `/cettia`.
pub async fn cettia(
    req: HttpRequest,
    body: web::Payload,
    cettia: web::Data<Cettia>,
) -> HttpResponse {
    let cettia = cettia.get_ref().clone();
    let mut response = handle_cettia(&req, body, &cettia)
        .await
        .unwrap_or_else(|error| error.cettia());
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        cors(&req, &mut response, true);
    }
    response
}

async fn handle_cettia(
    req: &HttpRequest,
    body: web::Payload,
    cettia: &Cettia,
) -> Result<HttpResponse, HttpError> {
    let node = cettia.node().clone();
    let request = CettiaRequest::parse(req.query_string()).map_err(malformed)?;
    let ids = [
        request.socket_id.as_deref(),
        request.transport_id.as_deref(),
    ];
    let who = door(&node, req, request.token(), ids)?;
    match *req.method() {
        Method::GET if is_upgrade(req) => upgrade(req, cettia, &request, who).await,
        Method::GET => match request.when() {
            Ok(When::Open) => open(cettia, &request, who).await,
            Ok(When::Poll) => {
                let found = match transport_of(cettia, &request) {
                    Some(found) => Some(found),
                    None => continue_transport(cettia, &request, who).await,
                };
                let Some((socket, generation)) = found else {
                    return Err(HttpError::NoSuchTransport(
                        "no such long-poll transport (cettia-transport-id)",
                    ));
                };
                Ok(poll(socket, generation, Vec::new()).await)
            }
            Ok(When::Abort) => {
                match transport_of(cettia, &request) {
                    Some((socket, generation)) => socket.do_send(TransportClosed(generation)),
                    None => {
                        if let Some(tid) = request.transport_id.as_deref() {
                            cettia.forward_abort(tid);
                        }
                    }
                }
                Ok(HttpResponse::Ok().content_type(JAVASCRIPT).finish())
            }
            Err(e) => Err(HttpError::Unsupported(e.to_string())),
        },
        Method::POST => match (
            transport_of(cettia, &request),
            request.transport_id.as_deref(),
        ) {
            (Some((socket, generation)), tid) => {
                let to = PostTo::Socket(socket, generation, tid.map(Arc::from));
                post(req, body, cettia, to, true).await
            }
            // Clustered: the transport may be on another node; the event is forwarded there.
            (None, tid) => match tid {
                Some(tid) if cettia.control().is_some() => {
                    post(req, body, cettia, PostTo::Forward(tid), true).await
                }
                _ => Err(HttpError::NoSuchTransport(
                    "no such transport (cettia-transport-id)",
                )),
            },
        },
        Method::OPTIONS => Ok(HttpResponse::Ok().finish()),
        ref other => Err(HttpError::MethodNotAllowed {
            method: other.to_string(),
            allowed: "GET, POST or OPTIONS",
        }),
    }
}

/// A request the protocol layer could not parse.
fn malformed(error: impl std::fmt::Display) -> HttpError {
    HttpError::Malformed(error.to_string())
}

/// A Cettia WebSocket: the socket it names (or a new one), once the gate let it in.
async fn upgrade(
    req: &HttpRequest,
    cettia: &Cettia,
    request: &CettiaRequest,
    who: Identity,
) -> Result<HttpResponse, HttpError> {
    let node = cettia.node();
    upgrade_checks(node, req)?;
    let id = request.socket_id.as_deref();
    let socket = open_socket(cettia, Dialect::Cettia, id, &request.params, who).await?;
    Ok(websocket::attach(req, socket, None, node).await?)
}

/// The socket a transport-opening request names (or a new one), for either dialect: the gate
/// first lets `who` into every topic its `topic` parameters name (the default application
/// joins them), then the socket is found or made. A Cettia id is never taken by another
/// dialect's socket: it gets a fresh one instead.
async fn open_socket(
    cettia: &Cettia,
    dialect: Dialect,
    id: Option<&str>,
    params: &[(String, String)],
    who: Identity,
) -> Result<Addr<SocketActor>, HttpError> {
    let topics = params
        .iter()
        .filter(|(name, _)| name == "topic")
        .map(|(_, topic)| topic.as_str());
    let node = cettia.node();
    node.gate.subscribe(&who, 0, topics)?;
    let socket = match cettia.existing_socket(dialect, id).await {
        Some(socket) => socket,
        None => {
            // A new socket: a new connection, let in by the connect rate and the caps.
            let counted = crate::session::admit(node, &who).await?;
            cettia
                .socket_for(dialect, id, params, &who, counted)
                .map_err(|e| HttpError::Conflict(e.to_string()))?
        }
    };
    socket.do_send(Identify(who));
    Ok(socket)
}

/// Who the request comes from (the socket URI's `token` parameter), and whether the socket and
/// transport ids it carries were issued to it (the gate).
fn door(
    node: &Node,
    req: &HttpRequest,
    token: Option<&str>,
    ids: [Option<&str>; 2],
) -> Result<Identity, Refused> {
    node.gate
        .enter(token, crate::session::caller(node, req), &ids)
}

fn transport_of(cettia: &Cettia, request: &CettiaRequest) -> Option<(Addr<SocketActor>, u64)> {
    cettia
        .transport(request.transport_id.as_deref()?)
        .filter(|(socket, _)| socket.connected())
}

/// Clustered: a poll of a long-poll transport opened on another node. Its socket moves here
/// and the same transport continues (no new handshake), told who its client is.
async fn continue_transport(
    cettia: &Cettia,
    request: &CettiaRequest,
    who: Identity,
) -> Option<(Addr<SocketActor>, u64)> {
    let tid = request.transport_id.as_deref()?;
    let socket = cettia.socket_of_remote_transport(tid).await?;
    socket.do_send(Identify(who));
    let tid: Arc<str> = tid.into();
    let attach = AttachLongPoll {
        transport_id: tid.clone(),
        jsonp: request.jsonp_callback().ok().flatten(),
        heartbeat_ms: None,
        continued: true,
    };
    let generation = socket.send(attach).await.ok()?.generation;
    cettia.register_transport(tid, socket.clone(), generation);
    Some((socket, generation))
}

async fn open(
    cettia: &Cettia,
    request: &CettiaRequest,
    who: Identity,
) -> Result<HttpResponse, HttpError> {
    let name = request
        .transport()
        .map_err(|e| HttpError::Unsupported(e.to_string()))?;
    let jsonp = request.jsonp_callback().map_err(malformed)?;
    let transport_id: Arc<str> = cettia.node().gate.issue(&who).into();
    let id = request.socket_id.as_deref();
    let socket = open_socket(cettia, Dialect::Cettia, id, &request.params, who).await?;
    let handshake = framing::transport_handshake(&transport_id);
    match name {
        TransportName::Stream => {
            let mut first = BytesMut::from(&framing::stream_padding()[..]);
            first.extend_from_slice(&framing::sse_event(&handshake));
            stream(
                cettia,
                socket,
                transport_id,
                first.freeze(),
                PushFraming::CettiaStream,
                request.sse,
                None,
            )
            .await
        }
        TransportName::LongPoll => {
            let attach = AttachLongPoll {
                transport_id: transport_id.clone(),
                jsonp: jsonp.clone(),
                heartbeat_ms: None,
                continued: false,
            };
            let attached = socket.send(attach).await.map_err(|_| socket_gone())?;
            cettia.register_transport(transport_id, socket, attached.generation);
            if let Some(saved) = attached.records_saved {
                // Bounded: with Redis away the socket still works on this node.
                let _ = tokio::time::timeout(RECORDS_WAIT, saved).await;
            }
            Ok(match jsonp {
                Some(callback) => HttpResponse::Ok()
                    .content_type(JAVASCRIPT)
                    .body(framing::jsonp(&callback, &handshake)),
                None => HttpResponse::Ok().content_type(TEXT).body(handshake),
            })
        }
    }
}

/// The socket stopped between its lookup and the request's message to it.
fn socket_gone() -> HttpError {
    HttpError::Unavailable("socket unavailable, retry".into())
}

/// Longest a long-poll open waits for the records another node needs to continue it.
const RECORDS_WAIT: Duration = Duration::from_secs(2);

/// Open a streaming response whose first chunk is `first`, attached to `socket`.
async fn stream(
    cettia: &Cettia,
    socket: Addr<SocketActor>,
    transport_id: Arc<str>,
    first: Bytes,
    framing: PushFraming,
    sse: bool,
    heartbeat_ms: Option<u64>,
) -> Result<HttpResponse, HttpError> {
    let content_type = if sse {
        "text/event-stream; charset=utf-8"
    } else {
        TEXT
    };
    let (body, stream) = body::channel();
    // The channel is new and empty: the first chunk always fits.
    body.preface(first);
    let attach = AttachPush {
        sink: body.sink(),
        framing,
        kind: crate::transport::TransportKind::of_body(sse),
        body: Some(body),
        transport_id: Some(transport_id.clone()),
        heartbeat_ms,
    };
    let generation = socket.send(attach).await.map_err(|_| socket_gone())?;
    cettia.register_transport(transport_id, socket, generation);
    // Proxies in the nginx style are asked not to buffer Cettia streams (Vibe keeps the
    // seed's header set).
    Ok(stream.respond(content_type, framing == PushFraming::CettiaStream))
}

/// One long-poll: answered with the next message, or parked until there is one.
async fn poll(
    socket: Addr<SocketActor>,
    generation: u64,
    last_event_ids: Vec<String>,
) -> HttpResponse {
    let (reply, answer) = oneshot::channel();
    // Held until this handler ends: if the client leaves, the socket sees the guard go.
    let (guard, _held) = oneshot::channel::<()>();
    let request = LongPoll {
        generation,
        reply,
        guard,
        last_event_ids,
    };
    let answer = match socket.send(request).await {
        Ok(()) => answer.await.ok(),
        Err(_) => None,
    };
    let PollAnswer { body, content_type } = answer.unwrap_or(PollAnswer {
        body: Bytes::new(),
        content_type: TEXT,
    });
    HttpResponse::Ok().content_type(content_type).body(body)
}

/// Where a POSTed client message goes.
enum PostTo<'a> {
    /// The transport's socket on this node: its generation and (Cettia) the transport's id.
    Socket(Addr<SocketActor>, u64, Option<Arc<str>>),
    /// Clustered: a transport this node does not have; forwarded on the control channel.
    Forward(&'a str),
}

/// A client message: `data=<text>` as text/plain, or a binary (MessagePack) body.
async fn post(
    req: &HttpRequest,
    body: web::Payload,
    cettia: &Cettia,
    to: PostTo<'_>,
    binary_allowed: bool,
) -> Result<HttpResponse, HttpError> {
    let binary = match is_binary(req, binary_allowed) {
        Ok(binary) => binary,
        Err(refused) => {
            // A transport that posts what it cannot is broken: it closes.
            match to {
                PostTo::Socket(socket, generation, _) => {
                    socket.do_send(TransportClosed(generation))
                }
                PostTo::Forward(tid) => cettia.forward_abort(tid),
            }
            return Err(refused);
        }
    };
    let message = read_message(body, &cettia.node().config, binary).await?;
    let (socket, generation, transport) = match to {
        PostTo::Socket(socket, generation, transport) => (socket, generation, transport),
        PostTo::Forward(tid) => return forward(cettia, tid, message).await,
    };
    let inbound = TransportInbound {
        generation,
        transport: transport.clone(),
        message: message.clone(),
    };
    match socket.send(inbound).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().finish()),
        Ok(Err(InboundError::Event(e))) => {
            // A transport that sends what is not an event is broken: it closes.
            socket.do_send(TransportClosed(generation));
            Err(InboundError::Event(e).into())
        }
        // Clustered: the socket has just moved (a poll took it to another node) or stopped
        // since it was looked up; the event follows it.
        Ok(Err(InboundError::Moved)) | Err(_) if cettia.control().is_some() => match transport {
            Some(tid) => forward(cettia, &tid, message).await,
            None => Err(InboundError::TransportClosed.into()),
        },
        Ok(Err(refused)) => Err(refused.into()),
        Err(_) => Err(InboundError::TransportClosed.into()),
    }
}

/// Whether a POST carries a binary message (`application/octet-stream`, where allowed) or a
/// text one (`text/plain; charset=utf-8`); anything else is refused with 500, as the reference
/// server does.
fn is_binary(req: &HttpRequest, binary_allowed: bool) -> Result<bool, HttpError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let charset_ok = content_type
        .split(';')
        .skip(1)
        .all(|p| matches!(p.trim(), "charset=utf-8" | "charset=utf8"));
    match essence {
        "text/plain" if charset_ok => Ok(false),
        "application/octet-stream" if binary_allowed => Ok(true),
        _ => Err(HttpError::ContentType(format!(
            "unsupported content-type {content_type:?}: use text/plain; charset=utf-8 (data=<event>) or application/octet-stream"
        ))),
    }
}

/// Read a POSTed message of at most `--max-message-bytes` (and the `data=` prefix of a text
/// one), within `--body-timeout-secs`.
async fn read_message(
    body: web::Payload,
    config: &crate::config::Config,
    binary: bool,
) -> Result<WireMessage, HttpError> {
    let limit = config.max_message_bytes + "data=".len();
    let bytes = request_body::read(body, limit, config.body_timeout()).await?;
    if binary {
        return Ok(WireMessage::Binary(bytes));
    }
    let text =
        ByteString::try_from(bytes).map_err(|_| malformed("message body is not valid UTF-8"))?;
    match text.strip_prefix("data=") {
        Some(event) => Ok(WireMessage::Text(event.into())),
        None => Err(malformed("a text message is posted as data=<event>")),
    }
}

/// Clustered: hand a client event to the node that has its transport; answer when its socket
/// has handled it (whether it is well-formed is judged there).
async fn forward(
    cettia: &Cettia,
    tid: &str,
    message: WireMessage,
) -> Result<HttpResponse, HttpError> {
    match cettia.forward_inbound(tid, message).await {
        Ok(Handled::Taken) => Ok(HttpResponse::Ok().finish()),
        Ok(Handled::BadEvent(why)) => Err(HttpError::Malformed(why)),
        Ok(Handled::TransportClosed) => Err(InboundError::TransportClosed.into()),
        Err(e @ ForwardError::Busy) => Err(HttpError::Unavailable(e.to_string())),
        Err(e) => Err(HttpError::Internal(e.to_string())),
    }
}

/// Vibe `when=open` of an HTTP transport: a stream, or the first exchange of long-polling.
async fn vibe_open(
    cettia: &Cettia,
    request: &VibeRequest,
    id: &str,
    key: String,
    heartbeat: Option<u64>,
    who: Identity,
) -> Result<HttpResponse, HttpError> {
    let transport = request
        .transport()
        .map_err(|e| HttpError::Unsupported(e.to_string()))?;
    let jsonp = if transport == VibeTransport::LongPollJsonp {
        match request.callback.as_deref() {
            Some(c) if framing::valid_callback(c) => Some(c.to_string()),
            _ => {
                return Err(malformed(
                    "longpolljsonp needs callback=<JavaScript identifier>",
                ))
            }
        }
    } else {
        None
    };
    if transport == VibeTransport::Ws {
        return Err(malformed("transport=ws needs a WebSocket upgrade"));
    }
    let socket = open_socket(cettia, Dialect::Vibe, Some(id), &request.params, who).await?;
    if transport.is_stream() {
        stream(
            cettia,
            socket,
            key.into(),
            vibe::stream_padding(),
            PushFraming::VibeStream,
            transport == VibeTransport::Sse,
            heartbeat,
        )
        .await
    } else {
        let attach = AttachLongPoll {
            transport_id: key.clone().into(),
            jsonp: jsonp.clone(),
            heartbeat_ms: heartbeat,
            continued: false,
        };
        let attached = socket.send(attach).await.map_err(|_| socket_gone())?;
        cettia.register_transport(key.into(), socket, attached.generation);
        let content_type = if jsonp.is_some() { JAVASCRIPT } else { TEXT };
        Ok(HttpResponse::Ok().content_type(content_type).finish())
    }
}

/// `/vibe`: the Vibe 3.0.0-Alpha1 dialect.
pub async fn vibe(req: HttpRequest, body: web::Payload, cettia: web::Data<Cettia>) -> HttpResponse {
    let cettia = cettia.get_ref().clone();
    let mut response = handle_vibe(&req, body, &cettia)
        .await
        .unwrap_or_else(|error| error.cettia());
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        cors(&req, &mut response, false);
    }
    response
}

/// Whether `who` may use Vibe socket `id`: one that lives belongs to its first owner (the gate
/// says so); a new one may not take the form of an id the node issues, so it can never stand
/// for another protocol's session (in the API's targeted `publish`, say).
fn vibe_claim(cettia: &Cettia, id: &str, who: &Identity) -> Result<(), HttpError> {
    let gate = &cettia.node().gate;
    match cettia.socket(id).filter(|s| s.dialect() == Dialect::Vibe) {
        Some(socket) => Ok(gate.claim(&socket.identity(), who)?),
        None if gate.is_issued_form(id) => Err(malformed(
            "this id has the form of ids the server issues; choose another (a UUID)",
        )),
        None => Ok(()),
    }
}

fn vibe_transport_key(id: &str) -> String {
    format!("vibe:{id}")
}

async fn handle_vibe(
    req: &HttpRequest,
    body: web::Payload,
    cettia: &Cettia,
) -> Result<HttpResponse, HttpError> {
    let node = cettia.node().clone();
    let request = VibeRequest::parse(req.query_string()).map_err(malformed)?;
    let id = match request.socket_id() {
        Ok(id) => id.to_string(),
        Err(e) if *req.method() == Method::GET || *req.method() == Method::POST => {
            return Err(malformed(e))
        }
        Err(_) => String::new(),
    };
    let key = vibe_transport_key(&id);
    let heartbeat = Some(request.heartbeat.unwrap_or(0));
    // Vibe clients choose their socket ids: the id is bound to its first owner instead.
    let who = door(&node, req, request.token(), [None, None])?;
    vibe_claim(cettia, &id, &who)?;
    match *req.method() {
        Method::GET if is_upgrade(req) => {
            upgrade_checks(&node, req)?;
            let socket =
                open_socket(cettia, Dialect::Vibe, Some(&id), &request.params, who).await?;
            Ok(websocket::attach(req, socket, heartbeat, &node).await?)
        }
        Method::GET => match request.when.as_deref() {
            Some("open") => vibe_open(cettia, &request, &id, key, heartbeat, who).await,
            Some("poll") => match cettia.transport(&key) {
                Some((socket, generation)) => {
                    Ok(poll(socket, generation, request.last_event_ids).await)
                }
                None => Err(HttpError::NoSuchTransport("no such socket (id)")),
            },
            Some("abort") => {
                if let Some(socket) = cettia.socket(&id).filter(|s| s.dialect() == Dialect::Vibe) {
                    socket.close();
                }
                Ok(HttpResponse::Ok().content_type(JAVASCRIPT).finish())
            }
            other => Err(HttpError::Unsupported(format!(
                "unsupported when {:?}: use open, poll or abort",
                other.unwrap_or_default()
            ))),
        },
        Method::POST => match cettia.transport(&key) {
            Some((socket, generation)) => {
                post(
                    req,
                    body,
                    cettia,
                    PostTo::Socket(socket, generation, None),
                    false,
                )
                .await
            }
            None => Err(HttpError::NoSuchTransport("no such socket (id)")),
        },
        Method::OPTIONS => Ok(HttpResponse::Ok().finish()),
        ref other => Err(HttpError::MethodNotAllowed {
            method: other.to_string(),
            allowed: "GET or POST",
        }),
    }
}
