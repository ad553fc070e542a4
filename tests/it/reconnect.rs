//! Reconnecting with a tracking id: within the reconnect window a WebSocket, SSE or streaming
//! client first gets the handshake again, then what was broadcast while it was away (once, in
//! order), then live traffic; after the window its session is gone.
use crate::common;

use std::time::Duration;

use common::{
    frame, publish_all, topic_url, tricky_messages, wait_stat, ws_open, ws_silent, ws_text,
    BodyReader,
};
use futures::StreamExt;

fn sse_frame(message: &str) -> String {
    format!("data:{}\r\n\r\n", frame(message).replace('\n', "\r\ndata:"))
}

/// Close a WebSocket cleanly and wait for the server's answering close frame, so the server has
/// detached the transport before the test goes on.
async fn ws_close(mut ws: common::Ws) {
    ws.close(None).await.unwrap();
    common::within(5.0, "the server's close reply", async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// A WebSocket client that closes and comes back with its tracking id gets the handshake
/// (same id), then every message broadcast while it was away, once and in order, then live
/// messages; it stays one session throughout.
#[tokio::test]
async fn websocket_reconnect_replays_what_was_missed() {
    let server = common::TestServer::start(|c| c.reconnect_window_secs = 10);
    let topic = "/reconnect/ws";
    let (mut ws, _) = ws_open(&server, topic, "ws-returner", true).await;
    assert_eq!(ws_text(&mut ws).await, frame("ws-returner|0|X|"));
    publish_all(&server, topic, &["before".to_string()]).await;
    assert_eq!(ws_text(&mut ws).await, frame("before"));
    ws_close(ws).await;

    let missed = tricky_messages();
    publish_all(&server, topic, &missed).await;
    assert_eq!(common::stat(&server, "connections").await, 1);

    let (mut ws, _) = ws_open(&server, topic, "ws-returner", true).await;
    assert_eq!(ws_text(&mut ws).await, frame("ws-returner|0|X|"));
    for message in &missed {
        assert_eq!(ws_text(&mut ws).await, frame(message));
    }
    ws_silent(&mut ws, Duration::from_millis(300)).await;
    publish_all(&server, topic, &["after".to_string()]).await;
    assert_eq!(ws_text(&mut ws).await, frame("after"));
    assert_eq!(common::stat(&server, "connections").await, 1);
}

/// The same after the client's TCP connection simply went away (no close frame).
#[tokio::test]
async fn websocket_reconnect_after_a_dropped_tcp_connection() {
    let server = common::TestServer::start(|c| c.reconnect_window_secs = 10);
    let topic = "/reconnect/ws-tcp";
    let (mut ws, _) = ws_open(&server, topic, "ws-dropped", true).await;
    ws_text(&mut ws).await;
    drop(ws);
    // The node noticed the connection is gone (what it publishes next is kept for the client).
    common::wait_stat(&server, "websockets_open", 5.0, |n| n == 0).await;

    let missed: Vec<String> = (0..50).map(|i| format!("missed-{i}")).collect();
    publish_all(&server, topic, &missed).await;
    let (mut ws, _) = ws_open(&server, topic, "ws-dropped", true).await;
    assert_eq!(ws_text(&mut ws).await, frame("ws-dropped|0|X|"));
    for message in &missed {
        assert_eq!(ws_text(&mut ws).await, frame(message));
    }
    ws_silent(&mut ws, Duration::from_millis(300)).await;
}

/// An SSE client that comes back with its tracking id gets the handshake event, then the
/// missed messages as events, once, in order.
#[tokio::test]
async fn sse_reconnect_replays_what_was_missed() {
    let server = common::TestServer::start(|c| c.reconnect_window_secs = 10);
    let topic = "/reconnect/sse";
    let url = topic_url(&server, topic, "sse", "sse-returner", true);
    let mut sse = BodyReader::open(&url).await;
    sse.expect(&sse_frame("sse-returner|0|X|")).await;
    publish_all(&server, topic, &["before".to_string()]).await;
    sse.expect(&sse_frame("before")).await;
    drop(sse);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let missed = tricky_messages();
    publish_all(&server, topic, &missed).await;
    let mut sse = BodyReader::open(&url).await;
    sse.expect(&sse_frame("sse-returner|0|X|")).await;
    for message in &missed {
        sse.expect(&sse_frame(message)).await;
    }
    assert_eq!(sse.read_for(Duration::from_millis(300)).await, "");
    publish_all(&server, topic, &["after".to_string()]).await;
    sse.expect(&sse_frame("after")).await;
    assert_eq!(common::stat(&server, "connections").await, 1);
}

/// A streaming client that comes back with its tracking id gets the handshake, then the
/// missed messages, once, in order.
#[tokio::test]
async fn streaming_reconnect_replays_what_was_missed() {
    let server = common::TestServer::start(|c| c.reconnect_window_secs = 10);
    let topic = "/reconnect/streaming";
    let url = topic_url(&server, topic, "streaming", "st-returner", true);
    let mut body = BodyReader::open(&url).await;
    body.expect(&frame("st-returner|0|X|")).await;
    drop(body);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let missed: Vec<String> = (0..20).map(|i| format!("gone-{i}|ü€😀")).collect();
    publish_all(&server, topic, &missed).await;
    let mut body = BodyReader::open(&url).await;
    body.expect(&frame("st-returner|0|X|")).await;
    let expected: String = missed.iter().map(|m| frame(m)).collect();
    body.expect(&expected).await;
    assert_eq!(body.read_for(Duration::from_millis(300)).await, "");
}

/// A client that opens a new WebSocket while its old one still looks open (it switched
/// networks) takes over: the old socket is closed, the new one gets the handshake and the
/// traffic, and nothing is delivered twice.
#[tokio::test]
async fn a_new_transport_replaces_an_abandoned_one() {
    let server = common::TestServer::start(|_| {});
    let topic = "/reconnect/replace";
    let (mut old, _) = ws_open(&server, topic, "switcher", true).await;
    ws_text(&mut old).await;
    publish_all(&server, topic, &["one".to_string()]).await;
    assert_eq!(ws_text(&mut old).await, frame("one"));

    let (mut new, _) = ws_open(&server, topic, "switcher", true).await;
    assert_eq!(ws_text(&mut new).await, frame("switcher|0|X|"));
    let (_, texts) = common::ws_until_close(&mut old, 5.0).await;
    assert!(texts.is_empty(), "{texts:?}");
    publish_all(&server, topic, &["two".to_string()]).await;
    assert_eq!(ws_text(&mut new).await, frame("two"));
    ws_silent(&mut new, Duration::from_millis(200)).await;
    assert_eq!(common::stat(&server, "connections").await, 1);
}

/// A long-poller whose poll was cut off (here: the client dropped it) re-polls with the
/// session token of the last answer it received: the next answer starts with the handshake
/// (the client treats the first message after a reconnect as one) and carries what was
/// published meanwhile.
#[tokio::test]
async fn long_poll_reconnect_after_an_aborted_poll() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 30);
    let topic = "/reconnect/lp";
    let handshake = common::lp_poll_response(&server, topic, "0", true, "").await;
    let id = handshake.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    let token = handshake.headers()["x-atmosphere-session-token"]
        .to_str()
        .unwrap()
        .to_string();
    let query = format!("&X-Atmosphere-Session-Token={token}");

    let aborted = {
        let url = format!(
            "{}{query}",
            topic_url(&server, topic, "long-polling", &id, true)
        );
        tokio::spawn(async move { reqwest::get(url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    aborted.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;

    publish_all(&server, topic, &["while away".to_string()]).await;
    let body = common::lp_poll_response(&server, topic, &id, true, &query)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        body,
        format!("{}{}", frame(&format!("{id}|0|X|")), frame("while away"))
    );
}

/// After the reconnect window the session is gone: the connection count drops, and a client
/// coming back with the old id starts afresh (handshake, then only new messages).
#[tokio::test]
async fn after_the_window_the_session_is_gone() {
    let server = common::TestServer::start(|c| c.reconnect_window_secs = 1);
    let topic = "/reconnect/late";
    let (mut observer, _) = ws_open(&server, topic, "observer", true).await;
    ws_text(&mut observer).await;
    let (mut ws, _) = ws_open(&server, topic, "latecomer", true).await;
    ws_text(&mut ws).await;
    let sse_url = topic_url(&server, topic, "sse", "sse-latecomer", true);
    let mut sse = BodyReader::open(&sse_url).await;
    sse.expect(&sse_frame("sse-latecomer|0|X|")).await;
    assert_eq!(common::stat(&server, "connections").await, 3);

    ws_close(ws).await;
    drop(sse);
    wait_stat(&server, "connections", 5.0, |n| n == 1).await;

    publish_all(&server, topic, &["missed for good".to_string()]).await;
    assert_eq!(ws_text(&mut observer).await, frame("missed for good"));
    let (mut ws, _) = ws_open(&server, topic, "latecomer", true).await;
    assert_eq!(ws_text(&mut ws).await, frame("latecomer|0|X|"));
    let mut sse = BodyReader::open(&sse_url).await;
    sse.expect(&sse_frame("sse-latecomer|0|X|")).await;
    ws_silent(&mut ws, Duration::from_millis(300)).await;
    assert_eq!(sse.read_for(Duration::from_millis(100)).await, "");

    publish_all(&server, topic, &["fresh".to_string()]).await;
    assert_eq!(ws_text(&mut ws).await, frame("fresh"));
    sse.expect(&sse_frame("fresh")).await;
}
