//! Presence: who is in a topic, for the backend (`presence_stats`, `presence` in pages), on one
//! node and across the cluster; several connections of a user are one member, anonymous ones
//! count as clients only, members leave when their session ends, and the members of a node
//! killed with `kill -9` leave within the bound, once, then come back when their clients
//! reconnect elsewhere.
use std::time::{Duration, Instant};

use crate::common;

use common::cluster::Cluster;
use common::{atmo_query, within, ws_open_url, ws_text, BodyReader, TestServer};
use serde_json::{json, Value};

const KEY: &str = "presence-key";
const SECRET: &str = "presence-secret";

fn token(user: &str, name: &str) -> String {
    let exp = nimbus::session::identity::unix_now() + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp, "info": {"name": name}}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn api(base: &str, method: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/{method}"))
        .header("Authorization", format!("apikey {KEY}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

async fn stats(base: &str, topic: &str) -> (u64, u64) {
    let (status, body) = api(base, "presence_stats", json!({ "topic": topic })).await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    (
        result["users"].as_u64().unwrap(),
        result["clients"].as_u64().unwrap(),
    )
}

/// Every member of the topic, page by page of `limit`.
async fn members(base: &str, topic: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut call = json!({ "topic": topic, "limit": limit });
        if !cursor.is_null() {
            call["cursor"] = cursor.clone();
        }
        let (status, body) = api(base, "presence", call).await;
        assert_eq!(status, 200, "{body}");
        let page = body["result"]["members"].as_array().unwrap().clone();
        assert!(page.len() <= limit, "a page holds at most its limit");
        all.extend(page);
        cursor = body["result"]["cursor"].clone();
        if cursor.is_null() {
            return all;
        }
    }
}

fn users(members: &[Value]) -> Vec<&str> {
    members
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect()
}

/// Wait (up to `secs`) until the topic's counts are `want`; returns how long it took.
async fn await_stats(base: &str, topic: &str, want: (u64, u64), secs: f64) -> Duration {
    let started = Instant::now();
    let what = format!("presence of {topic} to be {want:?}");
    within(secs, &what, async {
        while stats(base, topic).await != want {
            // A backoff inside a deadline loop, not an ordering wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    started.elapsed()
}

fn sse_url(base: &str, topic: &str, auth: Option<&str>) -> String {
    let mut query = atmo_query("sse", "0", true);
    if let Some(auth) = auth {
        query.push_str(&format!("&X-Atmosphere-Auth={auth}"));
    }
    format!("{base}{topic}?{query}")
}

/// The tracking id an Atmosphere stream was given (its handshake).
async fn tracking_id(reader: &mut BodyReader) -> String {
    let text = reader
        .read_until(5.0, |t| t.matches('|').count() >= 3)
        .await;
    let payload: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    payload.split('|').nth(1).unwrap().to_string()
}

/// One node: alice on two connections (WebSocket and SSE), bob on a Cettia socket and an
/// anonymous client are two users and four clients; pages walk the members in order with
/// their token's `info`; alice stays a member until her last connection ends.
#[tokio::test]
async fn members_are_users_counted_once_and_leave_with_their_last_connection() {
    let server = TestServer::start(|c| {
        c.api_key = Some(KEY.into());
        c.jwt_hmac_secret = Some(SECRET.into());
        c.allow_anonymous = true;
    });
    let base = server.url("");
    let topic = "/room/presence";
    let alice = token("alice", "Alice");
    let (mut ws, _) = ws_open_url(&server.ws_url(&format!(
        "{topic}?{}&X-Atmosphere-Auth={alice}",
        atmo_query("websocket", "0", true)
    )))
    .await;
    let _ = ws_text(&mut ws).await;
    let mut sse = BodyReader::open(&sse_url(&base, topic, Some(&alice))).await;
    let alice_sse = tracking_id(&mut sse).await;
    let (mut bob, _) = ws_open_url(&server.ws_url(&format!(
        "/cettia?cettia-version=1.0&topic={topic}&token={}",
        token("bob", "Bob")
    )))
    .await;
    let _ = ws_text(&mut bob).await;
    let mut anonymous = BodyReader::open(&sse_url(&base, topic, None)).await;
    let _ = tracking_id(&mut anonymous).await;

    await_stats(&base, topic, (2, 4), 5.0).await;
    let all = members(&base, topic, 1).await;
    assert_eq!(users(&all), ["alice", "bob"]);
    assert_eq!(all[0]["info"], json!({"name": "Alice"}));
    assert_eq!(all[1]["info"], json!({"name": "Bob"}));

    // Her SSE session ends (atmosphere.js' close): she is still in, on her WebSocket.
    let close = format!(
        "{base}{topic}?{}&X-Atmosphere-Auth={alice}",
        atmo_query("close", &alice_sse, true)
    );
    reqwest::get(&close).await.unwrap();
    await_stats(&base, topic, (2, 3), 5.0).await;
    assert_eq!(users(&members(&base, topic, 10).await), ["alice", "bob"]);

    // The backend disconnects her last one: she leaves.
    let (status, body) = api(&base, "disconnect", json!({"user": "alice"})).await;
    assert_eq!(status, 200, "{body}");
    drop(ws);
    let _ = sse.read_to_end(5.0).await;
    await_stats(&base, topic, (1, 2), 10.0).await;
    assert_eq!(users(&members(&base, topic, 10).await), ["bob"]);

    // Refusals: a bad topic, a bad limit, a namespace without presence is shown elsewhere.
    let (status, _) = api(&base, "presence", json!({"topic": topic, "limit": 0})).await;
    assert_eq!(status, 400);
    let (status, _) = api(&base, "presence_stats", json!({"topic": "nope"})).await;
    assert_eq!(status, 400);
}

/// The local cluster (three nodes, HAProxy, Redis): users on different nodes are one
/// presence, read on any node; a node killed with `kill -9` has its members leave within 30 s
/// (the bound), each once, and a client that reconnects through the balancer is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_of_a_killed_node_leave_within_the_bound_and_come_back() {
    let cluster = Cluster::up(&format!(
        "--api-key {KEY} --jwt-hmac-secret {SECRET} --reconnect-window-secs 60"
    ));
    let node = |n: u16| cluster.node(n, "").trim_end_matches('/').to_string();
    let topic = "/room/cluster-presence";
    let mut alice = BodyReader::open(&sse_url(&node(1), topic, Some(&token("alice", "A")))).await;
    let _ = tracking_id(&mut alice).await;
    let mut bob = BodyReader::open(&sse_url(&node(2), topic, Some(&token("bob", "B")))).await;
    let _ = tracking_id(&mut bob).await;
    let mut carol = BodyReader::open(&sse_url(&node(3), topic, Some(&token("carol", "C")))).await;
    let _ = tracking_id(&mut carol).await;
    let mut alice_too =
        BodyReader::open(&sse_url(&node(1), topic, Some(&token("alice", "A")))).await;
    let _ = tracking_id(&mut alice_too).await;

    for n in 1..=3 {
        await_stats(&node(n), topic, (3, 4), 10.0).await;
    }
    assert_eq!(
        users(&members(&node(2), topic, 2).await),
        ["alice", "bob", "carol"]
    );

    cluster.kill_node(1);
    drop((alice, alice_too));
    let took = await_stats(&node(2), topic, (2, 2), 30.0).await;
    eprintln!("the killed node's member left after {took:?}");
    assert_eq!(
        stats(&node(3), topic).await,
        (2, 2),
        "the same on every node"
    );
    assert_eq!(users(&members(&node(3), topic, 10).await), ["bob", "carol"]);

    let mut back = BodyReader::open(&sse_url(&node(3), topic, Some(&token("alice", "A")))).await;
    let _ = tracking_id(&mut back).await;
    await_stats(&node(2), topic, (3, 3), 10.0).await;
    assert_eq!(
        users(&members(&cluster.lb(""), topic, 10).await),
        ["alice", "bob", "carol"]
    );
}
