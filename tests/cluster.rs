//! The cluster: Redis, three nodes and HAProxy balancing round-robin without session affinity
//! (`scripts/cluster.sh`, the topology of docker-compose.yml). Every client receives every
//! message of its topic once and in order, whichever node serves each of its requests.
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{atmo_query, frame, unframe, within, BodyReader};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The flags every node of these tests runs with.
const NODE_ARGS: &str = "--admin --heartbeat-secs 5";

/// A long-polling client that behaves like atmosphere.js: one poll at a time, echoing the
/// session token of the last answer.
struct Poller {
    id: String,
    token: String,
    received: Vec<String>,
    nodes: HashSet<String>,
}

impl Poller {
    async fn handshake(http: &reqwest::Client, url: &str) -> Poller {
        let response = http
            .get(format!("{url}?{}", atmo_query("long-polling", "0", true)))
            .send()
            .await
            .expect("handshake answered");
        assert_eq!(response.status(), 200);
        let token = header(&response, "x-atmosphere-session-token");
        let node = header(&response, "x-nimbus-node");
        let body = response.text().await.unwrap();
        let handshake = unframe(&body);
        let id = handshake[0].split('|').next().unwrap().to_string();
        Poller {
            id,
            token,
            received: Vec::new(),
            nodes: HashSet::from([node]),
        }
    }

    /// One poll; its messages (heartbeats left out) are added to `received`.
    async fn poll(&mut self, http: &reqwest::Client, url: &str) {
        let response = http
            .get(format!(
                "{url}?{}&X-Atmosphere-Session-Token={}",
                atmo_query("long-polling", &self.id, true),
                self.token
            ))
            .send()
            .await
            .expect("poll answered");
        assert_eq!(response.status(), 200, "poll of {}", self.id);
        self.token = header(&response, "x-atmosphere-session-token");
        self.nodes.insert(header(&response, "x-nimbus-node"));
        let body = response.text().await.unwrap();
        self.received
            .extend(unframe(&body).into_iter().filter(|m| m != "X"));
    }

    /// Poll until `count` messages arrived (or `secs` passed).
    async fn poll_until(&mut self, http: &reqwest::Client, url: &str, count: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.received.len() < count && Instant::now() < deadline {
            self.poll(http, url).await;
        }
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("response without {name}"))
        .to_str()
        .unwrap()
        .to_string()
}

async fn post(http: &reqwest::Client, url: &str, message: &str) -> reqwest::StatusCode {
    http.post(format!(
        "{url}?{}",
        atmo_query("long-polling", "publisher", true)
    ))
    .body(message.to_string())
    .send()
    .await
    .expect("POST answered")
    .status()
}

/// Long-polling clients whose every poll goes through the balancer (so lands on whichever
/// node is next) receive all 120 messages, once each, in publish order; their polls were
/// served by several nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_clients_behind_the_balancer_get_every_message_once_in_order() {
    let cluster = Cluster::up(NODE_ARGS);
    let http = reqwest::Client::new();
    let topic = cluster.lb("/cluster/long-polling");
    let mut pollers = Vec::new();
    for _ in 0..6 {
        pollers.push(Poller::handshake(&http, &topic).await);
    }
    let published: Vec<String> = (0..120).map(|i| format!("message {i} ü€😀 a|b")).collect();
    let tasks: Vec<_> = pollers
        .into_iter()
        .map(|mut poller| {
            let (http, topic) = (http.clone(), topic.clone());
            tokio::spawn(async move {
                poller.poll_until(&http, &topic, 120, 60).await;
                poller
            })
        })
        .collect();
    for message in &published {
        assert_eq!(post(&http, &topic, message).await, 200, "POST {message}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for task in tasks {
        let poller = task.await.unwrap();
        assert_eq!(
            poller.received, published,
            "client {} (served by {:?})",
            poller.id, poller.nodes
        );
        assert!(
            poller.nodes.len() >= 2,
            "polls served by {:?} only",
            poller.nodes
        );
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str) -> Ws {
    let url = url.replacen("http://", "ws://", 1);
    within(
        5.0,
        "WebSocket upgrade",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("upgrade accepted")
    .0
}

/// The next message on a WebSocket (heartbeats left out), unframed.
async fn ws_next(ws: &mut Ws) -> String {
    within(10.0, "a WebSocket message", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) if text.as_str() != frame("X") => {
                    return unframe(text.as_str()).remove(0)
                }
                Some(Ok(WsMessage::Text(_) | WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
}

/// WebSocket, SSE and streaming clients on three different nodes see each other's messages, and
/// a message sent to one tracking id through a third node reaches only that client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_transports_on_different_nodes_share_topics_and_targeted_sends() {
    let cluster = Cluster::up(NODE_ARGS);
    let http = reqwest::Client::new();
    let path = "/cluster/push";
    let q = |transport: &str, id: &str| format!("{path}?{}", atmo_query(transport, id, true));

    let mut ws = ws_connect(&cluster.node(1, &q("websocket", "ws-client"))).await;
    assert_eq!(ws_next(&mut ws).await, "ws-client|0|X|");
    let mut sse = BodyReader::open(&cluster.node(2, &q("sse", "sse-client"))).await;
    sse.expect(&format!("data:{}\r\n\r\n", frame("sse-client|0|X|")))
        .await;
    let mut stream = BodyReader::open(&cluster.node(3, &q("streaming", "stream-client"))).await;
    stream.expect(&frame("stream-client|0|X|")).await;

    // A frame sent over the WebSocket on node 1 reaches node 2 and node 3.
    ws.send(WsMessage::text("from the websocket"))
        .await
        .unwrap();
    assert_eq!(ws_next(&mut ws).await, "from the websocket");
    sse.expect(&format!("data:{}\r\n\r\n", frame("from the websocket")))
        .await;
    stream.expect(&frame("from the websocket")).await;

    // A POST to node 3 reaches node 1 and node 2.
    assert_eq!(
        post(&http, &cluster.node(3, path), "from a post").await,
        200
    );
    assert_eq!(ws_next(&mut ws).await, "from a post");
    sse.expect(&format!("data:{}\r\n\r\n", frame("from a post")))
        .await;
    stream.expect(&frame("from a post")).await;

    // Sent to the WebSocket client's tracking id through node 3: only it receives it.
    let status = http
        .post(cluster.node(
            3,
            &format!("/_nimbus/admin/publish?topic={path}&to=ws-client"),
        ))
        .body("only for the websocket")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert_eq!(ws_next(&mut ws).await, "only for the websocket");
    assert_eq!(
        post(&http, &cluster.node(2, path), "for everyone").await,
        200
    );
    assert_eq!(ws_next(&mut ws).await, "for everyone");
    sse.expect(&format!("data:{}\r\n\r\n", frame("for everyone")))
        .await;
    stream.expect(&frame("for everyone")).await;
}

/// A WebSocket client that reconnects with its tracking id on another node first receives
/// what was broadcast while it was away, then the rest; nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_resumes_on_another_node() {
    let cluster = Cluster::up(NODE_ARGS);
    let http = reqwest::Client::new();
    let path = "/cluster/resume";
    let url = |n: u16| {
        cluster.node(
            n,
            &format!("{path}?{}", atmo_query("websocket", "roamer", true)),
        )
    };
    let mut ws = ws_connect(&url(1)).await;
    assert_eq!(ws_next(&mut ws).await, "roamer|0|X|");
    assert_eq!(post(&http, &cluster.node(2, path), "before").await, 200);
    assert_eq!(ws_next(&mut ws).await, "before");
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let status = post(&http, &cluster.node(3, path), &format!("away {i}")).await;
        assert_eq!(status, 200);
    }
    let mut ws = ws_connect(&url(2)).await;
    assert_eq!(ws_next(&mut ws).await, "roamer|0|X|");
    for i in 0..3 {
        assert_eq!(ws_next(&mut ws).await, format!("away {i}"));
    }
    assert_eq!(post(&http, &cluster.node(1, path), "after").await, 200);
    assert_eq!(ws_next(&mut ws).await, "after");
}

/// `/readyz` turns 503 on every node while Redis is down and `/healthz` stays 200. A message
/// POSTed during the outage is accepted as queued (202) and delivered once Redis is back,
/// before the messages published after it; the nodes reconnect and resubscribe by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_reported_and_ridden_out() {
    let cluster = Cluster::up(NODE_ARGS);
    let http = reqwest::Client::new();
    let path = "/cluster/outage";
    let q = format!("{path}?{}", atmo_query("websocket", "steady", true));
    let mut ws = ws_connect(&cluster.node(1, &q)).await;
    assert_eq!(ws_next(&mut ws).await, "steady|0|X|");
    assert_eq!(post(&http, &cluster.node(2, path), "before").await, 200);
    assert_eq!(ws_next(&mut ws).await, "before");

    cluster.stop_redis();
    for n in 1..=3 {
        let ready = cluster.node(n, "/readyz");
        within(5.0, "readyz to report the outage", async {
            while http.get(&ready).send().await.unwrap().status() != 503 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let health = http.get(cluster.node(n, "/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "liveness does not depend on Redis");
    }
    assert_eq!(
        post(&http, &cluster.node(1, path), "during").await,
        202,
        "accepted as queued while Redis is down"
    );

    cluster.start_redis();
    for n in 1..=3 {
        let ready = cluster.node(n, "/readyz");
        within(10.0, "readyz to recover", async {
            while http.get(&ready).send().await.unwrap().status() != 200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
    assert_eq!(ws_next(&mut ws).await, "during");
    // Relays flow again between nodes (node 3 → node 1): the subscriptions came back.
    assert_eq!(post(&http, &cluster.node(3, path), "after").await, 200);
    assert_eq!(ws_next(&mut ws).await, "after");
}
