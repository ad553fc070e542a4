//! History on join and the backend API's `history`: a new subscriber that asks for a topic's
//! last messages (`X-Nimbus-History`, Cettia's `history` parameter) gets them first, in order,
//! once, then the live ones, on every transport and across the nodes of a cluster; the
//! backend reads the same messages with `POST /api/history`. A namespace may turn it off.
use crate::common;

use common::cluster::Redis;
use common::{atmo_query, unframe, within, ws_open_url, ws_text, BodyReader, TestServer};
use serde_json::{json, Value};

const KEY: &str = "history-key";

async fn api(server: &TestServer, method: &str, body: Value) -> (u16, Value) {
    common::api(&server.url(""), KEY, method, body).await
}

async fn publish(server: &TestServer, topic: &str, data: &str) {
    let (status, body) = api(server, "publish", json!({"topic": topic, "data": data})).await;
    assert_eq!(status, 200, "{body}");
}

/// `m<from>` .. `m<to - 1>`.
fn numbered(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("m{i}")).collect()
}

fn data_of(history: &Value) -> Vec<String> {
    history["result"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_string())
        .collect()
}

fn atmosphere_query(transport: &str, history: Option<usize>) -> String {
    let mut query = atmo_query(transport, "0", true);
    if let Some(n) = history {
        query.push_str(&format!("&X-Nimbus-History={n}"));
    }
    query
}

/// The messages of an Atmosphere stream (SSE `data:` lines or streaming chunks) once `last`
/// has arrived, in order.
async fn stream_until(reader: &mut BodyReader, sse: bool, last: &str) -> Vec<String> {
    let text = reader.read_until(5.0, |t| t.contains(last)).await;
    let payload: String = if sse {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect()
    } else {
        text
    };
    // Padding and the handshake (`uuid|hb|X|`, framed) come first: keep the messages.
    unframe(payload.trim_start())
        .into_iter()
        .filter(|m| !m.contains('|'))
        .collect()
}

/// The next `n` messages of an Atmosphere WebSocket (a frame may carry several).
async fn ws_messages(ws: &mut common::Ws, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let text = ws_text(ws).await;
        got.extend(unframe(&text));
    }
    got
}

fn with_api(configure: impl FnOnce(&mut nimbus::Config)) -> TestServer {
    TestServer::start(|c| {
        c.api_key = Some(KEY.into());
        configure(c);
    })
}

/// Thirty messages published to a topic nobody was in; a client asking for five gets the last
/// five first, in order, then a live one, on WebSocket, SSE, streaming and long-polling, and a
/// Cettia socket likewise; a client that does not ask gets only the live one. A message
/// published to one session only is history for nobody else.
#[tokio::test]
async fn a_new_client_that_asks_gets_the_last_messages_first_on_every_transport() {
    let server = with_api(|_| {});
    let topic = "/room/history";
    for message in numbered(0, 30) {
        publish(&server, topic, &message).await;
    }
    let (status, body) = api(
        &server,
        "publish",
        json!({"topic": topic, "data": "private", "sessions": ["someone-else"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let last_five = numbered(25, 30);

    // WebSocket.
    let url = server.ws_url(&format!(
        "{topic}?{}",
        atmosphere_query("websocket", Some(5))
    ));
    let (mut ws, _) = ws_open_url(&url).await;
    let _handshake = ws_text(&mut ws).await;
    assert_eq!(ws_messages(&mut ws, 5).await, last_five, "WebSocket");

    // SSE and streaming.
    let mut sse =
        BodyReader::open(&server.url(&format!("{topic}?{}", atmosphere_query("sse", Some(5)))))
            .await;
    assert_eq!(stream_until(&mut sse, true, "m29").await, last_five, "SSE");
    let mut streaming = BodyReader::open(&server.url(&format!(
        "{topic}?{}",
        atmosphere_query("streaming", Some(5))
    )))
    .await;
    assert_eq!(
        stream_until(&mut streaming, false, "m29").await,
        last_five,
        "streaming"
    );

    // Long-polling: the handshake issues the id, the first poll answers the five.
    let handshake = reqwest::get(server.url(&format!(
        "{topic}?{}",
        atmosphere_query("long-polling", Some(5))
    )))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let id = handshake.split('|').nth(1).unwrap().to_string();
    let poll = server.url(&format!(
        "{topic}?{}",
        atmo_query("long-polling", &id, true)
    ));
    let body = within(5.0, "the first poll", async {
        reqwest::get(&poll).await.unwrap().text().await.unwrap()
    })
    .await;
    assert_eq!(unframe(&body), last_five, "long-polling");

    // Cettia, over WebSocket: `history=5` beside its `topic`.
    let url = server.ws_url(&format!(
        "/cettia?cettia-version=1.0&topic={topic}&history=5"
    ));
    let (mut cettia, _) = ws_open_url(&url).await;
    let _handshake = ws_text(&mut cettia).await;
    let mut events = Vec::new();
    for _ in 0..5 {
        let event: Value = serde_json::from_str(&ws_text(&mut cettia).await).unwrap();
        assert_eq!(event["type"], "message");
        events.push(event["data"].as_str().unwrap().to_string());
    }
    assert_eq!(events, last_five, "Cettia");

    // One that does not ask: only what comes next, which everyone above gets next too.
    let url = server.ws_url(&format!("{topic}?{}", atmosphere_query("websocket", None)));
    let (mut plain, _) = ws_open_url(&url).await;
    let _handshake = ws_text(&mut plain).await;
    publish(&server, topic, "live").await;
    assert_eq!(unframe(&ws_text(&mut plain).await), ["live"]);
    assert_eq!(unframe(&ws_text(&mut ws).await), ["live"], "WebSocket");
    assert_eq!(stream_until(&mut sse, true, "live").await, ["live"]);
    assert_eq!(stream_until(&mut streaming, false, "live").await, ["live"]);
    let body = reqwest::get(&poll).await.unwrap().text().await.unwrap();
    assert_eq!(unframe(&body), ["live"], "long-polling");
    let event: Value = serde_json::from_str(&ws_text(&mut cettia).await).unwrap();
    assert_eq!(event["data"], "live", "Cettia");
}

/// `POST /api/history`: the last `limit` messages to everyone, oldest first, with their
/// sequence numbers; 20 by default; capped at `--history-messages`; an unknown topic has none;
/// a namespace with `history = false` refuses it and gives joining clients nothing.
#[tokio::test]
async fn the_history_call_answers_the_last_messages_oldest_first() {
    let path = std::env::temp_dir().join(format!("nimbus-history-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[namespace]]\nprefix = \"/live/\"\nhistory = false\n",
    )
    .unwrap();
    let server = with_api(move |c| {
        c.history_messages = 25;
        c.config = Some(path);
    });
    for message in numbered(0, 30) {
        publish(&server, "/room/api", &message).await;
    }
    let (status, body) = api(
        &server,
        "history",
        json!({"topic": "/room/api", "limit": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(data_of(&body), numbered(27, 30));
    let seqs: Vec<u64> = body["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [28, 29, 30]);
    let (_, body) = api(&server, "history", json!({"topic": "/room/api"})).await;
    assert_eq!(data_of(&body), numbered(10, 30), "20 by default");
    let (_, body) = api(
        &server,
        "history",
        json!({"topic": "/room/api", "limit": 500}),
    )
    .await;
    assert_eq!(
        data_of(&body),
        numbered(5, 30),
        "at most --history-messages"
    );
    let (_, body) = api(&server, "history", json!({"topic": "/room/none"})).await;
    assert_eq!(data_of(&body), Vec::<String>::new());
    let (status, _) = api(&server, "history", json!({"topic": "nope"})).await;
    assert_eq!(status, 400);

    publish(&server, "/live/scores", "1-0").await;
    let (status, body) = api(&server, "history", json!({"topic": "/live/scores"})).await;
    assert_eq!(status, 400, "{body}");
    let url = server.ws_url(&format!(
        "/live/scores?{}",
        atmosphere_query("websocket", Some(5))
    ));
    let (mut ws, _) = ws_open_url(&url).await;
    let _handshake = ws_text(&mut ws).await;
    publish(&server, "/live/scores", "2-0").await;
    assert_eq!(
        unframe(&ws_text(&mut ws).await),
        ["2-0"],
        "no history where it is off"
    );
}

/// In a cluster the history is the shared one: messages published through one node to a topic
/// no node had members of reach a client joining on another node with history, and `history`
/// answers the same on both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_join_reads_the_cluster_history_on_any_node() {
    let redis = Redis::start();
    let configure = |c: &mut nimbus::Config| c.api_key = Some(KEY.into());
    let (a, _) = TestServer::start_clustered(&redis.url(), "hist-a", configure, |_| {});
    let (b, _) = TestServer::start_clustered(&redis.url(), "hist-b", configure, |_| {});
    let topic = "/room/cluster-history";
    for message in numbered(0, 12) {
        publish(&a, topic, &message).await;
    }
    for node in [&a, &b] {
        let (status, body) = api(node, "history", json!({"topic": topic, "limit": 4})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(data_of(&body), numbered(8, 12));
    }
    let url = b.ws_url(&format!(
        "{topic}?{}",
        atmosphere_query("websocket", Some(4))
    ));
    let (mut ws, _) = ws_open_url(&url).await;
    let _handshake = ws_text(&mut ws).await;
    assert_eq!(ws_messages(&mut ws, 4).await, numbered(8, 12));
    publish(&a, topic, "live").await;
    assert_eq!(unframe(&ws_text(&mut ws).await), ["live"]);
}
