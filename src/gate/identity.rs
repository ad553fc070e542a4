//! Who a client is: an [`Identity`] read from a JSON Web Token the client presents, the same for
//! every protocol and transport.
//!
//! The node verifies tokens; it never issues them, except guest tokens on a node that checks
//! none (`super::guest`). Keys come from the flags: `--jwt-hmac-secret` (HS256, with an
//! optional previous secret accepted until a time, for rotation) and `--jwt-public-key` (a PEM
//! file holding an RSA or EC public key: RS256/384/512, ES256/384). `aud` and `iss` are checked
//! when configured.
//!
//! Claims read: `sub` (the user id, required), `exp` (optional; a connection is closed when it
//! passes), `info` (public data shown to others, e.g. in presence) and `topics` (grants: topic
//! patterns this user may use beyond what its namespace allows; a trailing `*` is a prefix).
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

/// Seconds a token's `exp` may have passed and still be taken (clocks of issuers drift).
const LEEWAY_SECS: u64 = 5;

/// An expiry further away than this is not timed: the connection would outlive the process.
const UNTIMED_AFTER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Who a client is. Anonymous clients have no user.
#[derive(Clone, Default, PartialEq)]
pub struct Identity {
    user: Option<Arc<str>>,
    info: Option<Arc<serde_json::Value>>,
    grants: Arc<[String]>,
    /// Unix seconds after which the identity no longer holds.
    expires_at: Option<u64>,
    /// Where the client connects from (its request's client address): what an anonymous
    /// client's limits are counted by.
    address: Option<IpAddr>,
    /// An anonymous browser's secret (its `nimbus-anon` cookie): what its session ids are
    /// bound to.
    browser: Option<Arc<str>>,
}

/// Why a token was not taken. Each becomes a 401 (Atmosphere adds `X-Atmosphere-Auth-Expired`
/// for [`AuthError::Expired`]), a Cettia handshake refusal, or a WebSocket close.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// A key setting that cannot be used; the node refuses to start with it.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read the JWT public key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds neither an RSA nor an EC public key in PEM form")]
    NotAPublicKey { path: String },
    #[error("the JWT HMAC secret cannot be used: {0}")]
    Secret(String),
}

/// The token checker of a node: every key it accepts, tried in turn.
pub struct Verifier {
    keys: Vec<Key>,
}

struct Key {
    decoding: DecodingKey,
    validation: Validation,
    /// Unix seconds after which this key is no longer accepted (a rotated-out secret).
    until: Option<u64>,
}

/// What the node reads from a token's payload.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    info: Option<serde_json::Value>,
    #[serde(default)]
    topics: Vec<String>,
}

/// Where tokens are checked and how: what the flags say.
#[derive(Debug, Clone, Default)]
pub struct KeySettings {
    pub hmac_secret: Option<String>,
    pub previous_hmac_secret: Option<String>,
    pub previous_hmac_until: Option<SystemTime>,
    pub public_key: Option<std::path::PathBuf>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl Identity ===

impl std::fmt::Debug for Identity {
    /// Everything but the browser's secret, which no log may show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("grants", &self.grants)
            .field("expires_at", &self.expires_at)
            .field("address", &self.address)
            .field("browser", &self.browser.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// A signed-in user (tests, the development sign-in, a connect proxy's answer).
    pub fn user(user: &str, info: Option<serde_json::Value>) -> Self {
        Identity {
            user: Some(user.into()),
            info: info.map(Arc::new),
            ..Identity::default()
        }
    }

    pub fn with_expiry(mut self, expires_at: Option<u64>) -> Self {
        self.expires_at = expires_at;
        self
    }

    /// The same client, connecting from `address`.
    pub fn from_address(mut self, address: Option<IpAddr>) -> Self {
        self.address = address;
        self
    }

    /// An anonymous client that presented the browser secret `secret` (a signed-in user's
    /// ids are bound to the user, not to a browser).
    pub fn in_browser(mut self, secret: Option<&str>) -> Self {
        self.browser = secret.filter(|_| self.user.is_none()).map(Arc::from);
        self
    }

    /// Whom the client's session ids are bound to.
    pub fn owner(&self) -> super::ids::Owner<'_> {
        use super::ids::Owner;
        match (&self.user, &self.browser) {
            (Some(user), _) => Owner::User(user),
            (None, Some(secret)) => Owner::Browser(secret),
            (None, None) => Owner::Anyone,
        }
    }

    /// Where the client connects from, if known.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    pub fn with_grants(mut self, grants: Vec<String>) -> Self {
        self.grants = grants.into();
        self
    }

    /// The user id (`sub`), if signed in.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The user id, shared (no copy).
    pub fn user_arc(&self) -> Option<Arc<str>> {
        self.user.clone()
    }

    pub fn info(&self) -> Option<&serde_json::Value> {
        self.info.as_deref()
    }

    /// The token's public `info`, shared.
    pub fn info_arc(&self) -> Option<Arc<serde_json::Value>> {
        self.info.clone()
    }

    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// How long the identity still holds; `None` if it never expires. The door takes a token
    /// until `LEEWAY_SECS` (5) after its `exp`, so a live connection ends when the door would
    /// refuse it, not before: the first second after that.
    pub fn remaining(&self) -> Option<Duration> {
        let at = self.expires_at?.saturating_add(LEEWAY_SECS + 1);
        let left = Duration::from_secs(at.saturating_sub(unix_now()));
        (left <= UNTIMED_AFTER).then_some(left)
    }

    /// Whether the token granted `topic` (an exact name, or a pattern ending in `*`).
    pub fn granted(&self, topic: &str) -> bool {
        self.grants
            .iter()
            .any(|grant| match grant.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => grant == topic,
            })
    }

    /// Whether a session `self` opened may be used by `other`: the same user; for an
    /// anonymous browser's session, the same browser; for an anonymous client that keeps no
    /// cookie, any anonymous client (the session's id is then its only secret).
    pub fn same_user(&self, other: &Identity) -> bool {
        self.user == other.user
            && (self.user.is_some() || self.browser.is_none() || self.browser == other.browser)
    }
}

// === impl AuthError ===

impl AuthError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::Invalid(_) => "invalid",
        }
    }
}

// === impl Verifier ===

impl Verifier {
    /// The verifier the settings describe; `None` when no key is configured (tokens are then
    /// not read, and every client is anonymous).
    pub fn new(settings: &KeySettings) -> Result<Option<Self>, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = &settings.hmac_secret {
            keys.push(Key::hmac(secret, None, settings)?);
        }
        if let Some(secret) = &settings.previous_hmac_secret {
            let until = settings
                .previous_hmac_until
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            keys.push(Key::hmac(secret, Some(until), settings)?);
        }
        if let Some(path) = &settings.public_key {
            keys.push(Key::public(path, settings)?);
        }
        Ok((!keys.is_empty()).then_some(Verifier { keys }))
    }

    /// The identity `token` proves. The first key that verifies the signature decides.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now = unix_now();
        let mut last = AuthError::Invalid("no key accepts this token".into());
        for key in self.keys.iter().filter(|k| k.until.is_none_or(|u| now < u)) {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation) {
                Ok(data) => return data.claims.into_identity(),
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match error.kind() {
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => last,
                        _ => AuthError::Invalid(error.to_string()),
                    };
                }
            }
        }
        Err(last)
    }
}

// === impl Key ===

impl Key {
    fn hmac(secret: &str, until: Option<u64>, settings: &KeySettings) -> Result<Self, KeyError> {
        Ok(Key {
            decoding: DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| KeyError::Secret(e.to_string()))?,
            validation: validation(&[Algorithm::HS256], settings),
            until,
        })
    }

    fn public(path: &Path, settings: &KeySettings) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let (decoding, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            (
                key,
                &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512][..],
            )
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            (key, &[Algorithm::ES256, Algorithm::ES384][..])
        } else {
            return Err(KeyError::NotAPublicKey { path: shown });
        };
        Ok(Key {
            decoding,
            validation: validation(algorithms, settings),
            until: None,
        })
    }
}

fn validation(algorithms: &[Algorithm], settings: &KeySettings) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.to_vec();
    validation.leeway = LEEWAY_SECS;
    validation.required_spec_claims = ["sub".to_string()].into_iter().collect();
    if settings.require_exp {
        validation.required_spec_claims.insert("exp".to_string());
    }
    // A token not valid yet is refused like an expired one would be, with the same leeway.
    validation.validate_nbf = true;
    match &settings.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &settings.issuer {
        validation.set_issuer(&[iss]);
    }
    validation
}

// === impl Claims ===

impl Claims {
    fn into_identity(self) -> Result<Identity, AuthError> {
        // An empty user id would be a signed-in nobody, matching empty names in user-limited
        // topics.
        if self.sub.trim().is_empty() {
            return Err(AuthError::Invalid("the token's sub is empty".into()));
        }
        Ok(Identity::user(&self.sub, self.info)
            .with_expiry(self.exp)
            .with_grants(self.topics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn verifier(settings: KeySettings) -> Verifier {
        Verifier::new(&settings).unwrap().unwrap()
    }

    fn hs(secret: &str) -> KeySettings {
        KeySettings {
            hmac_secret: Some(secret.into()),
            ..KeySettings::default()
        }
    }

    #[test]
    fn a_token_signed_with_the_secret_names_its_user() {
        let v = verifier(hs("s3cret"));
        let exp = unix_now() + 60;
        let t = token(
            "s3cret",
            serde_json::json!({"sub": "alice", "exp": exp, "info": {"name": "Alice"}, "topics": ["/vip/*"]}),
        );
        let id = v.verify(&t).unwrap();
        assert_eq!(id.user_id(), Some("alice"));
        assert_eq!(id.expires_at(), Some(exp));
        assert_eq!(id.info().unwrap()["name"], "Alice");
        assert!(id.granted("/vip/lounge"));
        assert!(!id.granted("/other"));
    }

    #[test]
    fn forged_expired_and_subjectless_tokens_are_refused() {
        let v = verifier(hs("s3cret"));
        let forged = token("other", serde_json::json!({"sub": "alice"}));
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid(_))));
        let expired = token(
            "s3cret",
            serde_json::json!({"sub": "a", "exp": unix_now() - 60}),
        );
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let nobody = token("s3cret", serde_json::json!({"name": "x"}));
        assert!(matches!(v.verify(&nobody), Err(AuthError::Invalid(_))));
        assert!(matches!(v.verify("not.a.jwt"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn a_previous_secret_holds_until_its_time() {
        let mut settings = hs("new");
        settings.previous_hmac_secret = Some("old".into());
        settings.previous_hmac_until = Some(SystemTime::now() + Duration::from_secs(60));
        let old = token("old", serde_json::json!({"sub": "bob"}));
        assert_eq!(
            verifier(settings.clone()).verify(&old).unwrap().user_id(),
            Some("bob")
        );
        settings.previous_hmac_until = Some(SystemTime::now() - Duration::from_secs(1));
        assert!(verifier(settings).verify(&old).is_err());
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let mut settings = hs("k");
        settings.audience = Some("chat".into());
        settings.issuer = Some("https://id.example".into());
        let v = verifier(settings);
        let good = token(
            "k",
            serde_json::json!({"sub": "a", "aud": "chat", "iss": "https://id.example"}),
        );
        assert!(v.verify(&good).is_ok());
        let wrong = token(
            "k",
            serde_json::json!({"sub": "a", "aud": "other", "iss": "https://id.example"}),
        );
        assert!(v.verify(&wrong).is_err());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let v = verifier(hs("k"));
        let early = token(
            "k",
            serde_json::json!({"sub": "a", "nbf": unix_now() + 600}),
        );
        assert!(matches!(v.verify(&early), Err(AuthError::Invalid(_))));
        let ready = token("k", serde_json::json!({"sub": "a", "nbf": unix_now() - 1}));
        assert!(v.verify(&ready).is_ok());
    }

    #[test]
    fn a_token_without_exp_is_refused_when_exp_is_required() {
        let endless = token("k", serde_json::json!({"sub": "a"}));
        assert!(verifier(hs("k")).verify(&endless).is_ok());
        let mut settings = hs("k");
        settings.require_exp = true;
        let v = verifier(settings);
        assert!(matches!(v.verify(&endless), Err(AuthError::Invalid(_))));
        let timed = token("k", serde_json::json!({"sub": "a", "exp": unix_now() + 60}));
        assert!(v.verify(&timed).is_ok());
    }

    #[test]
    fn a_token_with_an_empty_sub_is_refused() {
        let v = verifier(hs("k"));
        for sub in ["", "  "] {
            let t = token("k", serde_json::json!({"sub": sub}));
            assert!(
                matches!(v.verify(&t), Err(AuthError::Invalid(_))),
                "{sub:?}"
            );
        }
    }

    #[test]
    fn an_expiry_at_the_end_of_time_does_not_overflow_into_an_immediate_close() {
        let v = verifier(hs("k"));
        let t = token("k", serde_json::json!({"sub": "a", "exp": u64::MAX}));
        let far = v.verify(&t).unwrap();
        assert_eq!(far.remaining(), None, "not timed, and never zero");
        let soon = Identity::user("a", None).with_expiry(Some(unix_now() + 60));
        let left = soon.remaining().unwrap();
        assert!(left > Duration::from_secs(60) && left <= Duration::from_secs(66));
    }
}
