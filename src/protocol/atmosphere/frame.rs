//! Atmosphere wire frames.
//!
//! `len|msg` frames count the length in UTF-16 code units because the client measures with
//! JavaScript string lengths (`substring` on decoded text); Java's `String.length()` agrees.
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

/// How messages are framed for one connection: decided once from its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// `X-Atmosphere-TrackMessageSize=true`: prefix every message with its UTF-16 length.
    pub track_message_size: bool,
    /// Server-Sent Events: wrap every message in `data:` lines.
    pub sse: bool,
}

impl Framing {
    /// Index of this framing in an envelope's per-format frame cache.
    pub fn index(self) -> usize {
        (self.track_message_size as usize) | ((self.sse as usize) << 1)
    }

    /// Encode one message; the result is shared by every recipient with the same framing.
    pub fn encode(self, message: &str) -> ByteString {
        let mut out = BytesMut::with_capacity(message.len() + 16);
        self.encode_into(message, &mut out);
        ByteString::try_from(out.freeze()).expect("frames of UTF-8 text are UTF-8")
    }

    /// Append one framed message to `out` (long-poll bodies concatenate several).
    pub fn encode_into(self, message: &str, out: &mut BytesMut) {
        if self.sse {
            // EventSource joins `data:` lines with `\n`, so the client sees every line break as
            // `\n`: measure (and send) the message as it will arrive.
            let normalized;
            let message = if message.contains('\r') {
                normalized = message.replace("\r\n", "\n").replace('\r', "\n");
                normalized.as_str()
            } else {
                message
            };
            out.put_slice(b"data:");
            let mut framed = BytesMut::new();
            let body: &[u8] = if self.track_message_size {
                put_length_prefixed(message, &mut framed);
                &framed
            } else {
                message.as_bytes()
            };
            put_sse_lines(body, out);
            out.put_slice(b"\r\n\r\n");
        } else if self.track_message_size {
            put_length_prefixed(message, out);
        } else {
            out.put_slice(message.as_bytes());
        }
    }
}

/// Length of `s` in UTF-16 code units, as JavaScript's `String.length` counts it.
pub fn utf16_len(s: &str) -> usize {
    // Every char is one unit except those outside the BMP (4 UTF-8 bytes), which are two.
    s.chars().map(char::len_utf16).sum()
}

fn put_length_prefixed(message: &str, out: &mut BytesMut) {
    let mut digits = itoa::Buffer::new();
    out.put_slice(digits.format(utf16_len(message)).as_bytes());
    out.put_u8(b'|');
    out.put_slice(message.as_bytes());
}

/// Write `body` as the value of SSE `data:` fields, one field per line of the message
/// (a bare `\r`, `\n` or `\r\n` ends a line, as the EventSource parser sees it).
fn put_sse_lines(body: &[u8], out: &mut BytesMut) {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                out.put_slice(b"\r\ndata:");
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.put_slice(b"\r\ndata:"),
            byte => out.put_u8(byte),
        }
        i += 1;
    }
}

/// The handshake `uuid|heartbeatMs|padding|`, framed like any message.
///
/// `client_heartbeat_ms` is the interval at which the client should send its own heartbeats
/// (0 = none). The trailing `|` matters: the client splits off anything after it as data.
pub fn handshake(
    framing: Framing,
    tracking_id: &str,
    client_heartbeat_ms: u64,
    padding: &str,
) -> ByteString {
    framing.encode(&format!("{tracking_id}|{client_heartbeat_ms}|{padding}|"))
}

/// The heartbeat padding character, as in Atmosphere's `HeartbeatInterceptor`.
pub const PADDING: &str = "X";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PLAIN: Framing = Framing {
        track_message_size: false,
        sse: false,
    };
    const TML: Framing = Framing {
        track_message_size: true,
        sse: false,
    };
    const SSE_TML: Framing = Framing {
        track_message_size: true,
        sse: true,
    };

    #[test]
    fn length_counts_utf16_units() {
        assert_eq!(TML.encode("ü€😀").as_ref() as &str, "4|ü€😀");
        assert_eq!(TML.encode("a|b").as_ref() as &str, "3|a|b");
        assert_eq!(PLAIN.encode("a|b").as_ref() as &str, "a|b");
    }

    #[test]
    fn sse_splits_lines_into_data_fields() {
        let frame = SSE_TML.encode("a\nb\r\nc");
        // The client will see "a\nb\nc" (5 units): EventSource joins data lines with \n.
        assert_eq!(&*frame, "data:5|a\r\ndata:b\r\ndata:c\r\n\r\n");
    }

    #[test]
    fn handshake_has_trailing_delimiter() {
        assert_eq!(&*handshake(TML, "abc", 0, PADDING), "8|abc|0|X|");
        assert_eq!(&*handshake(PLAIN, "abc", 10000, PADDING), "abc|10000|X|");
    }

    /// What the atmosphere.js framer does with a body: the reference for the round trip below.
    fn client_unframe(mut data: &str) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(idx) = data.find('|') {
            let len: usize = data[..idx].parse().unwrap();
            let rest = &data[idx + 1..];
            let mut taken = 0;
            let mut bytes = 0;
            for c in rest.chars() {
                if taken == len {
                    break;
                }
                taken += c.len_utf16();
                bytes += c.len_utf8();
            }
            out.push(rest[..bytes].to_string());
            data = &rest[bytes..];
        }
        out
    }

    proptest! {
        #[test]
        fn tml_round_trips_any_sequence(messages in proptest::collection::vec(".*", 1..5)) {
            let mut body = BytesMut::new();
            for m in &messages {
                TML.encode_into(m, &mut body);
            }
            let body = std::str::from_utf8(&body).unwrap();
            prop_assert_eq!(client_unframe(body), messages);
        }
    }
}
