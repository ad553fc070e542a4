//! The connection actor's mailbox: what its topic, its transports, the application and
//! operators tell it.
use actix::prelude::*;
use tokio::time::Instant;

use super::connection::Connection;
use super::messages::{Attach, Close, Detach, Disconnect, DropTransport, Identify, Inbound, Poll};
use crate::session::InboundError;
use crate::topic::Deliver;
use crate::transport::{Sink, TransportKind, WriteOutcome};

impl Handler<Deliver> for Connection {
    type Result = ();

    fn handle(&mut self, Deliver(envelope): Deliver, ctx: &mut Context<Self>) {
        if envelope.seq == 0 {
            self.notice(envelope, ctx); // unnumbered: a notice of the topic
            return;
        }
        self.take_lane();
        let Some(membership) = &mut self.membership else {
            return;
        };
        membership.sync_epoch();
        if envelope.seq <= membership.cursor {
            self.lend_lane();
            return;
        }
        let next = membership.is_next(&envelope);
        if self.parked.is_some() {
            self.complete_parked(ctx);
        } else if self.sink.is_none() {
            // Away (between polls or reconnecting): the history keeps it for us.
        } else if self.waiting_writable {
            self.enforce_lag_limit(ctx);
        } else if next {
            if self.write_envelope(&envelope, ctx) {
                self.lend_lane();
            }
        } else {
            self.pump(ctx);
        }
    }
}

impl Handler<Attach> for Connection {
    type Result = u64;

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) -> u64 {
        self.take_lane();
        if let Some(old) = self.sink.take() {
            tracing::debug!(session = %self.id, "replacing a transport the client abandoned");
            old.close(None);
        }
        if let Some(parked) = self.parked.take() {
            parked.cancel(ctx);
        }
        if let Some(handle) = self.body_watch.take() {
            ctx.cancel_future(handle);
        }
        self.cancel_expiry(ctx);
        self.generation += 1;
        self.waiting_writable = false;
        self.resume_from(msg.resume.as_ref());
        self.served = true;
        self.mode = msg.mode;
        self.on_transport.set(match &msg.sink {
            Sink::WebSocket(_) => TransportKind::WebSocket,
            Sink::Body(_) => TransportKind::of_body(msg.mode.framing.sse),
        });
        self.sink = Some(msg.sink);
        self.last_write = Instant::now();
        self.replay_target = self.last_seq().max(self.cursor());
        let generation = self.generation;
        if let Some(body) = msg.body {
            self.watch_body(body, generation, ctx);
        }
        if self.mode.protocol {
            let frame = self.handshake_frame();
            if let Some(sink) = self.sink.as_mut() {
                if sink.try_write(&frame) != WriteOutcome::Written {
                    self.detach(ctx, None);
                    return generation;
                }
            }
        }
        self.pump(ctx);
        generation
    }
}

impl Handler<Detach> for Connection {
    type Result = ();

    fn handle(&mut self, Detach(generation): Detach, ctx: &mut Context<Self>) {
        if generation == self.generation {
            self.detach(ctx, None);
        }
    }
}

impl Handler<Inbound> for Connection {
    type Result = Result<(), InboundError>;

    fn handle(&mut self, Inbound(text): Inbound, _ctx: &mut Context<Self>) -> Self::Result {
        self.server.receive(&self.client(), text)
    }
}

impl Handler<Poll> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Poll, ctx: &mut Context<Self>) {
        self.take_lane();
        self.cancel_expiry(ctx);
        let mut reconnect = msg.request.reconnect || self.poll_aborted;
        // A client holds one poll at a time: a new one means it gave up on the old one.
        if self.release_parked_poll(ctx) {
            reconnect = true;
        }
        self.poll_aborted = false;
        self.mode = msg.request.mode;
        self.on_transport.set(TransportKind::LongPolling);
        // An older token means our last answer never reached the client: its request failed,
        // so atmosphere.js is reconnecting and takes the next body's first message as the
        // handshake. Resend with one in front (as for an aborted poll above). A connection that
        // never answered this client (it was served elsewhere) has nothing to compare with.
        let fresh = !self.served;
        if msg.request.session_token.is_none() {
            self.resume_from(msg.request.resume.as_ref());
        } else if let (Some(record), Some(membership)) =
            (msg.request.resume.as_ref(), self.membership.as_mut())
        {
            // The session began on another node: its token may reach back to where it joined
            // there, no further.
            membership.adopt_floor(record.epoch, record.floor.unwrap_or(0));
        }
        if self.apply_session_token(msg.request.session_token.as_deref()) && !fresh {
            reconnect = true;
        }
        // Clustered: what this node's history lacks is read from the shared one first.
        let answer =
            move |act: &mut Self, ctx: &mut Context<Self>| act.answer_or_park(msg, reconnect, ctx);
        if let Some(answer) = self.fetch_first(ctx, answer) {
            answer(self, ctx);
        }
    }
}

impl Handler<DropTransport> for Connection {
    type Result = ();

    fn handle(&mut self, _: DropTransport, ctx: &mut Context<Self>) {
        if self.release_parked_poll(ctx) {
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
        }
        if self.sink.is_some() {
            self.detach(ctx, Some(actix_http::ws::CloseCode::Restart.into()));
        }
    }
}

impl Handler<Identify> for Connection {
    type Result = ();

    fn handle(&mut self, Identify(identity): Identify, ctx: &mut Context<Self>) {
        self.identify(identity, ctx);
    }
}

impl Handler<Disconnect> for Connection {
    type Result = ();

    fn handle(&mut self, _: Disconnect, ctx: &mut Context<Self>) {
        self.release_parked_poll(ctx);
        if self.sink.is_some() {
            self.detach(ctx, Some(crate::session::disconnected()));
        }
        ctx.stop();
    }
}

impl Handler<Close> for Connection {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
