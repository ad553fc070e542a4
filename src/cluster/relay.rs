//! The relay format: how a numbered message travels over pub/sub and sits in a topic's history.
//!
//! The publish script (see `publish.lua`) writes the relay message itself, because only it
//! knows the sequence number. Layout, one message per pub/sub payload:
//!
//! ```text
//! <epoch> <seq> <published-at ms> <node id>\n<audience>\n<0|1><text>
//! ```
//!
//! The audience is `*` (everyone), `=<id>` (one session) or `+<id> <id> ...` (a set); session
//! ids never contain spaces or newlines. The flag says whether the text is JSON.
use std::sync::Arc;

use bytestring::ByteString;
use thiserror::Error;

use crate::topic::{Audience, Envelope, Message, SessionId, TopicId};

/// A relay message or history entry that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed relay message: {0}")]
pub struct RelayError(&'static str);

/// A message as it arrived from another node.
#[derive(Debug)]
pub struct Relayed {
    pub epoch: u64,
    pub node: String,
    pub envelope: Arc<Envelope>,
}

/// Encode an audience for the relay and the history.
pub fn encode_audience(audience: &Audience) -> String {
    match audience {
        Audience::All => "*".to_string(),
        Audience::One(id) => format!("={id}"),
        Audience::Set(ids) => {
            let mut out = String::from("+");
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(id);
            }
            out
        }
    }
}

pub fn decode_audience(text: &str) -> Result<Audience, RelayError> {
    match text.as_bytes().first() {
        Some(b'*') => Ok(Audience::All),
        Some(b'=') => Ok(Audience::One(text[1..].into())),
        Some(b'+') => Ok(Audience::Set(
            text[1..]
                .split(' ')
                .filter(|id| !id.is_empty())
                .map(SessionId::from)
                .collect(),
        )),
        _ => Err(RelayError("audience")),
    }
}

/// The JSON flag as the script stores it.
pub fn encode_json_flag(json: bool) -> &'static str {
    if json {
        "1"
    } else {
        "0"
    }
}

/// Parse a relay payload received on the channel of `topic`.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Relayed, RelayError> {
    let text = std::str::from_utf8(payload).map_err(|_| RelayError("not UTF-8"))?;
    let (head, rest) = text.split_once('\n').ok_or(RelayError("header"))?;
    let (audience, body) = rest.split_once('\n').ok_or(RelayError("audience line"))?;
    let mut fields = head.splitn(4, ' ');
    let mut number = || -> Result<u64, RelayError> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or(RelayError("number"))
    };
    let (epoch, seq, published_at) = (number()?, number()?, number()?);
    let node = fields.next().ok_or(RelayError("node"))?.to_string();
    let json = match body.as_bytes().first() {
        Some(b'1') => true,
        Some(b'0') => false,
        _ => return Err(RelayError("json flag")),
    };
    let message = Message {
        text: ByteString::from(&body[1..]),
        json,
    };
    let mut envelope = Envelope::new(
        TopicId::from(topic),
        seq,
        decode_audience(audience)?,
        message,
    );
    envelope.published_ms = published_at;
    Ok(Relayed {
        epoch,
        node,
        envelope: Arc::new(envelope),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_the_script_writes() {
        let payload = "17 42 1700000000000 node-a\n+a b\n1{\"x\":\"l1\\nl2\"}\nmore";
        let relayed = decode("/t", payload.as_bytes()).unwrap();
        assert_eq!((relayed.epoch, relayed.envelope.seq), (17, 42));
        assert_eq!(relayed.node, "node-a");
        assert!(relayed.envelope.json);
        assert_eq!(&*relayed.envelope.text, "{\"x\":\"l1\\nl2\"}\nmore");
        assert!(relayed.envelope.audience.includes("b"));
        assert!(!relayed.envelope.audience.includes("c"));
    }

    #[test]
    fn audiences_round_trip() {
        for audience in [
            Audience::All,
            Audience::One("u-1".into()),
            Audience::Set(vec![SessionId::from("a"), SessionId::from("b")].into()),
        ] {
            let decoded = decode_audience(&encode_audience(&audience)).unwrap();
            assert_eq!(format!("{decoded:?}"), format!("{audience:?}"));
        }
    }

    #[test]
    fn refuses_garbage() {
        assert!(decode("/t", b"nonsense").is_err());
        assert!(decode("/t", b"1 2 3 n\n?\n0x").is_err());
        assert!(decode("/t", b"1 2 3 n\n*\nx").is_err());
    }

    proptest! {
        // A relay message from the channel, whoever published it: a message or an error, never
        // a panic.
        #[test]
        fn any_payload_decodes_or_fails_cleanly(
            topic in ".*",
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            near in "[0-9]{0,20} [0-9]{0,20} [0-9]{0,14} [a-z-]{0,6}\n[+*-]?[a-z ]{0,8}\n[01]?.{0,16}",
        ) {
            let _ = decode(&topic, &bytes);
            let _ = decode(&topic, near.as_bytes());
            let _ = decode_audience(&topic);
        }
    }
}
