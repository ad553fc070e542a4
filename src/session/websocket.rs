//! Attaching a WebSocket to a session actor, the same for both protocols: accept the upgrade,
//! hand the WebSocket's outbox to the actor, feed it the client's messages one at a time, and
//! tell it when the WebSocket is gone.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::MailboxError;
use actix_http::ws::{CloseCode, CloseReason};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use super::InboundError;
use crate::node::Node;
use crate::transport::ws::{self, close_reason, AcceptError, WsMessage};
use crate::transport::Sink;

/// Why a WebSocket upgrade is refused, the same checks in the same order for both protocols:
/// WebSocket turned off on this node (`501`), then an `Origin` the node does not allow (`403`:
/// browsers do not apply CORS to upgrades, so without this any site could open a WebSocket in its
/// visitors' name) — both before the gate — then, after it, a malformed handshake (actix-http's
/// status), a node at `--max-websockets` (`503`), a session that stopped meanwhile (`503`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefused {
    #[error("WebSocket is disabled on this node; use another transport")]
    Disabled,
    #[error("this origin may not open WebSockets on this node (see --cors-origins)")]
    Origin,
    #[error(transparent)]
    Accept(#[from] AcceptError),
    #[error("the session closed during the upgrade; retry")]
    Gone,
}

impl UpgradeRefused {
    pub fn status(&self) -> StatusCode {
        match self {
            UpgradeRefused::Disabled => StatusCode::NOT_IMPLEMENTED,
            UpgradeRefused::Origin => StatusCode::FORBIDDEN,
            UpgradeRefused::Accept(AcceptError::Handshake(error)) => {
                actix_http::Response::from(error).status()
            }
            UpgradeRefused::Accept(AcceptError::Full(_)) | UpgradeRefused::Gone => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Seconds the client should wait before it tries again, when waiting helps.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            UpgradeRefused::Accept(AcceptError::Full(_)) => Some(5),
            UpgradeRefused::Gone => Some(1),
            _ => None,
        }
    }
}

/// The upgrade checks of `req` (see [`UpgradeRefused`]).
pub fn upgrade_refused(node: &Node, req: &HttpRequest) -> Option<UpgradeRefused> {
    if node.config.disable_websocket {
        return Some(UpgradeRefused::Disabled);
    }
    let headers = req.headers();
    let origin = headers.get(actix_web::http::header::ORIGIN)?;
    let host = headers
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let allowed = origin
        .to_str()
        .is_ok_and(|origin| node.config.allows_origin(origin, host));
    (!allowed).then_some(UpgradeRefused::Origin)
}

/// Accept the upgrade in `req` and attach its WebSocket with `attach` (which sends the sink to the
/// actor and returns the transport's generation); returns the `101` response. Each message of
/// the client goes through `handle` (an `Err` closes the WebSocket with that reason), and
/// `detach` runs with the generation when the WebSocket is gone.
pub async fn attach<L, Attached, Handle, Handled>(
    req: &HttpRequest,
    node: &Arc<Node>,
    attach: impl FnOnce(Sink<L>) -> Attached,
    mut handle: Handle,
    detach: impl FnOnce(u64) + 'static,
) -> Result<HttpResponse, UpgradeRefused>
where
    L: Send + 'static,
    Attached: Future<Output = Result<u64, MailboxError>>,
    Handle: FnMut(u64, WsMessage) -> Handled + 'static,
    Handled: Future<Output = Result<(), CloseReason>> + 'static,
{
    let (response, outbox, pending) = ws::accept(req, &node.websockets)?;
    let generation = attach(Sink::WebSocket(outbox.clone()))
        .await
        .map_err(|_| UpgradeRefused::Gone)?;
    let max_message_bytes = node.config.max_message_bytes;
    let close_grace = Duration::from_secs(node.config.ws_close_grace_secs);
    actix_web::rt::spawn(async move {
        ws::serve(pending, outbox, max_message_bytes, close_grace, |message| {
            handle(generation, message)
        })
        .await;
        detach(generation);
    });
    Ok(response)
}

/// How a refused message closes its WebSocket: `1013` when the node is overloaded (retry),
/// `1008` when the application refused it, `1007` for a malformed event, `1001` when the
/// session is gone.
pub fn refusal(error: &InboundError) -> CloseReason {
    let code = match error {
        InboundError::Publish(_) => CloseCode::Again,
        InboundError::Refused(_) | InboundError::Gate(_) => CloseCode::Policy,
        InboundError::Event(_) => CloseCode::Invalid,
        InboundError::TransportClosed | InboundError::Moved => CloseCode::Away,
    };
    close_reason(code, &error.to_string())
}

/// The actor did not answer (it stopped): the WebSocket closes with `1001`.
pub fn gone(_: MailboxError) -> CloseReason {
    close_reason(CloseCode::Away, "session closed")
}
