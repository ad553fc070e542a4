//! `disconnect {"user"}` or `disconnect {"session"}`: end every connection of a user, or one
//! session, on whichever node holds them. Clients reconnect by themselves (atmosphere.js and
//! Cettia both do): to keep a user out, stop issuing it tokens too.
use serde::Deserialize;
use serde_json::Value;

use super::{Api, ApiError};
use crate::session::Command;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disconnect {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    session: Option<String>,
}

pub async fn call(api: &Api<'_>, call: Disconnect) -> Result<Value, ApiError> {
    if call.user.is_none() && call.session.is_none() {
        return Err(ApiError::BadRequest("give user or session".into()));
    }
    let command = Command::Disconnect {
        user: call.user,
        session: call.session,
    };
    Ok(super::sessions_reached(api.commands.run(command).await?))
}
