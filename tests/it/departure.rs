//! Departures free what a client held: a WebSocket close, a dropped TCP connection (WebSocket,
//! SSE, streaming, a parked long-poll), an `X-Atmosphere-Transport=close` request, and a
//! long-poller that stops polling. Each ends with `connections` at 0 in `/_nimbus/stats`, and
//! the topic, left without members, frees itself a few seconds later (`topics` at 0).
use crate::common;

use std::time::Duration;

use common::{frame, topic_url, wait_stat, ws_open, ws_text, BodyReader};
use futures::StreamExt;

/// Both counters reach 0: the connection within `secs`, the topic a few seconds after.
async fn assert_all_freed(server: &common::TestServer, secs: f64) {
    wait_stat(server, "connections", secs, |n| n == 0).await;
    wait_stat(server, "topics", 12.0, |n| n == 0).await;
}

fn short_windows(c: &mut nimbus::Config) {
    c.reconnect_window_secs = 1;
    c.long_poll_expiry_secs = 1;
    c.heartbeat_secs = 2;
    // Alone, a topic keeps its history for later members until it ages out; then it goes.
    c.history_age_secs = 1;
}

/// A WebSocket closed by the client (close frame) frees its connection once the reconnect
/// window has passed, then its topic.
#[tokio::test]
async fn a_websocket_close_frees_the_connection() {
    let server = common::TestServer::start(short_windows);
    let (mut ws, _) = ws_open(&server, "/bye/ws-close", "0", true).await;
    ws_text(&mut ws).await;
    assert_eq!(common::stat(&server, "connections").await, 1);
    assert_eq!(common::stat(&server, "topics").await, 1);
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    assert_all_freed(&server, 4.0).await;
}

/// A WebSocket whose TCP connection just closes (no close frame) is freed the same way.
#[tokio::test]
async fn a_websocket_tcp_close_frees_the_connection() {
    let server = common::TestServer::start(short_windows);
    let (mut ws, _) = ws_open(&server, "/bye/ws-tcp", "0", true).await;
    ws_text(&mut ws).await;
    drop(ws);
    assert_all_freed(&server, 4.0).await;
}

/// SSE and streaming clients whose TCP connection closes are noticed without waiting for a
/// write, and freed after the reconnect window.
#[tokio::test]
async fn sse_and_streaming_tcp_closes_free_their_connections() {
    let server = common::TestServer::start(|c| {
        short_windows(c);
        // No heartbeat: nothing is written that could reveal the departure.
        c.heartbeat_secs = 0;
    });
    let mut sse = BodyReader::open(&topic_url(&server, "/bye/sse", "sse", "0", true)).await;
    let mut streaming = BodyReader::open(&topic_url(
        &server,
        "/bye/streaming",
        "streaming",
        "0",
        true,
    ))
    .await;
    sse.read_until(5.0, |t| t.ends_with("\r\n\r\n")).await;
    streaming.read_until(5.0, |t| t.ends_with("|X|")).await;
    assert_eq!(common::stat(&server, "connections").await, 2);
    drop(sse);
    drop(streaming);
    assert_all_freed(&server, 4.0).await;
}

/// `X-Atmosphere-Transport=close` (GET or POST) ends the client's connection at once, without
/// a reconnect window: the WebSocket gets a normal close, the stream ends, a parked poll is
/// answered empty.
#[tokio::test]
async fn a_close_request_frees_the_connection_at_once() {
    // Long windows: only the close request can explain a prompt release.
    let server = common::TestServer::start(|c| {
        c.reconnect_window_secs = 60;
        c.long_poll_expiry_secs = 60;
    });
    let topic = "/bye/close";
    let (mut ws, _) = ws_open(&server, topic, "ws-leaver", true).await;
    ws_text(&mut ws).await;
    let mut sse = BodyReader::open(&topic_url(&server, topic, "sse", "sse-leaver", true)).await;
    sse.read_until(5.0, |t| t.ends_with("\r\n\r\n")).await;
    let lp = common::lp_handshake(&server, topic, true).await;
    let parked = {
        let url = topic_url(&server, topic, "long-polling", &lp, true);
        tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(common::stat(&server, "connections").await, 3);

    let client = reqwest::Client::new();
    let close_url = |id: &str| topic_url(&server, topic, "close", id, true);
    let response = client.get(close_url("ws-leaver")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "");
    let (close, _) = common::ws_until_close(&mut ws, 2.0).await;
    assert_eq!(
        close.expect("a close frame").code,
        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal
    );

    let response = client.post(close_url("sse-leaver")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(sse.read_to_end(2.0).await, "");

    assert_eq!(
        client.post(close_url(&lp)).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        common::within(2.0, "the parked poll", parked)
            .await
            .unwrap(),
        ""
    );

    assert_all_freed(&server, 1.0).await;
}

/// A close request for an unknown tracking id is harmless: 200, nothing else changes.
#[tokio::test]
async fn a_close_request_for_an_unknown_id_is_harmless() {
    let server = common::TestServer::start(|_| {});
    let (mut ws, _) = ws_open(&server, "/bye/unknown", "stayer", true).await;
    ws_text(&mut ws).await;
    let response = reqwest::get(topic_url(&server, "/bye/unknown", "close", "nobody", true))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    common::publish_all(&server, "/bye/unknown", &["still".to_string()]).await;
    assert_eq!(ws_text(&mut ws).await, frame("still"));
    assert_eq!(common::stat(&server, "connections").await, 1);
}

/// A long-poller that does not re-poll within `long_poll_expiry_secs` counts as gone.
#[tokio::test]
async fn a_long_poller_that_stops_polling_expires() {
    let server = common::TestServer::start(short_windows);
    let topic = "/bye/lp";
    let id = common::lp_handshake(&server, topic, true).await;
    common::publish_all(&server, topic, &["one".to_string()]).await;
    assert_eq!(
        common::lp_poll(&server, topic, &id, true).await,
        frame("one")
    );
    assert_eq!(common::stat(&server, "connections").await, 1);
    assert_all_freed(&server, 4.0).await;
}

/// A long-poller whose TCP connection closes while its poll is parked counts as gone once the
/// expiry has passed (it never comes back to poll).
#[tokio::test]
async fn a_long_poller_dropping_its_parked_poll_expires() {
    let server = common::TestServer::start(short_windows);
    let topic = "/bye/lp-drop";
    let id = common::lp_handshake(&server, topic, true).await;
    let url = topic_url(&server, topic, "long-polling", &id, true);
    let poll = tokio::spawn(async move { reqwest::get(url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    poll.abort();
    assert_all_freed(&server, 5.0).await;
}
