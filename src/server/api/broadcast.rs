//! `broadcast {"topics": [...], "data"}`: one message to many topics in one call, on every
//! node. Topics are published in order; the first that fails stops the call and says which.
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_topic, Api, ApiError};
use crate::topic::{Audience, Message};

/// Most topics in one call.
const MAX_TOPICS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broadcast {
    topics: Vec<String>,
    data: String,
}

pub async fn call(api: &Api<'_>, call: Broadcast) -> Result<Value, ApiError> {
    if call.topics.len() > MAX_TOPICS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_TOPICS} topics per call"
        )));
    }
    for topic in &call.topics {
        check_topic(topic)?;
    }
    for (done, topic) in call.topics.iter().enumerate() {
        let message = Message::text(call.data.as_str());
        if let Err(error) = api
            .node
            .broker
            .publish_confirmed(topic, Audience::All, message)
            .await
        {
            return Err(ApiError::Unavailable(format!(
                "published to {done} topics, then {topic}: {error}"
            )));
        }
        crate::node::Stats::add(&api.node.stats.published, 1);
    }
    Ok(json!({ "topics": call.topics.len() }))
}
