//! Redis key and channel names.
//!
//! Every key of a topic carries the topic id as its hash tag (`{...}`), so in a Redis Cluster
//! a topic's counter, history and channel live in one slot and the publish script may touch
//! them all at once.

/// The topic's numbering: `epoch` and the last `seq` given out.
pub fn meta(topic: &str) -> String {
    format!("nimbus:m:{{{topic}}}")
}

/// The topic's shared history, a stream whose entry ids are `<seq>-0`.
pub fn history(topic: &str) -> String {
    format!("nimbus:h:{{{topic}}}")
}

/// The pub/sub channel that relays the topic's messages to the nodes with local members.
pub fn channel(topic: &str) -> String {
    format!("nimbus:b:{{{topic}}}")
}

/// The topic a relay channel belongs to.
pub fn topic_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("nimbus:b:{")?.strip_suffix('}')
}

/// The secret every node signs session ids with (see `secret.rs`).
pub const SESSION_SECRET: &str = "nimbus:secret";

/// The control channel every node subscribes to (Cettia handovers and targeted sends).
pub const CONTROL: &str = "nimbus:ctl";

/// A control-plane record.
pub fn record(kind: crate::broker::RecordKind, id: &str) -> String {
    match kind {
        crate::broker::RecordKind::CettiaSocket => format!("nimbus:c:{id}"),
        crate::broker::RecordKind::CettiaTransport => format!("nimbus:t:{id}"),
    }
}

/// The marker of one batch of publishes, so that a retried batch is numbered once.
pub fn publish_marker(topic: &str, publish_id: &str) -> String {
    format!("nimbus:p:{{{topic}}}:{publish_id}")
}

/// A topic's presence, one key per part (see `presence_set.lua`): `users`, `info`, `list`,
/// `clients`, all under the topic's hash tag.
pub fn presence(topic: &str, part: &str) -> String {
    format!("nimbus:pr:{part}:{{{topic}}}")
}

/// What one node instance holds of a topic's presence (user -> connections).
pub fn presence_held(topic: &str, instance: &str) -> String {
    format!("nimbus:pr:held:{{{topic}}}:{instance}")
}

/// The topics where one node instance holds presence (so its members can be reaped).
pub fn presence_topics(instance: &str) -> String {
    format!("nimbus:pr:topics:{instance}")
}

/// Every node instance with the time of its last beat (ms).
pub const PRESENCE_BEATS: &str = "nimbus:pr:beats";

/// The stream of backend webhook events waiting for delivery, read by every node as one
/// consumer group ([`WEBHOOK_GROUP`]).
pub const WEBHOOKS: &str = "nimbus:wh";
pub const WEBHOOK_GROUP: &str = "nodes";

/// A session's record (where its client stands).
pub fn session(id: &str) -> String {
    format!("nimbus:s:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_any_topic() {
        for topic in ["/chat/lobby", "/a}b{c", "/", "/ü€😀"] {
            assert_eq!(topic_of_channel(&channel(topic)), Some(topic));
        }
        assert_eq!(topic_of_channel("other"), None);
    }
}
