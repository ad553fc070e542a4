//! WebSocket on a WebSocket Nimbus owns: the handler accepts the upgrade, the server hands the TCP
//! connection over after writing the `101` (see `crate::server::upgrade`), and from then on
//! reads and writes go straight to the WebSocket.
//!
//! Why not a WebSocket inside actix-http's HTTP/1 dispatcher (actix-ws): the dispatcher keeps
//! an 8 KiB read and an 8 KiB write buffer per connection for its whole life, and every frame
//! crosses a channel and a task wake-up before it reaches the WebSocket. Here an idle WebSocket
//! holds no buffer at all, and a frame is written by whoever delivers it (see [`Outbox`]).
//! Frames are parsed with actix-http's own WebSocket codec.
mod outbox;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, ProtocolError};
use actix_web::{HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;

pub use outbox::{whole_text_frame, LaneWriter, Outbox, Shared, QUEUE_LIMIT};

/// How long a WebSocket whose close frame is out waits for the client's side of the close
/// handshake. (How long the close frame itself may take is `--ws-close-grace-secs`.)
const CLOSE_REPLY_GRACE: Duration = Duration::from_secs(2);
/// Most bytes read from the WebSocket at once.
const READ_CHUNK: usize = 4096;

/// Put in the `101` response's extensions by [`accept`]: where the server hands the upgraded
/// connection over.
pub struct Handoff(pub oneshot::Sender<Upgraded>);

/// The upgraded connection, and what the client sent after its request.
pub struct Upgraded {
    pub stream: TcpStream,
    pub read_buf: BytesMut,
}

/// The WebSocket of an accepted upgrade, until the server hands it over. It counts as open from
/// the handshake on, so the `--max-websockets` bound holds however many upgrades race.
pub struct PendingWebSocket {
    upgraded: oneshot::Receiver<Upgraded>,
    open: OpenWebSocket,
}

/// How many WebSockets a node has open, and how many it may: shared by every upgrade.
#[derive(Debug)]
pub struct WebSocketGauge {
    open: AtomicU64,
    limit: u64,
}

/// A whole message from the client (fragments gathered).
#[derive(Debug)]
pub enum WsMessage {
    Text(ByteString),
    Binary(Bytes),
}

/// Why an upgrade was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// Not a well-formed WebSocket handshake.
    #[error("not a WebSocket handshake: {0}")]
    Handshake(actix_http::ws::HandshakeError),
    /// The node has `--max-websockets` open.
    #[error(
        "this node has {0} WebSockets open, its limit (--max-websockets); \
         try again later or use another transport"
    )]
    Full(u64),
}

/// Check `req` is a WebSocket handshake and the node has room for another WebSocket; returns the
/// `101` response to answer with, the WebSocket's write half (frames queue until the WebSocket
/// arrives) and the pending WebSocket.
pub fn accept<L>(
    req: &HttpRequest,
    gauge: &Arc<WebSocketGauge>,
) -> Result<(HttpResponse, Outbox<L>, PendingWebSocket), AcceptError> {
    let mut builder = actix_http::ws::handshake(req.head()).map_err(AcceptError::Handshake)?;
    let open = OpenWebSocket::reserve(gauge).map_err(AcceptError::Full)?;
    let (handoff, upgraded) = oneshot::channel();
    let mut response = HttpResponse::from(builder.finish().map_into_boxed_body());
    response.extensions_mut().insert(Handoff(handoff));
    Ok((response, Outbox::new(), PendingWebSocket { upgraded, open }))
}

/// A close reason with a sentence.
pub fn close_reason(code: CloseCode, why: &str) -> CloseReason {
    CloseReason {
        code,
        description: Some(why.to_string()),
    }
}

/// Run the WebSocket: start its writer, then read messages and hand each to `on_message` (one at
/// a time; the WebSocket is not read while a message is handled, so a client that sends faster
/// than it is served is held back by TCP). An `Err` from `on_message` closes the WebSocket with
/// that reason. Once a close frame is queued, what is queued gets `close_grace` to go out.
/// Returns when the WebSocket is closed, or never arrived.
pub async fn serve<L, F, Fut>(
    pending: PendingWebSocket,
    outbox: Outbox<L>,
    max_message_bytes: usize,
    close_grace: Duration,
    mut on_message: F,
) where
    L: Send + 'static,
    F: FnMut(WsMessage) -> Fut,
    Fut: Future<Output = Result<(), CloseReason>>,
{
    let PendingWebSocket {
        upgraded,
        open: _open,
    } = pending;
    let Ok(Upgraded { stream, read_buf }) = upgraded.await else {
        outbox.finish();
        return;
    };
    let stream = Arc::new(stream);
    outbox.connect(stream.clone());
    let writer = outbox.clone();
    let write_stream = stream.clone();
    actix_web::rt::spawn(async move { writer.drain(write_stream).await });

    let mut reader = Reader {
        codec: Codec::new().max_size(max_message_bytes),
        buf: read_buf,
        fragments: None,
        max_message_bytes,
    };
    // Until the close handshake starts: hand messages over, answer pings. The client leaving
    // (end of stream, a read error) ends the WebSocket at once: its connection must know now, or
    // what is written meanwhile would count as delivered.
    let closing = 'open: loop {
        loop {
            match reader.next() {
                Ok(Some(Event::Message(message))) => {
                    if let Err(reason) = on_message(message).await {
                        outbox.close(Some(reason));
                        break 'open true;
                    }
                }
                Ok(Some(Event::Ping(payload))) => outbox.pong(payload),
                Ok(Some(Event::Close(reason))) => {
                    // Echo the client's close (RFC 6455, 5.5.1).
                    outbox.close(reason.or(Some(CloseCode::Normal.into())));
                    break 'open true;
                }
                Ok(None) => break,
                Err(reason) => {
                    outbox.close(Some(reason));
                    break 'open true;
                }
            }
        }
        tokio::select! {
            ready = stream.readable() => if ready.is_err() { break 'open false },
            // Closed by the server, or a write failed.
            _ = outbox.closing() => break 'open true,
        }
        match reader.read_from(&stream) {
            Ok(true) => {}
            Ok(false) | Err(_) => break 'open false,
        }
    };
    if closing {
        close_cleanly(&stream, &mut reader, &outbox, close_grace).await;
    }
    outbox.finish();
}

/// The close handshake, once a close frame is queued.
async fn close_cleanly<L>(
    stream: &TcpStream,
    reader: &mut Reader,
    outbox: &Outbox<L>,
    close_grace: Duration,
) {
    // Wait for what is queued and the close frame to go out (frames queued count as
    // delivered: a slow client that still reads gets them), then read (and ignore) until
    // the client ends its side, so the WebSocket closes cleanly rather than with a reset that
    // could overtake the close frame. A client that reads nothing any more is let go.
    let _ = tokio::time::timeout(close_grace, outbox.finished()).await;
    let _ = tokio::time::timeout(CLOSE_REPLY_GRACE, async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            reader.buf.clear();
            match reader.read_from(stream) {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    })
    .await;
}

// === impl WebSocketGauge ===

impl WebSocketGauge {
    /// A gauge that allows `limit` WebSockets open at once.
    pub fn new(limit: u64) -> Self {
        WebSocketGauge {
            open: AtomicU64::new(0),
            limit,
        }
    }

    /// WebSockets open now (closing ones included).
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Counts the WebSocket in its gauge while it lives.
struct OpenWebSocket(Arc<WebSocketGauge>);

impl OpenWebSocket {
    /// Count one more WebSocket, unless the gauge is at its limit (returned).
    fn reserve(gauge: &Arc<WebSocketGauge>) -> Result<Self, u64> {
        let limit = gauge.limit;
        gauge
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .map_err(|_| limit)?;
        Ok(OpenWebSocket(gauge.clone()))
    }
}

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Event {
    Message(WsMessage),
    Ping(Bytes),
    Close(Option<CloseReason>),
}

/// The payload length the frame header at the start of `buf` announces, once the header's
/// length bytes are there (RFC 6455, 5.2: 7 bits, or 126 and 16 bits, or 127 and 64 bits).
fn announced_len(buf: &[u8]) -> Option<u64> {
    let short = u64::from(*buf.get(1)? & 0x7f);
    match short {
        126 => Some(u64::from(u16::from_be_bytes(
            buf.get(2..4)?.try_into().ok()?,
        ))),
        127 => Some(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)),
        n => Some(n),
    }
}

/// The read half's state: undecoded bytes and a message being reassembled.
struct Reader {
    codec: Codec,
    buf: BytesMut,
    fragments: Option<(bool, BytesMut)>,
    max_message_bytes: usize,
}

// === impl Reader ===

impl Reader {
    /// Read what the WebSocket has. `Ok(false)` at end of stream.
    fn read_from(&mut self, stream: &TcpStream) -> io::Result<bool> {
        let mut chunk = [0u8; READ_CHUNK];
        match stream.try_read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(error) => Err(error),
        }
    }

    /// The next event in the bytes read so far.
    fn next(&mut self) -> Result<Option<Event>, CloseReason> {
        loop {
            // The codec compares a frame's length with its limit only once the whole payload
            // is buffered: a header announcing 2^40 bytes would have us buffer whatever the
            // client sends. Refuse it as soon as its header is here.
            if announced_len(&self.buf).is_some_and(|len| len > self.max_message_bytes as u64) {
                return Err(close_reason(CloseCode::Size, "message too large"));
            }
            let frame = match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if self.buf.is_empty() {
                        // Give the buffer back: an idle WebSocket holds no memory for reading.
                        self.buf = BytesMut::new();
                    }
                    return Ok(None);
                }
                Err(ProtocolError::Overflow) => {
                    return Err(close_reason(CloseCode::Size, "message too large"))
                }
                Err(error) => {
                    tracing::debug!(%error, "closing a websocket after a protocol error");
                    return Err(close_reason(CloseCode::Protocol, "protocol error"));
                }
            };
            let (text, bytes) = match frame {
                Frame::Text(bytes) => (true, bytes),
                Frame::Binary(bytes) => (false, bytes),
                Frame::Ping(payload) => return Ok(Some(Event::Ping(payload))),
                Frame::Pong(_) => continue,
                Frame::Close(reason) => return Ok(Some(Event::Close(reason))),
                Frame::Continuation(item) => {
                    let (bytes, last) = match item {
                        Item::FirstText(bytes) => {
                            self.fragments = Some((true, BytesMut::new()));
                            (bytes, false)
                        }
                        Item::FirstBinary(bytes) => {
                            self.fragments = Some((false, BytesMut::new()));
                            (bytes, false)
                        }
                        Item::Continue(bytes) => (bytes, false),
                        Item::Last(bytes) => (bytes, true),
                    };
                    let Some((_, buffer)) = self.fragments.as_mut() else {
                        return Err(close_reason(
                            CloseCode::Protocol,
                            "continuation without a first frame",
                        ));
                    };
                    // The codec's limit is per frame; a fragmented message is bounded here.
                    if buffer.len() + bytes.len() > self.max_message_bytes {
                        return Err(close_reason(CloseCode::Size, "message too large"));
                    }
                    buffer.extend_from_slice(&bytes);
                    if !last {
                        continue;
                    }
                    let (text, buffer) = self.fragments.take().unwrap_or_default();
                    (text, buffer.freeze())
                }
            };
            let message = if text {
                match ByteString::try_from(bytes) {
                    Ok(text) => WsMessage::Text(text),
                    // RFC 6455 (8.1): a text message that is not UTF-8 fails the connection
                    // with 1007.
                    Err(_) => {
                        return Err(close_reason(
                            CloseCode::Invalid,
                            "message is not valid UTF-8",
                        ))
                    }
                }
            } else {
                WsMessage::Binary(bytes)
            };
            return Ok(Some(Event::Message(message)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(max: usize, bytes: &[u8]) -> Reader {
        Reader {
            codec: Codec::new().max_size(max),
            buf: BytesMut::from(bytes),
            fragments: None,
            max_message_bytes: max,
        }
    }

    #[test]
    fn a_frame_announcing_more_than_the_limit_is_refused_from_its_header() {
        // A masked binary frame announcing 2^40 bytes, and only its header and mask sent.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        let refused = reader(1024, &header).next().err().expect("refused");
        assert_eq!(refused.code, CloseCode::Size);
        // Sixteen-bit lengths too, before a byte of the payload arrives.
        let refused = reader(1024, &[0x81, 0x80 | 126, 0x10, 0x00]).next().err();
        assert_eq!(refused.map(|r| r.code), Some(CloseCode::Size));
    }

    #[test]
    fn a_frame_within_the_limit_waits_for_its_payload() {
        let mut r = reader(1024, &[0x81, 0x80 | 126, 0x03, 0xe8]);
        assert!(
            matches!(r.next(), Ok(None)),
            "1000 bytes announced, 1024 allowed"
        );
        assert_eq!(announced_len(&[0x81]), None);
        assert_eq!(announced_len(&[0x81, 0x85]), Some(5));
    }
}
