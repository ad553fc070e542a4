//! The one HTTP error type of both protocols: what went wrong with a client's request, and the
//! status that is. Each protocol renders it on its own wire ([`HttpError::atmosphere`],
//! [`HttpError::cettia`]); the status of a failure is decided here, once, whichever protocol
//! meets it.
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, HttpResponseBuilder};
use thiserror::Error;

use crate::protocol::atmosphere::RequestError;
use crate::session::websocket::UpgradeRefused;
use crate::session::{AuthError, InboundError, Refused};
use crate::topic::{BadTopic, PublishError};
use crate::transport::request_body::BodyError;
use crate::transport::ws::AcceptError;

/// An error answered to the client: a status and a plain-text sentence saying what is wrong.
#[derive(Debug, Error)]
pub enum HttpError {
    /// A malformed request (its query, its headers, a message's framing): `400`.
    #[error("{0}")]
    Malformed(String),
    /// A transport or request kind the server does not offer: `501`.
    #[error("{0}")]
    Unsupported(String),
    /// A client speaking a protocol version older than the server's: `501`.
    #[error("{0}")]
    OldClient(String),
    /// A topic path the server does not take (over the length limit): `414`.
    #[error(transparent)]
    Path(BadTopic),
    /// A body too large, too slow or unreadable: `413`, `408` or `400`.
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("method {method} is not allowed here: use {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    /// The transport or socket the request names is not on this node, or has closed: `500`,
    /// what the reference Cettia server answers (its client gives the transport up).
    #[error("{0}")]
    NoSuchTransport(&'static str),
    /// A content type the endpoint does not read: `500`, as the reference Cettia server.
    #[error("{0}")]
    ContentType(String),
    /// An id that cannot be had (taken by a socket of another kind): `409`.
    #[error("{0}")]
    Conflict(String),
    /// The node cannot take the request now; the client retries: `503`.
    #[error("{0}")]
    Unavailable(String),
    /// The message could not be published now: `503`.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The application refused the message, saying why: `403`.
    #[error("message refused: {0}")]
    Refused(String),
    /// The gate refused the client (its token, an id, a namespace, a limit): its status.
    #[error(transparent)]
    Gate(#[from] Refused),
    /// A WebSocket upgrade refused before it reached a session: its status.
    #[error(transparent)]
    Upgrade(#[from] UpgradeRefused),
    /// Something failed on the server's side: `500`.
    #[error("{0}")]
    Internal(String),
}

impl From<RequestError> for HttpError {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::UnsupportedVersion(_) => HttpError::OldClient(error.to_string()),
            other => HttpError::Malformed(other.to_string()),
        }
    }
}

impl From<InboundError> for HttpError {
    /// A refused inbound message as an HTTP answer.
    fn from(error: InboundError) -> Self {
        match error {
            InboundError::Gate(refused) => HttpError::Gate(refused),
            InboundError::Refused(why) => HttpError::Refused(why),
            InboundError::Publish(error) => HttpError::Publish(error),
            InboundError::Event(error) => HttpError::Malformed(error.to_string()),
            InboundError::TransportClosed | InboundError::Moved => {
                HttpError::NoSuchTransport("this transport is closed")
            }
        }
    }
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Malformed(_) => StatusCode::BAD_REQUEST,
            HttpError::Unsupported(_) | HttpError::OldClient(_) => StatusCode::NOT_IMPLEMENTED,
            HttpError::Path(_) => StatusCode::URI_TOO_LONG,
            HttpError::Body(error) => error.status(),
            HttpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::NoSuchTransport(_) | HttpError::ContentType(_) | HttpError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::Unavailable(_) | HttpError::Publish(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Refused(_) => StatusCode::FORBIDDEN,
            HttpError::Gate(refused) => refused.status(),
            HttpError::Upgrade(refused) => refused.status(),
        }
    }

    /// What both protocols answer: the status, `Retry-After` when waiting helps, and the
    /// sentence as the body.
    fn plain(&self) -> HttpResponseBuilder {
        let mut response = HttpResponse::build(self.status());
        let retry_after = match self {
            HttpError::Upgrade(refused) => refused.retry_after(),
            _ if self.status() == StatusCode::TOO_MANY_REQUESTS => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        // What the handshake was missing (`Allow: GET`, `Sec-WebSocket-Version: 13`).
        if let HttpError::Upgrade(UpgradeRefused::Accept(AcceptError::Handshake(error))) = self {
            for (name, value) in actix_http::Response::from(error).headers() {
                response.insert_header((name.clone(), value.clone()));
            }
        }
        response.content_type("text/plain; charset=utf-8");
        response
    }

    /// On Atmosphere's wire: besides the plain answer, `X-Atmosphere-error` saying why (what
    /// atmosphere.js hands to its error callback, in the Atmosphere server's words where it has
    /// some), and `X-Atmosphere-Auth-Expired` for an expired token (atmosphere.js reports it
    /// through `authExpired`).
    pub fn atmosphere(&self) -> HttpResponse {
        let mut response = self.plain();
        let why = match self {
            HttpError::OldClient(_) => "Atmosphere Protocol version not supported.".to_string(),
            HttpError::Upgrade(UpgradeRefused::Disabled) => {
                "Websocket protocol not supported".to_string()
            }
            other => other.to_string(),
        };
        if let Ok(value) = header::HeaderValue::from_str(&why) {
            response.insert_header(("X-Atmosphere-error", value));
        }
        if let HttpError::Gate(Refused::Auth(AuthError::Expired)) = self {
            response.insert_header(("X-Atmosphere-Auth-Expired", "true"));
        }
        response.body(format!("{self}\n"))
    }

    /// On Cettia's (and Vibe's) wire: the plain answer. A refusal of the gate also closes the
    /// connection: the Cettia client learns that its transport is gone from the end of its
    /// request, which a kept-alive connection never brings; it then reports `error` and
    /// `close` to its application.
    pub fn cettia(&self) -> HttpResponse {
        let mut response = self.plain();
        if matches!(self, HttpError::Gate(_)) {
            response.force_close();
        }
        response.body(format!("{self}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of<'a>(response: &'a HttpResponse, name: &str) -> &'a str {
        response.headers().get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn each_failure_has_one_status_whichever_protocol_renders_it() {
        let cases = [
            (HttpError::Malformed("x".into()), 400),
            (HttpError::from(RequestError::BadTrackingId), 400),
            (
                HttpError::from(RequestError::UnsupportedVersion("2.0".into())),
                501,
            ),
            (HttpError::Gate(Refused::RateLimited), 429),
            (HttpError::Gate(Refused::Auth(AuthError::Expired)), 401),
            (HttpError::Upgrade(UpgradeRefused::Disabled), 501),
            (HttpError::Upgrade(UpgradeRefused::Origin), 403),
            (HttpError::from(InboundError::Refused("no".into())), 403),
            (HttpError::from(InboundError::TransportClosed), 500),
            (HttpError::Body(BodyError::TooLarge { limit: 1 }), 413),
        ];
        for (error, status) in cases {
            assert_eq!(error.atmosphere().status().as_u16(), status, "{error}");
            assert_eq!(error.cettia().status().as_u16(), status, "{error}");
        }
    }

    #[test]
    fn atmosphere_says_why_in_its_header_and_limits_say_when_to_retry() {
        let limited = HttpError::Gate(Refused::RateLimited).atmosphere();
        assert_eq!(header_of(&limited, "retry-after"), "1");
        assert_eq!(
            header_of(&limited, "x-atmosphere-error"),
            Refused::RateLimited.to_string().as_str()
        );
        let expired = HttpError::Gate(Refused::Auth(AuthError::Expired)).atmosphere();
        assert_eq!(header_of(&expired, "x-atmosphere-auth-expired"), "true");
        let old = HttpError::from(RequestError::UnsupportedVersion("2.0".into())).atmosphere();
        assert_eq!(
            header_of(&old, "x-atmosphere-error"),
            "Atmosphere Protocol version not supported."
        );
        let cettia = HttpError::Gate(Refused::RateLimited).cettia();
        assert!(!cettia.headers().contains_key("x-atmosphere-error"));
        assert_eq!(header_of(&cettia, "retry-after"), "1");
    }
}
