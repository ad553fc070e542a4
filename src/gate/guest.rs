//! Guest sign-in, for a node that checks no tokens (no `--jwt-*` key: the stock node, and its
//! chat page): the node signs a short-lived token for a name the client chooses, so the name
//! is the client's user id for presence and its `info` for others to see. Anyone may choose
//! any name; it proves nothing, which is why a node that checks real tokens offers no guests.
//!
//! A guest token is `guest.` followed by an HS256 JSON Web Token signed with a key derived
//! from the cluster's session secret, so any node of the cluster accepts it. Other tokens
//! presented to such a node are ignored as before (the client is anonymous).
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::Sha256;
use thiserror::Error;

use super::identity::{unix_now, AuthError, Identity, KeyError, KeySettings, Verifier};

/// What marks a guest token.
const PREFIX: &str = "guest.";
/// How long a guest token holds (the page signs in again after).
pub const GUEST_TTL: Duration = Duration::from_secs(12 * 3600);
/// Longest name, in characters.
const MAX_NAME: usize = 32;

/// A name that cannot be a guest's.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("a name is 1 to {MAX_NAME} characters, not only spaces, without control characters")]
pub struct BadName;

/// Issues and checks guest tokens.
pub struct Guests {
    key: EncodingKey,
    verifier: Verifier,
}

impl Guests {
    /// Guests of a node whose session ids are signed with `session_secret`.
    pub fn new(session_secret: &str) -> Result<Self, KeyError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(session_secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"nimbus guest tokens");
        let secret = hex(&mac.finalize().into_bytes());
        let settings = KeySettings {
            hmac_secret: Some(secret.clone()),
            require_exp: true,
            ..KeySettings::default()
        };
        let verifier = Verifier::new(&settings)?.expect("a key is configured");
        let key = EncodingKey::from_secret(secret.as_bytes())
            .map_err(|e| KeyError::Secret(e.to_string()))?;
        Ok(Guests { key, verifier })
    }

    /// A token for the guest `name` (trimmed): its user id and the token.
    pub fn issue(&self, name: &str) -> Result<(String, String), BadName> {
        let name = name.trim();
        let length = name.chars().count();
        if length == 0 || length > MAX_NAME || name.chars().any(char::is_control) {
            return Err(BadName);
        }
        let claims = serde_json::json!({
            "sub": name,
            "exp": unix_now() + GUEST_TTL.as_secs(),
            "info": {"name": name, "guest": true},
        });
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing cannot fail");
        Ok((name.to_string(), format!("{PREFIX}{token}")))
    }

    /// The guest `token` names, or `None` when it is not a guest token.
    pub fn verify(&self, token: &str) -> Option<Result<Identity, AuthError>> {
        let jwt = token.strip_prefix(PREFIX)?;
        Some(self.verifier.verify(jwt))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_token_names_its_guest_on_any_node_of_the_cluster_only() {
        let guests = Guests::new("cluster secret").unwrap();
        let (user, token) = guests.issue("  Ada Lovelace ").unwrap();
        assert_eq!(user, "Ada Lovelace");
        let other_node = Guests::new("cluster secret").unwrap();
        let who = other_node.verify(&token).unwrap().unwrap();
        assert_eq!(who.user_id(), Some("Ada Lovelace"));
        assert_eq!(who.info().unwrap()["name"], "Ada Lovelace");
        let elsewhere = Guests::new("another cluster").unwrap();
        assert!(elsewhere.verify(&token).unwrap().is_err());
        assert!(guests.verify("not-a-guest-token").is_none());
        assert!(guests.verify("guest.forged").unwrap().is_err());
    }

    #[test]
    fn names_are_short_printable_and_not_blank() {
        let guests = Guests::new("s").unwrap();
        assert_eq!(guests.issue("   "), Err(BadName));
        assert_eq!(guests.issue(&"x".repeat(33)), Err(BadName));
        assert_eq!(guests.issue("a\nb"), Err(BadName));
        assert!(guests.issue("ü€😀").is_ok());
    }
}
