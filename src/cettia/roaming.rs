//! Cettia in a cluster: sockets that move to the node their client came back to, sends and
//! client events that follow a socket to whichever node holds it, all over the broker's
//! control plane (see `cluster.rs` for the messages and the socket record).
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use super::cluster::{
    Control, Handled, SocketRecord, Target, HANDOVER_WAIT, INBOUND_WAIT, MAX_BUFFERED,
};
use super::messages::{Emit, ForwardedInbound, HandOver, TransportClosed};
use super::socket::SocketActor;
use super::{Cettia, ForwardError, InboundAck, Resuming, SocketShared, MAX_FORWARDED_POSTS};
use crate::broker::{ControlPlane, RecordKind};
use crate::protocol::cettia::{Dialect, Value, WireMessage};
use crate::session::Identity;
use crate::topic::{SessionId, TopicId};

/// Removes a [`Resuming`] entry however the resumption ends (also when the request that started
/// it is dropped).
struct ResumingGuard<'a> {
    server: &'a Cettia,
    id: SessionId,
    nonce: String,
}

impl Drop for ResumingGuard<'_> {
    fn drop(&mut self) {
        let mut resuming = self.server.inner.resuming.lock();
        if resuming
            .get(&self.id)
            .is_some_and(|r| r.nonce == self.nonce)
        {
            resuming.remove(&self.id);
        }
    }
}

/// Removes a forwarded POST's waiter however the POST ends.
struct AckGuard<'a> {
    server: &'a Cettia,
    ack: String,
}

impl Drop for AckGuard<'_> {
    fn drop(&mut self) {
        self.server.inner.acks.lock().remove(&self.ack);
    }
}

// === Cettia in a cluster (see `cluster.rs`) ===

impl Cettia {
    /// The cluster's control plane, when this node is clustered.
    pub(crate) fn control(&self) -> Option<&Arc<dyn ControlPlane>> {
        self.inner.control.as_ref()
    }

    pub(super) fn publish_control(&self, message: Control) {
        let Some(control) = &self.inner.control else {
            return;
        };
        let publish = control.publish_control(message.encode());
        tokio::spawn(async move {
            if let Err(error) = publish.await {
                tracing::warn!(%error, "control message not published");
            }
        });
    }

    /// A live Cettia socket of this node.
    pub(super) fn live(&self, id: &str) -> Option<Addr<SocketActor>> {
        let sockets = self.inner.sockets.lock();
        sockets
            .get(id)
            .filter(|(shared, addr)| shared.dialect.resumes() && addr.connected())
            .map(|(_, addr)| addr.clone())
    }

    /// The socket a request names, if it lives: on this node (of the same dialect), or, for
    /// a Cettia id in a cluster, on another node, from which it is moved here. `None`: the
    /// request opens a new socket.
    pub(crate) async fn existing_socket(
        &self,
        dialect: Dialect,
        id: Option<&str>,
    ) -> Option<Addr<SocketActor>> {
        let id = id?;
        let here = {
            let sockets = self.inner.sockets.lock();
            sockets
                .get(id)
                .filter(|(shared, addr)| shared.dialect == dialect && addr.connected())
                .map(|(_, addr)| addr.clone())
        };
        match (here, dialect, &self.inner.control) {
            (Some(addr), _, _) => Some(addr),
            (None, Dialect::Cettia, Some(_)) => self.resume_remote(id, None).await,
            _ => None,
        }
    }

    /// Move socket `id` to this node from wherever it is (see `cluster.rs`): load its record,
    /// ask its owner to hand it over, recreate it here. `None` when the cluster has no such
    /// socket (or cannot be reached).
    pub(crate) async fn resume_remote(
        &self,
        id: &str,
        transport: Option<&str>,
    ) -> Option<Addr<SocketActor>> {
        let control = self.inner.control.clone()?;
        // Another request of the same client is moving it here already: wait for that one.
        let deadline = Instant::now() + 2 * HANDOVER_WAIT;
        while self.inner.resuming.lock().contains_key(id) {
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(addr) = self.live(id) {
            return Some(addr);
        }
        let record = load_socket_record(&*control, id).await?;
        let nonce = uuid::Uuid::new_v4().to_string();
        let (handed, answer) = tokio::sync::oneshot::channel();
        {
            let mut resuming = self.inner.resuming.lock();
            if resuming.contains_key(id) {
                return None;
            }
            let entry = Resuming {
                nonce: nonce.clone(),
                seen_request: false,
                buffered: Vec::new(),
                handed: Some(handed),
                transport: transport.map(str::to_string),
            };
            resuming.insert(id.into(), entry);
        }
        let guard = ResumingGuard {
            server: self,
            id: id.into(),
            nonce: nonce.clone(),
        };
        let record = if record.owner == control.node_id() {
            // Written by this node (a restarted node with the same id): nobody else holds it.
            record
        } else {
            ask_owner(&*control, id, record, nonce, answer).await?
        };
        let addr = self.settle(id, record, &guard.nonce, transport);
        drop(guard);
        tracing::debug!(socket = %id, "socket moved to this node");
        Some(addr)
    }

    /// Recreate the moved socket here and hand it what was buffered for it meanwhile. Under
    /// the lock of the resumptions: a control message for the socket is either buffered (and
    /// applied here, before anything else reaches it) or, once the socket is registered,
    /// delivered to it; never both (see `on_control`).
    fn settle(
        &self,
        id: &str,
        record: SocketRecord,
        nonce: &str,
        transport: Option<&str>,
    ) -> Addr<SocketActor> {
        let tags = record.tags.clone();
        let mut resuming = self.inner.resuming.lock();
        let buffered = match resuming.get(id) {
            Some(r) if r.nonce == nonce => {
                resuming.remove(id).map(|r| r.buffered).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let continuing: Option<Arc<str>> = transport.map(Arc::from);
        let addr = self.restore(id, record, continuing.clone());
        if let Some(tid) = continuing {
            // Until the poll attaches it (with its real generation), client events for the
            // transport find the socket; a poll with this placeholder gets an empty answer.
            self.register_transport(tid, addr.clone(), u64::MAX);
        }
        // At most MAX_BUFFERED of them.
        for message in buffered {
            match message {
                Control::Send {
                    target, kind, data, ..
                } => {
                    let ours = match &target {
                        Target::Socket(_) => true,
                        Target::Tag(tag) => tags.contains(tag),
                    };
                    if ours {
                        addr.do_send(Emit {
                            kind,
                            data,
                            on_reply: None,
                        });
                    }
                }
                Control::Inbound {
                    transport,
                    message,
                    origin,
                    ack,
                } => addr.do_send(ForwardedInbound {
                    transport: transport.into(),
                    message,
                    ack: Some(InboundAck { ack, origin }),
                }),
                _ => {}
            }
        }
        addr
    }

    /// Recreate a socket from its record (continuing HTTP transport `continuing`, if any).
    pub(super) fn restore(
        &self,
        id: &str,
        record: SocketRecord,
        continuing: Option<Arc<str>>,
    ) -> Addr<SocketActor> {
        let mut sockets = self.inner.sockets.lock();
        if let Some((_, addr)) = sockets.get(id).filter(|(_, a)| a.connected()) {
            return addr.clone();
        }
        let shared = Arc::new(SocketShared {
            id: id.into(),
            dialect: Dialect::Cettia,
            params: record.params.clone(),
            tags: Mutex::new(record.tags.iter().cloned().collect()),
            topics: Mutex::new(
                record
                    .topics
                    .iter()
                    .map(|t| TopicId::from(t.topic.as_str()))
                    .collect(),
            ),
            deleted: AtomicBool::new(false),
            // Told by the request that moved it here (`Identify`).
            identity: Mutex::new(Identity::anonymous()),
        });
        let addr = SocketActor::restored(shared.clone(), self.clone(), record, continuing).start();
        sockets.insert(id.into(), (shared, addr.clone()));
        addr
    }

    /// Clustered: the write that remembers which socket an HTTP transport belongs to, so that
    /// its next request may land on any node (a failure is logged: that request then fails,
    /// and the client opens a new transport).
    pub(crate) fn record_transport(
        &self,
        transport_id: &str,
        socket_id: &str,
    ) -> Option<BoxFuture<'static, ()>> {
        let control = self.inner.control.as_ref()?;
        let save = control.save_record(
            RecordKind::CettiaTransport,
            transport_id,
            socket_id.as_bytes().to_vec(),
            self.resume_window(),
        );
        Some(Box::pin(async move {
            if let Err(error) = save.await {
                tracing::debug!(%error, "transport record not saved");
            }
        }))
    }

    /// Clustered: the socket of an HTTP transport opened on another node, moved here.
    pub(crate) async fn socket_of_remote_transport(
        &self,
        transport_id: &str,
    ) -> Option<Addr<SocketActor>> {
        let control = self.inner.control.clone()?;
        let bytes = control
            .load_record(RecordKind::CettiaTransport, transport_id)
            .await
            .ok()??;
        let id = String::from_utf8(bytes).ok()?;
        match self.live(&id) {
            Some(addr) => Some(addr),
            None => self.resume_remote(&id, Some(transport_id)).await,
        }
    }

    /// Clustered: hand a client event POSTed here to the node that has its transport, and wait
    /// until its socket has handled it (so that the client's next event, sent after this POST is
    /// answered, comes after it wherever it lands).
    pub(crate) async fn forward_inbound(
        &self,
        transport_id: &str,
        message: WireMessage,
    ) -> Result<Handled, ForwardError> {
        let Some(control) = &self.inner.control else {
            return Err(ForwardError::NotClustered);
        };
        let ack = uuid::Uuid::new_v4().to_string();
        let (answer, answered) = tokio::sync::oneshot::channel();
        {
            let mut acks = self.inner.acks.lock();
            if acks.len() >= MAX_FORWARDED_POSTS {
                return Err(ForwardError::Busy);
            }
            acks.insert(ack.clone(), answer);
        }
        // Removes the waiter however this ends (answered, timed out, the client left).
        let _waiting = AckGuard {
            server: self,
            ack: ack.clone(),
        };
        self.publish_control(Control::Inbound {
            transport: transport_id.to_string(),
            message,
            origin: control.node_id().to_string(),
            ack,
        });
        match tokio::time::timeout(INBOUND_WAIT, answered).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => Err(ForwardError::Unanswered),
        }
    }

    /// Clustered: tell the node holding a forwarded POST what became of its event.
    pub(crate) fn answer_inbound(&self, ack: InboundAck, outcome: Handled) {
        let Some(control) = &self.inner.control else {
            return;
        };
        if ack.origin == control.node_id() {
            self.resolve_forwarded(&ack.ack, outcome);
            return;
        }
        self.publish_control(Control::Handled {
            ack: ack.ack,
            to: ack.origin,
            outcome,
        });
    }

    /// Answer the forwarded POST waiting for `ack`, if it still waits.
    pub(super) fn resolve_forwarded(&self, ack: &str, outcome: Handled) {
        if let Some(waiter) = self.inner.acks.lock().remove(ack) {
            let _ = waiter.send(outcome);
        }
    }

    /// Clustered: abort a transport held by another node.
    pub(crate) fn forward_abort(&self, transport_id: &str) {
        if let Some(control) = &self.inner.control {
            self.publish_control(Control::Abort {
                transport: transport_id.to_string(),
                origin: control.node_id().to_string(),
            });
        }
    }

    /// A message on the control channel (every node's, this one's included, in channel order).
    pub(super) fn on_control(&self, payload: &[u8]) {
        let Some(control) = &self.inner.control else {
            return;
        };
        let message = match Control::decode(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "ignoring a control message");
                return;
            }
        };
        let me = control.node_id();
        match message {
            Control::Handover {
                id,
                from,
                owner,
                nonce,
            } => self.on_handover(me, id, from, owner, nonce),
            Control::Handed {
                id,
                to,
                nonce,
                held,
            } => {
                if to == me {
                    self.on_handed(&id, &nonce, held);
                }
            }
            Control::Send { ref origin, .. } if origin == me => {
                // Delivered here already.
            }
            Control::Send {
                target,
                kind,
                data,
                origin,
            } => self.on_send(target, kind, data, origin),
            Control::Inbound {
                transport,
                message,
                origin,
                ack,
            } => self.on_inbound(transport, message, origin, ack),
            Control::Handled { ack, to, outcome } => {
                if to == me {
                    self.resolve_forwarded(&ack, outcome);
                }
            }
            Control::Abort { transport, .. } => {
                if let Some((addr, generation)) = self.transport(&transport) {
                    addr.do_send(TransportClosed(generation));
                }
            }
        }
    }

    /// Node `from` asks for socket `id`: this node's own request seen on the channel (what
    /// follows is this node's to buffer), or another's (hand the socket over if it is here).
    fn on_handover(&self, me: &str, id: String, from: String, owner: String, nonce: String) {
        if from == me {
            if let Some(r) = self.inner.resuming.lock().get_mut(id.as_str()) {
                if r.nonce == nonce {
                    r.seen_request = true;
                }
            }
            return;
        }
        // From now on this node no longer has the socket: later sends are the new node's (it
        // buffers what follows its request).
        let held = {
            let mut sockets = self.inner.sockets.lock();
            match sockets.get(id.as_str()) {
                Some((shared, _)) if shared.dialect.resumes() => sockets.remove(id.as_str()),
                _ => None,
            }
        };
        match held {
            Some((_, addr)) => addr.do_send(HandOver { to: from, nonce }),
            None if owner == me => self.publish_control(Control::Handed {
                id,
                to: from,
                nonce,
                held: false,
            }),
            None => {}
        }
    }

    /// The owner answered this node's request for socket `id`.
    fn on_handed(&self, id: &str, nonce: &str, held: bool) {
        if let Some(r) = self.inner.resuming.lock().get_mut(id) {
            if r.nonce == nonce {
                if let Some(handed) = r.handed.take() {
                    let _ = handed.send(held);
                }
            }
        }
    }

    /// A send from another node: buffered for sockets moving here, delivered to the others.
    fn on_send(&self, target: Target, kind: String, data: Value, origin: String) {
        // Held while delivering: a socket being moved here is registered under it too.
        let mut resuming = self.inner.resuming.lock();
        let mut moving_here = false;
        for (socket, r) in resuming.iter_mut() {
            let for_it = match &target {
                Target::Socket(id) => id == &**socket,
                Target::Tag(_) => true,
            };
            if r.seen_request && for_it {
                moving_here |= matches!(target, Target::Socket(_));
                if r.buffered.len() < MAX_BUFFERED {
                    r.buffered.push(Control::Send {
                        target: target.clone(),
                        kind: kind.clone(),
                        data: data.clone(),
                        origin: origin.clone(),
                    });
                } else {
                    tracing::warn!(socket = %socket, "too many sends while the socket moves; dropped");
                }
            }
        }
        if moving_here {
            return;
        }
        let reached = match &target {
            Target::Socket(id) => self.socket(id).into_iter().collect(),
            Target::Tag(tag) => self.tagged(tag),
        };
        for socket in reached {
            if let Err(error) = socket.send(&kind, data.clone()) {
                tracing::warn!(socket = %socket.id(), %error, "send from another node dropped");
            }
        }
    }

    /// A client event POSTed to some node for an HTTP transport this node may have (also when
    /// this node posted it: the transport may have moved here since).
    fn on_inbound(&self, transport: String, message: WireMessage, origin: String, ack: String) {
        let mut resuming = self.inner.resuming.lock();
        if let Some((addr, _)) = self.transport(&transport).filter(|(a, _)| a.connected()) {
            // The socket answers once it has handled the event (a socket that has just moved on
            // leaves the answer to its new node, which buffered the event).
            addr.do_send(ForwardedInbound {
                transport: transport.into(),
                message,
                ack: Some(InboundAck { ack, origin }),
            });
            return;
        }
        let moving = resuming
            .values_mut()
            .find(|r| r.seen_request && r.transport.as_deref() == Some(transport.as_str()));
        if let Some(r) = moving.filter(|r| r.buffered.len() < MAX_BUFFERED) {
            r.buffered.push(Control::Inbound {
                transport,
                message,
                origin,
                ack,
            });
        }
    }
}

/// The socket record of `id`, if the cluster has a readable one.
async fn load_socket_record(control: &dyn ControlPlane, id: &str) -> Option<SocketRecord> {
    match control.load_record(RecordKind::CettiaSocket, id).await {
        Ok(Some(bytes)) => SocketRecord::decode(&bytes)
            .map_err(|error| tracing::warn!(socket = %id, %error, "unreadable socket record"))
            .ok(),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(socket = %id, %error, "cannot read the socket record");
            None
        }
    }
}

/// Ask the node that owns socket `id` (by its `record`) to hand it over, and wait for its
/// answer: the record it wrote last, or the one given if it does not answer in time (it died).
/// `None` if the request cannot be sent.
async fn ask_owner(
    control: &dyn ControlPlane,
    id: &str,
    record: SocketRecord,
    nonce: String,
    answer: tokio::sync::oneshot::Receiver<bool>,
) -> Option<SocketRecord> {
    let request = Control::Handover {
        id: id.to_string(),
        from: control.node_id().to_string(),
        owner: record.owner.clone(),
        nonce,
    };
    if let Err(error) = control.publish_control(request.encode()).await {
        tracing::warn!(socket = %id, %error, "cannot ask for the socket");
        return None;
    }
    match tokio::time::timeout(HANDOVER_WAIT, answer).await {
        Ok(Ok(true)) => match control.load_record(RecordKind::CettiaSocket, id).await {
            Ok(Some(bytes)) => Some(SocketRecord::decode(&bytes).unwrap_or(record)),
            _ => Some(record),
        },
        Ok(_) => Some(record),
        Err(_) => {
            tracing::info!(socket = %id, owner = %record.owner,
                "the socket's node did not answer; continuing from its last record");
            Some(record)
        }
    }
}
