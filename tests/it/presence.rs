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
    common::api(base, KEY, method, body).await
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

/// The join and leave events among `messages` of users other than `me` (in a cluster a client
/// may be told of its own join: the notice goes out when its node writes its counts).
fn others(messages: &[String], me: &str) -> Vec<(String, String)> {
    let parsed: Vec<Value> = messages
        .iter()
        .filter_map(|m| serde_json::from_str(m).ok())
        .collect();
    events(&parsed)
        .into_iter()
        .filter(|(_, user)| user != me)
        .collect()
}

/// The messages of an Atmosphere SSE stream up to and including `last`.
async fn sse_messages(reader: &mut BodyReader, last: &str) -> Vec<String> {
    let text = reader.read_until(35.0, |t| t.contains(last)).await;
    let payload: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    common::unframe(payload.trim_start())
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
    let mut bob = BodyReader::open(&format!(
        "{}&X-Nimbus-Presence=true",
        sse_url(&node(2), topic, Some(&token("bob", "B")))
    ))
    .await;
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

    // Bob (who came after alice) was told of carol, and once that alice left: his stream up
    // to a marker published now holds nothing else.
    let (status, _) = api(
        &node(3),
        "publish",
        json!({"topic": topic, "data": "marker"}),
    )
    .await;
    assert_eq!(status, 200);
    let seen = sse_messages(&mut bob, "marker").await;
    let told = others(&seen, "bob");
    assert_eq!(
        told,
        [event("join", "carol"), event("leave", "alice")],
        "{seen:?}"
    );

    let mut back = BodyReader::open(&sse_url(&node(3), topic, Some(&token("alice", "A")))).await;
    let _ = tracking_id(&mut back).await;
    await_stats(&node(2), topic, (3, 3), 10.0).await;
    let (status, _) = api(
        &node(3),
        "publish",
        json!({"topic": topic, "data": "marker 2"}),
    )
    .await;
    assert_eq!(status, 200);
    let seen = sse_messages(&mut bob, "marker 2").await;
    let told = others(&seen, "bob");
    assert_eq!(told, [event("join", "alice")], "{seen:?}");
    assert_eq!(
        users(&members(&cluster.lb(""), topic, 10).await),
        ["alice", "bob", "carol"]
    );
}

/// The presence notices of a frame, or of a stream's text (TrackMessageSize framing).
fn notices(text: &str) -> Vec<Value> {
    common::unframe(text)
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(m).ok())
        .filter(|v| v["nimbus"] == "presence")
        .collect()
}

fn event(kind: &str, user: &str) -> (String, String) {
    (kind.to_string(), user.to_string())
}

fn events(notices: &[Value]) -> Vec<(String, String)> {
    notices
        .iter()
        .map(|n| event(n["event"].as_str().unwrap(), n["user"].as_str().unwrap()))
        .collect()
}

/// Clients that ask for presence get who joins and leaves (with the member's `info`), on an
/// Atmosphere WebSocket (`X-Nimbus-Presence=true`), over long-polling between polls, and on a
/// Cettia socket (`presence=true`, as `presence` events); a second connection of a member is no
/// join; a client that does not ask gets none.
#[tokio::test]
async fn who_asks_is_told_who_joins_and_leaves() {
    let server = TestServer::start(|c| {
        c.api_key = Some(KEY.into());
        c.jwt_hmac_secret = Some(SECRET.into());
    });
    let base = server.url("");
    let topic = "/room/notices";
    let ws_url = |user: &str, presence: bool| {
        let mut query = format!(
            "{topic}?{}&X-Atmosphere-Auth={}",
            atmo_query("websocket", "0", true),
            token(user, &user.to_uppercase())
        );
        if presence {
            query.push_str("&X-Nimbus-Presence=true");
        }
        server.ws_url(&query)
    };
    let (mut alice, _) = ws_open_url(&ws_url("alice", true)).await;
    let _ = ws_text(&mut alice).await;
    let (mut quiet, _) = ws_open_url(&ws_url("quiet", false)).await;
    let _ = ws_text(&mut quiet).await;
    assert_eq!(
        notices(&ws_text(&mut alice).await),
        [
            json!({"nimbus": "presence", "event": "join", "user": "quiet", "info": {"name": "QUIET"}})
        ]
    );

    // Carol long-polls with presence: what happens between her polls waits for her next one.
    let carol = token("carol", "CAROL");
    let lp = |id: &str| {
        format!(
            "{base}{topic}?{}&X-Atmosphere-Auth={carol}&X-Nimbus-Presence=true",
            atmo_query("long-polling", id, true)
        )
    };
    let handshake = reqwest::get(lp("0")).await.unwrap().text().await.unwrap();
    let carol_id = handshake.split('|').nth(1).unwrap().to_string();
    assert_eq!(
        events(&notices(&ws_text(&mut alice).await)),
        [event("join", "carol")]
    );

    let (mut bob, _) = ws_open_url(&server.ws_url(&format!(
        "/cettia?cettia-version=1.0&topic={topic}&presence=true&token={}",
        token("bob", "BOB")
    )))
    .await;
    let _ = ws_text(&mut bob).await;
    assert_eq!(
        events(&notices(&ws_text(&mut alice).await)),
        [event("join", "bob")]
    );
    let polled = reqwest::get(lp(&carol_id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        events(&notices(&polled)),
        [event("join", "bob")],
        "kept for her next poll"
    );

    // A second connection of alice is no join; her leaving with both is one leave.
    let (mut alice_too, _) = ws_open_url(&ws_url("alice", false)).await;
    let _ = ws_text(&mut alice_too).await;
    let (status, body) = api(&base, "disconnect", json!({"user": "alice"})).await;
    assert_eq!(status, 200, "{body}");
    let cettia_event: Value = serde_json::from_str(&ws_text(&mut bob).await).unwrap();
    assert_eq!(cettia_event["type"], "presence");
    assert_eq!(
        cettia_event["data"],
        json!({"nimbus": "presence", "event": "leave", "user": "alice"})
    );
    let polled = reqwest::get(lp(&carol_id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(events(&notices(&polled)), [event("leave", "alice")]);

    // The one that did not ask got none: the next thing it reads is a message published now.
    let (status, _) = api(&base, "publish", json!({"topic": topic, "data": "marker"})).await;
    assert_eq!(status, 200);
    assert_eq!(common::unframe(&ws_text(&mut quiet).await), ["marker"]);
}

/// The stock node (no token keys) signs guests in by name, and any client reads a room's
/// members with `GET /_nimbus/presence` as the gate lets it subscribe; a node that checks
/// tokens offers no guests, and refuses the members of a room its client may not read.
#[tokio::test]
async fn guests_sign_in_by_name_and_clients_read_who_is_in_a_room() {
    let server = TestServer::start(|_| {});
    let base = server.url("");
    let client = reqwest::Client::new();
    let sign_in = |name: &str| {
        client
            .post(format!("{base}/_nimbus/sign-in"))
            .body(json!({ "name": name }).to_string())
            .send()
    };
    let answer: Value = sign_in(" Ada ").await.unwrap().json_text().await;
    assert_eq!(answer["user"], "Ada");
    let guest = answer["token"].as_str().unwrap().to_string();
    assert_eq!(sign_in("   ").await.unwrap().status(), 400);
    assert_eq!(sign_in(&"x".repeat(40)).await.unwrap().status(), 400);

    let topic = "/chat/guests";
    let (mut ws, _) = ws_open_url(&server.ws_url(&format!(
        "{topic}?{}&X-Atmosphere-Auth={guest}",
        atmo_query("websocket", "0", true)
    )))
    .await;
    let _ = ws_text(&mut ws).await;
    let read = |token: Option<&str>| {
        let mut request = client.get(format!("{base}/_nimbus/presence?topic={topic}"));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request.send()
    };
    let members: Value = read(None).await.unwrap().json_text().await;
    assert_eq!(members["users"], 1, "{members}");
    assert_eq!(members["members"][0]["user"], "Ada");
    assert_eq!(members["members"][0]["info"]["name"], "Ada");
    let forged = format!("{guest}x");
    assert_eq!(read(Some(&forged)).await.unwrap().status(), 401);

    let checked = TestServer::start(|c| {
        c.jwt_hmac_secret = Some(SECRET.into());
        c.config = Some(private_rooms());
    });
    let checked_base = checked.url("");
    let response = client
        .post(format!("{checked_base}/_nimbus/sign-in"))
        .body(r#"{"name": "Ada"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "tokens come from the application there"
    );
    let read = |topic: &str, token: String| {
        client
            .get(format!("{checked_base}/_nimbus/presence?topic={topic}"))
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    assert_eq!(
        read("/private/x", token("eve", "Eve"))
            .await
            .unwrap()
            .status(),
        403
    );
    let open: Value = read("/chat/x", token("eve", "Eve"))
        .await
        .unwrap()
        .json_text()
        .await;
    assert_eq!(open["users"], 0);
}

/// A configuration file whose `/private/` rooms need a grant.
fn private_rooms() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("nimbus-presence-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[namespace]]\nprefix = \"/private/\"\nsubscribe = \"grant\"\n",
    )
    .unwrap();
    path
}

/// A response body as JSON.
trait JsonText {
    async fn json_text(self) -> Value;
}

impl JsonText for reqwest::Response {
    async fn json_text(self) -> Value {
        let text = self.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }
}
