//! The unit a topic fans out: one message, numbered, with its wire frames encoded once.
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use bytestring::ByteString;
use tokio::time::Instant;

use super::{SessionId, TopicId};

/// Number of distinct wire formats an envelope can cache a frame for.
pub const FRAME_SLOTS: usize = 8;

/// Who receives a message published to a topic.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Every member, the sender included.
    All,
    /// One session (an Atmosphere tracking id).
    One(SessionId),
    /// A set of sessions.
    Set(Arc<[SessionId]>),
}

impl Audience {
    pub fn includes(&self, session: &str) -> bool {
        match self {
            Audience::All => true,
            Audience::One(id) => &**id == session,
            Audience::Set(ids) => ids.iter().any(|id| &**id == session),
        }
    }
}

/// What a publisher sends to a topic.
#[derive(Debug, Clone)]
pub struct Message {
    pub text: ByteString,
    /// The text is JSON (a Cettia event's non-string data); plain text otherwise. Atmosphere
    /// clients receive the text either way; Cettia clients receive JSON as JSON.
    pub json: bool,
}

impl Message {
    /// A plain-text message.
    pub fn text(text: impl Into<ByteString>) -> Self {
        Message {
            text: text.into(),
            json: false,
        }
    }
}

/// One message of a topic.
#[derive(Debug)]
pub struct Envelope {
    pub topic: TopicId,
    /// Position in the topic, starting at 1; consecutive within one topic epoch.
    pub seq: u64,
    pub audience: Audience,
    /// The message text as the publisher sent it.
    pub text: ByteString,
    /// Whether `text` is JSON (see [`Message::json`]).
    pub json: bool,
    /// When the topic accepted it (for history age limits and latency figures).
    pub accepted_at: Instant,
    /// When it was published (unix ms): accepted by the publishing node, or numbered by the
    /// cluster for a message relayed from another node. For the publish-to-write latency.
    pub published_ms: u64,
    /// Frames per wire format, built by the first recipient that needs them and shared after.
    frames: [OnceLock<ByteString>; FRAME_SLOTS],
    /// The same frames wrapped for a transport that writes them whole (a WebSocket frame
    /// header in front), so each delivery is one buffer handed to the kernel.
    wrapped: [OnceLock<Bytes>; FRAME_SLOTS],
}

impl Envelope {
    pub fn new(topic: TopicId, seq: u64, audience: Audience, message: Message) -> Self {
        Envelope {
            topic,
            seq,
            audience,
            text: message.text,
            json: message.json,
            accepted_at: Instant::now(),
            published_ms: unix_ms(),
            frames: Default::default(),
            wrapped: Default::default(),
        }
    }

    /// Seconds since it was published (0 when the clocks of two nodes disagree).
    pub fn age_secs(&self) -> f64 {
        unix_ms().saturating_sub(self.published_ms) as f64 / 1000.0
    }

    /// The frame for wire format `slot`, encoding it with `encode` on first use.
    pub fn frame(&self, slot: usize, encode: impl FnOnce(&str) -> ByteString) -> &ByteString {
        self.frames[slot].get_or_init(|| encode(&self.text))
    }

    /// The frame for wire format `slot` wrapped by `wrap`, built on first use.
    pub fn wrapped(&self, slot: usize, wrap: impl FnOnce() -> Bytes) -> &Bytes {
        self.wrapped[slot].get_or_init(wrap)
    }

    /// Bytes this envelope holds, for history limits.
    pub fn weight(&self) -> usize {
        self.text.len() + std::mem::size_of::<Self>()
    }
}

/// The wall clock in unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
