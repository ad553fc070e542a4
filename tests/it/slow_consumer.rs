//! The slow-consumer policy: a WebSocket client that stops reading does not hold up the others;
//! once it is too far behind its transport is closed, and when it reconnects with its tracking
//! id it resumes from the topic history. And the node's bound on open WebSockets
//! (`--max-websockets`): what is beyond it is refused, what is within it is unaffected.
use crate::common;

use std::time::{Duration, Instant};

use common::{frame, ws_open, ws_text, Ws};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const MESSAGES: usize = 2000;

fn message(i: usize) -> String {
    // ~3.6 KiB each: the 7 MiB burst is far more than the slow socket's buffers hold (the
    // kernel send buffer grows to 4 MiB at most here).
    format!("burst-{i:05}|{}", "ü€😀".repeat(400))
}

/// A WebSocket with a tiny receive buffer, so that not reading fills it quickly.
async fn slow_socket(server: &common::TestServer, topic: &str, id: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = server.ws_url(&format!(
        "{topic}?{}",
        common::atmo_query("websocket", id, true)
    ));
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
    ws
}

/// Read `count` text frames from a reader that keeps up.
fn reader(mut ws: Ws, count: usize) -> tokio::task::JoinHandle<(Vec<String>, Instant)> {
    tokio::spawn(async move {
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => got.push(text.as_str().to_string()),
                Some(Ok(_)) => {}
                other => panic!("fast reader lost its socket: {other:?}"),
            }
        }
        (got, Instant::now())
    })
}

/// While one client stops reading, a burst reaches the clients that read, all of it and
/// promptly; the slow one is dropped (close 1013, `slow_consumers_dropped` ≥ 1) and, reading
/// again and reconnecting with its tracking id, receives the rest from the history: every
/// message exactly once, in order, across its two sockets.
#[tokio::test]
async fn a_slow_websocket_is_dropped_and_resumes_from_the_history() {
    let server = common::TestServer::start(|c| {
        c.max_lag_messages = 100;
        // The publisher is a load generator, faster than a session may publish.
        c.max_publishes_per_sec = 0;
        c.history_share_bytes = Some(0);
        c.history_messages = 10_000;
        c.history_bytes = 256 * 1024 * 1024;
        c.reconnect_window_secs = 30;
    });
    let topic = "/slow/burst";
    let mut slow = slow_socket(&server, topic, "slowpoke").await;
    assert_eq!(ws_text(&mut slow).await, frame("slowpoke|0|X|"));
    let mut fast = Vec::new();
    for id in ["fast-1", "fast-2"] {
        let (mut ws, _) = ws_open(&server, topic, id, true).await;
        ws_text(&mut ws).await;
        fast.push(reader(ws, MESSAGES));
    }

    let messages: Vec<String> = (0..MESSAGES).map(message).collect();
    let started = Instant::now();
    common::within(
        30.0,
        "the burst to be published",
        common::publish_all(&server, topic, &messages),
    )
    .await;
    let published_in = started.elapsed();
    for handle in fast {
        let (got, done) = common::within(10.0, "the fast readers", handle)
            .await
            .unwrap();
        assert_eq!(got.len(), MESSAGES);
        assert!(
            got.iter().zip(&messages).all(|(g, m)| *g == frame(m)),
            "fast reader order"
        );
        let lag = done.duration_since(started).saturating_sub(published_in);
        assert!(
            lag < Duration::from_secs(5),
            "fast readers trailed the burst by {lag:?}"
        );
    }
    common::wait_stat(&server, "slow_consumers_dropped", 5.0, |n| n >= 1).await;

    // The slow client reads again — later than the server's 1 s client-disconnect timeout, so a
    // server that gave up on the socket's buffered frames would show a gap: what reached its
    // old socket, then the close frame.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (close, before) = common::ws_until_close(&mut slow, 10.0).await;
    assert_eq!(close.expect("a close frame").code, CloseCode::Again);
    assert!(
        before.len() < MESSAGES,
        "it was dropped before the end of the burst"
    );
    eprintln!(
        "the slow socket carried {} messages before its close",
        before.len()
    );

    let (mut again, _) = ws_open(&server, topic, "slowpoke", true).await;
    assert_eq!(ws_text(&mut again).await, frame("slowpoke|0|X|"));
    let mut after = Vec::new();
    while before.len() + after.len() < MESSAGES {
        after.push(common::ws_text_within(&mut again, 10.0).await);
    }
    common::ws_silent(&mut again, Duration::from_millis(300)).await;

    let received: Vec<String> = before.into_iter().chain(after).collect();
    let expected: Vec<String> = messages.iter().map(|m| frame(m)).collect();
    if received != expected {
        let first_bad = received.iter().zip(&expected).position(|(r, e)| r != e);
        panic!(
            "the slow client's two sockets do not add up to the burst: first difference at {first_bad:?}"
        );
    }
    assert_eq!(common::stat(&server, "missed").await, 0);
}

/// A dropped slow client that never reads again is let go: once `--ws-close-grace-secs` has
/// passed without it taking its queued frames and the close frame, the server closes the
/// socket (`websockets_open` falls back) instead of holding it for ever.
#[tokio::test]
async fn a_socket_that_never_reads_again_is_let_go() {
    let server = common::TestServer::start(|c| {
        c.max_lag_messages = 100;
        c.max_publishes_per_sec = 0;
        c.history_share_bytes = Some(0);
        c.ws_close_grace_secs = 1;
    });
    let topic = "/slow/gone";
    let mut slow = slow_socket(&server, topic, "stuck").await;
    assert_eq!(ws_text(&mut slow).await, frame("stuck|0|X|"));
    common::wait_stat(&server, "websockets_open", 5.0, |n| n == 1).await;

    let messages: Vec<String> = (0..MESSAGES).map(message).collect();
    common::within(
        30.0,
        "the burst to be published",
        common::publish_all(&server, topic, &messages),
    )
    .await;
    common::wait_stat(&server, "slow_consumers_dropped", 5.0, |n| n >= 1).await;
    // 1 s for the queued frames and the close frame, 2 s for a close reply, then it is gone.
    common::wait_stat(&server, "websockets_open", 8.0, |n| n == 0).await;
    drop(slow);
}

/// A node holds at most `--max-websockets` sockets: one more upgrade (Atmosphere or Cettia) is
/// refused with `503` and a sentence saying why (atmosphere.js then falls back to its fallback
/// transport), the open sockets keep receiving, and a socket that closes makes room again.
#[tokio::test]
async fn websockets_beyond_the_limit_are_refused_with_503() {
    let server = common::TestServer::start(|c| c.max_websockets = Some(2));
    let topic = "/limit/room";
    let (mut first, _) = ws_open(&server, topic, "first", true).await;
    let (mut second, _) = ws_open(&server, topic, "second", true).await;
    assert_eq!(ws_text(&mut first).await, frame("first|0|X|"));
    assert_eq!(ws_text(&mut second).await, frame("second|0|X|"));

    // The whole answer, read to the end (the node closes a refused upgrade's connection).
    let refused = |path_and_query: String| {
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: x\r\n{}\r\n",
            common::UPGRADE_HEADERS
        );
        async move { common::raw_exchange(server.addr, &request).await }
    };
    let answer = refused(format!(
        "{topic}?{}",
        common::atmo_query("websocket", "third", true)
    ))
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("--max-websockets"), "{answer}");
    let answer = refused("/cettia?cettia-version=1.0".to_string()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    common::publish_all(&server, topic, &["still here".to_string()]).await;
    assert_eq!(ws_text(&mut first).await, frame("still here"));
    assert_eq!(ws_text(&mut second).await, frame("still here"));

    drop(second);
    common::wait_stat(&server, "websockets_open", 5.0, |n| n == 1).await;
    let (mut third, response) = ws_open(&server, topic, "third", true).await;
    assert_eq!(response.status(), 101);
    assert_eq!(ws_text(&mut third).await, frame("third|0|X|"));
}
