//! Letting a new session in: its address's connect rate, then the cluster-wide caps on the
//! connections of its address and of its user.
//!
//! Every session is counted while it lives ([`Counted`], kept by the session actor): in the
//! presence tallies by address and by user, which the cluster shares like any presence, so a
//! node that dies takes its counts with it. Only a *new* session is checked against the caps;
//! a session that resumes (an id the cluster issued, a Cettia socket moving between nodes) was let in
//! when it began, and is counted again wherever it lives now without being refused.
//!
//! The count comes first, the check after, so that the new session sees itself and every
//! other session this node is letting in at the same moment; a refused one is uncounted as
//! its guard drops. Sessions opening at once on different nodes may pass a cap together by
//! the few the store has not heard of yet (its counts are written every 100 ms).
use std::sync::Arc;

use crate::gate::{Held, Identity, Refused};
use crate::node::Node;
use crate::presence::{Present, BY_ADDRESS, BY_USER};

/// A session's place in the connection counts; dropping it uncounts the session.
#[derive(Debug, Default)]
pub struct Counted {
    _by_address: Option<Present>,
    _by_user: Option<Present>,
}

/// The keys `who` is counted under: its address and its user, each while its cap is on.
fn keys(node: &Node, who: &Identity) -> (Option<Arc<str>>, Option<Arc<str>>) {
    let caps = node.gate.caps();
    let address = who
        .address()
        .filter(|_| caps.per_address > 0)
        .map(|address| Arc::from(address.to_string()));
    let user = who.user_arc().filter(|_| caps.per_user > 0);
    (address, user)
}

/// Count a session of `who` (nothing to count while every cap is off).
pub fn count(node: &Node, who: &Identity) -> Counted {
    let (address, user) = keys(node, who);
    counted(node, address, user)
}

fn counted(node: &Node, address: Option<Arc<str>>, user: Option<Arc<str>>) -> Counted {
    Counted {
        _by_address: address.map(|key| node.presence.tally(BY_ADDRESS, key)),
        _by_user: user.map(|key| node.presence.tally(BY_USER, key)),
    }
}

/// Let a new session of `who` in: its address may open another connection now, and holds,
/// as its user does, no more than the caps allow in the whole cluster. The session is counted
/// from here on.
pub async fn admit(node: &Node, who: &Identity) -> Result<Counted, Refused> {
    node.gate.connect(who)?;
    let (address, user) = keys(node, who);
    let counted = counted(node, address.clone(), user.clone());
    let held_by = |topic, key: Option<Arc<str>>| async move {
        match key {
            Some(key) => Some(node.presence.held(topic, &key).await),
            None => None,
        }
    };
    let held = Held {
        by_address: held_by(BY_ADDRESS, address).await,
        by_user: held_by(BY_USER, user).await,
    };
    node.gate.hold(held)?;
    Ok(counted)
}
