//! Session ids the node issues: Atmosphere tracking ids and Cettia socket ids, signed with a
//! secret every node of the cluster shares and bound to the user they were issued to.
//!
//! An id is `<32 hex digits>-<22 base64url characters>`: a random part, then an HMAC-SHA256
//! of the random part and the user id. Any node can check it without asking anyone, so a
//! client resuming on another node is recognised, and a request carrying an id that was issued
//! to another user, or never issued, is refused before it reaches the session.
//!
//! Whether unsigned ids are still taken is the [`IdPolicy`]: `signed` refuses them; `open`
//! (the default while no authentication is configured, since every client is then the same
//! anonymous user) takes any well-formed id, as Atmosphere servers do.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of the MAC kept in an id (128 bits).
const TAG_BYTES: usize = 16;

/// Whether a session id must carry the node's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdPolicy {
    /// Only ids this cluster issued, to this user.
    Signed,
    /// Any well-formed id (no authentication: nothing to bind an id to).
    Open,
}

/// Whom a session id is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// A signed-in user.
    User(&'a str),
    /// An anonymous browser, by the secret of its `nimbus-anon` cookie (HttpOnly: never in a
    /// URL, never readable by the page's scripts).
    Browser(&'a str),
    /// An anonymous client that keeps no cookie: whoever knows the id.
    Anyone,
}

/// An id refused by [`SessionIds::check`].
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("this session id was not issued to you")]
pub struct ForeignId;

/// Issues and checks session ids with the cluster's secret.
#[derive(Clone)]
pub struct SessionIds {
    secret: Vec<u8>,
    policy: IdPolicy,
}

// === impl SessionIds ===

impl SessionIds {
    pub fn new(secret: &[u8], policy: IdPolicy) -> Self {
        SessionIds {
            secret: secret.to_vec(),
            policy,
        }
    }

    pub fn policy(&self) -> IdPolicy {
        self.policy
    }

    /// A fresh id for `owner`.
    pub fn issue(&self, owner: Owner<'_>) -> String {
        let random = uuid::Uuid::new_v4().simple().to_string();
        let tag = self.tag(&random, owner);
        format!("{random}-{tag}")
    }

    /// Whether `id` has the form of an issued id (32 hex digits, `-`, 22 base64url
    /// characters), signed by anyone or no one.
    pub fn is_issued_form(id: &str) -> bool {
        id.split_once('-').is_some_and(|(random, tag)| {
            random.len() == 32
                && random.bytes().all(|b| b.is_ascii_hexdigit())
                && URL_SAFE_NO_PAD
                    .decode(tag)
                    .is_ok_and(|tag| tag.len() == TAG_BYTES)
        })
    }

    /// Whether `id` may be used by `owner`.
    pub fn check(&self, id: &str, owner: Owner<'_>) -> Result<(), ForeignId> {
        if self.policy == IdPolicy::Open || self.was_issued(id, owner) {
            Ok(())
        } else {
            Err(ForeignId)
        }
    }

    /// Whether this cluster issued `id` to `owner` (under either policy). A browser also
    /// holds the ids issued to anyone: those it got before its cookie was set.
    pub fn was_issued(&self, id: &str, owner: Owner<'_>) -> bool {
        self.verify(id, owner).is_ok()
            || (matches!(owner, Owner::Browser(_)) && self.verify(id, Owner::Anyone).is_ok())
    }

    fn verify(&self, id: &str, owner: Owner<'_>) -> Result<(), ForeignId> {
        let (random, tag) = id.split_once('-').ok_or(ForeignId)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| ForeignId)?;
        if random.len() != 32 || tag.len() != TAG_BYTES {
            return Err(ForeignId);
        }
        // A constant-time comparison with the left part of the MAC.
        self.mac(random, owner)
            .verify_truncated_left(&tag)
            .map_err(|_| ForeignId)
    }

    fn mac(&self, random: &str, owner: Owner<'_>) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(random.as_bytes());
        // A separator no random part contains, then a marker byte telling a user from a
        // browser from anyone, then the user or the browser's secret.
        match owner {
            Owner::User(user) => {
                mac.update(&[0, 1]);
                mac.update(user.as_bytes());
            }
            Owner::Browser(secret) => {
                mac.update(&[0, 2]);
                mac.update(secret.as_bytes());
            }
            Owner::Anyone => mac.update(&[0, 0]),
        }
        mac
    }

    fn tag(&self, random: &str, owner: Owner<'_>) -> String {
        let full = self.mac(random, owner).finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&full[..TAG_BYTES])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_holds_for_its_user_only() {
        let ids = SessionIds::new(b"cluster secret", IdPolicy::Signed);
        let id = ids.issue(Owner::User("alice"));
        assert!(crate::protocol::atmosphere::request::is_valid_tracking_id(
            &id
        ));
        assert_eq!(ids.check(&id, Owner::User("alice")), Ok(()));
        assert_eq!(ids.check(&id, Owner::User("mallory")), Err(ForeignId));
        assert_eq!(ids.check(&id, Owner::Anyone), Err(ForeignId));
        let anonymous = ids.issue(Owner::Anyone);
        assert_eq!(ids.check(&anonymous, Owner::Anyone), Ok(()));
        assert!(SessionIds::is_issued_form(&id) && SessionIds::is_issued_form(&anonymous));
        let vibe_style = uuid::Uuid::new_v4().to_string();
        assert!(!SessionIds::is_issued_form(&vibe_style));
        assert_eq!(ids.check(&anonymous, Owner::User("alice")), Err(ForeignId));
    }

    #[test]
    fn made_up_and_other_clusters_ids_are_refused() {
        let ids = SessionIds::new(b"cluster secret", IdPolicy::Signed);
        let other = SessionIds::new(b"another secret", IdPolicy::Signed);
        assert_eq!(
            ids.check(&other.issue(Owner::User("a")), Owner::User("a")),
            Err(ForeignId)
        );
        for made_up in ["publisher", "0123-abc", "", "x-y-z"] {
            assert_eq!(
                ids.check(made_up, Owner::Anyone),
                Err(ForeignId),
                "{made_up}"
            );
        }
        let open = SessionIds::new(b"s", IdPolicy::Open);
        assert_eq!(open.check("publisher", Owner::Anyone), Ok(()));
    }

    #[test]
    fn a_browsers_id_is_its_own_and_it_keeps_what_it_had_before_its_cookie() {
        let ids = SessionIds::new(b"cluster secret", IdPolicy::Signed);
        let (mine, theirs) = (Owner::Browser("c0ffee"), Owner::Browser("bad"));
        let bound = ids.issue(mine);
        assert_eq!(ids.check(&bound, mine), Ok(()));
        for other in [theirs, Owner::Anyone, Owner::User("c0ffee")] {
            assert_eq!(ids.check(&bound, other), Err(ForeignId), "{other:?}");
        }
        let before_the_cookie = ids.issue(Owner::Anyone);
        assert_eq!(ids.check(&before_the_cookie, mine), Ok(()));
        assert_eq!(ids.check(&before_the_cookie, Owner::Anyone), Ok(()));
    }
}
