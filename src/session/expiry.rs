//! Tokens that run out: a session actor whose client's token expires loses its transport at
//! that moment, on every transport. The client may come back with a new token; an old one is
//! refused at the door (401), so an expired identity never keeps a live connection.
use actix::prelude::*;
use actix_http::ws::{CloseCode, CloseReason};

use super::Identity;

/// A session actor that holds an identity with an expiry.
pub trait Expires: Actor<Context = Context<Self>> {
    /// The timer of the current identity, if one runs.
    fn token_timer(&mut self) -> &mut Option<SpawnHandle>;

    /// The identity ran out: end the client's transport (see [`token_expired`]).
    fn token_expired(&mut self, ctx: &mut Context<Self>);
}

/// Start the timer for `identity`, replacing the one of an earlier identity (a client that
/// reconnected with a fresh token).
pub fn arm<A: Expires>(actor: &mut A, identity: &Identity, ctx: &mut Context<A>) {
    if let Some(old) = actor.token_timer().take() {
        ctx.cancel_future(old);
    }
    if let Some(left) = identity.remaining() {
        let handle = ctx.run_later(left, |actor, ctx| {
            *actor.token_timer() = None;
            actor.token_expired(ctx);
        });
        *actor.token_timer() = Some(handle);
    }
}

/// How a WebSocket whose token expired is closed: `1008` (policy), "token expired".
pub fn token_expired() -> CloseReason {
    CloseReason {
        code: CloseCode::Policy,
        description: Some("token expired".into()),
    }
}
