//! The socket's outbound side: events written at once when the transport can take them,
//! queued (bounded, see the socket's module docs) when it cannot, and long-polls answered from
//! the queue.
use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;

use super::messages::{PollAnswer, PushFraming};
use super::socket::{Outgoing, SocketActor, Transport, LONG_POLL_REPOLL, TOPIC_TAIL_SLOT};
use crate::node::Stats;
use crate::protocol::cettia::{event, framing, vibe, Event, WireMessage};
use crate::session;
use crate::topic::Envelope;
use crate::transport::writable::{Pushes, WaitWritable};
use crate::transport::{Sink, WriteOutcome};
use bytes::Bytes;

impl SocketActor {
    /// Encode and send an event.
    pub(super) fn send_event(&mut self, event: Event, ctx: &mut Context<Self>) {
        let vibe_id = event.id.as_str().map(str::to_string);
        match event.encode() {
            Ok(message) => self.send_message(message, vibe_id, ctx),
            Err(error) => {
                tracing::warn!(socket = %self.shared.id, %error, "event not sent");
            }
        }
    }

    /// Write a message now if the transport can take it, queue it otherwise.
    pub(super) fn send_message(
        &mut self,
        message: WireMessage,
        vibe_id: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let outgoing = Outgoing { message, vibe_id };
        if self.pending.is_empty() {
            match &mut self.transport {
                Some(Transport::Push {
                    sink,
                    framing,
                    waiting: false,
                    ..
                }) => match write_push(sink, *framing, &outgoing.message) {
                    WriteOutcome::Written => {
                        Stats::add(&self.server.node().stats.delivered, 1);
                        return;
                    }
                    WriteOutcome::Full => {
                        self.pending.push_back(outgoing);
                        self.wait_writable(ctx);
                        return;
                    }
                    WriteOutcome::Closed => {
                        self.pending.push_back(outgoing);
                        self.close_transport(ctx);
                        return;
                    }
                },
                Some(Transport::LongPoll { parked, .. })
                    if parked.is_some() && !self.shared.dialect.acknowledges_events() =>
                {
                    if let Some(reply) = parked.take() {
                        self.pending.push_back(outgoing);
                        self.answer_poll(reply, ctx);
                        return;
                    }
                }
                _ => {}
            }
        }
        self.enqueue(outgoing, ctx);
        if self.shared.dialect.acknowledges_events() {
            self.complete_vibe_poll(ctx);
        }
    }

    /// Queue a message; apply the slow-consumer policy to an attached transport
    /// ([`session::lagging`]: the queue past the backlog it attached with is its lag), and the
    /// queue's bound to a socket without one.
    pub(super) fn enqueue(&mut self, outgoing: Outgoing, ctx: &mut Context<Self>) {
        self.pending.push_back(outgoing);
        if self.transport.is_some() {
            let lag = self.pending.len().saturating_sub(self.backlog) as u64;
            let Some(reason) = session::lagging(self.server.node(), &self.shared.id, lag) else {
                return;
            };
            self.close_transport_because(ctx, Some(reason));
        }
        while self.pending.len() > self.max_pending() {
            self.pending.pop_front();
            Stats::add(&self.server.node().stats.missed, 1);
        }
    }

    /// The queue's oldest message, now written to the client.
    fn take_written(&mut self) -> Option<Outgoing> {
        let written = self.pending.pop_front()?;
        self.backlog = self.backlog.saturating_sub(1);
        Some(written)
    }

    pub(super) fn wait_writable(&mut self, ctx: &mut Context<Self>) {
        if let Some(Transport::Push { waiting, .. }) = &mut self.transport {
            if !*waiting {
                *waiting = true;
                ctx.spawn(WaitWritable::new(self.generation));
            }
        }
    }

    /// Write queued messages into a pushing transport until it is full.
    pub(super) fn flush(&mut self, ctx: &mut Context<Self>) {
        let delivered = &self.server.node().stats.delivered;
        let Some(Transport::Push {
            sink,
            framing,
            waiting,
            ..
        }) = &mut self.transport
        else {
            return;
        };
        if *waiting {
            return;
        }
        while let Some(front) = self.pending.front() {
            match write_push(sink, *framing, &front.message) {
                WriteOutcome::Written => {
                    self.pending.pop_front();
                    self.backlog = self.backlog.saturating_sub(1);
                    Stats::add(delivered, 1);
                }
                WriteOutcome::Full => {
                    self.wait_writable(ctx);
                    return;
                }
                WriteOutcome::Closed => {
                    self.close_transport(ctx);
                    return;
                }
            }
        }
    }

    /// Answer a Cettia long-poll with the next queued message (or park nothing: caller checked).
    pub(super) fn answer_poll(
        &mut self,
        reply: oneshot::Sender<PollAnswer>,
        ctx: &mut Context<Self>,
    ) {
        if !matches!(self.transport, Some(Transport::LongPoll { .. })) {
            return;
        }
        let Some(outgoing) = self.take_written() else {
            return;
        };
        let Some(Transport::LongPoll { jsonp, repoll, .. }) = &mut self.transport else {
            return;
        };
        let answer = poll_answer(jsonp.as_deref(), &outgoing.message);
        if reply.send(answer).is_err() {
            // The client left before the answer went out: keep the message for its return.
            self.pending.push_front(outgoing);
            self.close_transport(ctx);
            return;
        }
        Stats::add(&self.server.node().stats.delivered, 1);
        let generation = self.generation;
        *repoll = Some(ctx.run_later(LONG_POLL_REPOLL, move |act, ctx| {
            if act.generation == generation {
                tracing::debug!(socket = %act.shared.id, "long-poll not renewed in time");
                act.close_transport(ctx);
            }
        }));
    }

    /// Vibe long-polling: answer a parked poll with every unacknowledged event.
    pub(super) fn complete_vibe_poll(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            return;
        }
        let Some(Transport::LongPoll {
            jsonp,
            parked,
            repoll,
        }) = &mut self.transport
        else {
            return;
        };
        let Some(reply) = parked.take() else {
            return;
        };
        let texts: Vec<&str> = self
            .pending
            .iter()
            .filter_map(|o| match &o.message {
                WireMessage::Text(t) => Some(&**t),
                WireMessage::Binary(_) => None,
            })
            .collect();
        let body = vibe::long_poll_body(texts.into_iter());
        let answer = poll_answer(jsonp.as_deref(), &WireMessage::Text(body.into()));
        if reply.send(answer).is_err() {
            self.close_transport(ctx);
            return;
        }
        let generation = self.generation;
        *repoll = Some(ctx.run_later(LONG_POLL_REPOLL, move |act, ctx| {
            if act.generation == generation {
                act.close_transport(ctx);
            }
        }));
    }

    /// A topic message for this socket: a `message` event whose data is the text (a JSON
    /// string) or, for JSON messages, the JSON itself.
    /// Send a topic's message as a `message` event, or its notice (unnumbered) as a
    /// `presence` event.
    pub(super) fn deliver_topic_message(&mut self, envelope: &Envelope, ctx: &mut Context<Self>) {
        let kind = if envelope.seq == 0 {
            "presence"
        } else {
            "message"
        };
        let tail = envelope.frame(TOPIC_TAIL_SLOT, |text| {
            let data = if envelope.json {
                text.to_string()
            } else {
                serde_json::to_string(text).unwrap_or_else(|_| "null".into())
            };
            ByteString::from(event::json_tail(kind, &data, false))
        });
        let id = self.next_id();
        let mut json = String::with_capacity(tail.len() + 16);
        json.push_str("{\"id\":\"");
        json.push_str(&id);
        json.push_str("\",");
        json.push_str(tail);
        self.send_message(WireMessage::Text(json.into()), Some(id), ctx);
    }
}

fn write_push(sink: &mut Sink, framing: PushFraming, message: &WireMessage) -> WriteOutcome {
    match (framing, message) {
        (PushFraming::WebSocket, WireMessage::Text(text)) => sink.try_write(text),
        (PushFraming::WebSocket, WireMessage::Binary(bytes)) => sink.try_write_bytes(bytes.clone()),
        (PushFraming::CettiaStream, message) => {
            sink.try_write_bytes(framing::stream_message(message))
        }
        (PushFraming::VibeStream, WireMessage::Text(text)) => {
            sink.try_write_bytes(vibe::stream_event(text))
        }
        // Vibe carries text only; a binary event cannot be written (it was logged when made).
        (PushFraming::VibeStream, WireMessage::Binary(_)) => WriteOutcome::Written,
    }
}

fn poll_answer(jsonp: Option<&str>, message: &WireMessage) -> PollAnswer {
    match (jsonp, message) {
        (Some(callback), WireMessage::Text(text)) => PollAnswer {
            body: Bytes::from(framing::jsonp(callback, text)),
            content_type: "text/javascript; charset=utf-8",
        },
        (None, WireMessage::Text(text)) => PollAnswer {
            body: text.as_bytes().clone(),
            content_type: "text/plain; charset=utf-8",
        },
        // JSONP cannot carry binary: send nothing rather than a corrupt script.
        (Some(_), WireMessage::Binary(_)) => PollAnswer {
            body: Bytes::new(),
            content_type: "text/javascript; charset=utf-8",
        },
        (None, WireMessage::Binary(bytes)) => PollAnswer {
            body: bytes.clone(),
            content_type: "application/octet-stream",
        },
    }
}

impl Pushes for SocketActor {
    type Lane = ();

    fn sink_of(&mut self, generation: u64) -> Option<&mut Sink> {
        match &mut self.transport {
            Some(Transport::Push { sink, .. }) if generation == self.generation => Some(sink),
            _ => None,
        }
    }

    fn writable(&mut self, ctx: &mut Context<Self>) {
        if let Some(Transport::Push { waiting, .. }) = &mut self.transport {
            *waiting = false;
        }
        self.flush(ctx);
    }

    fn unwritable(&mut self, ctx: &mut Context<Self>) {
        self.close_transport(ctx);
    }
}
