//! Cettia sockets over WebSocket: handshake, events and ids, the reply extension, heartbeats,
//! resumption with the events sent while away, deletion after the resume window, the
//! application API, and delivery across protocols (an Atmosphere client and a Cettia socket in
//! one topic).
use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{atmo_query, stat, within, ws_open_url, ws_send, ws_silent, ws_text, Ws};
use futures::StreamExt;
use nimbus::cettia::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn cettia_url(server: &common::TestServer, extra: &str) -> String {
    server.ws_url(&format!("/cettia?cettia-version=1.0{extra}"))
}

/// Open a socket; returns the WebSocket and the socket id from the handshake.
async fn open(server: &common::TestServer, extra: &str) -> (Ws, String) {
    let (mut ws, _) = ws_open_url(&cettia_url(server, extra)).await;
    let handshake = ws_text(&mut ws).await;
    assert!(
        handshake.starts_with("?cettia-version=1.0&cettia-id="),
        "{handshake}"
    );
    let id = handshake["?cettia-version=1.0&cettia-id=".len()..]
        .split('&')
        .next()
        .unwrap()
        .to_string();
    (ws, id)
}

/// An Atmosphere WebSocket client of `topic` (plain messages), past its handshake.
async fn atmosphere_ws(server: &common::TestServer, topic: &str) -> Ws {
    let query = atmo_query("websocket", "0", false);
    let (mut ws, _) = ws_open_url(&server.ws_url(&format!("{topic}?{query}"))).await;
    let _handshake = ws_text(&mut ws).await;
    ws
}

/// A node whose Cettia application counts the transports it closed (`on_close`).
fn start_counting_closes(
    configure: impl FnOnce(&mut nimbus::Config),
) -> (common::TestServer, Arc<AtomicUsize>) {
    let closes = Arc::new(AtomicUsize::new(0));
    let counter = closes.clone();
    let (server, _) = common::TestServer::start_with_cettia(configure, move |app| {
        app.on_close(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    });
    (server, closes)
}

/// Drop the socket's WebSocket and wait until the server has closed its transport.
async fn closed(ws: Ws, closes: &AtomicUsize) {
    let before = closes.load(Ordering::SeqCst);
    drop(ws);
    within(5.0, "the server to close the transport", async {
        while closes.load(Ordering::SeqCst) == before {
            // A backoff inside a deadline loop, not an ordering wait.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Wait until the socket has joined the topics it opened with: the socket handles nothing
/// else while it joins, so the answer to an `echo` sent now comes after the joins. The echo
/// takes the socket's next event id.
async fn joined(ws: &mut Ws) {
    ws_send(
        ws,
        r#"{"id":0,"type":"echo","data":"joined?","reply":false}"#,
    )
    .await;
    let answer = ws_text(ws).await;
    assert!(
        answer.contains(r#""type":"echo","data":"joined?""#),
        "{answer}"
    );
}

#[tokio::test]
async fn handshake_echo_and_ids_as_sent() {
    let server = common::TestServer::start(|_| {});
    let (mut ws, id) = open(&server, "").await;
    // An id the node issued: 32 random hex digits, `-`, 22 characters of signature.
    assert_eq!(id.len(), 55, "{id}");
    ws_send(
        &mut ws,
        r#"{"id":7,"type":"echo","data":{"a":[1,2.5,null]},"reply":false}"#,
    )
    .await;
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"0","type":"echo","data":{"a":[1,2.5,null]},"reply":false}"#
    );
    // Reply extension: the original id comes back unchanged (number or string).
    ws_send(
        &mut ws,
        r#"{"id":8,"type":"message","data":"x","reply":true}"#,
    )
    .await;
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"1","type":"reply","data":{"id":8,"data":null,"exception":false},"reply":false}"#
    );
    ws_send(
        &mut ws,
        r#"{"id":"s9","type":"nobody-handles-this","reply":true}"#,
    )
    .await;
    let rejected = ws_text(&mut ws).await;
    assert!(
        rejected.starts_with(r#"{"id":"2","type":"reply","data":{"id":"s9","data":"no handler"#),
        "{rejected}"
    );
    assert!(
        rejected.ends_with(r#""exception":true},"reply":false}"#),
        "{rejected}"
    );
    // An unknown cettia-id gets a fresh socket.
    let (_ws2, other) = open(&server, "&cettia-id=00000000-0000-0000-0000-000000000000").await;
    assert_ne!(other, "00000000-0000-0000-0000-000000000000");
}

#[tokio::test]
async fn binary_events_travel_as_msgpack_frames() {
    let server = common::TestServer::start(|_| {});
    let (mut ws, _) = open(&server, "").await;
    let event = nimbus::protocol::cettia::Event::new(1, "echo", Value::Binary(vec![9, 8, 7]));
    ws.send_binary(event.to_msgpack()).await;
    let frame = within(5.0, "binary echo", ws.next())
        .await
        .unwrap()
        .unwrap();
    let WsMessage::Binary(bytes) = frame else {
        panic!("binary frame expected, got {frame:?}")
    };
    let echoed = nimbus::protocol::cettia::Event::decode_binary(&bytes).unwrap();
    assert_eq!(echoed.data, Value::Binary(vec![9, 8, 7]));
    // A message over --max-message-bytes closes the transport with 1009.
    let (mut big, _) = open(&server, "").await;
    ws_send(
        &mut big,
        &format!(
            r#"{{"id":1,"type":"echo","data":"{}","reply":false}}"#,
            "x".repeat(70_000)
        ),
    )
    .await;
    let (close, _) = common::ws_until_close(&mut big, 5.0).await;
    assert_eq!(u16::from(close.unwrap().code), 1009);
    // A malformed event closes the transport with 1007.
    ws_send(&mut ws, "not json").await;
    let (close, _) = common::ws_until_close(&mut ws, 5.0).await;
    assert_eq!(u16::from(close.unwrap().code), 1007);
}

trait SendBinary {
    async fn send_binary(&mut self, bytes: Vec<u8>);
}

impl SendBinary for Ws {
    async fn send_binary(&mut self, bytes: Vec<u8>) {
        use futures::SinkExt;
        self.send(WsMessage::binary(bytes)).await.unwrap();
    }
}

#[tokio::test]
async fn heartbeat_is_echoed_and_a_missing_one_closes_the_transport() {
    let server = common::TestServer::start(|c| {
        c.cettia_heartbeat_ms = 600;
        c.cettia_fast_heartbeat_ms = 200;
    });
    let (mut ws, _) = ws_open_url(&cettia_url(&server, "")).await;
    let handshake = ws_text(&mut ws).await;
    assert!(
        handshake.ends_with("&cettia-heartbeat=600&cettia-_heartbeat=200"),
        "{handshake}"
    );
    for i in 0..3 {
        // The time between heartbeats is what is tested (under the 600 ms interval).
        tokio::time::sleep(Duration::from_millis(400)).await;
        ws_send(
            &mut ws,
            &format!(r#"{{"id":{i},"type":"heartbeat","reply":false}}"#),
        )
        .await;
        assert_eq!(
            ws_text(&mut ws).await,
            format!(r#"{{"id":"{i}","type":"heartbeat","data":null,"reply":false}}"#)
        );
    }
    // Silence: the server closes the transport after the heartbeat interval.
    let started = std::time::Instant::now();
    let (_, texts) = common::ws_until_close(&mut ws, 3.0).await;
    assert!(texts.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn resume_delivers_what_was_sent_while_away_in_order_once() {
    let (server, closes) = start_counting_closes(|_| {});
    let topic = "/resume/room";
    // A witness in the topic: once it has a message, so has the socket's mailbox.
    let mut witness = atmosphere_ws(&server, topic).await;
    let (mut ws, id) = open(&server, &format!("&topic={topic}")).await;
    joined(&mut ws).await;
    closed(ws, &closes).await;
    // Messages published to the socket's topic while it has no transport.
    for i in 0..3 {
        let status = reqwest::Client::new()
            .post(server.url(topic))
            .body(format!("m{i}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    for i in 0..3 {
        assert_eq!(ws_text(&mut witness).await, format!("m{i}"));
    }
    let (mut ws, again) = open(&server, &format!("&cettia-id={id}")).await;
    assert_eq!(again, id, "the same socket");
    for i in 0..3 {
        assert_eq!(
            ws_text(&mut ws).await,
            format!(
                r#"{{"id":"{}","type":"message","data":"m{i}","reply":false}}"#,
                i + 1
            )
        );
    }
    ws_silent(&mut ws, Duration::from_millis(300)).await;
    // Another resume: nothing again (delivered once).
    closed(ws, &closes).await;
    let (mut ws, _) = open(&server, &format!("&cettia-id={id}")).await;
    ws_silent(&mut ws, Duration::from_millis(300)).await;
    // The event counter continued across transports.
    ws_send(&mut ws, r#"{"id":1,"type":"echo","data":1,"reply":false}"#).await;
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"4","type":"echo","data":1,"reply":false}"#
    );
}

#[tokio::test]
async fn the_resume_queue_is_bounded_and_drops_the_oldest() {
    let (server, closes) = start_counting_closes(|c| c.max_lag_messages = 4);
    let topic = "/resume/bounded";
    let (mut ws, id) = open(&server, &format!("&topic={topic}")).await;
    joined(&mut ws).await;
    closed(ws, &closes).await;
    let missed_before = stat(&server, "missed").await;
    for i in 0..10 {
        reqwest::Client::new()
            .post(server.url(topic))
            .body(format!("m{i}"))
            .send()
            .await
            .unwrap();
    }
    // The socket has them all once six were dropped from its queue.
    common::wait_stat(&server, "missed", 5.0, |n| n - missed_before >= 6).await;
    let (mut ws, _) = open(&server, &format!("&cettia-id={id}")).await;
    for i in 6..10 {
        let text = ws_text(&mut ws).await;
        assert!(text.contains(&format!(r#""data":"m{i}""#)), "{text}");
    }
    ws_silent(&mut ws, Duration::from_millis(300)).await;
    assert_eq!(stat(&server, "missed").await - missed_before, 6);
}

#[tokio::test]
async fn a_socket_is_deleted_after_the_resume_window_once() {
    let deleted = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let (d, c) = (deleted.clone(), closes.clone());
    let (server, cettia) = common::TestServer::start_with_cettia(
        |c| c.cettia_resume_window_secs = 1,
        move |app| {
            app.on_delete(move |_| {
                d.fetch_add(1, Ordering::SeqCst);
            });
            app.on_close(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            });
        },
    );
    let (ws, id) = open(&server, "&topic=/deleted/room").await;
    assert_eq!(cettia.counts().0, 1);
    closed(ws, &closes).await;
    let closed_at = std::time::Instant::now();
    assert_eq!(closes.load(Ordering::SeqCst), 1);
    assert_eq!(deleted.load(Ordering::SeqCst), 0, "still within the window");
    assert!(cettia.socket(&id).is_some());
    within(5.0, "the socket's deletion", async {
        while deleted.load(Ordering::SeqCst) == 0 {
            // A backoff inside a deadline loop, not an ordering wait.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        closed_at.elapsed() >= Duration::from_millis(900),
        "deleted after the 1 s window, not before: {:?}",
        closed_at.elapsed()
    );
    assert!(cettia.socket(&id).is_none());
    assert_eq!(cettia.counts(), (0, 0), "sockets and transports freed");
    let (_ws, fresh) = open(&server, &format!("&cettia-id={id}")).await;
    assert_ne!(fresh, id, "a deleted socket is not resumed");
    // The topic was left: publishing reaches only the new socket's (none) topics; the node's
    // topic registry frees the idle topic. A wait for what must not happen (a second delete).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(deleted.load(Ordering::SeqCst), 1, "delete fires once");
}

#[tokio::test]
async fn application_api_sends_to_a_socket_a_tag_and_a_topic() {
    let replies = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let r = replies.clone();
    let (server, cettia) = common::TestServer::start_with_cettia(
        |_| {},
        move |app| {
            app.on_open(|socket| {
                socket.tag("vip");
                let _ = socket.send("welcome", Value::from(socket.id()));
            });
            // The first answer wins; later ones are ignored.
            app.on("twice", |_, data, reply| {
                if let Some(reply) = reply {
                    reply.resolve(data.clone());
                    reply.reject(data);
                }
            });
            let r = r.clone();
            app.on("ask", move |socket, data, _| {
                let r = r.clone();
                let _ = socket.send_with_reply("question", data, move |_, outcome| {
                    r.lock().push(outcome);
                });
            });
        },
    );
    let (mut ws, id) = open(&server, "&topic=/api/room").await;
    assert_eq!(
        ws_text(&mut ws).await,
        format!(r#"{{"id":"0","type":"welcome","data":"{id}","reply":false}}"#)
    );
    assert_eq!(cettia.send_to_tag("vip", "news", Value::from(1)), 1);
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"1","type":"news","data":1,"reply":false}"#
    );
    cettia
        .socket(&id)
        .unwrap()
        .send("direct", Value::Nil)
        .unwrap();
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"2","type":"direct","data":null,"reply":false}"#
    );
    cettia
        .publish(
            "/api/room",
            Value::Map(vec![(Value::from("k"), Value::from(true))]),
        )
        .unwrap();
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"3","type":"message","data":{"k":true},"reply":false}"#
    );
    // Outbound event with reply: the client resolves, then rejects another.
    ws_send(
        &mut ws,
        r#"{"id":1,"type":"ask","data":"q1","reply":false}"#,
    )
    .await;
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"4","type":"question","data":"q1","reply":true}"#
    );
    ws_send(
        &mut ws,
        r#"{"id":2,"type":"reply","data":{"id":"4","data":"yes","exception":false},"reply":false}"#,
    )
    .await;
    ws_send(
        &mut ws,
        r#"{"id":3,"type":"ask","data":"q2","reply":false}"#,
    )
    .await;
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"5","type":"question","data":"q2","reply":true}"#
    );
    ws_send(
        &mut ws,
        r#"{"id":4,"type":"reply","data":{"id":"5","data":"no","exception":true},"reply":false}"#,
    )
    .await;
    // A second reply for the same event is ignored.
    ws_send(&mut ws, r#"{"id":5,"type":"reply","data":{"id":"5","data":"again","exception":false},"reply":false}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *replies.lock(),
        vec![Ok(Value::from("yes")), Err(Value::from("no"))]
    );
    ws_send(
        &mut ws,
        r#"{"id":6,"type":"twice","data":"first","reply":true}"#,
    )
    .await;
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"6","type":"reply","data":{"id":6,"data":"first","exception":false},"reply":false}"#
    );
    ws_silent(&mut ws, Duration::from_millis(200)).await;
    cettia.socket(&id).unwrap().untag("vip");
    assert_eq!(cettia.send_to_tag("vip", "news", Value::from(2)), 0);
}

#[tokio::test]
async fn atmosphere_and_cettia_clients_in_one_topic_see_each_other() {
    let server = common::TestServer::start(|_| {});
    let topic = "/chat/mixed";
    let mut atmo = atmosphere_ws(&server, topic).await;
    let (mut cettia, _) = open(&server, &format!("&topic={topic}")).await;
    joined(&mut cettia).await;

    // Atmosphere → Cettia: text becomes a `message` event with string data.
    ws_send(&mut atmo, "hello from atmosphere").await;
    assert_eq!(ws_text(&mut atmo).await, "hello from atmosphere");
    assert_eq!(
        ws_text(&mut cettia).await,
        r#"{"id":"1","type":"message","data":"hello from atmosphere","reply":false}"#
    );
    // Cettia → Atmosphere: a string as is, other JSON as JSON text.
    ws_send(
        &mut cettia,
        r#"{"id":1,"type":"message","data":"hi \"atmo\"","reply":false}"#,
    )
    .await;
    assert_eq!(ws_text(&mut atmo).await, "hi \"atmo\"");
    assert_eq!(
        ws_text(&mut cettia).await,
        r#"{"id":"2","type":"message","data":"hi \"atmo\"","reply":false}"#
    );
    ws_send(
        &mut cettia,
        r#"{"id":2,"type":"message","data":{"n":[1,2]},"reply":false}"#,
    )
    .await;
    assert_eq!(ws_text(&mut atmo).await, r#"{"n":[1,2]}"#);
    assert_eq!(
        ws_text(&mut cettia).await,
        r#"{"id":"3","type":"message","data":{"n":[1,2]},"reply":false}"#
    );
    // A socket in several topics publishes to each of them.
    let mut other = atmosphere_ws(&server, "/other").await;
    let (mut multi, _) = open(&server, &format!("&topic={topic}&topic=/other")).await;
    joined(&mut multi).await;
    ws_send(
        &mut multi,
        r#"{"id":1,"type":"message","data":"both","reply":false}"#,
    )
    .await;
    assert_eq!(ws_text(&mut other).await, "both");
    assert_eq!(ws_text(&mut atmo).await, "both");
    assert_eq!(
        ws_text(&mut cettia).await,
        r#"{"id":"4","type":"message","data":"both","reply":false}"#
    );
    ws_silent(&mut atmo, Duration::from_millis(200)).await;
}

/// The buffering policy under a burst: a Cettia socket that stops reading does not hold up the
/// topic; once its queue passes `--max-lag-messages` its transport is closed (1013), the
/// queue is kept (oldest dropped beyond the bound, counted as missed), and on resume the client
/// gets the rest in order: what it received on both transports plus what was missed is the
/// burst, each message at most once.
#[tokio::test]
async fn a_slow_socket_is_dropped_and_resumes_with_its_bounded_queue() {
    const MESSAGES: usize = 1000;
    let server = common::TestServer::start(|c| c.max_lag_messages = 100);
    let topic = "/slow/cettia";
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = cettia_url(&server, &format!("&topic={topic}"));
    let (mut slow, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
    let handshake = ws_text(&mut slow).await;
    let id = common::socket_id(&handshake);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let messages: Vec<String> = (0..MESSAGES)
        .map(|i| format!("burst-{i:05}|{}", "ü€😀".repeat(400)))
        .collect();
    within(
        30.0,
        "the burst",
        common::publish_all(&server, topic, &messages),
    )
    .await;
    common::wait_stat(&server, "slow_consumers_dropped", 5.0, |n| n >= 1).await;

    let (close, before) = common::ws_until_close(&mut slow, 10.0).await;
    assert_eq!(u16::from(close.expect("a close frame").code), 1013);
    let (mut again, resumed) = open(&server, &format!("&cettia-id={id}")).await;
    assert_eq!(resumed, id);
    let missed = stat(&server, "missed").await as usize;
    let mut after = Vec::new();
    while before.len() + after.len() + missed < MESSAGES {
        after.push(common::ws_text_within(&mut again, 10.0).await);
    }
    ws_silent(&mut again, Duration::from_millis(300)).await;
    let data: Vec<String> = before
        .iter()
        .chain(&after)
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            assert_eq!(v["type"], "message");
            v["data"].as_str().unwrap().to_string()
        })
        .collect();
    // In order, each once: a subsequence of the burst, ending with its last message.
    let mut it = messages.iter();
    assert!(
        data.iter().all(|d| it.any(|m| m == d)),
        "order or duplicates"
    );
    assert_eq!(data.last(), messages.last());
    assert!(after.len() <= 100, "the queue is bounded: {}", after.len());
}
