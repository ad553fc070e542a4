//! A parked long-poll: the reply of a poll that found nothing to answer with, held by its
//! session until something arrives or its hold time passes.
//!
//! The HTTP handler awaits the other end of the reply; a client that gives up drops it, which
//! [`Parked::is_abandoned`] tells, so the session keeps what it would have answered for the
//! client's next poll instead of counting it as delivered.
use actix::prelude::*;
use tokio::sync::oneshot;

/// One parked poll, answered with a `T`.
pub struct Parked<T> {
    reply: oneshot::Sender<T>,
    /// Answers the poll when its hold time passes (cancelled when it is answered otherwise).
    timer: Option<SpawnHandle>,
}

impl<T> Parked<T> {
    /// Park `reply`; `timer` is the session's hold-time timer, if it set one.
    pub fn new(reply: oneshot::Sender<T>, timer: Option<SpawnHandle>) -> Self {
        Parked { reply, timer }
    }

    /// The client gave up on this poll.
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Answer the poll (its timer is cancelled). `Err` gives the answer back when the client
    /// left before it could be handed over.
    pub fn answer<A>(self, ctx: &mut Context<A>, answer: T) -> Result<(), T>
    where
        A: Actor<Context = Context<A>>,
    {
        self.cancel(ctx).send(answer)
    }

    /// The hold time passed (its timer fired): take the reply to answer it.
    pub fn expire(self) -> oneshot::Sender<T> {
        self.reply
    }

    /// Stop the hold-time timer and take the reply back.
    pub fn cancel<A>(self, ctx: &mut Context<A>) -> oneshot::Sender<T>
    where
        A: Actor<Context = Context<A>>,
    {
        if let Some(timer) = self.timer {
            ctx.cancel_future(timer);
        }
        self.reply
    }
}
