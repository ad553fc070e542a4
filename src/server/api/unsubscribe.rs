//! `unsubscribe {"user", "topic"}`: take a user's sessions out of a topic on every node. A
//! Cettia socket leaves the topic and stays open; an Atmosphere client, which has one topic,
//! loses its connection.
use serde::Deserialize;
use serde_json::Value;

use super::{check_topic, Api, ApiError};
use crate::session::Command;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    user: String,
    topic: String,
}

pub async fn call(api: &Api<'_>, call: Unsubscribe) -> Result<Value, ApiError> {
    check_topic(&call.topic)?;
    let command = Command::Unsubscribe {
        user: call.user,
        topic: call.topic,
    };
    Ok(super::sessions_reached(api.commands.run(command).await?))
}
