//! Long-polling inside the connection actor: answering a poll from the history, parking it
//! until something arrives, and the session token that says what the client acknowledged.
//!
//! The cursor moves only when an answer was handed to a client that was still there, and the
//! `X-Atmosphere-Session-Token` header (which atmosphere.js echoes on its next request) carries
//! the cursor the client acknowledged, so an answer lost on the way is sent again.
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use std::collections::VecDeque;

use super::connection::{poll_frames, Connection, DEFAULT_POLL_HOLD, MAX_POLL_BATCH};
use super::lane::atmosphere_frame;
use super::messages::{Poll, PollReply};
use crate::node::Stats;
use crate::protocol::atmosphere::frame::PADDING;
use crate::transport::long_poll::Parked;

impl Connection {
    pub(super) fn session_token(&self, cursor: u64) -> String {
        format!("{}-{cursor}", self.epoch())
    }

    /// Move the cursor to what the client acknowledged. Behind it: the last answer was lost on
    /// the way (returns `true`: the client is reconnecting). Ahead of it: another node served
    /// the client since (a cluster without sticky sessions), or the relays of the last
    /// messages have not reached this node yet; the client has them and they must not be sent
    /// again. Tokens from another topic epoch are ignored.
    pub(super) fn apply_session_token(&mut self, token: Option<&str>) -> bool {
        let (Some(token), Some(membership)) = (token, &mut self.membership) else {
            return false;
        };
        membership.sync_epoch();
        let Some((epoch, seq)) = token.split_once('-') else {
            return false;
        };
        if epoch.parse() != Ok(membership.epoch) {
            return false;
        }
        let Ok(seq) = seq.parse::<u64>() else {
            return false;
        };
        membership.acknowledge(seq)
    }

    /// Build a long-poll body from the history; returns it, the cursor it reaches, and how
    /// many messages it holds. Without `TrackMessageSize` a body carries exactly one message.
    pub(super) fn poll_body(&mut self, with_handshake: bool) -> (BytesMut, u64, u64) {
        let mut body = BytesMut::new();
        let framing = self.mode.framing;
        if with_handshake && self.mode.protocol {
            body.extend_from_slice(self.handshake_frame().as_bytes());
            if !framing.track_message_size {
                return (body, self.cursor(), 0);
            }
        }
        // Notices first (presence); without TrackMessageSize a poll carries one message.
        while let Some(notice) = self.notices.as_mut().and_then(VecDeque::pop_front) {
            body.extend_from_slice(atmosphere_frame(&notice, framing).as_bytes());
            if !framing.track_message_size {
                return (body, self.cursor(), 0);
            }
        }
        let limit = if framing.track_message_size {
            MAX_POLL_BATCH as u64
        } else {
            1
        };
        let start = self.cursor();
        let replay = self.replay(MAX_POLL_BATCH);
        let (cursor, count) = poll_frames(&self.id, self.mode, replay, limit, start, &mut body);
        (body, cursor.max(self.cursor()), count)
    }

    /// Answer a long-poll; the cursor moves only if the client was still there to take it.
    pub(super) fn answer_poll(
        &mut self,
        reply: oneshot::Sender<PollReply>,
        body: BytesMut,
        cursor: u64,
        count: u64,
    ) {
        let session_token = self.session_token(cursor);
        self.served = true;
        match reply.send(PollReply {
            body: body.freeze(),
            session_token,
            epoch: self.epoch(),
            cursor,
            floor: self.floor(),
        }) {
            Ok(()) => {
                self.set_cursor(cursor);
                Stats::add(&self.node.stats.delivered, count);
            }
            Err(_) => self.poll_aborted = true,
        }
    }

    /// A message arrived while a poll is parked: complete it with what the history has.
    pub(super) fn complete_parked(&mut self, ctx: &mut Context<Self>) {
        let Some(parked) = self.parked.take() else {
            return;
        };
        if parked.is_abandoned() {
            parked.cancel(ctx);
            self.poll_aborted = true;
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
            return;
        }
        self.parked = Some(parked);
        if self
            .fetch_first(ctx, |act, ctx| act.complete_parked(ctx))
            .is_none()
        {
            return;
        }
        let (body, cursor, count) = self.poll_body(false);
        if body.is_empty() {
            return;
        }
        if let Some(parked) = self.parked.take() {
            let reply = parked.cancel(ctx);
            self.answer_poll(reply, body, cursor, count);
        }
        self.arm_expiry(ctx, self.node.config.long_poll_expiry());
    }

    /// Answer a parked poll with an empty body (the client simply polls again); returns
    /// whether one was parked.
    pub(super) fn release_parked_poll(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(parked) = self.parked.take() else {
            return false;
        };
        let cursor = self.cursor();
        let _ = parked.answer(
            ctx,
            PollReply {
                body: Bytes::new(),
                session_token: self.session_token(cursor),
                epoch: self.epoch(),
                cursor,
                floor: self.floor(),
            },
        );
        true
    }

    /// Answer the poll now if there is anything to say, or park it until there is (or until
    /// its hold time passes: it is then answered with the heartbeat padding, or empty).
    pub(super) fn answer_or_park(&mut self, msg: Poll, reconnect: bool, ctx: &mut Context<Self>) {
        if msg.request.handshake_only {
            let body = BytesMut::from(self.handshake_frame().as_bytes().as_ref());
            let cursor = self.cursor();
            self.answer_poll(msg.reply, body, cursor, 0);
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
            return;
        }
        let (body, cursor, count) = self.poll_body(reconnect);
        if !body.is_empty() {
            self.answer_poll(msg.reply, body, cursor, count);
            self.arm_expiry(ctx, self.node.config.long_poll_expiry());
            return;
        }
        let hold = self.mode.heartbeat.unwrap_or(DEFAULT_POLL_HOLD);
        let timer = ctx.run_later(hold, |act, ctx| {
            let Some(parked) = act.parked.take() else {
                return;
            };
            let body = match act.mode.heartbeat {
                Some(_) => BytesMut::from(act.mode.framing.encode(PADDING).as_bytes().as_ref()),
                None => BytesMut::new(),
            };
            let cursor = act.cursor();
            act.answer_poll(parked.expire(), body, cursor, 0);
            act.arm_expiry(ctx, act.node.config.long_poll_expiry());
        });
        self.parked = Some(Parked::new(msg.reply, Some(timer)));
    }
}
