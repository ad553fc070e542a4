//! `presence_stats {"topic"}`: how many users (signed-in members, each counted once however
//! many connections it has) and clients (connections, anonymous ones included) are in the
//! topic, cluster-wide, read in O(1).
//!
//! `presence {"topic", "limit"?, "cursor"?}`: one page of the topic's members in user-id
//! order, each `{"user", "info"?}` (the public `info` of its token), at most `limit` (100 by
//! default, 1,000 at most), and the `cursor` to pass for the next page (`null` after the last).
//! A topic whose namespace turns presence off is refused (400).
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_topic, Api, ApiError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceStats {
    topic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    topic: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

fn check(api: &Api<'_>, topic: &str) -> Result<(), ApiError> {
    check_topic(topic)?;
    if api.node.gate.features(topic).presence {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "presence is off in the namespace of {topic}"
        )))
    }
}

pub async fn stats(api: &Api<'_>, call: PresenceStats) -> Result<Value, ApiError> {
    check(api, &call.topic)?;
    let stats = api.node.presence.stats(&call.topic).await?;
    Ok(json!({ "users": stats.users, "clients": stats.clients }))
}

pub async fn page(api: &Api<'_>, call: Presence) -> Result<Value, ApiError> {
    check(api, &call.topic)?;
    let limit = call.limit.unwrap_or(crate::presence::DEFAULT_PAGE);
    if limit == 0 || limit > crate::presence::MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {}",
            crate::presence::MAX_PAGE
        )));
    }
    let page = api
        .node
        .presence
        .page(&call.topic, call.cursor, limit)
        .await?;
    Ok(json!({ "members": page.members, "cursor": page.cursor }))
}
