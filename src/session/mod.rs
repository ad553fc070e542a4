//! The session core: what every client has, whichever protocol it speaks and whichever
//! transport carries it.
//!
//! An Atmosphere connection (`crate::atmosphere`) and a Cettia socket (`crate::cettia`) are
//! both session actors. What they have in common is written once, here:
//!
//! - [`Membership`]: a topic joined, the client's cursor in it, and catching up from this
//!   node's replay history or the cluster's shared history;
//! - the slow-consumer policy ([`lagging`]): a client too far behind loses its
//!   transport, keeps its place, and resumes when it reconnects;
//! - why a client's message was refused ([`InboundError`]);
//! - the mailbox bound of a session actor ([`MAILBOX`]);
//! - attaching a WebSocket to a session ([`websocket`]);
//! - the gate every client action passes: identity, session ids, permissions, limits
//!   ([`Gate`]).
//!
//! The transports under them are protocol-blind (`crate::transport`); the codecs over them are
//! pure (`crate::protocol`).
pub mod admission;
pub mod command;
pub mod expiry;
mod membership;
mod report;
pub mod survey;
pub mod websocket;

use actix_http::ws::{CloseCode, CloseReason};
use thiserror::Error;

// The gate lives below the node; sessions meet it under these names too.
pub use crate::gate::{identity, permissions};
pub use crate::gate::{random_secret, Access, Caller, Cleared, ConfigError, Gate, Refused};
pub use crate::gate::{ForeignId, IdPolicy, SessionIds};
pub use crate::presence::Present;
pub use admission::{admit, count, Counted};
pub use command::{Command, Commands, LocalSessions};
pub use identity::{AuthError, Identity};
pub use membership::{Fetch, Membership, Replay, Reports};
pub use permissions::{Action, Denied, Permissions};
pub use report::{NodeReport, Survey};

use crate::node::{Node, Stats};
use crate::protocol::cettia::EventError;
use crate::topic::PublishError;

/// Messages a session actor's mailbox holds. Topic deliveries beyond it are skipped by the
/// topic and read back from the history, so a full mailbox delays a client but loses nothing
/// the history still has.
pub const MAILBOX: usize = 256;

/// Why a client's message was refused.
#[derive(Debug, Error)]
pub enum InboundError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The application refused it (an Atmosphere `on_message` hook), saying why.
    #[error("message refused: {0}")]
    Refused(String),
    #[error("this transport is closed")]
    TransportClosed,
    /// Clustered: the Cettia socket has just moved to another node; forward the message there.
    #[error("the Cettia socket moved to another node")]
    Moved,
    #[error(transparent)]
    Event(#[from] EventError),
    /// The gate refused it (the namespace, the publish rate).
    #[error(transparent)]
    Gate(#[from] Refused),
}

/// The slow-consumer policy, the same for every session of both protocols. A session is
/// `behind` by the messages given to it since its current transport attached that the transport
/// has not written yet; what the client was owed when the transport attached (the history an
/// Atmosphere client replays, a Cettia socket's resume queue) does not count, or a client
/// dropped once would be dropped again on every return while it reads its backlog, and never
/// catch up. Over `--max-lag-messages`, the policy counts it, says so, and returns the close
/// reason its WebSocket gets (`1013`, "slow consumer"); the caller closes the transport. The
/// session keeps where its client stands; the client resumes from there when it reconnects.
pub fn lagging(node: &Node, session: &str, behind: u64) -> Option<CloseReason> {
    if behind <= node.config.max_lag_messages {
        return None;
    }
    Stats::add(&node.stats.slow_consumers_dropped, 1);
    tracing::warn!(%session, behind,
        "slow consumer: closing its transport; it resumes from where it stands on reconnect");
    Some(CloseReason {
        code: CloseCode::Again,
        description: Some("slow consumer".into()),
    })
}

/// How a WebSocket the backend API disconnected is closed: `1000`, "disconnected by the
/// server" (the client may reconnect; a user to keep out must also lose its token).
pub fn disconnected() -> CloseReason {
    CloseReason {
        code: CloseCode::Normal,
        description: Some("disconnected by the server".into()),
    }
}

/// What a request says of its client besides its token (the gate's [`Caller`]): its
/// address, the client a trusted balancer names (`--trusted-proxies`) included, and an
/// anonymous browser's secret.
pub fn caller<'a>(node: &Node, req: &'a actix_web::HttpRequest) -> Caller<'a> {
    Caller {
        address: crate::transport::client_address(req, &node.config.trusted_proxies.0),
        browser: crate::transport::browser_secret(req),
    }
}

/// How many of a topic's last messages a new session receives on joining (history on join):
/// what its client asked for, if the topic's namespace offers history, and no more than a
/// topic's history keeps (`--history-messages`).
pub fn history_on_join(node: &Node, topic: &Cleared, asked: usize) -> usize {
    if topic.features().history {
        asked.min(node.config.history_messages)
    } else {
        0
    }
}

/// The place of `who`'s client in the presence of `topic`, if the topic keeps presence (its
/// namespace); the client leaves when the returned guard is dropped (with its membership).
pub fn present(node: &Node, topic: &Cleared, who: &Identity) -> Option<Present> {
    topic.features().presence.then(|| {
        node.presence
            .enter(topic.topic().clone(), who.user_arc(), who.info_arc())
    })
}

/// Count messages a client lost because the histories no longer held them.
pub fn count_missed(node: &Node, session: &str, missed: u64) {
    if missed > 0 {
        Stats::add(&node.stats.missed, missed);
        tracing::warn!(%session, missed,
            "client fell behind the topic history; messages lost for it");
    }
}
