//! Who may subscribe to and publish in a topic: namespaces by topic prefix, read from the
//! configuration file (`--config`, TOML), the same for both protocols.
//!
//! ```toml
//! [[namespace]]
//! prefix = "/chat/"      # the longest matching prefix decides
//! subscribe = "user"     # anonymous | user | grant | nobody
//! publish = "user"
//!
//! [[namespace]]
//! prefix = "/dm/"
//! subscribe = "user"
//! publish = "user"
//! user_limited = true    # /dm/alice,bob: only alice and bob
//!
//! [[namespace]]
//! prefix = "/feed/"
//! history = false        # no history on join (default true)
//! presence = false       # no member list, no join and leave events (default true)
//! ```
//!
//! `anonymous`: every client; `user`: any signed-in user; `grant`: a user whose token's
//! `topics` claim names the topic; `nobody`: only the backend API (e.g. announcement topics).
//! A topic in no namespace is open to every client the door let in. The backend API is not
//! subject to namespaces. A token's `topics` grant also opens a topic whose namespace says
//! `user` or `grant` to that user.
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

use super::Identity;

/// Who may do something in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    Anonymous,
    User,
    Grant,
    Nobody,
}

/// What a client does with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
}

/// One namespace of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub prefix: String,
    #[serde(default = "anonymous")]
    pub subscribe: Who,
    #[serde(default = "anonymous")]
    pub publish: Who,
    /// The topic's last segment lists the only users allowed (`/dm/alice,bob`).
    #[serde(default)]
    pub user_limited: bool,
    /// A new subscriber may ask for the topic's last messages (history on join).
    #[serde(default = "on")]
    pub history: bool,
    /// The topic keeps a member list and tells subscribers who come and go.
    #[serde(default = "on")]
    pub presence: bool,
}

fn anonymous() -> Who {
    Who::Anonymous
}

fn on() -> bool {
    true
}

/// What a topic offers beyond its messages; a topic in no namespace offers everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// History on join.
    pub history: bool,
    /// Presence: members, join and leave events.
    pub presence: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            history: true,
            presence: true,
        }
    }
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    namespace: Vec<Namespace>,
}

/// A refusal, said on each protocol's wire (403, Cettia `error`, WebSocket `1008`).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Denied {
    #[error("{action} in {topic} is for signed-in users")]
    NeedsUser { action: &'static str, topic: String },
    #[error("{action} in {topic} needs a grant in your token")]
    NeedsGrant { action: &'static str, topic: String },
    #[error("{action} in {topic} is for the server only")]
    Nobody { action: &'static str, topic: String },
    #[error("{topic} is limited to the users it names")]
    NotListed { topic: String },
}

/// A configuration file that cannot be used; the node refuses to start with it.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid configuration: {message}")]
    Parse { path: String, message: String },
}

/// The namespaces of a node, longest prefix first.
#[derive(Debug, Default)]
pub struct Permissions {
    namespaces: Vec<Namespace>,
}

// === impl Permissions ===

impl Permissions {
    pub fn new(mut namespaces: Vec<Namespace>) -> Self {
        namespaces.sort_by_key(|n| std::cmp::Reverse(n.prefix.len()));
        Permissions { namespaces }
    }

    /// The namespaces of the TOML file at `path` (none without a file).
    pub fn load(path: Option<&Path>) -> Result<Self, FileError> {
        let Some(path) = path else {
            return Ok(Permissions::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| FileError::Parse {
            path: shown,
            message: e.to_string(),
        })?;
        Ok(Permissions::new(file.namespace))
    }

    fn namespace(&self, topic: &str) -> Option<&Namespace> {
        self.namespaces
            .iter()
            .find(|n| topic.starts_with(&n.prefix))
    }

    /// What `topic` offers (its namespace's settings).
    pub fn features(&self, topic: &str) -> Features {
        self.namespace(topic)
            .map_or_else(Features::default, |n| Features {
                history: n.history,
                presence: n.presence,
            })
    }

    /// Whether `who` may do `action` in `topic`.
    pub fn check(&self, who: &Identity, topic: &str, action: Action) -> Result<(), Denied> {
        let Some(namespace) = self.namespace(topic) else {
            return Ok(());
        };
        let name = match action {
            Action::Subscribe => "subscribing",
            Action::Publish => "publishing",
        };
        if namespace.user_limited {
            let listed = topic[namespace.prefix.len()..]
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .split(',')
                .any(|u| Some(u) == who.user_id());
            if !listed {
                return Err(Denied::NotListed {
                    topic: topic.into(),
                });
            }
        }
        let rule = match action {
            Action::Subscribe => namespace.subscribe,
            Action::Publish => namespace.publish,
        };
        let topic = topic.to_string();
        match rule {
            Who::Anonymous => Ok(()),
            Who::User if who.user_id().is_some() => Ok(()),
            _ if who.user_id().is_some() && who.granted(&topic) && rule != Who::Nobody => Ok(()),
            Who::User => Err(Denied::NeedsUser {
                action: name,
                topic,
            }),
            Who::Grant => Err(Denied::NeedsGrant {
                action: name,
                topic,
            }),
            Who::Nobody => Err(Denied::Nobody {
                action: name,
                topic,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permissions() -> Permissions {
        let file: File = toml::from_str(
            r#"
            [[namespace]]
            prefix = "/chat/"
            subscribe = "anonymous"
            publish = "user"

            [[namespace]]
            prefix = "/chat/vip/"
            subscribe = "grant"
            publish = "grant"

            [[namespace]]
            prefix = "/news/"
            publish = "nobody"

            [[namespace]]
            prefix = "/dm/"
            subscribe = "user"
            publish = "user"
            user_limited = true
            "#,
        )
        .unwrap();
        Permissions::new(file.namespace)
    }

    #[test]
    fn the_longest_prefix_decides() {
        let p = permissions();
        let nobody = Identity::anonymous();
        let alice = Identity::user("alice", None);
        let vip = Identity::user("vera", None).with_grants(vec!["/chat/vip/*".into()]);
        assert_eq!(p.check(&nobody, "/chat/lobby", Action::Subscribe), Ok(()));
        assert!(matches!(
            p.check(&nobody, "/chat/lobby", Action::Publish),
            Err(Denied::NeedsUser { .. })
        ));
        assert_eq!(p.check(&alice, "/chat/lobby", Action::Publish), Ok(()));
        assert!(matches!(
            p.check(&alice, "/chat/vip/lounge", Action::Subscribe),
            Err(Denied::NeedsGrant { .. })
        ));
        assert_eq!(p.check(&vip, "/chat/vip/lounge", Action::Publish), Ok(()));
        assert!(matches!(
            p.check(&vip, "/news/today", Action::Publish),
            Err(Denied::Nobody { .. })
        ));
        assert_eq!(p.check(&nobody, "/news/today", Action::Subscribe), Ok(()));
        assert_eq!(p.check(&nobody, "/elsewhere", Action::Publish), Ok(()));
    }

    #[test]
    fn user_limited_topics_admit_only_their_users() {
        let p = permissions();
        let alice = Identity::user("alice", None);
        let eve = Identity::user("eve", None);
        assert_eq!(p.check(&alice, "/dm/alice,bob", Action::Subscribe), Ok(()));
        assert!(matches!(
            p.check(&eve, "/dm/alice,bob", Action::Subscribe),
            Err(Denied::NotListed { .. })
        ));
        assert!(matches!(
            p.check(&Identity::anonymous(), "/dm/alice,bob", Action::Publish),
            Err(Denied::NotListed { .. })
        ));
    }

    #[test]
    fn features_are_on_unless_a_namespace_turns_them_off() {
        let file: File = toml::from_str(
            "[[namespace]]\nprefix = \"/feed/\"\nhistory = false\n\n\
             [[namespace]]\nprefix = \"/feed/quiet/\"\npresence = false\nhistory = false",
        )
        .unwrap();
        let p = Permissions::new(file.namespace);
        assert_eq!(p.features("/chat/lobby"), Features::default());
        let feed = p.features("/feed/news");
        assert!(!feed.history && feed.presence);
        let quiet = p.features("/feed/quiet/x");
        assert!(!quiet.history && !quiet.presence);
    }

    #[test]
    fn unknown_settings_are_refused() {
        assert!(
            toml::from_str::<File>("[[namespace]]\nprefix = \"/a/\"\nsubscrib = \"user\"").is_err()
        );
        assert!(
            toml::from_str::<File>("[[namespace]]\nprefix = \"/a/\"\nsubscribe = \"root\"")
                .is_err()
        );
    }
}
