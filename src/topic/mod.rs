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
    Broadcaster, Deliver, Join, JoinAck, Leave, Publish, Sequenced, SetDirect, TopicState,
};
pub use direct::DirectWrite;
pub use envelope::{Audience, Envelope, Message, FRAME_SLOTS};
pub use history::{History, HistoryBudget, HistoryLimits, Replay};
pub use registry::{PublishError, TopicRegistry};
pub use upstream::{Backlog, StoreError, TopicPosition, Upstream};

/// A topic id: the request path.
pub type TopicId = Arc<str>;
/// A session id: the Atmosphere tracking id, or the Cettia socket id.
pub type SessionId = Arc<str>;
