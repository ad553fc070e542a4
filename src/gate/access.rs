//! Who a client is (a token checked by the [`Verifier`]), and whether the session id it
//! presents was issued to it ([`SessionIds`]): the identity part of the gate.
//!
//! The protocols only find the token where their clients put it (Atmosphere:
//! `X-Atmosphere-Auth`, header or query; Cettia: the socket URI's `token` parameter) and
//! answer a refusal on their own wire.
use super::guest::{BadName, Guests};
use super::identity::{AuthError, Identity, KeyError, KeySettings, Verifier};
use super::ids::{ForeignId, IdPolicy, SessionIds};

/// Identity and session-id checks of a node.
pub struct Access {
    verifier: Option<Verifier>,
    ids: SessionIds,
    /// Clients without a token are let in (as anonymous) even though keys are configured.
    anonymous: bool,
    /// Guest sign-in, on a node that checks no tokens.
    guests: Option<Guests>,
}

// === impl Access ===

impl Access {
    /// Tokens checked with `keys` (none configured: every client is anonymous), session ids
    /// under `policy` (default: `signed` when tokens are checked, else `open`) signed with
    /// `secret` (else a random one of this process); `allow_anonymous` lets clients without a
    /// token in even though keys are configured.
    pub fn new(
        keys: &KeySettings,
        policy: Option<IdPolicy>,
        allow_anonymous: bool,
        secret: Option<String>,
    ) -> Result<Self, KeyError> {
        let verifier = Verifier::new(keys)?;
        let policy = policy.unwrap_or(if verifier.is_some() {
            IdPolicy::Signed
        } else {
            IdPolicy::Open
        });
        let secret = secret.unwrap_or_else(random_secret);
        let guests = match verifier {
            None => Some(Guests::new(&secret)?),
            Some(_) => None,
        };
        Ok(Access {
            anonymous: verifier.is_none() || allow_anonymous,
            ids: SessionIds::new(secret.as_bytes(), policy),
            verifier,
            guests,
        })
    }

    /// Who presents `token` (`None` or empty: no token). A node that checks no tokens knows
    /// its guests, and takes every other client as anonymous.
    pub fn identify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(verifier) = &self.verifier else {
            let guest = token.zip(self.guests.as_ref());
            return match guest.and_then(|(token, guests)| guests.verify(token)) {
                Some(result) => result,
                None => Ok(Identity::anonymous()),
            };
        };
        match token.filter(|t| !t.is_empty()) {
            Some(token) => verifier.verify(token),
            None if self.anonymous => Ok(Identity::anonymous()),
            None => Err(AuthError::Missing),
        }
    }

    /// A guest token for `name` (its user id and the token), on a node that checks no tokens;
    /// `None` on one that does.
    pub fn guest(&self, name: &str) -> Option<Result<(String, String), BadName>> {
        self.guests.as_ref().map(|guests| guests.issue(name))
    }

    /// A new session id for `who`.
    pub fn issue(&self, who: &Identity) -> String {
        self.ids.issue(who.owner())
    }

    /// Whether `who` may use session `id`.
    pub fn check(&self, id: &str, who: &Identity) -> Result<(), ForeignId> {
        self.ids.check(id, who.owner())
    }

    /// Whether the cluster issued `id` to `who`, whatever the id policy.
    pub fn was_issued(&self, id: &str, who: &Identity) -> bool {
        self.ids.was_issued(id, who.owner())
    }

    /// Whether anonymous clients are let in and their ids signed: only then does a browser
    /// secret bind anything.
    pub fn binds_browsers(&self) -> bool {
        self.anonymous && self.ids.policy() == IdPolicy::Signed
    }

    /// Whether `id` has the form of an id the node issues.
    pub fn is_issued_form(&self, id: &str) -> bool {
        SessionIds::is_issued_form(id)
    }

    /// No token keys, ids under `policy` with a random secret.
    #[cfg(test)]
    pub fn for_tests(policy: IdPolicy) -> Self {
        Access {
            verifier: None,
            ids: SessionIds::new(random_secret().as_bytes(), policy),
            anonymous: true,
            guests: None,
        }
    }
}

/// A secret for one process (a single node without `--session-secret`: its ids need not
/// survive it).
pub fn random_secret() -> String {
    // Two v4 UUIDs: 244 random bits from the operating system.
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
