//! Commands that act on sessions wherever they are: the backend API's disconnect, unsubscribe
//! and publish-to-a-user, written once for both protocols.
//!
//! A [`Commands`] runs a command on this node's sessions of every protocol (each protocol's
//! server implements [`LocalSessions`]); in a cluster it publishes the command on the control
//! channel instead, and every node, this one included, runs it on the sessions it holds.
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::report::{NodeReport, Pending};
use crate::broker::{ControlChannel, ControlPlane};
use crate::node::Node;
use crate::topic::{Audience, Message, SessionId, StoreError};

/// A command for the sessions of every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// End the sessions of `user`, or the session `session`.
    Disconnect {
        user: Option<String>,
        session: Option<String>,
    },
    /// Take `user`'s sessions out of `topic`.
    Unsubscribe { user: String, topic: String },
    /// Send `data` to `user`'s sessions in `topic` (each node publishes to those it holds).
    PublishToUser {
        user: String,
        topic: String,
        data: String,
    },
    /// Every node: report to the asker (see `survey`).
    Survey { survey: String, members: bool },
    /// One node's answer to a survey.
    Report {
        survey: String,
        report: Box<NodeReport>,
    },
}

/// The sessions of one protocol on this node, as commands see them.
pub trait LocalSessions: Send + Sync + 'static {
    /// End the matching sessions; returns how many.
    fn disconnect(&self, user: Option<&str>, session: Option<&str>) -> usize;

    /// Take `user`'s sessions out of `topic`; returns how many.
    fn unsubscribe(&self, user: &str, topic: &str) -> usize;

    /// The ids of `user`'s sessions in `topic`.
    fn sessions_of(&self, user: &str, topic: &str) -> Vec<SessionId>;

    /// The protocol's name in reports (`atmosphere`, `cettia`).
    fn protocol(&self) -> &'static str;

    /// How many sessions it holds on this node.
    fn count(&self) -> usize;
}

/// Runs commands on this node's sessions, or the cluster's.
#[derive(Clone)]
pub struct Commands {
    node: Arc<Node>,
    local: Arc<RwLock<Vec<Arc<dyn LocalSessions>>>>,
    surveys: Arc<Pending>,
}

// === impl Commands ===

impl Commands {
    /// The commands of `node`; in a cluster it takes the session commands of the control
    /// channel from now on.
    pub fn new(node: Arc<Node>) -> Self {
        let commands = Commands {
            node,
            local: Arc::default(),
            surveys: Arc::default(),
        };
        if let Some(control) = commands.node.broker.control() {
            let me = commands.clone();
            control.set_control_handler(
                ControlChannel::Sessions,
                Arc::new(
                    move |payload: &[u8]| match serde_json::from_slice(payload) {
                        Ok(Command::Survey { survey, members }) => {
                            me.answer_survey(survey, members)
                        }
                        Ok(Command::Report { survey, report }) => {
                            me.surveys.deliver(&survey, *report)
                        }
                        Ok(command) => {
                            me.run_here(&command);
                        }
                        Err(error) => tracing::warn!(%error, "unreadable session command"),
                    },
                ),
            );
        }
        commands
    }

    /// Sessions of one more protocol.
    pub fn serve(&self, sessions: Arc<dyn LocalSessions>) {
        self.local.write().push(sessions);
    }

    /// Run `command` on every node. Returns how many sessions it reached on this node when it
    /// ran here only (`None` in a cluster, where nodes run it on their own).
    pub async fn run(&self, command: Command) -> Result<Option<usize>, StoreError> {
        match self.control() {
            Some(control) => {
                let payload = serde_json::to_vec(&command).expect("commands serialize");
                control.publish_control(payload).await?;
                Ok(None)
            }
            None => Ok(Some(self.run_here(&command))),
        }
    }

    pub(super) fn control(&self) -> Option<Arc<dyn ControlPlane>> {
        self.node.broker.control()
    }

    pub(super) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub(super) fn local_sessions(&self) -> Vec<Arc<dyn LocalSessions>> {
        self.local.read().clone()
    }

    pub(super) fn pending_surveys(&self) -> &Pending {
        &self.surveys
    }

    /// Run `command` on this node's sessions.
    pub fn run_here(&self, command: &Command) -> usize {
        let local = self.local.read().clone();
        match command {
            Command::Disconnect { user, session } => local
                .iter()
                .map(|s| s.disconnect(user.as_deref(), session.as_deref()))
                .sum(),
            Command::Unsubscribe { user, topic } => {
                local.iter().map(|s| s.unsubscribe(user, topic)).sum()
            }
            Command::PublishToUser { user, topic, data } => {
                let ids: Vec<SessionId> = local
                    .iter()
                    .flat_map(|s| s.sessions_of(user, topic))
                    .collect();
                if ids.is_empty() {
                    return 0;
                }
                let n = ids.len();
                let message = Message::text(data.as_str());
                if let Err(error) =
                    self.node
                        .broker
                        .publish(topic, Audience::Set(ids.into()), message)
                {
                    tracing::warn!(%error, "publish to a user failed");
                    return 0;
                }
                n
            }
            // Answered by every node on the control channel, never run on sessions.
            Command::Survey { .. } | Command::Report { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_json_objects_on_the_control_channel() {
        let command = Command::Unsubscribe {
            user: "alice".into(),
            topic: "/chat/lobby".into(),
        };
        let payload = serde_json::to_vec(&command).unwrap();
        assert_eq!(ControlChannel::of(&payload), ControlChannel::Sessions);
        assert_eq!(
            serde_json::from_slice::<Command>(&payload).unwrap(),
            command
        );
    }
}
