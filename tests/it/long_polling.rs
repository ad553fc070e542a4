//! Long-polling as atmosphere.js 5 drives it: the handshake poll, framing of poll bodies,
//! caching between polls, the session-token resend, and heartbeats.
use crate::common;

use std::time::{Duration, Instant};

use common::{frame, lp_handshake, lp_poll, publish_all, topic_url, tricky_messages, within};

/// The `tracking-id=0` poll is answered at once with only the handshake `len|uuid|0|X|`, and
/// the issued id is also in the `X-Atmosphere-tracking-id` response header.
#[tokio::test]
async fn handshake_poll_is_answered_at_once_with_only_the_handshake() {
    // Default 60 s heartbeat: an answer within the timeout cannot be a held poll.
    let server = common::TestServer::start(|_| {});
    let started = Instant::now();
    let response = common::lp_poll_response(&server, "/lp/handshake", "0", true, "").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "not held");

    let uuid = headers["x-atmosphere-tracking-id"].to_str().unwrap();
    assert!(
        nimbus::protocol::atmosphere::request::is_valid_tracking_id(uuid),
        "{uuid:?}"
    );
    assert_eq!(headers["x-atmosphere-first-request"], "true");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(body, frame(&format!("{uuid}|0|X|")));
}

/// Without `X-Atmosphere-TrackMessageSize` the handshake is the bare `uuid|hbMs|X|`, and the
/// announced client heartbeat interval is in milliseconds.
#[tokio::test]
async fn handshake_without_track_message_size_is_unprefixed() {
    let server = common::TestServer::start(|c| c.client_heartbeat_secs = 10);
    let response = common::lp_poll_response(&server, "/lp/handshake", "0", false, "").await;
    let uuid = response.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.text().await.unwrap(), format!("{uuid}|10000|X|"));
}

/// Later polls carry the same tracking id in the response header and no handshake.
#[tokio::test]
async fn later_polls_echo_the_tracking_id() {
    let server = common::TestServer::start(|_| {});
    let topic = "/lp/echo";
    let id = lp_handshake(&server, topic, true).await;
    publish_all(&server, topic, &["m".to_string()]).await;
    let response = common::lp_poll_response(&server, topic, &id, true, "").await;
    assert_eq!(response.headers()["x-atmosphere-tracking-id"], id.as_str());
    assert!(!response
        .headers()
        .contains_key("x-atmosphere-first-request"));
    assert_eq!(response.text().await.unwrap(), "1|m");
}

/// With TrackMessageSize a poll body carries every queued message, each with its own
/// `len|` prefix counted in UTF-16 units, whatever `|`, quotes, newlines or `ü€😀` it holds.
#[tokio::test]
async fn a_poll_carries_all_queued_frames_with_track_message_size() {
    let server = common::TestServer::start(|_| {});
    let topic = "/lp/batch";
    let id = lp_handshake(&server, topic, true).await;
    let messages = tricky_messages();
    publish_all(&server, topic, &messages).await;

    let body = lp_poll(&server, topic, &id, true).await;
    let expected: String = messages.iter().map(|m| frame(m)).collect();
    assert_eq!(body, expected);
    assert_eq!(common::unframe(&body), messages);
    // Spot-check the UTF-16 count on the wire: ü€😀 is 4 units (😀 is a surrogate pair), so
    // the message is 14 units long (13 characters, 19 bytes).
    assert!(body.contains("14|ü€😀 and 12|34"), "{body}");
}

/// Without TrackMessageSize the client cannot split a body, so each poll response carries
/// exactly one message, unframed; the rest wait for the next polls, in order.
#[tokio::test]
async fn without_track_message_size_each_poll_carries_one_message() {
    let server = common::TestServer::start(|_| {});
    let topic = "/lp/single";
    let id = lp_handshake(&server, topic, false).await;
    let messages = tricky_messages();
    publish_all(&server, topic, &messages).await;
    for message in &messages {
        assert_eq!(&lp_poll(&server, topic, &id, false).await, message);
    }
}

/// A poll with nothing to deliver is held, and completed as soon as a message is published.
#[tokio::test]
async fn a_held_poll_completes_when_a_message_arrives() {
    let server = common::TestServer::start(|_| {});
    let topic = "/lp/held";
    let id = lp_handshake(&server, topic, true).await;
    let url = topic_url(&server, topic, "long-polling", &id, true);
    let poll = tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the poll is held while there is nothing to say"
    );
    publish_all(&server, topic, &["wake up".to_string()]).await;
    let body = within(2.0, "the held poll", poll).await.unwrap();
    assert_eq!(body, "7|wake up");
}

/// Poll until `want` messages were received (TrackMessageSize bodies), failing on duplicates
/// or reordering by comparing with `expected` at the end.
async fn collect(
    server: &common::TestServer,
    topic: &str,
    id: &str,
    want: usize,
) -> (Vec<String>, usize) {
    let mut received = Vec::new();
    let mut polls = 0;
    within(30.0, "every message through polls", async {
        while received.len() < want {
            let body = lp_poll(server, topic, id, true).await;
            polls += 1;
            received.extend(common::unframe(&body).into_iter().filter(|m| m != "X"));
        }
    })
    .await;
    (received, polls)
}

/// Messages published while the client is not polling are cached and delivered on the next
/// polls, in order, none lost and none twice — also when they exceed one response's batch.
#[tokio::test]
async fn messages_between_polls_are_delivered_once_in_order() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 5);
    let topic = "/lp/cache";
    let id = lp_handshake(&server, topic, true).await;
    let messages: Vec<String> = (0..600).map(|i| format!("msg-{i}|ü")).collect();
    publish_all(&server, topic, &messages).await;

    let (received, polls) = collect(&server, topic, &id, messages.len()).await;
    assert_eq!(received, messages);
    assert!(polls >= 2, "600 messages need more than one batch");
    // Nothing more is pending: the next poll is held (and answered by the publish below).
    let url = topic_url(&server, topic, "long-polling", &id, true);
    let poll = tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish_all(&server, topic, &["last".to_string()]).await;
    assert_eq!(within(3.0, "the final poll", poll).await.unwrap(), "4|last");
}

/// A publisher racing a client that re-polls continuously: every message arrives exactly once
/// and in order, whether it lands in a held poll or between two polls.
#[tokio::test]
async fn publishing_while_the_client_polls_loses_and_duplicates_nothing() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 5);
    let topic = "/lp/race";
    let id = lp_handshake(&server, topic, true).await;
    let messages: Vec<String> = (0..400).map(|i| format!("race-{i}")).collect();
    let publisher = {
        let (addr, messages) = (server.addr, messages.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for (i, message) in messages.into_iter().enumerate() {
                let url = format!(
                    "http://{addr}{topic}?{}",
                    common::atmo_query("long-polling", "publisher", true)
                );
                let status = client
                    .post(url)
                    .body(message)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200);
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let (received, _) = collect(&server, topic, &id, messages.len()).await;
    publisher.await.unwrap();
    assert_eq!(received, messages);
}

/// The `X-Atmosphere-Session-Token` of a response acknowledges what the client has seen: a
/// poll that presents an older token (the last answer was lost on the way) gets the
/// unacknowledged messages again; presenting the newest token moves on. A lost answer means
/// the client's request failed, so atmosphere.js is reconnecting and takes the first message
/// of the next body as a handshake: the resend starts with one.
#[tokio::test]
async fn an_older_session_token_gets_the_unacknowledged_messages_again() {
    let server = common::TestServer::start(|_| {});
    let topic = "/lp/token";
    let handshake = common::lp_poll_response(&server, topic, "0", true, "").await;
    let id = handshake.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    let token0 = handshake.headers()["x-atmosphere-session-token"]
        .to_str()
        .unwrap()
        .to_string();

    publish_all(&server, topic, &["a".to_string(), "b".to_string()]).await;
    let first = common::lp_poll_response(
        &server,
        topic,
        &id,
        true,
        &format!("&X-Atmosphere-Session-Token={token0}"),
    )
    .await;
    let token1 = first.headers()["x-atmosphere-session-token"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(token1, token0);
    assert_eq!(first.text().await.unwrap(), "1|a1|b");

    // That answer "was lost": the client re-polls with the token it last received.
    publish_all(&server, topic, &["c".to_string()]).await;
    let again = common::lp_poll_response(
        &server,
        topic,
        &id,
        true,
        &format!("&X-Atmosphere-Session-Token={token0}"),
    )
    .await;
    let token2 = again.headers()["x-atmosphere-session-token"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        again.text().await.unwrap(),
        format!("{}1|a1|b1|c", frame(&format!("{id}|0|X|")))
    );

    // Acknowledged: the next poll with the newest token gets only what is new.
    publish_all(&server, topic, &["d".to_string()]).await;
    let next = common::lp_poll_response(
        &server,
        topic,
        &id,
        true,
        &format!("&X-Atmosphere-Session-Token={token2}"),
    )
    .await;
    assert_eq!(next.text().await.unwrap(), "1|d");
}

/// A poll held with nothing to say is completed after the heartbeat interval with the padding
/// (`1|X` with TrackMessageSize, `X` without), which the client drops before re-polling.
#[tokio::test]
async fn the_server_heartbeat_completes_a_held_poll() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 1);
    let topic = "/lp/heartbeat";
    for (tml, padding) in [(true, "1|X"), (false, "X")] {
        let id = lp_handshake(&server, topic, tml).await;
        let started = Instant::now();
        let body = lp_poll(&server, topic, &id, tml).await;
        let held = started.elapsed();
        assert_eq!(body, padding);
        assert!(
            held >= Duration::from_millis(900) && held < Duration::from_secs(4),
            "held {held:?}"
        );
    }
}

/// `X-Heartbeat-Server` asks for a longer interval (honoured) or `0` (no heartbeat: the poll
/// stays held).
#[tokio::test]
async fn x_heartbeat_server_is_honoured_on_long_polls() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 1);
    let topic = "/lp/hb-server";
    let id = lp_handshake(&server, topic, true).await;

    let started = Instant::now();
    let longer = common::lp_poll_response(&server, topic, &id, true, "&X-Heartbeat-Server=2").await;
    assert_eq!(longer.text().await.unwrap(), "1|X");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(1900), "held only {held:?}");

    let url = format!(
        "{}&X-Heartbeat-Server=0",
        topic_url(&server, topic, "long-polling", &id, true)
    );
    let off = tokio::time::timeout(Duration::from_millis(2500), reqwest::get(url)).await;
    assert!(
        off.is_err(),
        "no heartbeat may complete the poll when the client turned them off"
    );
}

/// A client heartbeat (a POST whose body is the padding `X`) is swallowed: counted in the stats,
/// never published to the topic.
#[tokio::test]
async fn client_heartbeat_posts_are_swallowed() {
    let server = common::TestServer::start(|_| {});
    let topic = "/lp/client-hb";
    let id = lp_handshake(&server, topic, true).await;
    let client = reqwest::Client::new();
    assert_eq!(common::post(&client, &server, topic, &id, "X").await, 200);
    assert_eq!(common::post(&client, &server, topic, &id, "X").await, 200);
    publish_all(&server, topic, &["real".to_string()]).await;
    assert_eq!(lp_poll(&server, topic, &id, true).await, "4|real");
    let stats = common::stats(&server).await;
    assert_eq!(stats["client_heartbeats"], 2);
    assert_eq!(stats["published"], 1);
}

/// atmosphere.js 5 leaves `enableProtocol` off by default: without `X-atmo-protocol` a
/// `tracking-id=0` poll must not carry a handshake (the client would deliver `uuid|0|X|` to the
/// application as a message); it is held like any poll and answered with the next message.
#[tokio::test]
async fn without_the_protocol_flag_a_first_poll_is_a_plain_poll() {
    let server = common::TestServer::start(|_| {});
    let topic = "/lp/noproto";
    // Keep the topic alive with a member so the publish below has somewhere to go.
    let _member = lp_handshake(&server, topic, true).await;
    for tml in [true, false] {
        let mut url = server.url(&format!(
            "{topic}?X-Atmosphere-tracking-id=0&X-Atmosphere-Framework=5.0.7\
             &X-Atmosphere-Transport=long-polling"
        ));
        if tml {
            url.push_str("&X-Atmosphere-TrackMessageSize=true");
        }
        let poll =
            tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !poll.is_finished(),
            "a first poll without the protocol is held"
        );
        publish_all(&server, topic, &["hi".to_string()]).await;
        let body = within(3.0, "the held poll", poll).await.unwrap();
        assert_eq!(body, if tml { "2|hi" } else { "hi" });
    }
}

/// An empty message carries nothing: a client's empty frame is not published (like an empty
/// POST), and one published through the API is skipped by a long-poller without
/// TrackMessageSize (it cannot be told apart from "nothing yet") instead of holding up the
/// messages behind it; with TrackMessageSize it arrives as `0|`.
#[tokio::test]
async fn an_empty_message_does_not_wedge_a_long_poller() {
    use nimbus::topic::{Audience, Message};
    let server = common::TestServer::start(|c| c.heartbeat_secs = 5);
    let topic = "/lp/empty";
    let plain = lp_handshake(&server, topic, false).await;
    let framed = lp_handshake(&server, topic, true).await;
    let (mut ws, _) = common::ws_open(&server, topic, "sender", true).await;
    common::ws_text(&mut ws).await;
    common::ws_send(&mut ws, "").await;
    common::ws_send(&mut ws, "after").await;
    assert_eq!(common::ws_text(&mut ws).await, "5|after");

    let broker = &server.node.broker;
    broker
        .publish(topic, Audience::All, Message::text(""))
        .unwrap();
    broker
        .publish(topic, Audience::All, Message::text("later"))
        .unwrap();
    assert_eq!(common::ws_text(&mut ws).await, "0|");
    assert_eq!(common::ws_text(&mut ws).await, "5|later");

    let body = within(
        3.0,
        "the poll after an empty message",
        lp_poll(&server, topic, &plain, false),
    )
    .await;
    assert_eq!(body, "after");
    let body = within(3.0, "the next poll", lp_poll(&server, topic, &plain, false)).await;
    assert_eq!(body, "later");
    assert_eq!(
        lp_poll(&server, topic, &framed, true).await,
        "5|after0|5|later"
    );
}
