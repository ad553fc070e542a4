//! Server-Sent Events and HTTP streaming: response headers, the handshake as the first event or
//! chunk, `data:` framing with multi-line messages, and heartbeats — byte for byte.
use crate::common;

use std::time::{Duration, Instant};

use common::{frame, publish_all, topic_url, tricky_messages, BodyReader};

/// The SSE event atmosphere.js needs for `message`: `data:` + the (length-prefixed) message
/// with every line break turned into a new `data:` line, then a blank line. The length counts
/// line breaks as the single `\n` EventSource joins the lines with.
fn sse_event(message: &str, tml: bool) -> String {
    let seen = message.replace("\r\n", "\n").replace('\r', "\n");
    let body = if tml { frame(&seen) } else { seen };
    format!("data:{}\r\n\r\n", body.replace('\n', "\r\ndata:"))
}

fn messages() -> Vec<String> {
    let mut messages = tricky_messages();
    messages.push("crlf\r\nline".to_string());
    messages
}

/// SSE: `text/event-stream`, the tracking id header, the handshake as the first event, then
/// one event per message with multi-line messages split into several `data:` lines.
#[tokio::test]
async fn sse_sends_the_handshake_then_one_event_per_message() {
    let server = common::TestServer::start(|_| {});
    let topic = "/sse/framing";
    let mut sse = BodyReader::open(&topic_url(&server, topic, "sse", "0", true)).await;
    let content_type = sse.response_headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let uuid = sse.response_headers["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(sse.response_headers["x-nimbus-node"], "test-node");
    sse.expect(&format!("data:{}\r\n\r\n", frame(&format!("{uuid}|0|X|"))))
        .await;

    let messages = messages();
    publish_all(&server, topic, &messages).await;
    for message in &messages {
        sse.expect(&sse_event(message, true)).await;
    }
    // Spelled out once: the 4-line message, its length counting 3 `\n` line breaks.
    assert_eq!(
        sse_event("line one\nline two\n\nline four", true),
        "data:28|line one\r\ndata:line two\r\ndata:\r\ndata:line four\r\n\r\n"
    );
    assert_eq!(sse.read_for(Duration::from_millis(200)).await, "");
}

/// SSE without TrackMessageSize: the same events without length prefixes; the handshake
/// reuses a presented tracking id.
#[tokio::test]
async fn sse_without_track_message_size() {
    let server = common::TestServer::start(|_| {});
    let topic = "/sse/plain";
    let mut sse = BodyReader::open(&topic_url(&server, topic, "sse", "sse-client", false)).await;
    sse.expect("data:sse-client|0|X|\r\n\r\n").await;
    let messages = messages();
    publish_all(&server, topic, &messages).await;
    for message in &messages {
        sse.expect(&sse_event(message, false)).await;
    }
}

/// HTTP streaming: `text/plain`, the handshake as the first bytes, then `len|msg` frames
/// back to back (the client needs the prefixes: chunks may merge).
#[tokio::test]
async fn streaming_sends_the_handshake_then_length_prefixed_frames() {
    let server = common::TestServer::start(|_| {});
    let topic = "/streaming/framing";
    let mut body = BodyReader::open(&topic_url(&server, topic, "streaming", "0", true)).await;
    assert!(body.response_headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let uuid = body.response_headers["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    body.expect(&frame(&format!("{uuid}|0|X|"))).await;

    let messages = messages();
    publish_all(&server, topic, &messages).await;
    let expected: String = messages.iter().map(|m| frame(m)).collect();
    let got = body.read_until(5.0, |t| t.len() >= expected.len()).await;
    assert_eq!(got, expected);
    assert_eq!(common::unframe(&got), messages);
}

/// Streaming without the protocol flag: the response headers are flushed at once (the client
/// fires `open` on them) although no byte of body is ready yet; no padding is sent.
#[tokio::test]
async fn streaming_flushes_its_headers_immediately() {
    let server = common::TestServer::start(|_| {});
    let topic = "/streaming/headers";
    let url = server.url(&format!(
        "{topic}?X-Atmosphere-tracking-id=0&X-Atmosphere-Framework=5.0.7\
         &X-Atmosphere-Transport=streaming&X-Atmosphere-TrackMessageSize=true"
    ));
    let started = Instant::now();
    let mut body = BodyReader::open(&url).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(body.read_for(Duration::from_millis(300)).await, "");
    publish_all(&server, topic, &["first".to_string()]).await;
    body.expect("5|first").await;
}

/// Idle SSE and streaming connections get the padding after the heartbeat interval, framed
/// for their transport: `data:1|X` events and `1|X` chunks.
#[tokio::test]
async fn heartbeats_are_framed_for_the_transport() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 1);
    let topic = "/sse/heartbeat";
    // The idle interval starts when the body attaches, so measure from before the requests.
    let started = Instant::now();
    let mut sse = BodyReader::open(&topic_url(&server, topic, "sse", "hb-sse", true)).await;
    let mut streaming = BodyReader::open(&topic_url(
        &server,
        topic,
        "streaming",
        "hb-streaming",
        true,
    ))
    .await;
    sse.expect(&format!("data:{}\r\n\r\n", frame("hb-sse|0|X|")))
        .await;
    streaming.expect(&frame("hb-streaming|0|X|")).await;
    sse.expect("data:1|X\r\n\r\n").await;
    streaming.expect("1|X").await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    sse.expect("data:1|X\r\n\r\n").await;
}

/// `X-Heartbeat-Server=0` turns the heartbeat off for that SSE connection.
#[tokio::test]
async fn heartbeats_can_be_turned_off_by_the_client() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 1);
    let url = format!(
        "{}&X-Heartbeat-Server=0",
        topic_url(&server, "/sse/hb-off", "sse", "quiet", true)
    );
    let mut sse = BodyReader::open(&url).await;
    sse.expect(&format!("data:{}\r\n\r\n", frame("quiet|0|X|")))
        .await;
    assert_eq!(sse.read_for(Duration::from_millis(2500)).await, "");
}
