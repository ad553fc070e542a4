//! Waiting until a full transport can take frames again: one future for every session actor.
//!
//! A session that finds its [`Sink`] full spawns a [`WaitWritable`] for the transport's
//! generation and stops writing. The future resolves when the sink has room (the session
//! resumes writing), when the transport is gone (the session drops it), or when the session
//! moved on to another transport meanwhile (nothing happens).
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use actix::ActorFuture;

use super::Sink;

/// A session actor whose transports can fill up.
pub trait Pushes: Actor<Context = Context<Self>> {
    /// The fast lane type of its WebSockets.
    type Lane;

    /// The sink of transport `generation`, if that is still the current transport.
    fn sink_of(&mut self, generation: u64) -> Option<&mut Sink<Self::Lane>>;

    /// The sink has room again: write what waits.
    fn writable(&mut self, ctx: &mut Context<Self>);

    /// The transport is gone: drop it.
    fn unwritable(&mut self, ctx: &mut Context<Self>);
}

/// Resolves when the sink of transport `generation` can take frames again.
pub struct WaitWritable {
    generation: u64,
}

impl WaitWritable {
    pub fn new(generation: u64) -> Self {
        WaitWritable { generation }
    }
}

impl<A: Pushes> ActorFuture<A> for WaitWritable {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let Some(sink) = act.sink_of(self.generation) else {
            return Poll::Ready(());
        };
        match sink.poll_writable(task) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                act.writable(ctx);
                Poll::Ready(())
            }
            Poll::Ready(Err(())) => {
                act.unwritable(ctx);
                Poll::Ready(())
            }
        }
    }
}
