//! Transport frames: handshakes, HTTP-streaming `data:` framing, JSONP.
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use super::WireMessage;

/// Whitespace written first on a streaming response (2 KB, ending in a newline) so that
/// browsers and proxies start handing the stream over at once.
pub const STREAM_PADDING: usize = 2048;

/// The padding chunk: 2047 spaces and a newline.
pub fn stream_padding() -> Bytes {
    padding(STREAM_PADDING)
}

/// `len - 1` spaces and a newline: the padding that makes browsers start handing a stream's
/// chunks to the page (Cettia and Vibe differ only in its length).
pub fn padding(len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len);
    b.put_bytes(b' ', len - 1);
    b.put_u8(b'\n');
    b.freeze()
}

/// Whether `message` is a socket handshake (see [`socket_handshake`]).
pub fn is_socket_handshake(message: &WireMessage) -> bool {
    matches!(message, WireMessage::Text(t) if t.starts_with("?cettia-version="))
}

/// The transport handshake of HTTP transports: `?cettia-transport-version=1.0&cettia-transport-id=<id>`.
pub fn transport_handshake(transport_id: &str) -> String {
    format!("?cettia-transport-version=1.0&cettia-transport-id={transport_id}")
}

/// The socket handshake, the first text message on every transport of a socket.
pub fn socket_handshake(socket_id: &str, heartbeat_ms: u64, fast_heartbeat_ms: u64) -> String {
    format!(
        "?cettia-version=1.0&cettia-id={socket_id}&cettia-heartbeat={heartbeat_ms}&cettia-_heartbeat={fast_heartbeat_ms}"
    )
}

/// Server-Sent-Events framing of `payload`: each line (split on CRLF, CR or LF) as
/// `data: <line>\n`, then an empty line.
pub fn sse_event(payload: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 16);
    let mut rest = payload;
    loop {
        let cut = rest.find(['\r', '\n']);
        let (line, next) = match cut {
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..i], Some(&rest[i + skip..]))
            }
            None => (rest, None),
        };
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// A message on an HTTP-streaming transport: `1` + text, or `2` + base64(binary), SSE-framed.
pub fn stream_message(message: &WireMessage) -> Bytes {
    match message {
        WireMessage::Text(text) => {
            let mut payload = String::with_capacity(text.len() + 1);
            payload.push('1');
            payload.push_str(text);
            sse_event(&payload)
        }
        WireMessage::Binary(bytes) => {
            let mut payload = String::from("2");
            base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut payload);
            sse_event(&payload)
        }
    }
}

/// A JSONP long-poll body: `callback("<text as a JSON string>");`.
pub fn jsonp(callback: &str, text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
    format!("{callback}({quoted});")
}

/// A JSONP callback name is a JavaScript identifier path (`socket_7`, `a.b`); anything else
/// would let a request inject script.
pub fn valid_callback(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_2kb_of_whitespace_ending_in_newline() {
        let p = stream_padding();
        assert_eq!(p.len(), 2048);
        assert!(p[..2047].iter().all(|&b| b == b' '));
        assert_eq!(p[2047], b'\n');
    }

    #[test]
    fn stream_framing_splits_lines_and_prefixes() {
        assert_eq!(
            &stream_message(&WireMessage::Text("a\nb\r\nc\rd".into()))[..],
            b"data: 1a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(
            &stream_message(&WireMessage::Binary(Bytes::from_static(b"hi")))[..],
            b"data: 2aGk=\n\n"
        );
        assert_eq!(&sse_event("?x=1")[..], b"data: ?x=1\n\n");
    }

    #[test]
    fn jsonp_quotes_the_text() {
        assert_eq!(jsonp("socket_7", "?a=\"b\""), r#"socket_7("?a=\"b\"");"#);
        assert!(valid_callback("socket_7"));
        assert!(!valid_callback("alert(1);x"));
        assert!(!valid_callback(""));
    }
}
