//! Backend webhooks: a backend that is down for 10 s and then back gets every event (users
//! online and offline, joining and leaving topics), each once by id, every POST signed; in the
//! local cluster also the leaves of a node killed with `kill -9`, spoken for by another node.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common;
use common::cluster::Cluster;
use common::{atmo_query, within, ws_open_url, ws_text, BodyReader, TestServer};

const KEY: &str = "webhook-api-key";
const JWT: &str = "webhook-jwt-secret";
const SIGNING: &str = "webhook-signing-secret";
/// How long the backend stays away before it comes up.
const DOWN_FOR: Duration = Duration::from_secs(10);

fn token(user: &str) -> String {
    let exp = nimbus::session::identity::unix_now() + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp, "info": {"name": user.to_uppercase()}}),
        &jsonwebtoken::EncodingKey::from_secret(JWT.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// What the test backend received: every event of every POST, in arrival order.
#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<Value>>>);

impl Received {
    /// Each distinct event id once, with the event.
    fn by_id(&self) -> BTreeMap<String, Value> {
        self.0
            .lock()
            .iter()
            .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
            .collect()
    }

    /// `(type, user, topic)` of each distinct event, sorted.
    fn facts(&self) -> Vec<(String, String, String)> {
        let mut facts: Vec<_> = self.by_id().values().map(fact).collect();
        facts.sort();
        facts
    }

    /// Wait until `want` distinct events arrived.
    async fn await_count(&self, want: usize, secs: f64) {
        let arrived = tokio::time::timeout(Duration::from_secs_f64(secs), async {
            while self.by_id().len() < want {
                // A backoff inside a deadline loop, not an ordering wait.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            arrived.is_ok(),
            "waited {secs} s for {want} webhook events; got {:?}",
            self.facts()
        );
    }
}

fn fact(event: &Value) -> (String, String, String) {
    let text = |k: &str| event[k].as_str().unwrap_or_default().to_string();
    (text("type"), text("user"), text("topic"))
}

fn facts(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut facts: Vec<_> = list
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    facts.sort();
    facts
}

/// A port nothing listens on yet (the backend comes up there later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test backend on `port`: checks each POST's signature (a bad one gets 401 and is not
/// recorded) and records its events.
async fn backend(port: u16, received: Received) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let (mut stream, _) = listener.accept().await.unwrap();
        let received = received.clone();
        tokio::spawn(async move {
            let mut data = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head, body) = loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                data.extend_from_slice(&chunk[..n]);
                let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if data.len() >= end + 4 + length {
                    break (head, data[end + 4..end + 4 + length].to_vec());
                }
            };
            let signature = head
                .lines()
                .find_map(|l| l.strip_prefix("x-nimbus-signature:"))
                .map(str::trim)
                .unwrap_or_default()
                .to_string();
            let status = if signed(&signature, &body) {
                let batch: Value = serde_json::from_slice(&body).unwrap();
                let events = batch["events"].as_array().unwrap().clone();
                received.0.lock().extend(events);
                "200 OK"
            } else {
                "401 Unauthorized"
            };
            let answer =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        });
    }
}

/// Whether `header` (`t=<secs>,v1=<hex>`) is the HMAC-SHA256 of `<secs>.<body>` under the
/// signing secret, computed here independently of the node's code.
fn signed(header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex == v1
}

/// Start the backend after [`DOWN_FOR`]: the sleep is the outage under test.
fn backend_after_outage(port: u16, received: Received) {
    tokio::spawn(async move {
        tokio::time::sleep(DOWN_FOR).await;
        backend(port, received).await;
    });
}

fn sse_url(base: &str, topic: &str, user: &str) -> String {
    format!(
        "{base}{topic}?{}&X-Atmosphere-Auth={}",
        atmo_query("sse", "0", true),
        token(user)
    )
}

/// Open an Atmosphere SSE stream of `user` and wait for its handshake.
async fn sse(base: &str, topic: &str, user: &str) -> BodyReader {
    let mut reader = BodyReader::open(&sse_url(base, topic, user)).await;
    reader
        .read_until(5.0, |t| t.matches('|').count() >= 3)
        .await;
    reader
}

/// One node: alice (WebSocket), bob (one Cettia socket in two rooms) and an anonymous client
/// come; the backend disconnects bob. The backend is down for the first 10 s, then gets all
/// eight events, each once by id, in order per user, with the members' info; anonymous makes
/// none. A later join arrives after them, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_for_ten_seconds_then_back_gets_every_event_once_by_id() {
    let port = free_port();
    let server = TestServer::start(|c| {
        c.api_key = Some(KEY.into());
        c.jwt_hmac_secret = Some(JWT.into());
        c.allow_anonymous = true;
        c.webhook_url = Some(format!("http://127.0.0.1:{port}/hooks"));
        c.webhook_secret = Some(SIGNING.into());
        // A disconnected Cettia socket ends (and leaves) 1 s after its transport closes.
        c.cettia_resume_window_secs = 1;
    });
    let received = Received::default();
    backend_after_outage(port, received.clone());
    let base = server.url("");

    let (mut alice, _) = ws_open_url(&server.ws_url(&format!(
        "/room/w1?{}&X-Atmosphere-Auth={}",
        atmo_query("websocket", "0", true),
        token("alice")
    )))
    .await;
    let _ = ws_text(&mut alice).await;
    let (mut bob, _) = ws_open_url(&server.ws_url(&format!(
        "/cettia?cettia-version=1.0&topic=/room/w1&topic=/room/w2&token={}",
        token("bob")
    )))
    .await;
    let _ = ws_text(&mut bob).await;
    let _anonymous =
        BodyReader::open(&format!("{base}/room/w1?{}", atmo_query("sse", "0", true))).await;
    let (status, body) = common::api(&base, KEY, "disconnect", json!({"user": "bob"})).await;
    assert_eq!(status, 200, "{body}");
    drop(bob);

    received.await_count(8, 40.0).await;
    let _carol = sse(&base, "/room/w2", "carol").await;
    received.await_count(10, 20.0).await;
    assert_eq!(
        received.facts(),
        facts(&[
            ("joined", "alice", "/room/w1"),
            ("joined", "bob", "/room/w1"),
            ("joined", "bob", "/room/w2"),
            ("joined", "carol", "/room/w2"),
            ("left", "bob", "/room/w1"),
            ("left", "bob", "/room/w2"),
            ("offline", "bob", ""),
            ("online", "alice", ""),
            ("online", "bob", ""),
            ("online", "carol", ""),
        ]),
        "each event once by id, nothing else"
    );
    let events = received.by_id();
    let order: Vec<(String, String, String)> = {
        let all = received.0.lock();
        let mut seen = std::collections::HashSet::new();
        all.iter()
            .filter(|e| seen.insert(e["id"].as_str().unwrap().to_string()))
            .map(fact)
            .filter(|f| f.1 == "bob")
            .collect()
    };
    assert_eq!(order.first().unwrap().0, "online", "bob: {order:?}");
    assert_eq!(order.last().unwrap().0, "offline", "bob: {order:?}");
    let alice_joined = events
        .values()
        .find(|e| fact(e) == ("joined".into(), "alice".into(), "/room/w1".into()))
        .unwrap();
    assert_eq!(alice_joined["info"], json!({"name": "ALICE"}));
    assert_eq!(alice_joined["node"], server.node.id.as_str());
    let redeliveries = received.0.lock().len() - events.len();
    eprintln!("events: {}, delivered again: {redeliveries}", events.len());
}

/// The local cluster: alice on node 1, bob on node 2; node 2 is killed with `kill -9` while the
/// backend is still down. When it is back the backend has every event once by id: bob's
/// `left` and `offline` spoken for by a surviving node (and any event node 2 had taken but not
/// delivered, claimed by another), then carol's arrival on node 3 and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_killed_nodes_users_leave_through_another_node_each_once() {
    let port = free_port();
    let cluster = Cluster::up(&format!(
        "--api-key {KEY} --jwt-hmac-secret {JWT} --webhook-url http://127.0.0.1:{port}/hooks \
         --webhook-secret {SIGNING}"
    ));
    let received = Received::default();
    backend_after_outage(port, received.clone());
    let node = |n: u16| cluster.node(n, "").trim_end_matches('/').to_string();

    let _alice = sse(&node(1), "/room/c1", "alice").await;
    let bob = sse(&node(2), "/room/c1", "bob").await;
    // Bob counted cluster-wide before his node dies.
    within(10.0, "bob in the cluster's presence", async {
        loop {
            let (_, body) = common::api(
                &node(3),
                KEY,
                "presence_stats",
                json!({"topic": "/room/c1"}),
            )
            .await;
            if body["result"]["users"] == 2 {
                return;
            }
            // A backoff inside a deadline loop, not an ordering wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    cluster.kill_node(2);
    drop(bob);

    // Reaped within 15 s of the kill, delivered when the backend is back (claiming what node 2
    // held takes 30 s more).
    received.await_count(6, 75.0).await;
    let _carol = sse(&node(3), "/room/c1", "carol").await;
    received.await_count(8, 20.0).await;
    assert_eq!(
        received.facts(),
        facts(&[
            ("joined", "alice", "/room/c1"),
            ("joined", "bob", "/room/c1"),
            ("joined", "carol", "/room/c1"),
            ("left", "bob", "/room/c1"),
            ("offline", "bob", ""),
            ("online", "alice", ""),
            ("online", "bob", ""),
            ("online", "carol", ""),
        ]),
        "each event once by id, nothing else"
    );
    let events = received.by_id();
    let by_fact: HashMap<_, _> = events.values().map(|e| (fact(e), e.clone())).collect();
    let left = &by_fact[&("left".into(), "bob".into(), "/room/c1".into())];
    assert_eq!(
        left["node"], "nimbus2",
        "the event names the node that held bob"
    );
    let joined = &by_fact[&("joined".into(), "carol".into(), "/room/c1".into())];
    assert_eq!(joined["node"], "nimbus3");
    let redeliveries = received.0.lock().len() - events.len();
    eprintln!("events: {}, delivered again: {redeliveries}", events.len());
}
