//! Cettia sockets in a cluster: the socket record and the control messages.
//!
//! **Why a record and a handover.** A Cettia socket is a stateful actor (event counter, queue
//! of events sent while it is away, topic cursors, tags, pending reply callbacks) on the node
//! that created it, and its client may come back to any node. Topic messages need no copying:
//! they sit in the topic's shared history, so a cursor is enough. What only the socket knows
//! (its queue, counter, tags) is written to a *socket record* (`nimbus:c:<id>`, a TTL of the
//! resume window): when its transport goes, every second while it is away and its state
//! changed, every 2 s while attached and its cursors move, and refreshed within a third of the
//! window otherwise. A node that gets an unknown `cettia-id` loads the record and, unless it is
//! the owner, asks the owner on the control channel (`nimbus:ctl`) to hand the socket over:
//! the owner stops accepting for the socket, writes the final record and answers `handed`;
//! the new node then recreates the socket from it. The handover (instead of trusting the last
//! periodic record) is what makes "once" hold for events sent during the move: control
//! messages are ordered by Redis, so a send published before the handover request is in the
//! final record, and one published after it is buffered by the new node (which sees its own
//! request on the channel) and applied to the recreated socket. This needs each node to publish
//! its control messages in call order (one queue in the broker), `handed` to follow the final
//! record's write, and the new node to register the socket and replay its buffer under the lock
//! that decides, for each incoming send, between buffering and delivering.
//!
//! When the owner is gone (killed), nobody answers: after [`HANDOVER_WAIT`] the new node takes
//! the last record written (events queued in its last second, and sends published while
//! nobody held the socket, are lost; topic messages are not, they come from the history).
//!
//! **Sends by id or tag** are one PUBLISH on the control channel; every node delivers to the
//! matching sockets it holds (queued if they are away).
//!
//! **Long-polling.** An HTTP transport id lives on the node where it was opened; its record
//! (`nimbus:t:<transport id>` → socket id) lets a poll that lands elsewhere move the socket to
//! that node and continue the *same* transport there (no new handshake). Polls of one transport
//! come one at a time, so nothing is parked on the old node when a poll moves the socket. A
//! POST (a client event) or an abort that lands on a node without the transport is forwarded
//! on the control channel to the node that has it, and the POST is answered only when that node
//! says the socket handled the event ([`Control::Handled`]): the client sends its next event
//! after this answer, so each client's events are handled in the order it sent them, and a
//! POST nobody handled is an error, never a silent 200.
//!
//! Binary-safe encoding for both: MessagePack maps built with `rmpv`.
use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use thiserror::Error;

use crate::protocol::cettia::{Value, WireMessage};

/// How long a node waits for the owner of a socket to hand it over before it takes the last
/// record written.
pub const HANDOVER_WAIT: Duration = Duration::from_millis(1500);
/// Control messages buffered for one socket while it moves to this node.
pub const MAX_BUFFERED: usize = 1024;
/// How long a node holds a forwarded POST for the socket's answer: long enough for the socket
/// to move once, with the owner gone (a handover that times out).
pub const INBOUND_WAIT: Duration =
    Duration::from_millis(2 * HANDOVER_WAIT.as_millis() as u64 + 2000);

/// A record or control message that does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("not MessagePack: {0}")]
    NotMessagePack(String),
    #[error("missing or malformed field {0:?}")]
    Field(&'static str),
    #[error("unknown control operation {0:?}")]
    UnknownOp(String),
}

/// One topic membership: where the socket stands in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCursor {
    pub topic: String,
    pub epoch: u64,
    pub cursor: u64,
}

/// What another node needs to continue a socket.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketRecord {
    /// The node holding the socket.
    pub owner: String,
    /// Query parameters of the request that created the socket.
    pub params: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub topics: Vec<TopicCursor>,
    /// The id of the next outbound event.
    pub next_event_id: u64,
    pub heartbeat_ms: u64,
    pub fast_heartbeat_ms: u64,
    /// Encoded events waiting for the client, oldest first.
    pub pending: Vec<WireMessage>,
}

/// What became of a forwarded client event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The socket handled it (its handlers ran).
    Taken,
    /// It was not a valid event; the transport closed.
    BadEvent(String),
    /// The transport had closed.
    TransportClosed,
}

/// Who a forwarded send is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Socket(String),
    Tag(String),
}

/// A message on the control channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// `from` asks `owner` (the record's owner, or whoever holds `id`) for socket `id`.
    Handover {
        id: String,
        from: String,
        owner: String,
        nonce: String,
    },
    /// The answer: `held` says whether the socket was there (its final record is written).
    Handed {
        id: String,
        to: String,
        nonce: String,
        held: bool,
    },
    /// An application send; `origin` delivered to its own sockets already.
    Send {
        target: Target,
        kind: String,
        data: Value,
        origin: String,
    },
    /// A client event POSTed to a node without its transport; `ack` names the answer
    /// ([`Control::Handled`]) the POST waits for.
    Inbound {
        transport: String,
        message: WireMessage,
        origin: String,
        ack: String,
    },
    /// The socket of transport `Inbound::transport` took the event `ack`.
    Handled {
        ack: String,
        to: String,
        outcome: Handled,
    },
    /// An abort request for a transport on another node.
    Abort { transport: String, origin: String },
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn wire_value(message: &WireMessage) -> Value {
    match message {
        WireMessage::Text(t) => Value::from(&**t),
        WireMessage::Binary(b) => Value::Binary(b.to_vec()),
    }
}

fn wire_from(value: &Value) -> Option<WireMessage> {
    match value {
        Value::String(t) => t
            .as_str()
            .map(|t| WireMessage::Text(ByteString::from(t.to_string()))),
        Value::Binary(b) => Some(WireMessage::Binary(Bytes::copy_from_slice(b))),
        _ => None,
    }
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing to a Vec does not fail");
    out
}

fn decode(bytes: &[u8]) -> Result<Vec<(Value, Value)>, CodecError> {
    match rmpv::decode::read_value(&mut Cursor::new(bytes)) {
        Ok(Value::Map(entries)) => Ok(entries),
        Ok(_) => Err(CodecError::NotMessagePack("not a map".into())),
        Err(e) => Err(CodecError::NotMessagePack(e.to_string())),
    }
}

/// Field access on a decoded map.
struct Fields(Vec<(Value, Value)>);

impl Fields {
    fn get(&self, name: &'static str) -> Result<&Value, CodecError> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
            .ok_or(CodecError::Field(name))
    }

    fn str(&self, name: &'static str) -> Result<String, CodecError> {
        self.get(name)?
            .as_str()
            .map(str::to_string)
            .ok_or(CodecError::Field(name))
    }

    fn u64(&self, name: &'static str) -> Result<u64, CodecError> {
        self.get(name)?.as_u64().ok_or(CodecError::Field(name))
    }

    fn array(&self, name: &'static str) -> Result<&[Value], CodecError> {
        self.get(name)?
            .as_array()
            .map(Vec::as_slice)
            .ok_or(CodecError::Field(name))
    }
}

fn strings(values: &[Value], name: &'static str) -> Result<Vec<String>, CodecError> {
    values
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or(CodecError::Field(name))
        })
        .collect()
}

impl SocketRecord {
    pub fn encode(&self) -> Vec<u8> {
        let params = self.params.iter().flat_map(|(k, v)| [s(k), s(v)]).collect();
        let topics = self
            .topics
            .iter()
            .flat_map(|t| [s(&t.topic), Value::from(t.epoch), Value::from(t.cursor)])
            .collect();
        encode(&Value::Map(vec![
            (s("v"), Value::from(1)),
            (s("owner"), s(&self.owner)),
            (s("params"), Value::Array(params)),
            (
                s("tags"),
                Value::Array(self.tags.iter().map(|t| s(t)).collect()),
            ),
            (s("topics"), Value::Array(topics)),
            (s("next"), Value::from(self.next_event_id)),
            (s("hb"), Value::from(self.heartbeat_ms)),
            (s("fhb"), Value::from(self.fast_heartbeat_ms)),
            (
                s("pending"),
                Value::Array(self.pending.iter().map(wire_value).collect()),
            ),
        ]))
    }

    pub fn decode(bytes: &[u8]) -> Result<SocketRecord, CodecError> {
        let f = Fields(decode(bytes)?);
        let params = strings(f.array("params")?, "params")?;
        if params.len() % 2 != 0 {
            return Err(CodecError::Field("params"));
        }
        let params = params
            .chunks(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect();
        let topics = f
            .array("topics")?
            .chunks(3)
            .map(|t| match t {
                [topic, epoch, cursor] => Ok(TopicCursor {
                    topic: topic
                        .as_str()
                        .ok_or(CodecError::Field("topics"))?
                        .to_string(),
                    epoch: epoch.as_u64().ok_or(CodecError::Field("topics"))?,
                    cursor: cursor.as_u64().ok_or(CodecError::Field("topics"))?,
                }),
                _ => Err(CodecError::Field("topics")),
            })
            .collect::<Result<_, _>>()?;
        let pending = f
            .array("pending")?
            .iter()
            .map(|v| wire_from(v).ok_or(CodecError::Field("pending")))
            .collect::<Result<_, _>>()?;
        Ok(SocketRecord {
            owner: f.str("owner")?,
            params,
            tags: strings(f.array("tags")?, "tags")?,
            topics,
            next_event_id: f.u64("next")?,
            heartbeat_ms: f.u64("hb")?,
            fast_heartbeat_ms: f.u64("fhb")?,
            pending,
        })
    }
}

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        let map = match self {
            Control::Handover {
                id,
                from,
                owner,
                nonce,
            } => vec![
                (s("op"), s("handover")),
                (s("id"), s(id)),
                (s("from"), s(from)),
                (s("owner"), s(owner)),
                (s("nonce"), s(nonce)),
            ],
            Control::Handed {
                id,
                to,
                nonce,
                held,
            } => vec![
                (s("op"), s("handed")),
                (s("id"), s(id)),
                (s("to"), s(to)),
                (s("nonce"), s(nonce)),
                (s("held"), Value::from(*held)),
            ],
            Control::Send {
                target,
                kind,
                data,
                origin,
            } => {
                let (key, value) = match target {
                    Target::Socket(id) => ("socket", id),
                    Target::Tag(tag) => ("tag", tag),
                };
                vec![
                    (s("op"), s("send")),
                    (s(key), s(value)),
                    (s("kind"), s(kind)),
                    (s("data"), data.clone()),
                    (s("origin"), s(origin)),
                ]
            }
            Control::Inbound {
                transport,
                message,
                origin,
                ack,
            } => vec![
                (s("op"), s("inbound")),
                (s("transport"), s(transport)),
                (s("message"), wire_value(message)),
                (s("origin"), s(origin)),
                (s("ack"), s(ack)),
            ],
            Control::Handled { ack, to, outcome } => {
                let (code, why) = match outcome {
                    Handled::Taken => ("taken", ""),
                    Handled::BadEvent(why) => ("bad", why.as_str()),
                    Handled::TransportClosed => ("closed", ""),
                };
                vec![
                    (s("op"), s("handled")),
                    (s("ack"), s(ack)),
                    (s("to"), s(to)),
                    (s("outcome"), s(code)),
                    (s("why"), s(why)),
                ]
            }
            Control::Abort { transport, origin } => vec![
                (s("op"), s("abort")),
                (s("transport"), s(transport)),
                (s("origin"), s(origin)),
            ],
        };
        encode(&Value::Map(map))
    }

    pub fn decode(bytes: &[u8]) -> Result<Control, CodecError> {
        let f = Fields(decode(bytes)?);
        let op = f.str("op")?;
        Ok(match op.as_str() {
            "handover" => Control::Handover {
                id: f.str("id")?,
                from: f.str("from")?,
                owner: f.str("owner")?,
                nonce: f.str("nonce")?,
            },
            "handed" => Control::Handed {
                id: f.str("id")?,
                to: f.str("to")?,
                nonce: f.str("nonce")?,
                held: f.get("held")?.as_bool().ok_or(CodecError::Field("held"))?,
            },
            "send" => Control::Send {
                target: match (f.str("socket"), f.str("tag")) {
                    (Ok(id), _) => Target::Socket(id),
                    (_, Ok(tag)) => Target::Tag(tag),
                    _ => return Err(CodecError::Field("socket")),
                },
                kind: f.str("kind")?,
                data: f.get("data")?.clone(),
                origin: f.str("origin")?,
            },
            "inbound" => Control::Inbound {
                transport: f.str("transport")?,
                message: wire_from(f.get("message")?).ok_or(CodecError::Field("message"))?,
                origin: f.str("origin")?,
                ack: f.str("ack")?,
            },
            "handled" => Control::Handled {
                ack: f.str("ack")?,
                to: f.str("to")?,
                outcome: match f.str("outcome")?.as_str() {
                    "taken" => Handled::Taken,
                    "bad" => Handled::BadEvent(f.str("why")?),
                    "closed" => Handled::TransportClosed,
                    _ => return Err(CodecError::Field("outcome")),
                },
            },
            "abort" => Control::Abort {
                transport: f.str("transport")?,
                origin: f.str("origin")?,
            },
            _ => return Err(CodecError::UnknownOp(op)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip() {
        let record = SocketRecord {
            owner: "n1".into(),
            params: vec![("topic".into(), "/a".into()), ("x".into(), "ü".into())],
            tags: vec!["vip".into()],
            topics: vec![TopicCursor {
                topic: "/a".into(),
                epoch: 17,
                cursor: 42,
            }],
            next_event_id: 9,
            heartbeat_ms: 20_000,
            fast_heartbeat_ms: 5_000,
            pending: vec![
                WireMessage::Text("{\"id\":\"7\"}".into()),
                WireMessage::Binary(Bytes::from_static(&[0x80, 0xff])),
            ],
        };
        assert_eq!(SocketRecord::decode(&record.encode()).unwrap(), record);
        assert!(SocketRecord::decode(b"nonsense").is_err());
    }

    #[test]
    fn control_messages_round_trip() {
        let messages = [
            Control::Handover {
                id: "s".into(),
                from: "n2".into(),
                owner: "n1".into(),
                nonce: "x".into(),
            },
            Control::Handed {
                id: "s".into(),
                to: "n2".into(),
                nonce: "x".into(),
                held: true,
            },
            Control::Send {
                target: Target::Tag("vip".into()),
                kind: "news".into(),
                data: Value::Binary(vec![1, 2]),
                origin: "n3".into(),
            },
            Control::Send {
                target: Target::Socket("s".into()),
                kind: "news".into(),
                data: Value::Nil,
                origin: "n3".into(),
            },
            Control::Inbound {
                transport: "t".into(),
                message: WireMessage::Text("{}".into()),
                origin: "n1".into(),
                ack: "a".into(),
            },
            Control::Handled {
                ack: "a".into(),
                to: "n1".into(),
                outcome: Handled::Taken,
            },
            Control::Handled {
                ack: "a".into(),
                to: "n1".into(),
                outcome: Handled::BadEvent("not JSON".into()),
            },
            Control::Handled {
                ack: "a".into(),
                to: "n1".into(),
                outcome: Handled::TransportClosed,
            },
            Control::Abort {
                transport: "t".into(),
                origin: "n1".into(),
            },
        ];
        for message in messages {
            assert_eq!(Control::decode(&message.encode()).unwrap(), message);
        }
        assert!(matches!(
            Control::decode(&encode(&Value::Map(vec![(s("op"), s("?"))]))),
            Err(CodecError::UnknownOp(_))
        ));
    }

    proptest! {
        // Records and control messages read back from Redis, whoever wrote them: a value or an
        // error, never a panic.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SocketRecord::decode(&bytes);
            let _ = Control::decode(&bytes);
        }
    }
}
