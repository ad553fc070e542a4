//! The socket actor's mailbox: transports attaching and polling, client events, the
//! application's sends, and the cluster's handover.

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::cluster::{Control, Handled};
use super::messages::*;
use super::socket::{
    decode_inbound, reply_data, SocketActor, Transport, LONG_POLL_REPOLL, MAX_REPLY_CALLBACKS,
    MOVED_LINGER,
};
use crate::broker::RecordKind;
use crate::protocol::cettia::{Event, Value};
use crate::session::InboundError;

impl Handler<AttachPush> for SocketActor {
    type Result = u64;

    fn handle(&mut self, msg: AttachPush, ctx: &mut Context<Self>) -> u64 {
        self.on_transport.set(msg.kind);
        let transport = Transport::Push {
            sink: msg.sink,
            framing: msg.framing,
            body_watch: None,
            waiting: false,
        };
        let (generation, record_saved) =
            self.attach(transport, msg.transport_id, msg.heartbeat_ms, false, ctx);
        if let Some(save) = record_saved {
            actix::spawn(save);
        }
        if let Some(body) = msg.body {
            let closed = body.closed();
            let handle = ctx.spawn(closed.into_actor(self).map(move |_, act, ctx| {
                if act.generation == generation {
                    act.close_transport(ctx);
                }
            }));
            if let Some(Transport::Push { body_watch, .. }) = &mut self.transport {
                *body_watch = Some(handle);
            }
        }
        generation
    }
}

impl Handler<AttachLongPoll> for SocketActor {
    type Result = AttachedLongPoll;

    fn handle(&mut self, msg: AttachLongPoll, ctx: &mut Context<Self>) -> AttachedLongPoll {
        self.on_transport
            .set(crate::transport::TransportKind::LongPolling);
        let transport = Transport::LongPoll {
            jsonp: msg.jsonp,
            parked: None,
            repoll: None,
        };
        let (generation, socket_saved) = self.attach(
            transport,
            Some(msg.transport_id.clone()),
            msg.heartbeat_ms,
            msg.continued,
            ctx,
        );
        // Clustered: the next poll of a new transport may land on another node, which looks
        // the transport's socket up and then the socket's record: the open is answered once
        // both are written. A continued transport's next poll finds them already.
        let records_saved = if msg.continued {
            if let Some(save) = socket_saved {
                actix::spawn(save);
            }
            None
        } else {
            let transport_saved = self
                .shared
                .dialect
                .resumes()
                .then(|| {
                    self.server
                        .record_transport(&msg.transport_id, &self.shared.id)
                })
                .flatten();
            let saves: Vec<_> = [socket_saved, transport_saved]
                .into_iter()
                .flatten()
                .collect();
            (!saves.is_empty()).then(|| -> BoxFuture<'static, ()> {
                Box::pin(async move {
                    futures_util::future::join_all(saves).await;
                })
            })
        };
        // The client polls right after the open answer; if it never does, the transport ends.
        if let Some(Transport::LongPoll { repoll, .. }) = &mut self.transport {
            *repoll = Some(ctx.run_later(LONG_POLL_REPOLL, move |act, ctx| {
                if act.generation == generation {
                    act.close_transport(ctx);
                }
            }));
        }
        AttachedLongPoll {
            generation,
            records_saved,
        }
    }
}

impl Handler<LongPoll> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: LongPoll, ctx: &mut Context<Self>) {
        let empty = || PollAnswer {
            body: Bytes::new(),
            content_type: "text/plain; charset=utf-8",
        };
        if msg.generation != self.generation {
            // A closed (aborted, expired, replaced) transport: an empty answer says so.
            let _ = msg.reply.send(empty());
            return;
        }
        let Some(Transport::LongPoll { parked, repoll, .. }) = &mut self.transport else {
            let _ = msg.reply.send(empty());
            return;
        };
        if let Some(handle) = repoll.take() {
            ctx.cancel_future(handle);
        }
        if let Some(old) = parked.take() {
            let _ = old.send(empty());
        }
        if self.shared.dialect.acknowledges_events() {
            let acked = msg.last_event_ids;
            let before = self.pending.len();
            self.pending
                .retain(|o| !o.vibe_id.as_ref().is_some_and(|id| acked.contains(id)));
            // A client acknowledges the oldest events first.
            self.backlog = self.backlog.saturating_sub(before - self.pending.len());
        }
        if let Some(Transport::LongPoll { parked, .. }) = &mut self.transport {
            *parked = Some(msg.reply);
        }
        // The HTTP handler drops its guard when it ends; if the poll is still parked then,
        // the client went away.
        let generation = self.generation;
        let mut guard = msg.guard;
        ctx.spawn(
            async move { guard.closed().await }
                .into_actor(self)
                .map(move |_, act, ctx| {
                    if act.generation != generation {
                        return;
                    }
                    if let Some(Transport::LongPoll {
                        parked: Some(reply),
                        ..
                    }) = &act.transport
                    {
                        if reply.is_closed() {
                            act.close_transport(ctx);
                        }
                    }
                }),
        );
        if self.shared.dialect.acknowledges_events() {
            self.complete_vibe_poll(ctx);
        } else if !self.pending.is_empty() {
            if let Some(Transport::LongPoll { parked, .. }) = &mut self.transport {
                if let Some(reply) = parked.take() {
                    self.answer_poll(reply, ctx);
                }
            }
        }
    }
}

impl Handler<TransportInbound> for SocketActor {
    type Result = Result<(), InboundError>;

    fn handle(&mut self, msg: TransportInbound, ctx: &mut Context<Self>) -> Self::Result {
        if self.moved {
            return Err(InboundError::Moved);
        }
        let current = match &msg.transport {
            // An HTTP transport: the same id, attached, or the one this socket moved here to
            // continue (its poll has not attached it yet).
            Some(id) => self.carries(id),
            None => msg.generation == self.generation && self.transport.is_some(),
        };
        if !current {
            return Err(InboundError::TransportClosed);
        }
        // Every event pays one token of the socket's publish rate (a `message` to many topics
        // pays the rest when it is published).
        let who = self.shared.identity.lock();
        self.server.node().gate.rate(&who, &self.shared.id, 1)?;
        drop(who);
        match decode_inbound(&msg.message) {
            Ok(event) => {
                self.on_event(event, ctx);
                Ok(())
            }
            // The transport closes itself (a WebSocket with 1007, a POST's stream or poll).
            Err(error) => {
                tracing::debug!(socket = %self.shared.id, %error, "bad event: its transport closes");
                Err(error.into())
            }
        }
    }
}

impl Handler<TransportClosed> for SocketActor {
    type Result = ();

    fn handle(&mut self, TransportClosed(generation): TransportClosed, ctx: &mut Context<Self>) {
        if generation == self.generation {
            self.close_transport(ctx);
        }
    }
}

impl Handler<Emit> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: Emit, ctx: &mut Context<Self>) {
        if self.moved {
            // Queued before the move: it follows the socket (a reply callback cannot).
            self.forward_send(msg.kind, msg.data);
            return;
        }
        let id = self.next_id();
        let reply = msg.on_reply.is_some();
        if let Some(callback) = msg.on_reply {
            if self.replies.len() >= MAX_REPLY_CALLBACKS {
                if let Some(oldest) = self.reply_order.pop_front() {
                    if let Some(cb) = self.replies.remove(&oldest) {
                        let socket = self.socket_handle(ctx);
                        cb(
                            &socket,
                            Err(Value::from("too many events awaiting a reply")),
                        );
                    }
                }
            }
            self.replies.insert(id.clone(), callback);
            self.reply_order.push_back(id.clone());
            if self.reply_order.len() > 2 * MAX_REPLY_CALLBACKS {
                let replies = &self.replies;
                self.reply_order.retain(|id| replies.contains_key(id));
            }
        }
        let mut event = Event::new(id, msg.kind, msg.data);
        event.reply = reply;
        self.send_event(event, ctx);
    }
}

impl Handler<SendReply> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: SendReply, ctx: &mut Context<Self>) {
        let data = reply_data(msg.id, msg.data, msg.exception);
        if self.moved {
            self.forward_send("reply".into(), data);
            return;
        }
        let id = self.next_id();
        self.send_event(Event::new(id, "reply", data), ctx);
    }
}

impl Handler<CloseSocket> for SocketActor {
    type Result = ();

    fn handle(&mut self, _: CloseSocket, ctx: &mut Context<Self>) {
        if self.transport.is_some() {
            self.close_transport(ctx);
        } else {
            ctx.stop();
        }
    }
}

impl Handler<Disconnect> for SocketActor {
    type Result = ();

    fn handle(&mut self, _: Disconnect, ctx: &mut Context<Self>) {
        if self.transport.is_some() {
            self.close_transport_because(ctx, Some(crate::session::disconnected()));
        }
    }
}

impl Handler<HandOver> for SocketActor {
    type Result = ();

    fn handle(&mut self, HandOver { to, nonce }: HandOver, ctx: &mut Context<Self>) {
        if self.moved {
            return;
        }
        if let Some(tid) = &self.transport_id {
            self.server.forget_transport_of(tid, &ctx.address());
        }
        // Taken before the transport ends: a handshake it still owes travels with the socket.
        let record = self.snapshot(&to);
        // Set first: the transport ends without `close`, the record writes stop.
        self.moved = true;
        self.drop_transport(ctx);
        if let Some(handle) = self.delete_timer.take() {
            ctx.cancel_future(handle);
        }
        // Topic messages are the new node's from the record's cursors on.
        self.leave_topics();
        if let Some(control) = self.server.control() {
            let save = control.save_record(
                RecordKind::CettiaSocket,
                &self.shared.id,
                record.encode(),
                self.server.resume_window(),
            );
            let handed = Control::Handed {
                id: self.shared.id.to_string(),
                to: to.clone(),
                nonce,
                held: true,
            }
            .encode();
            let control = control.clone();
            let id = self.shared.id.clone();
            actix::spawn(async move {
                if let Err(error) = save.await {
                    tracing::warn!(socket = %id, %error, "final socket record not saved");
                }
                // Only now: the new node reads the record when it hears this.
                let _ = control.publish_control(handed).await;
            });
        }
        tracing::debug!(socket = %self.shared.id, node = %to, "socket handed over");
        ctx.run_later(MOVED_LINGER, |_, ctx| ctx.stop());
    }
}

impl Handler<ForwardedInbound> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: ForwardedInbound, ctx: &mut Context<Self>) {
        if self.moved {
            // The new node buffered it too (it came after the handover request) and answers.
            return;
        }
        let outcome = if !self.carries(&msg.transport) {
            Handled::TransportClosed // a transport the socket no longer has
        } else {
            match decode_inbound(&msg.message) {
                Ok(event) => {
                    self.on_event(event, ctx);
                    Handled::Taken
                }
                Err(error) => {
                    tracing::debug!(socket = %self.shared.id, %error, "bad event: its transport closes");
                    if self.transport_id.as_deref() == Some(&*msg.transport) {
                        self.close_transport(ctx);
                    }
                    Handled::BadEvent(error.to_string())
                }
            }
        };
        if let Some(ack) = msg.ack {
            self.server.answer_inbound(ack, outcome);
        }
    }
}
