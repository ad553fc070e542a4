//! The backend API (`POST /api/<method>`, `Authorization: apikey <key>`): every call on one
//! node, and through the local cluster acting on clients of another node; plus session ids
//! bound to their user across nodes.
use crate::common;

use common::cluster::Cluster;
use common::{atmo_query, within, ws_until_close, BodyReader, TestServer};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const KEY: &str = "api-test-key";
const SECRET: &str = "api-test-secret";

fn token(sub: &str) -> String {
    let exp = nimbus::session::identity::unix_now() + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn api(base: &str, method: &str, key: &str, body: Value) -> (u16, Value) {
    common::api(base, key, method, body).await
}

fn with_api() -> TestServer {
    TestServer::start(|c| {
        c.api_key = Some(KEY.into());
        c.jwt_hmac_secret = Some(SECRET.into());
    })
}

fn stream_url(base: &str, topic: &str, user: &str) -> String {
    format!(
        "{base}{topic}?{}&X-Atmosphere-Auth={}",
        atmo_query("streaming", "0", true),
        token(user)
    )
}

/// A wrong key is 401, no key configured turns the API off (404), an unknown method is 404,
/// and bad bodies are 400, each with a JSON error naming the problem.
#[tokio::test]
async fn calls_need_the_key_and_a_well_formed_body() {
    let server = with_api();
    let base = server.url("");
    let (status, body) = api(&base, "info", "wrong", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], 401);
    let (status, body) = api(&base, "nope", KEY, json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api(
        &base,
        "publish",
        KEY,
        json!({"topic": "no-slash", "data": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = api(&base, "publish", KEY, json!({"topic": "/t", "data": 5})).await;
    assert_eq!(status, 400);
    let (status, _) = api(&base, "disconnect", KEY, json!({})).await;
    assert_eq!(status, 400);

    let off = TestServer::start(|_| {});
    let (status, body) = api(&off.url(""), "info", KEY, json!({})).await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--api-key"));
}

/// publish reaches every client of a topic; with `user`, only that user's clients; with
/// `sessions`, only those; broadcast reaches several topics; topics and info count them.
#[tokio::test]
async fn publish_broadcast_topics_and_info_on_one_node() {
    let server = with_api();
    let base = server.url("");
    let mut alice = BodyReader::open(&stream_url(&base, "/chat/room", "alice")).await;
    let mut bob = BodyReader::open(&stream_url(&base, "/chat/room", "bob")).await;
    let mut other = BodyReader::open(&stream_url(&base, "/chat/other", "bob")).await;
    common::wait_stat(&server, "connections", 5.0, |n| n >= 3).await;
    let bob_id = bob.response_headers["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();

    let (status, body) = api(
        &base,
        "publish",
        KEY,
        json!({"topic": "/chat/room", "data": "to-all"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"result": {}}));
    alice.read_until(5.0, |t| t.contains("to-all")).await;
    bob.read_until(5.0, |t| t.contains("to-all")).await;

    api(
        &base,
        "publish",
        KEY,
        json!({"topic": "/chat/room", "data": "for-alice", "user": "alice"}),
    )
    .await;
    api(
        &base,
        "publish",
        KEY,
        json!({"topic": "/chat/room", "data": "for-bob", "sessions": [bob_id]}),
    )
    .await;
    let (status, body) = api(
        &base,
        "broadcast",
        KEY,
        json!({"topics": ["/chat/room", "/chat/other"], "data": "everywhere"}),
    )
    .await;
    assert_eq!((status, &body["result"]["topics"]), (200, &json!(2)));

    let seen_by_alice = alice.read_until(5.0, |t| t.contains("everywhere")).await;
    assert!(
        seen_by_alice.contains("for-alice") && !seen_by_alice.contains("for-bob"),
        "{seen_by_alice}"
    );
    let seen_by_bob = bob.read_until(5.0, |t| t.contains("everywhere")).await;
    assert!(
        seen_by_bob.contains("for-bob") && !seen_by_bob.contains("for-alice"),
        "{seen_by_bob}"
    );
    other.read_until(5.0, |t| t.contains("everywhere")).await;

    let (_, topics) = api(&base, "topics", KEY, json!({})).await;
    let list = topics["result"]["topics"].as_array().unwrap();
    assert!(
        list.contains(&json!({"topic": "/chat/room", "subscribers": 2})),
        "{topics}"
    );
    assert!(
        list.contains(&json!({"topic": "/chat/other", "subscribers": 1})),
        "{topics}"
    );
    let (_, info) = api(&base, "info", KEY, json!({})).await;
    assert_eq!(info["result"]["node"], "test-node");
    assert_eq!(info["result"]["sessions"]["atmosphere"], 3);
}

/// disconnect ends every connection of a user (and only theirs); unsubscribe takes a Cettia
/// socket out of a topic while it stays open.
#[tokio::test]
async fn disconnect_and_unsubscribe_act_on_a_users_sessions() {
    let server = with_api();
    let base = server.url("");
    let mut carol = BodyReader::open(&stream_url(&base, "/chat/d", "carol")).await;
    let mut dave = BodyReader::open(&stream_url(&base, "/chat/d", "dave")).await;
    common::wait_stat(&server, "connections", 5.0, |n| n >= 2).await;
    let (status, body) = api(&base, "disconnect", KEY, json!({"user": "carol"})).await;
    assert_eq!(
        (status, &body["result"]["sessions"]),
        (200, &json!(1)),
        "{body}"
    );
    carol.read_to_end(5.0).await;
    api(
        &base,
        "publish",
        KEY,
        json!({"topic": "/chat/d", "data": "still-here"}),
    )
    .await;
    dave.read_until(5.0, |t| t.contains("still-here")).await;

    // A Cettia socket of erin in /api/u, over a WebSocket.
    let url = server.ws_url(&format!(
        "/cettia?cettia-version=1.0&cettia-transport-name=websocket&topic=/chat/u&token={}",
        token("erin")
    ));
    let (mut ws, _) = common::ws_open_url(&url).await;
    let _handshake = common::ws_text(&mut ws).await;
    within(5.0, "the socket to join its topic", async {
        loop {
            let (_, topics) = api(&base, "topics", KEY, json!({})).await;
            if topics["result"]["topics"]
                .as_array()
                .unwrap()
                .contains(&json!({"topic": "/chat/u", "subscribers": 1}))
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let (status, body) = api(
        &base,
        "unsubscribe",
        KEY,
        json!({"user": "erin", "topic": "/chat/u"}),
    )
    .await;
    assert_eq!(
        (status, &body["result"]["sessions"]),
        (200, &json!(1)),
        "{body}"
    );
    within(5.0, "the socket to leave its topic", async {
        loop {
            let (_, topics) = api(&base, "topics", KEY, json!({})).await;
            if !topics["result"]["topics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["topic"] == "/chat/u" && t["subscribers"] == 1)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    api(&base, "disconnect", KEY, json!({"user": "erin"})).await;
    let (close, _) = ws_until_close(&mut ws, 5.0).await;
    let close = close.expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1000);
    assert_eq!(close.reason.as_str(), "disconnected by the server");
}

/// Through the local cluster (three nodes, Redis, HAProxy): the API of node 1 publishes to a
/// user whose clients are on nodes 2 and 3, and disconnects them; a tracking id issued on node
/// 2 is recognised on node 3 for its user and refused (403) for another.
#[tokio::test]
async fn the_api_of_one_node_acts_on_clients_of_the_others() {
    let cluster = Cluster::up(&format!("--api-key {KEY} --jwt-hmac-secret {SECRET}"));
    let node = |n: u16| cluster.node(n, "").trim_end_matches('/').to_string();
    let mut on_2 = BodyReader::open(&stream_url(&node(2), "/chat/c", "gina")).await;
    let mut on_3 = BodyReader::open(&stream_url(&node(3), "/chat/c", "gina")).await;
    let mut hank = BodyReader::open(&stream_url(&node(3), "/chat/c", "hank")).await;
    // Everyone is subscribed once a broadcast reaches them.
    within(10.0, "the clients to be subscribed", async {
        loop {
            api(
                &node(1),
                "publish",
                KEY,
                json!({"topic": "/chat/c", "data": "ping"}),
            )
            .await;
            let reached = tokio::time::timeout(std::time::Duration::from_millis(300), async {
                on_2.read_until(5.0, |t| t.contains("ping")).await;
                on_3.read_until(5.0, |t| t.contains("ping")).await;
                hank.read_until(5.0, |t| t.contains("ping")).await;
            })
            .await;
            if reached.is_ok() {
                break;
            }
        }
    })
    .await;
    let (status, body) = api(
        &node(1),
        "publish",
        KEY,
        json!({"topic": "/chat/c", "data": "for-gina", "user": "gina"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    on_2.read_until(5.0, |t| t.contains("for-gina")).await;
    on_3.read_until(5.0, |t| t.contains("for-gina")).await;
    api(
        &node(1),
        "publish",
        KEY,
        json!({"topic": "/chat/c", "data": "after"}),
    )
    .await;
    let seen = hank.read_until(5.0, |t| t.contains("after")).await;
    assert!(!seen.contains("for-gina"), "{seen}");

    // topics and info answer for the cluster: node 1 holds none of these clients.
    let (status, topics) = api(&node(1), "topics", KEY, json!({})).await;
    assert_eq!(status, 200, "{topics}");
    let topics = &topics["result"];
    assert_eq!(
        topics["topics"],
        json!([{"topic": "/chat/c", "subscribers": 3}]),
        "{topics}"
    );
    assert_eq!(
        (&topics["nodes"], &topics["nodes_missing"]),
        (&json!(["nimbus1", "nimbus2", "nimbus3"]), &json!(0)),
        "{topics}"
    );
    let (status, info) = api(&node(2), "info", KEY, json!({})).await;
    assert_eq!(status, 200, "{info}");
    let info = &info["result"];
    assert_eq!(
        (&info["node"], &info["sessions"]["atmosphere"]),
        (&json!("nimbus2"), &json!(1)),
        "{info}"
    );
    let cluster_info = &info["cluster"];
    assert_eq!(
        (
            &cluster_info["sessions"]["atmosphere"],
            &cluster_info["topics"],
            &cluster_info["nodes_missing"]
        ),
        (&json!(3), &json!(1), &json!(0)),
        "{info}"
    );
    let nodes: Vec<&str> = cluster_info["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["nimbus1", "nimbus2", "nimbus3"], "{info}");

    let gina_id = on_2.response_headers["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    // An SSE reconnect with the id: its status comes at once (the stream then stays open).
    let poll = |base: String, user: &str| {
        let url = format!(
            "{base}/chat/c?{}&X-Atmosphere-Auth={}",
            atmo_query("sse", &gina_id, true),
            token(user)
        );
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(poll(node(3), "hank").await, 403);

    let (status, _) = api(&node(1), "disconnect", KEY, json!({"user": "gina"})).await;
    assert_eq!(status, 200);
    on_2.read_to_end(5.0).await;
    on_3.read_to_end(5.0).await;
    assert_eq!(poll(node(3), "gina").await, 200);
}

/// `docs/openapi.json` describes the server: every documented method answers its example with a
/// `result` holding the documented required fields, refuses a body missing a required field or
/// carrying an unknown one (400), and an undocumented method is 404.
#[tokio::test]
async fn the_openapi_description_matches_the_server() {
    let doc: Value = serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    let server = with_api();
    let base = server.url("");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths.len(),
        9,
        "publish, broadcast, disconnect, unsubscribe, history, presence, presence_stats, topics, info"
    );
    for (path, item) in paths {
        let method = path.strip_prefix("/api/").expect("API paths");
        let body = &item["post"]["requestBody"]["content"]["application/json"];
        let (status, answer) = api(&base, method, KEY, body["example"].clone()).await;
        assert_eq!(status, 200, "{method}: {answer}");
        let result = &item["post"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["properties"]["result"];
        for field in result["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            assert!(
                answer["result"].get(field).is_some(),
                "{method} lacks {field}: {answer}"
            );
        }
        for required in body["schema"]["required"].as_array().unwrap() {
            let mut partial = body["example"].clone();
            partial
                .as_object_mut()
                .unwrap()
                .remove(required.as_str().unwrap());
            let (status, _) = api(&base, method, KEY, partial).await;
            assert_eq!(status, 400, "{method} without {required}");
        }
        let mut extra = body["example"].clone();
        extra
            .as_object_mut()
            .unwrap()
            .insert("undocumented".into(), json!(1));
        let (status, _) = api(&base, method, KEY, extra).await;
        assert_eq!(status, 400, "{method} with an unknown field");
    }
    let (status, _) = api(&base, "channels", KEY, json!({})).await;
    assert_eq!(status, 404);
}
