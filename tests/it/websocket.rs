//! The WebSocket transport: handshake frame, one `len|msg` frame per message, server and client
//! heartbeats, and the 101 response headers.
use crate::common;

use std::time::{Duration, Instant};

use common::{frame, tricky_messages, ws_open, ws_open_url, ws_send, ws_silent, ws_text};

/// A client connecting with `tracking-id=0` gets a fresh id: the first frame is the handshake
/// `len|uuid|0|X|`, the same uuid as the 101's `X-Atmosphere-tracking-id`, and the 101 carries
/// `X-Nimbus-Node`.
#[tokio::test]
async fn the_handshake_is_the_first_frame_with_a_fresh_uuid() {
    let server = common::TestServer::start(|_| {});
    let (mut ws, response) = ws_open(&server, "/ws/handshake", "0", true).await;
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-nimbus-node"], "test-node");
    let uuid = response.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(nimbus::protocol::atmosphere::request::is_valid_tracking_id(
        &uuid
    ));
    assert_eq!(ws_text(&mut ws).await, frame(&format!("{uuid}|0|X|")));
}

/// A client presenting its tracking id gets a handshake reusing it (with and without
/// TrackMessageSize), and the announced client heartbeat interval in milliseconds.
#[tokio::test]
async fn the_handshake_reuses_the_presented_tracking_id() {
    let server = common::TestServer::start(|c| c.client_heartbeat_secs = 5);
    let (mut ws, response) = ws_open(&server, "/ws/handshake", "my-client_42", true).await;
    assert_eq!(
        response.headers()["x-atmosphere-tracking-id"],
        "my-client_42"
    );
    assert_eq!(ws_text(&mut ws).await, "20|my-client_42|5000|X|");

    let (mut plain, _) = ws_open(&server, "/ws/handshake", "other-client", false).await;
    assert_eq!(ws_text(&mut plain).await, "other-client|5000|X|");
}

/// Without `X-atmo-protocol` there is no handshake: the first frame is the first message.
#[tokio::test]
async fn no_handshake_without_the_protocol_flag() {
    let server = common::TestServer::start(|_| {});
    let url = server.ws_url(
        "/ws/noproto?X-Atmosphere-tracking-id=0&X-Atmosphere-Framework=5.0.7\
         &X-Atmosphere-Transport=websocket&X-Atmosphere-TrackMessageSize=true",
    );
    let (mut ws, _) = ws_open_url(&url).await;
    ws_silent(&mut ws, Duration::from_millis(300)).await;
    common::publish_all(&server, "/ws/noproto", &["first".to_string()]).await;
    assert_eq!(ws_text(&mut ws).await, "5|first");
}

/// Messages sent by one WebSocket client reach every client of the topic (the sender too), one
/// WebSocket frame per message carrying exactly one `len|` prefix (UTF-16 units), whatever
/// delimiters, quotes, newlines or non-BMP characters the message holds.
#[tokio::test]
async fn each_message_is_one_frame_with_one_prefix() {
    let server = common::TestServer::start(|_| {});
    let topic = "/ws/framing";
    let (mut alice, _) = ws_open(&server, topic, "alice", true).await;
    let (mut bob, _) = ws_open(&server, topic, "bob", true).await;
    let (mut carol, _) = ws_open(&server, topic, "carol", false).await;
    ws_text(&mut alice).await;
    ws_text(&mut bob).await;
    ws_text(&mut carol).await;

    let messages = tricky_messages();
    for message in &messages {
        ws_send(&mut alice, message).await;
    }
    for message in &messages {
        assert_eq!(ws_text(&mut bob).await, frame(message));
        assert_eq!(ws_text(&mut alice).await, frame(message));
        // Without TrackMessageSize every frame is one message, unframed.
        assert_eq!(&ws_text(&mut carol).await, message);
    }
    assert_eq!(frame("ü€😀"), "4|ü€😀");
    ws_silent(&mut bob, Duration::from_millis(200)).await;
}

/// After the idle interval the server sends the padding, framed like a message (`1|X`), and
/// does so again after each idle interval.
#[tokio::test]
async fn the_server_heartbeat_follows_the_idle_interval() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 1);
    let (mut ws, _) = ws_open(&server, "/ws/heartbeat", "0", true).await;
    ws_text(&mut ws).await;
    let started = Instant::now();
    assert_eq!(common::ws_text_within(&mut ws, 3.0).await, "1|X");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "{idle:?}"
    );
    assert_eq!(common::ws_text_within(&mut ws, 3.0).await, "1|X");

    let (mut plain, _) = ws_open(&server, "/ws/heartbeat", "0", false).await;
    ws_text(&mut plain).await;
    assert_eq!(common::ws_text_within(&mut plain, 3.0).await, "X");
}

/// Real traffic resets the idle timer: no heartbeat while messages flow.
#[tokio::test]
async fn messages_postpone_the_heartbeat() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 1);
    let topic = "/ws/busy";
    let (mut ws, _) = ws_open(&server, topic, "0", true).await;
    ws_text(&mut ws).await;
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        common::publish_all(&server, topic, &[format!("tick-{i}")]).await;
        assert_eq!(ws_text(&mut ws).await, frame(&format!("tick-{i}")));
    }
}

/// `X-Heartbeat-Server` can lengthen the interval (`2` s against the server's 1 s) or turn
/// heartbeats off (`0`).
#[tokio::test]
async fn x_heartbeat_server_is_honoured() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 1);
    let query = common::atmo_query("websocket", "0", true);
    // The idle interval starts when the socket attaches, so measure from before the upgrade.
    let started = Instant::now();
    let (mut longer, _) =
        ws_open_url(&server.ws_url(&format!("/ws/hbs?{query}&X-Heartbeat-Server=2"))).await;
    let (mut off, _) =
        ws_open_url(&server.ws_url(&format!("/ws/hbs?{query}&X-Heartbeat-Server=0"))).await;
    ws_text(&mut longer).await;
    ws_text(&mut off).await;
    assert_eq!(common::ws_text_within(&mut longer, 4.0).await, "1|X");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    ws_silent(&mut off, Duration::from_millis(500)).await;
    assert!(started.elapsed() >= Duration::from_millis(2500));
}

/// Client heartbeats (frames equal to the padding `X`) are swallowed: counted, never broadcast.
#[tokio::test]
async fn client_heartbeat_frames_are_swallowed() {
    let server = common::TestServer::start(|_| {});
    let topic = "/ws/client-hb";
    let (mut alice, _) = ws_open(&server, topic, "alice", true).await;
    let (mut bob, _) = ws_open(&server, topic, "bob", true).await;
    ws_text(&mut alice).await;
    ws_text(&mut bob).await;
    ws_send(&mut alice, "X").await;
    ws_send(&mut alice, "X").await;
    ws_send(&mut alice, "after").await;
    assert_eq!(ws_text(&mut bob).await, "5|after");
    let stats = common::stats(&server).await;
    assert_eq!(stats["client_heartbeats"], 2);
    assert_eq!(stats["published"], 1);
}

/// A message the client sends in several WebSocket frames (a text frame and continuations,
/// split even inside a UTF-8 character) is published once, whole; a fragmented message whose
/// total exceeds `max_message_bytes` closes the socket with 1009 although each frame is small.
#[tokio::test]
async fn fragmented_messages_are_reassembled() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let server = common::TestServer::start(|c| c.max_message_bytes = 64);
    let topic = "/ws/fragments";
    let (mut observer, _) = ws_open(&server, topic, "observer", true).await;
    ws_text(&mut observer).await;
    let (mut sender, _) = ws_open(&server, topic, "sender", true).await;
    ws_text(&mut sender).await;

    let message = "frag|mented ü€😀 message";
    let bytes = message.as_bytes();
    // Split inside "€" (3 bytes) and inside "😀" (4 bytes).
    let (a, b) = (bytes.len() - 14, bytes.len() - 10);
    let fragments = [
        Frame::message(bytes[..a].to_vec(), OpCode::Data(Data::Text), false),
        Frame::message(bytes[a..b].to_vec(), OpCode::Data(Data::Continue), false),
        Frame::message(bytes[b..].to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for fragment in fragments {
        sender.send(WsMessage::Frame(fragment)).await.unwrap();
    }
    assert_eq!(ws_text(&mut observer).await, frame(message));
    assert_eq!(ws_text(&mut sender).await, frame(message));

    let chunk = vec![b'q'; 40];
    sender
        .send(WsMessage::Frame(Frame::message(
            chunk.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
    sender
        .send(WsMessage::Frame(Frame::message(
            chunk,
            OpCode::Data(Data::Continue),
            true,
        )))
        .await
        .unwrap();
    let (close, _) = common::ws_until_close(&mut sender, 5.0).await;
    assert_eq!(close.expect("a close frame").code, CloseCode::Size);
    ws_silent(&mut observer, Duration::from_millis(200)).await;
    assert_eq!(common::stat(&server, "published").await, 1);
}

/// A client may not ask for heartbeats more often than the server sends them: a shorter
/// `X-Heartbeat-Server` (1 s against the server's 2 s) is raised to the server's interval.
#[tokio::test]
async fn a_shorter_x_heartbeat_server_is_raised_to_the_servers() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 2);
    let query = common::atmo_query("websocket", "0", true);
    // The idle interval starts when the socket attaches, so measure from before the upgrade.
    let started = Instant::now();
    let (mut ws, _) =
        ws_open_url(&server.ws_url(&format!("/ws/hbs?{query}&X-Heartbeat-Server=1"))).await;
    ws_text(&mut ws).await;
    assert_eq!(common::ws_text_within(&mut ws, 4.0).await, "1|X");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}
