//! The Atmosphere application API: hooks that see clients open, judge their messages (accept,
//! transform, refuse) and see them leave, with real clients on every transport.
use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{lp_handshake, lp_poll, post, unframe, wait_stat, within, ws_open, ws_send, ws_text};
use nimbus::atmosphere::Verdict;
use parking_lot::Mutex;

fn short_windows(c: &mut nimbus::Config) {
    c.reconnect_window_secs = 1;
    c.long_poll_expiry_secs = 1;
    c.heartbeat_secs = 2;
}

/// Messages a WebSocket subscriber of `topic` receives (its handshake read first).
async fn subscriber(server: &common::TestServer, topic: &str) -> common::Ws {
    let (mut ws, _) = ws_open(server, topic, "0", true).await;
    ws_text(&mut ws).await; // the handshake
    ws
}

/// A refused message reaches nobody: a POST is answered 403 with the hook's reason, a
/// WebSocket is closed with 1008 and the reason; what the hook accepts goes out as before.
#[tokio::test]
async fn a_hook_refuses_a_message() {
    let (server, _) = common::TestServer::start_with_atmosphere(
        |_| {},
        |app| {
            app.on_message(|_, text| {
                if text.contains("spam") {
                    Verdict::Refuse("no spam here".into())
                } else {
                    Verdict::Accept
                }
            });
        },
    );
    let topic = "/app/refuse";
    let mut listener = subscriber(&server, topic).await;

    let client = reqwest::Client::new();
    let refused = client
        .post(common::topic_url(
            &server,
            topic,
            "long-polling",
            "poster",
            true,
        ))
        .body("buy spam")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("no spam here"));

    let (mut sender, _) = ws_open(&server, topic, "0", true).await;
    ws_text(&mut sender).await;
    ws_send(&mut sender, "more spam").await;
    let (close, _) = common::ws_until_close(&mut sender, 5.0).await;
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("no spam here"), "{}", close.reason);

    // Only the accepted message reached the listener, and nothing refused before it.
    assert_eq!(post(&client, &server, topic, "poster", "hello").await, 200);
    assert_eq!(ws_text(&mut listener).await, "5|hello");
    common::ws_silent(&mut listener, Duration::from_millis(300)).await;
}

/// A hook may rewrite a message: every subscriber gets the rewritten text, whichever way it
/// was sent (WebSocket or POST), and the hook knows who sent it.
#[tokio::test]
async fn a_hook_transforms_a_message() {
    let (server, _) = common::TestServer::start_with_atmosphere(
        |_| {},
        |app| {
            app.on_message(|client, text| {
                Verdict::Transform(format!("{}: {}", &client.id()[..6], text.to_uppercase()))
            });
        },
    );
    let topic = "/app/transform";
    let mut listener = subscriber(&server, topic).await;
    let (mut sender, _) = ws_open(&server, topic, "0", true).await;
    let handshake = ws_text(&mut sender).await;
    let sender_id = unframe(&handshake)[0]
        .split('|')
        .next()
        .unwrap()
        .to_string();

    ws_send(&mut sender, "hi there").await;
    let expected = format!("{}: HI THERE", &sender_id[..6]);
    assert_eq!(
        unframe(&ws_text(&mut listener).await),
        vec![expected.clone()]
    );
    assert_eq!(unframe(&ws_text(&mut sender).await), vec![expected]);

    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &server, topic, "poster-123", "posted").await,
        200
    );
    assert_eq!(
        unframe(&ws_text(&mut listener).await),
        vec!["poster: POSTED".to_string()]
    );
}

/// `on_leave` fires once per client: for a WebSocket that closes, and for a long-poller that
/// simply stops polling (once its expiry passes); `on_open` fired for each before.
#[tokio::test]
async fn the_leave_hook_fires_once_per_client() {
    let opened = Arc::new(Mutex::new(Vec::<String>::new()));
    let left = Arc::new(Mutex::new(Vec::<String>::new()));
    let (server, _) = common::TestServer::start_with_atmosphere(short_windows, |app| {
        let opened = opened.clone();
        app.on_open(move |client| opened.lock().push(client.id().to_string()));
        let left = left.clone();
        app.on_leave(move |client| left.lock().push(client.id().to_string()));
    });
    let topic = "/app/leave";

    let (mut ws, _) = ws_open(&server, topic, "0", true).await;
    let handshake = ws_text(&mut ws).await;
    let ws_id = unframe(&handshake)[0]
        .split('|')
        .next()
        .unwrap()
        .to_string();
    let poller = lp_handshake(&server, topic, true).await;
    // One ordinary poll; then the long-poller goes away without a word.
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &server, topic, "x", "ping").await, 200);
    let body = lp_poll(&server, topic, &poller, true).await;
    assert!(body.contains("ping"), "{body}");
    let mut both = vec![ws_id.clone(), poller.clone()];
    both.sort();
    within(5.0, "both clients to open", async {
        while opened.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut seen = opened.lock().clone();
    seen.sort();
    assert_eq!(seen, both);
    assert!(left.lock().is_empty(), "nobody left yet");

    drop(ws);
    wait_stat(&server, "connections", 10.0, |n| n == 0).await;
    let mut gone = left.lock().clone();
    gone.sort();
    assert_eq!(gone, both, "each client left exactly once");
}

/// A hook that sends to one client reaches that client only, and a hook can count messages
/// while accepting them: the stock echo-broadcast goes on through the API.
#[tokio::test]
async fn a_hook_sends_to_one_client() {
    let judged = Arc::new(AtomicUsize::new(0));
    let counter = judged.clone();
    let (server, _) = common::TestServer::start_with_atmosphere(
        |_| {},
        move |app| {
            app.on_message(move |client, text| {
                counter.fetch_add(1, Ordering::SeqCst);
                if text == "whoami" {
                    let _ = client.send(&format!("you are {}", client.id()));
                    return Verdict::Refuse("answered privately".into());
                }
                Verdict::Accept
            });
        },
    );
    let topic = "/app/private";
    let mut other = subscriber(&server, topic).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &server, topic, "asker-1", "whoami").await,
        403
    );
    let (mut asker, _) = ws_open(&server, topic, "asker-2", true).await;
    ws_text(&mut asker).await;
    ws_send(&mut asker, "whoami").await;
    assert_eq!(unframe(&ws_text(&mut asker).await), vec!["you are asker-2"]);
    assert_eq!(
        post(&client, &server, topic, "asker-1", "for all").await,
        200
    );
    assert_eq!(unframe(&ws_text(&mut other).await), vec!["for all"]);
    assert_eq!(judged.load(Ordering::SeqCst), 3);
}
