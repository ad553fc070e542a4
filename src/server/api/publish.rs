//! `publish {"topic", "data", "user"?, "sessions"?}`: a message to every client of a topic,
//! on every node; with `sessions`, only to those sessions (tracking ids, Cettia socket ids);
//! with `user`, only to that user's sessions in the topic, wherever they are.
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_topic, Api, ApiError};
use crate::session::Command;
use crate::topic::{Audience, Message, SessionId};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    topic: String,
    data: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    sessions: Option<Vec<String>>,
}

pub async fn call(api: &Api<'_>, call: Publish) -> Result<Value, ApiError> {
    check_topic(&call.topic)?;
    if call.user.is_some() && call.sessions.is_some() {
        return Err(ApiError::BadRequest(
            "give user or sessions, not both".into(),
        ));
    }
    if let Some(user) = call.user {
        let command = Command::PublishToUser {
            user,
            topic: call.topic,
            data: call.data,
        };
        api.commands.run(command).await?;
        return Ok(json!({}));
    }
    let audience = match call.sessions {
        None => Audience::All,
        Some(ids) => Audience::Set(ids.into_iter().map(SessionId::from).collect()),
    };
    api.node
        .broker
        .publish_confirmed(&call.topic, audience, Message::text(call.data))
        .await?;
    crate::node::Stats::add(&api.node.stats.published, 1);
    Ok(json!({}))
}
