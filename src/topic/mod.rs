//! Topics: one broadcaster actor per topic and node.
//!
//! A topic id is the request path (`/chat/lobby`). The broadcaster numbers every message it
//! accepts (a per-topic sequence), keeps a bounded replay [`History`], and fans each message out
//! to its local members. Members keep a cursor (the last sequence they were handed), so a client
//! that was away — between two long-polls, or reconnecting — is served from the shared history
//! instead of from a per-client copy of every message.
mod broadcaster;
mod direct;
mod envelope;
mod history;
mod registry;
mod upstream;

use std::sync::Arc;

pub use broadcaster::{
    Broadcaster, Deliver, Join, JoinAck, Leave, Notice, Publish, Sequenced, SetDirect, TopicState,
};
pub use direct::DirectWrite;
pub use envelope::{Audience, Envelope, Message, FRAME_SLOTS};
pub use history::{retained_cost, History, HistoryBudget, HistoryLimits, Replay};
pub use registry::{PublishError, Recent, TopicRegistry};
pub use upstream::{Backlog, StoreError, TopicPosition, Upstream};

/// A topic id: the request path.
pub type TopicId = Arc<str>;
/// A session id: the Atmosphere tracking id, or the Cettia socket id.
pub type SessionId = Arc<str>;

/// Longest topic name a client or the backend API may use.
pub const MAX_TOPIC_LEN: usize = 512;

/// A name that is not a topic's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic {shown:?} must be a path like /chat/lobby, at most {MAX_TOPIC_LEN} bytes")]
pub struct BadTopic {
    /// The name, cut to a length fit for an error message.
    shown: String,
}

/// The one topic-name rule: a path (`/` first) of at most [`MAX_TOPIC_LEN`] bytes.
pub fn check_name(name: &str) -> Result<(), BadTopic> {
    if name.starts_with('/') && name.len() <= MAX_TOPIC_LEN {
        Ok(())
    } else {
        Err(BadTopic {
            shown: name.chars().take(64).collect(),
        })
    }
}
