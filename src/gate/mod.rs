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
use std::net::IpAddr;

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
pub use ids::{ForeignId, IdPolicy, Owner, SessionIds};
pub use permissions::{Action, Denied, Features, FileError, Permissions};

use crate::metrics::Metrics;
use crate::topic::{self, BadTopic, TopicId};
pub use limits::{Caps, Limits};

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
    /// Past `--history-share-bytes`: 429.
    #[error("your messages take too large a share of the node's history; slow down")]
    HistoryShare,
    /// Past `--max-connects-per-address-per-sec`: 429.
    #[error("too many new connections from your address; retry later")]
    ConnectRate,
    /// Past `--max-connections-per-address` or `--max-connections-per-user`: 429.
    #[error("too many connections {per} (at most {max}); close one first")]
    TooManyConnections { per: &'static str, max: u64 },
}

/// What a request says of its client besides its token: where it comes from, and an
/// anonymous browser's secret (its `nimbus-anon` cookie), if it has one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub address: Option<IpAddr>,
    pub browser: Option<&'a str>,
}

/// How many connections a client already holds in the cluster, its new one included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// From the client's address (`None`: not counted, its address unknown).
    pub by_address: Option<u64>,
    /// Of the client's user (`None`: anonymous).
    pub by_user: Option<u64>,
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

    /// Open or resume a session: who presents `token` as `caller` (the request's client
    /// address and browser secret), and whether each of `ids` (the session and transport ids
    /// the request carries) was issued to it.
    pub fn enter(
        &self,
        token: Option<&str>,
        caller: Caller<'_>,
        ids: &[Option<&str>],
    ) -> Result<Identity, Refused> {
        let who = self
            .access
            .identify(token)
            .inspect_err(|error| {
                self.metrics.auth_failure(error.reason());
            })?
            .from_address(caller.address)
            .in_browser(caller.browser);
        for id in ids.iter().flatten() {
            self.access.check(id, &who).inspect_err(|_| {
                self.metrics.auth_failure("foreign_session");
            })?;
        }
        Ok(who)
    }

    /// A session named by an id its client chose (Vibe) belongs to its first owner: `who`
    /// may use it only if it is the same user, or, opened by an anonymous browser, the same
    /// browser. Sessions of anonymous clients that keep no cookie are theirs who know the id
    /// (it is then the only secret).
    pub fn claim(&self, owner: &Identity, who: &Identity) -> Result<(), Refused> {
        if owner.same_user(who) {
            Ok(())
        } else {
            self.metrics.auth_failure("foreign_session");
            Err(ForeignId.into())
        }
    }

    /// Whether anonymous browsers get a secret to bind their session ids to (ids are signed
    /// and anonymous clients let in); the edge then sets the `nimbus-anon` cookie.
    pub fn binds_browsers(&self) -> bool {
        self.access.binds_browsers()
    }

    /// Whether `id` is a session id this cluster issued to `who`, whatever the id policy: a
    /// session it names was let in when it was issued, so using it again opens nothing new.
    pub fn was_issued(&self, id: &str, who: &Identity) -> bool {
        self.access.was_issued(id, who)
    }

    /// A new connection of `who`: its address's connect rate. The caps come after, with the
    /// cluster's counts ([`Gate::hold`]).
    pub fn connect(&self, who: &Identity) -> Result<(), Refused> {
        match who.address() {
            Some(address) if !self.limits.admit_connect(address) => {
                self.metrics.limit_hit("connect_rate");
                Err(Refused::ConnectRate)
            }
            _ => Ok(()),
        }
    }

    /// The connection caps, for whoever counts connections (nothing to count when all are off).
    pub fn caps(&self) -> Caps {
        self.limits.caps()
    }

    /// Whether a client holding `held` connections (its new one included) stays within the
    /// caps.
    pub fn hold(&self, held: Held) -> Result<(), Refused> {
        let caps = self.limits.caps();
        let over = |count: Option<u64>, max: u64| max > 0 && count.is_some_and(|n| n > max);
        let (per, max, limit) = if over(held.by_address, caps.per_address) {
            (
                "from your address",
                caps.per_address,
                "connections_per_address",
            )
        } else if over(held.by_user, caps.per_user) {
            ("for your user", caps.per_user, "connections_per_user")
        } else {
            return Ok(());
        };
        self.metrics.limit_hit(limit);
        Err(Refused::TooManyConnections { per, max })
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

    /// Whether `who` may publish one message of `bytes` to each of `topics`, from session
    /// (or address) `from`, which already paid `paid` of them (the event that carried it). A
    /// message to many topics costs one token per topic, and its history cost in each against
    /// the client's history share.
    pub fn publish(
        &self,
        who: &Identity,
        from: &str,
        topics: &[&str],
        paid: u32,
        bytes: usize,
    ) -> Result<(), Refused> {
        for name in topics {
            topic::check_name(name)?;
            self.permissions
                .check(who, name, Action::Publish)
                .inspect_err(|_| self.metrics.permission_denied("publish"))?;
        }
        let owed = (topics.len() as u32).saturating_sub(paid);
        let key = client_key(who, from);
        self.take_rate(&key, owed)?;
        let cost = topic::retained_cost(bytes).saturating_mul(topics.len());
        if self.limits.admit_history(&key, cost) {
            Ok(())
        } else {
            self.metrics.limit_hit("history_share");
            Err(Refused::HistoryShare)
        }
    }

    /// Take `n` tokens of a client's publish rate (one inbound message: `1`). A signed-in
    /// user has one bucket, however many sessions it opens; an anonymous client has that of
    /// its address, however many sessions it mints (`from`, its session id, only when its
    /// address is unknown).
    pub fn rate(&self, who: &Identity, from: &str, n: u32) -> Result<(), Refused> {
        if n == 0 {
            return Ok(());
        }
        self.take_rate(&client_key(who, from), n)
    }

    /// Take `n` tokens of the publish rate of client `key` (see [`client_key`]).
    fn take_rate(&self, key: &String, n: u32) -> Result<(), Refused> {
        if n == 0 || self.limits.admit_publish(key, n) {
            Ok(())
        } else {
            self.metrics.limit_hit("publish_rate");
            Err(Refused::RateLimited)
        }
    }
}

/// Whose limits a client meets: its user's, or its address's when anonymous (`from`, its
/// session id, only when the address is unknown). Made once per check (keyed limiters own
/// their keys).
fn client_key(who: &Identity, from: &str) -> String {
    match (who.user_id(), who.address()) {
        (Some(user), _) => format!("user:{user}"),
        (None, Some(address)) => format!("ip:{address}"),
        (None, None) => from.to_string(),
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
            Refused::RateLimited
            | Refused::HistoryShare
            | Refused::ConnectRate
            | Refused::TooManyConnections { .. } => StatusCode::TOO_MANY_REQUESTS,
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
            Limits::publishing(rate),
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
        assert_eq!(gate.publish(&who, "s", &["/a", "/b", "/c"], 1, 10), Ok(()));
        assert_eq!(
            gate.publish(&who, "s", &["/a", "/b", "/c"], 1, 10),
            Err(Refused::RateLimited),
            "four tokens a second, three taken: two more are over"
        );
        assert_eq!(
            gate.publish(&who, "s", &["/a", "/b"], 1, 10),
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
