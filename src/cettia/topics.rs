//! The socket's topics: joining, leaving, and delivering each topic's messages in order from
//! the socket's cursor in it (a [`Membership`] of the session core).
use actix::prelude::*;

use super::messages::{JoinTopic, LeaveTopic};
use super::socket::{SocketActor, MAX_REPLAY};
use crate::session::{self, Cleared, Membership, Reports};
use crate::topic::{Deliver, Envelope, Leave, TopicId};
use std::sync::Arc;

impl SocketActor {
    /// Join `topic`, starting `history` messages before its last one, then run `then` with
    /// the membership. Nothing else is handled until the topic has answered, so no message is
    /// missed.
    pub(super) fn join(
        &mut self,
        topic: Cleared,
        (history, notices): (usize, bool),
        ctx: &mut Context<Self>,
        then: impl FnOnce(Membership, &mut Self, &mut Context<Self>) + 'static,
    ) {
        let who = self.shared.identity.lock().clone();
        let present = session::present(self.server.node(), &topic, &who);
        let topic = topic.into_topic();
        let topics = self.server.node().topics.clone();
        let session = self.shared.id.clone();
        let recipient = ctx.address().recipient::<Deliver>();
        ctx.wait(
            async move {
                topics
                    .join_with_notices(&topic, session, recipient, notices)
                    .await
            }
            .into_actor(self)
            .map(move |ack, act, ctx| {
                let membership = Membership::new(ack, history).with_presence(present);
                then(membership, act, ctx)
            }),
        );
    }
}

impl Handler<JoinTopic> for SocketActor {
    type Result = ();

    fn handle(&mut self, join: JoinTopic, ctx: &mut Context<Self>) {
        let topic = join.topic.topic().clone();
        if self.topics.contains_key(&topic) || self.moved {
            return;
        }
        let history = session::history_on_join(self.server.node(), &join.topic, join.history);
        let options = (history, join.presence);
        self.join(join.topic, options, ctx, move |membership, act, ctx| {
            act.topics.insert(topic.clone(), membership);
            act.record_dirty = true;
            if history > 0 {
                act.catch_up(topic, ctx);
            }
        });
    }
}

impl Handler<LeaveTopic> for SocketActor {
    type Result = ();

    fn handle(&mut self, LeaveTopic(topic): LeaveTopic, _ctx: &mut Context<Self>) {
        if let Some(membership) = self.topics.remove(&topic) {
            self.record_dirty = true;
            membership.ack.addr.do_send(Leave {
                session: self.shared.id.clone(),
            });
        }
    }
}

impl Handler<Deliver> for SocketActor {
    type Result = ();

    fn handle(&mut self, Deliver(envelope): Deliver, ctx: &mut Context<Self>) {
        let Some(membership) = self.topics.get_mut(&envelope.topic) else {
            return;
        };
        if envelope.seq == 0 {
            // Unnumbered: a notice of the topic (presence), sent as a `presence` event.
            self.deliver_topic_message(&envelope, ctx);
            return;
        }
        if membership.is_fetching() {
            return; // read from the history by the fetch under way
        }
        if membership.is_next(&envelope) {
            membership.cursor = envelope.seq;
            self.record_dirty = true;
            if envelope.audience.includes(&self.shared.id) {
                self.deliver_topic_message(&envelope, ctx);
            }
            return;
        }
        // A gap (our mailbox was full, or the socket came from another node): catch up.
        self.catch_up(envelope.topic.clone(), ctx);
    }
}

impl SocketActor {
    /// Deliver what `topic` holds after the socket's cursor: from this node's history, or,
    /// clustered, from the shared history for the part this node's topic never had.
    pub(super) fn catch_up(&mut self, topic: TopicId, ctx: &mut Context<Self>) {
        let upstream = self.server.node().topics.upstream().cloned();
        loop {
            let Some(membership) = self.topics.get_mut(&topic) else {
                return;
            };
            if let Some(fetch) = membership.fetch(upstream.as_ref()) {
                let find = topic.clone();
                fetch.run(
                    ctx,
                    move |act: &mut Self| act.topics.get_mut(&find),
                    move |act, ctx| act.catch_up(topic, ctx),
                );
                return;
            }
            if membership.is_fetching() {
                return;
            }
            let replay = membership.replay(MAX_REPLAY);
            self.missed(replay.missed);
            if replay.messages.is_empty() {
                return;
            }
            self.deliver_batch(&topic, replay.messages, ctx);
        }
    }

    /// Deliver topic messages after the cursor, in order.
    fn deliver_batch(
        &mut self,
        topic: &TopicId,
        batch: Vec<Arc<Envelope>>,
        ctx: &mut Context<Self>,
    ) {
        for envelope in batch {
            let Some(membership) = self.topics.get_mut(topic) else {
                return;
            };
            if envelope.seq <= membership.cursor {
                continue;
            }
            membership.cursor = envelope.seq;
            self.record_dirty = true;
            if envelope.audience.includes(&self.shared.id) {
                self.deliver_topic_message(&envelope, ctx);
            }
        }
    }
}

impl Reports for SocketActor {
    fn missed(&mut self, missed: u64) {
        session::count_missed(self.server.node(), &self.shared.id, missed);
    }
}
