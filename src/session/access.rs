//! The door every client passes, whichever protocol and transport it uses: who it is (a token
//! checked by the [`Verifier`]), and whether the session id it presents was issued to it
//! ([`SessionIds`]).
//!
//! The protocols only find the token where their clients put it (Atmosphere:
//! `X-Atmosphere-Auth`, header or query; Cettia: the socket URI's `token` parameter) and
//! answer a refusal on their own wire.
use super::identity::{AuthError, Identity, KeyError, KeySettings, Verifier};
use super::ids::{ForeignId, IdPolicy, SessionIds};
use crate::config::Config;

/// Identity and session-id checks of a node.
pub struct Access {
    verifier: Option<Verifier>,
    ids: SessionIds,
    /// Clients without a token are let in (as anonymous) even though keys are configured.
    anonymous: bool,
}

// === impl Access ===

impl Access {
    /// What `config` says; `secret` is the cluster's session secret when the node has one
    /// (else `--session-secret`, else a random one of this process).
    pub fn from_config(config: &Config, secret: Option<String>) -> Result<Self, KeyError> {
        let verifier = Verifier::new(&config.key_settings())?;
        let policy = config.session_ids.unwrap_or(if verifier.is_some() {
            IdPolicy::Signed
        } else {
            IdPolicy::Open
        });
        let secret = secret
            .or_else(|| config.session_secret.clone())
            .unwrap_or_else(random_secret);
        Ok(Access {
            anonymous: verifier.is_none() || config.allow_anonymous,
            ids: SessionIds::new(secret.as_bytes(), policy),
            verifier,
        })
    }

    /// Who presents `token` (`None` or empty: no token).
    pub fn identify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Identity::anonymous());
        };
        match token.filter(|t| !t.is_empty()) {
            Some(token) => verifier.verify(token),
            None if self.anonymous => Ok(Identity::anonymous()),
            None => Err(AuthError::Missing),
        }
    }

    /// Whether tokens are checked at all.
    pub fn verifies_tokens(&self) -> bool {
        self.verifier.is_some()
    }

    /// A new session id for `who`.
    pub fn issue(&self, who: &Identity) -> String {
        self.ids.issue(who.user_id())
    }

    /// Whether `who` may use session `id`.
    pub fn check(&self, id: &str, who: &Identity) -> Result<(), ForeignId> {
        self.ids.check(id, who.user_id())
    }

    pub fn id_policy(&self) -> IdPolicy {
        self.ids.policy()
    }
}

/// Why the door refused a request: its token (401 on every protocol) or a session id that is
/// not its own (403).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Foreign(#[from] ForeignId),
}

/// The door of every request, whichever protocol: who presents `token`, and whether each of
/// `ids` (the session and transport ids the request carries) was issued to it. Refusals are
/// counted (`nimbus_auth_failures_total`); each protocol answers them on its own wire.
pub fn admit(
    node: &crate::node::Node,
    token: Option<&str>,
    ids: &[Option<&str>],
) -> Result<Identity, Refused> {
    let who = node.access.identify(token).inspect_err(|error| {
        crate::metrics::count_auth_failure(node, error.reason());
    })?;
    for id in ids.iter().flatten() {
        node.access.check(id, &who).inspect_err(|_| {
            crate::metrics::count_auth_failure(node, "foreign_session");
        })?;
    }
    Ok(who)
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

impl Config {
    /// The token keys the flags name.
    pub fn key_settings(&self) -> KeySettings {
        KeySettings {
            hmac_secret: self.jwt_hmac_secret.clone(),
            previous_hmac_secret: self.jwt_hmac_previous_secret.clone(),
            previous_hmac_until: self.jwt_hmac_previous_until,
            public_key: self.jwt_public_key.clone(),
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
        }
    }
}
