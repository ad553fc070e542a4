//! The handles an application holds: a [`Socket`] to send to, tag, join topics with or close,
//! and a [`Reply`] to answer a client's event that asked for one.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use super::messages::{CloseSocket, Emit, JoinTopic, LeaveTopic, SendReply};
use super::socket::{reply_data, SocketActor};
use super::{Cettia, ReplyCallback, SendError, SocketShared, Value};
use crate::protocol::cettia::Dialect;
use crate::session::Refused;
use crate::topic::TopicId;

/// A handle to one socket; cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct Socket {
    pub(super) shared: Arc<SocketShared>,
    pub(super) addr: Addr<SocketActor>,
    pub(super) server: Cettia,
}

impl Socket {
    /// The socket id (`cettia-id`, or the Vibe client's `id`).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The signed-in user (its token's `sub`); `None` when anonymous.
    pub fn user(&self) -> Option<std::sync::Arc<str>> {
        self.shared.identity.lock().user_arc()
    }

    /// Who the client is.
    pub fn identity(&self) -> crate::session::Identity {
        self.shared.identity.lock().clone()
    }

    pub fn dialect(&self) -> Dialect {
        self.shared.dialect
    }

    /// Values of query parameter `name` on the request that created the socket.
    pub fn query<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.shared
            .params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Send an event. While the socket is between transports it is kept (bounded) and
    /// delivered when the client resumes.
    pub fn send(&self, kind: &str, data: Value) -> Result<(), SendError> {
        self.emit(kind, data, None)
    }

    /// Send an event asking for a reply; `callback` runs with the client's answer.
    pub fn send_with_reply(
        &self,
        kind: &str,
        data: Value,
        callback: impl FnOnce(&Socket, Result<Value, Value>) + Send + 'static,
    ) -> Result<(), SendError> {
        self.emit(kind, data, Some(Box::new(callback)))
    }

    fn emit(
        &self,
        kind: &str,
        data: Value,
        on_reply: Option<ReplyCallback>,
    ) -> Result<(), SendError> {
        if self.shared.deleted.load(Ordering::Relaxed) {
            return Err(SendError::Deleted);
        }
        self.addr
            .try_send(Emit {
                kind: kind.to_string(),
                data,
                on_reply,
            })
            .or_else(|e| match e {
                actix::prelude::SendError::Full(_) => Err(SendError::Full),
                // Moved to another node (clustered): the send follows it there.
                actix::prelude::SendError::Closed(emit)
                    if emit.on_reply.is_none() && self.server.control().is_some() =>
                {
                    self.server.send_to(self.id(), &emit.kind, emit.data)
                }
                actix::prelude::SendError::Closed(_) => Err(SendError::Deleted),
            })
    }

    /// Close the socket's transport (the client may resume), or delete the socket if it has
    /// none.
    pub fn close(&self) {
        let _ = self.addr.try_send(CloseSocket);
    }

    /// Join `topic` (`/chat/lobby`): its messages arrive as `message` events. The gate decides
    /// for the socket's client, as for a `topic` parameter: a topic its namespace does not
    /// let it subscribe to, or one past `--max-topics-per-connection`, is refused.
    pub fn join(&self, topic: &str) -> Result<(), Refused> {
        self.join_with(topic, JoinOptions::default())
    }

    /// Join `topic` as [`Socket::join`] does, with `options`: first receiving its last
    /// `history` messages (no more than `--history-messages`, none if its namespace turns
    /// history off), and with `presence`, `presence` events when users join and leave it
    /// (`{"nimbus": "presence", "event": "join" | "leave", "user", "info"?}`).
    pub fn join_with(&self, topic: &str, options: JoinOptions) -> Result<(), Refused> {
        let gate = &self.server.node().gate;
        let who = self.identity();
        let cleared = {
            let mut topics = self.shared.topics.lock();
            if topics.iter().any(|t| &**t == topic) {
                return Ok(());
            }
            let mut cleared = gate.subscribe(&who, topics.len(), [topic])?;
            let cleared = cleared.remove(0);
            topics.push(cleared.topic().clone());
            cleared
        };
        // Past the mailbox bound rather than dropped: the cap on topics bounds these.
        self.addr.do_send(JoinTopic {
            topic: cleared,
            history: options.history,
            presence: options.presence,
        });
        Ok(())
    }

    /// Leave `topic`.
    pub fn leave(&self, topic: &str) {
        self.shared.topics.lock().retain(|t| &**t != topic);
        let _ = self.addr.try_send(LeaveTopic(topic.into()));
    }

    /// The topics the socket is in.
    pub fn topics(&self) -> Vec<TopicId> {
        self.shared.topics.lock().clone()
    }

    pub fn tag(&self, tag: &str) {
        self.shared.tags.lock().insert(tag.to_string());
    }

    pub fn untag(&self, tag: &str) {
        self.shared.tags.lock().remove(tag);
    }

    pub fn tags(&self) -> Vec<String> {
        self.shared.tags.lock().iter().cloned().collect()
    }

    /// The server this socket belongs to.
    pub fn server(&self) -> &Cettia {
        &self.server
    }
}

/// The answer to an inbound event that asked for one; the first call wins.
#[derive(Clone)]
pub struct Reply {
    pub(super) socket: Socket,
    pub(super) id: Value,
    pub(super) done: Arc<AtomicBool>,
}

impl Reply {
    pub(crate) fn new(socket: Socket, id: Value) -> Self {
        Reply {
            socket,
            id,
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Resolve: the client's resolved callback runs with `data`.
    pub fn resolve(&self, data: Value) {
        self.answer(data, false);
    }

    /// Reject: the client's rejected callback runs with `data`.
    pub fn reject(&self, data: Value) {
        self.answer(data, true);
    }

    fn answer(&self, data: Value, exception: bool) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        let sent = self.socket.addr.try_send(SendReply {
            id: self.id.clone(),
            data,
            exception,
        });
        // Moved to another node (clustered): the reply follows the socket there.
        if let Err(actix::prelude::SendError::Closed(reply)) = sent {
            if self.socket.server.control().is_some() {
                let data = reply_data(reply.id, reply.data, reply.exception);
                let _ = self.socket.server.send_to(self.socket.id(), "reply", data);
            }
        }
    }
}

/// How a socket joins a topic (see [`Socket::join_with`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinOptions {
    /// The topic's last messages to receive first (history on join).
    pub history: usize,
    /// Receive `presence` events when users join and leave the topic.
    pub presence: bool,
}
