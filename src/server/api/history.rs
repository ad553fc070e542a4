//! `history {"topic", "limit"?}`: the topic's last messages to every subscriber, oldest first
//! (`limit` defaults to 20 and is at most `--history-messages`), with their sequence numbers
//! and the numbering (`epoch`) they belong to. Alone, a node answers from its topic's
//! history; in a cluster, from the shared history every node reads, so the answer is the same
//! on every node. A topic whose namespace turns history off is refused (400).
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_topic, Api, ApiError};
use crate::topic::{Audience, Envelope, Recent};

/// Messages given when the call names no `limit`.
const DEFAULT_LIMIT: usize = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    topic: String,
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn call(api: &Api<'_>, call: History) -> Result<Value, ApiError> {
    check_topic(&call.topic)?;
    if !api.node.gate.features(&call.topic).history {
        return Err(ApiError::BadRequest(format!(
            "history is off in the namespace of {}",
            call.topic
        )));
    }
    let limit = call
        .limit
        .unwrap_or(DEFAULT_LIMIT)
        .min(api.node.config.history_messages);
    let recent = match api.node.topics.upstream() {
        None => api
            .node
            .topics
            .recent(&call.topic, limit)
            .unwrap_or_default(),
        Some(upstream) => {
            let topic = crate::topic::TopicId::from(call.topic.as_str());
            let position = upstream.position(topic.clone()).await?;
            let after = position.seq.saturating_sub(limit as u64);
            let backlog = upstream
                .backlog(topic, position.epoch, after, limit)
                .await?;
            Recent {
                epoch: position.epoch,
                messages: backlog
                    .messages
                    .into_iter()
                    .filter(|e| matches!(e.audience, Audience::All))
                    .collect(),
            }
        }
    };
    let messages: Vec<Value> = recent.messages.iter().map(|e| entry(e)).collect();
    Ok(json!({ "epoch": recent.epoch, "messages": messages }))
}

fn entry(envelope: &Envelope) -> Value {
    json!({ "seq": envelope.seq, "data": &*envelope.text })
}
