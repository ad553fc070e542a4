//! The gate: every check a client meets, in one place, for both protocols and every transport.
//!
//! A client can do four things: open or resume a session ([`Gate::enter`]), claim a session
//! it names by an id it chose itself ([`Gate::claim`], Vibe), subscribe to topics
//! ([`Gate::subscribe`]) and publish ([`Gate::publish`]). Each passes here, where identity
//! (tokens), the binding of session ids to their user, topic names, topic permissions
//! (`--config` namespaces), the topics-per-connection cap and the publish rate are applied, and
//! each refusal is counted for `/metrics`. The protocols only say a [`Refused`] on their wire
//! ([`Refused::status`] for HTTP; a WebSocket closes `1008` with its text).
//!
//! Forgetting the gate is made impossible rather than unlikely: a session joins a topic only
//! with a [`Cleared`] topic, and only [`Gate::subscribe`] builds one.
//!
//! The gate sits below the node (it knows topics and metrics, not sessions or protocols): who a
//! client is ([`identity`], tokens), whether a session id is its own ([`SessionIds`]), what
//! its namespace lets it do ([`permissions`]) and how fast it may publish ([`limits`]).
use actix_http::StatusCode;
use thiserror::Error;

mod access;
pub mod guest;
pub mod identity;
mod ids;
pub mod limits;
pub mod permissions;

pub use access::{random_secret, Access};
pub use guest::{BadName, GUEST_TTL};
pub use identity::{AuthError, Identity, KeyError, KeySettings};
pub use ids::{ForeignId, IdPolicy, SessionIds};
pub use permissions::{Action, Denied, Features, FileError, Permissions};

use crate::metrics::Metrics;
use crate::topic::{self, BadTopic, TopicId};
use limits::Limits;

/// Settings a node cannot start with.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("token keys: {0}")]
    Keys(#[from] KeyError),
    #[error("configuration file: {0}")]
    File(#[from] FileError),
}

/// Topics one connection may be in, unless `--max-topics-per-connection` says otherwise.
pub const DEFAULT_MAX_TOPICS: usize = 128;

/// A topic the gate let a client into. Only [`Gate::subscribe`] builds one; joining a topic on
/// a client's behalf takes one.
#[derive(Debug, Clone)]
pub struct Cleared {
    topic: TopicId,
    features: Features,
}

impl Cleared {
    pub fn topic(&self) -> &TopicId {
        &self.topic
    }

    /// What the topic offers the session (history on join, presence).
    pub fn features(&self) -> Features {
        self.features
    }

    pub fn into_topic(self) -> TopicId {
        self.topic
    }
}

/// Why the gate refused a client.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Refused {
    /// A missing, expired or invalid token: 401.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A session id issued to someone else, or never issued: 403.
    #[error(transparent)]
    Foreign(#[from] ForeignId),
    /// The topic's namespace does not allow it: 403.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// Not a topic name: 400.
    #[error(transparent)]
    BadTopic(#[from] BadTopic),
    /// Past `--max-topics-per-connection`: 403.
    #[error("a connection may be in at most {max} topics")]
    TooManyTopics { max: usize },
    /// Past `--max-publishes-per-sec`: 429.
    #[error("publish rate limit exceeded; slow down")]
    RateLimited,
}

/// The identity, session-id, permission and limit checks of a node.
pub struct Gate {
    access: Access,
    permissions: Permissions,
    limits: Limits,
    max_topics: usize,
    metrics: Metrics,
}

// === impl Gate ===

impl Gate {
    pub fn new(
        access: Access,
        permissions: Permissions,
        limits: Limits,
        max_topics: usize,
        metrics: Metrics,
    ) -> Self {
        Gate {
            access,
            permissions,
            limits,
            max_topics,
            metrics,
        }
    }

    /// Open or resume a session: who presents `token`, and whether each of `ids` (the session
    /// and transport ids the request carries) was issued to it.
    pub fn enter(&self, token: Option<&str>, ids: &[Option<&str>]) -> Result<Identity, Refused> {
        let who = self.access.identify(token).inspect_err(|error| {
            self.metrics.auth_failure(error.reason());
        })?;
        for id in ids.iter().flatten() {
            self.access.check(id, &who).inspect_err(|_| {
                self.metrics.auth_failure("foreign_session");
            })?;
        }
        Ok(who)
    }

    /// A session named by an id its client chose (Vibe) belongs to its first owner: `who`
    /// may use it only if it is the same user. Sessions of anonymous clients are theirs who
    /// know the id (it is then the only secret).
    pub fn claim(&self, owner: &Identity, who: &Identity) -> Result<(), Refused> {
        if owner.same_user(who) {
            Ok(())
        } else {
            self.metrics.auth_failure("foreign_session");
            Err(ForeignId.into())
        }
    }

    /// Whether `id`, chosen by a client, has the form of an id the node issues (such ids are
    /// reserved: a client-chosen one could collide with another session's).
    pub fn is_issued_form(&self, id: &str) -> bool {
        self.access.is_issued_form(id)
    }

    /// A guest token for `name` (see [`guest`]); `None` when the node checks real tokens.
    pub fn guest(&self, name: &str) -> Option<Result<(String, String), BadName>> {
        self.access.guest(name)
    }

    /// A new session id for `who`.
    pub fn issue(&self, who: &Identity) -> String {
        self.access.issue(who)
    }

    /// What `topic` offers (its namespace's settings), for the backend API.
    pub fn features(&self, topic: &str) -> Features {
        self.permissions.features(topic)
    }

    /// Let `who`, already in `joined` topics, into `topics`: each a topic name its namespace
    /// lets it subscribe to, no more than the per-connection cap in all. All or nothing.
    pub fn subscribe<'a>(
        &self,
        who: &Identity,
        joined: usize,
        topics: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Cleared>, Refused> {
        let mut cleared: Vec<Cleared> = Vec::new();
        for name in topics {
            if cleared.iter().any(|c| &*c.topic == name) {
                continue;
            }
            topic::check_name(name)?;
            if joined + cleared.len() >= self.max_topics {
                self.metrics.limit_hit("topics_per_connection");
                return Err(Refused::TooManyTopics {
                    max: self.max_topics,
                });
            }
            self.permissions
                .check(who, name, Action::Subscribe)
                .inspect_err(|_| self.metrics.permission_denied("subscribe"))?;
            cleared.push(Cleared {
                topic: name.into(),
                features: self.permissions.features(name),
            });
        }
        Ok(cleared)
    }

    /// Whether `who` may publish one message to each of `topics`, from session (or address)
    /// `from`, which already paid `paid` of them (the event that carried it). A message to
    /// many topics costs one token per topic.
    pub fn publish(
        &self,
        who: &Identity,
        from: &str,
        topics: &[&str],
        paid: u32,
    ) -> Result<(), Refused> {
        for name in topics {
            topic::check_name(name)?;
            self.permissions
                .check(who, name, Action::Publish)
                .inspect_err(|_| self.metrics.permission_denied("publish"))?;
        }
        let owed = (topics.len() as u32).saturating_sub(paid);
        self.rate(who, from, owed)
    }

    /// Take `n` tokens of a client's publish rate (one inbound message: `1`). A signed-in
    /// user has one bucket, however many sessions it opens; an anonymous client has that of
    /// `from` (its session id, or the address of a POST without one).
    pub fn rate(&self, who: &Identity, from: impl Into<String>, n: u32) -> Result<(), Refused> {
        if n == 0 {
            return Ok(());
        }
        // The bucket's key, made once (the keyed limiter owns its keys).
        let key = match who.user_id() {
            Some(user) => format!("user:{user}"),
            None => from.into(),
        };
        let admitted = self.limits.admit_publish(key, n);
        if admitted {
            Ok(())
        } else {
            self.metrics.limit_hit("publish_rate");
            Err(Refused::RateLimited)
        }
    }
}

// === impl Refused ===

impl Refused {
    /// The HTTP status each protocol answers it with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::Auth(_) => StatusCode::UNAUTHORIZED,
            Refused::Foreign(_) | Refused::Denied(_) | Refused::TooManyTopics { .. } => {
                StatusCode::FORBIDDEN
            }
            Refused::BadTopic(_) => StatusCode::BAD_REQUEST,
            Refused::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::permissions::Namespace;
    use super::*;

    fn gate(max_topics: usize, rate: u32) -> Gate {
        let namespace: Namespace =
            toml::from_str("prefix = \"/dm/\"\nsubscribe = \"user\"\nuser_limited = true").unwrap();
        Gate::new(
            Access::for_tests(IdPolicy::Signed),
            Permissions::new(vec![namespace]),
            Limits::new(rate),
            max_topics,
            Metrics::default(),
        )
    }

    #[test]
    fn subscribing_is_all_or_nothing_and_capped() {
        let gate = gate(3, 0);
        let alice = Identity::user("alice", None);
        let ok = gate.subscribe(&alice, 0, ["/a", "/b", "/a"]).unwrap();
        assert_eq!(ok.len(), 2, "a topic named twice is cleared once");
        assert_eq!(
            gate.subscribe(&alice, 2, ["/c", "/d"]).unwrap_err(),
            Refused::TooManyTopics { max: 3 }
        );
        assert!(matches!(
            gate.subscribe(&alice, 0, ["/x", "/dm/bob,carol"]),
            Err(Refused::Denied(_))
        ));
        assert!(matches!(
            gate.subscribe(&alice, 0, ["nope"]),
            Err(Refused::BadTopic(_))
        ));
        assert!(matches!(
            gate.subscribe(&alice, 0, [&*"/x".repeat(300)]),
            Err(Refused::BadTopic(_))
        ));
    }

    #[test]
    fn a_message_to_many_topics_costs_one_token_per_topic() {
        let gate = gate(8, 4);
        let who = Identity::anonymous();
        assert_eq!(gate.rate(&who, "s", 1), Ok(()));
        assert_eq!(gate.publish(&who, "s", &["/a", "/b", "/c"], 1), Ok(()));
        assert_eq!(
            gate.publish(&who, "s", &["/a", "/b", "/c"], 1),
            Err(Refused::RateLimited),
            "four tokens a second, three taken: two more are over"
        );
        assert_eq!(
            gate.publish(&who, "s", &["/a", "/b"], 1),
            Ok(()),
            "a refused message took nothing: the fourth token is still there"
        );
        assert_eq!(gate.rate(&who, "s", 1), Err(Refused::RateLimited));
    }

    #[test]
    fn a_user_has_one_publish_rate_however_many_sessions_it_opens() {
        let gate = gate(8, 3);
        let alice = Identity::user("alice", None);
        for session in ["a1", "a2", "a3"] {
            assert_eq!(gate.rate(&alice, session, 1), Ok(()));
        }
        assert_eq!(gate.rate(&alice, "a4", 1), Err(Refused::RateLimited));
        let anonymous = Identity::anonymous();
        assert_eq!(
            gate.rate(&anonymous, "a4", 1),
            Ok(()),
            "an anonymous session's own"
        );
    }

    #[test]
    fn a_client_chosen_session_belongs_to_its_first_owner() {
        let gate = gate(8, 0);
        let alice = Identity::user("alice", None);
        let eve = Identity::user("eve", None);
        assert_eq!(gate.claim(&alice, &alice), Ok(()));
        assert_eq!(gate.claim(&alice, &eve), Err(ForeignId.into()));
        assert_eq!(
            gate.claim(&alice, &Identity::anonymous()),
            Err(ForeignId.into())
        );
        assert_eq!(
            gate.claim(&Identity::anonymous(), &eve),
            Err(ForeignId.into())
        );
    }
}
