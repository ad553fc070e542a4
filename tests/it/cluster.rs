//! The cluster: Redis, three nodes and HAProxy balancing round-robin without session affinity
//! (`scripts/cluster.sh`, the topology of docker-compose.yml). Every client receives every
//! message of its topic once and in order, whichever node serves each of its requests.
use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Redis};
use common::{atmo_query, frame, unframe, within, BodyReader, TestServer};
use futures::{SinkExt, StreamExt};
use nimbus::broker::SessionRecord;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The flags every node of these tests runs with.
const NODE_ARGS: &str = "--admin --heartbeat-secs 5 --api-key cluster-test-key";

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
        .post(cluster.node(3, "/api/publish"))
        .header("Authorization", "apikey cluster-test-key")
        .header("Content-Type", "application/json")
        .body(
            serde_json::json!({
                "topic": path, "data": "only for the websocket", "sessions": ["ws-client"]
            })
            .to_string(),
        )
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

/// What a client of the failover tests saw.
#[derive(Debug, Default)]
struct Seen {
    messages: Vec<String>,
    reconnects: usize,
}

impl Seen {
    /// Every published message arrived, in order of first arrival; returns the duplicates.
    fn assert_complete(&self, published: &[String], who: &str) -> usize {
        let mut first = Vec::new();
        let mut seen = HashSet::new();
        for m in &self.messages {
            if seen.insert(m.clone()) {
                first.push(m.clone());
            }
        }
        assert_eq!(first, published, "{who}: messages lost or out of order");
        self.messages.len() - first.len()
    }
}

/// A WebSocket client that reconnects through the balancer with its tracking id whenever its
/// connection ends, as atmosphere.js does, until it has `count` distinct messages.
/// Its first connection goes to `first` (a node, or the balancer); reconnections go to `lb`.
async fn websocket_client(
    first: String,
    lb: String,
    path: &'static str,
    id: String,
    count: usize,
) -> Seen {
    let mut seen = Seen::default();
    let url_of = |base: &str| {
        format!("{base}{path}?{}", atmo_query("websocket", &id, true)).replacen("http", "ws", 1)
    };
    let (first, url) = (url_of(&first), url_of(&lb));
    let mut next = first;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let target = std::mem::replace(&mut next, url.clone());
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(&target),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut handshake_seen = false;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(15), ws.next()).await;
            let Ok(Some(Ok(WsMessage::Text(text)))) = frame else {
                if matches!(frame, Ok(Some(Ok(_)))) {
                    continue; // ping, pong
                }
                break; // closed, failed or silent: reconnect
            };
            for message in unframe(text.as_str()) {
                if !handshake_seen {
                    assert_eq!(
                        message,
                        format!("{id}|0|X|"),
                        "first frame is the handshake"
                    );
                    handshake_seen = true;
                } else if message != "X" {
                    seen.messages.push(message);
                }
            }
            if seen.messages.iter().collect::<HashSet<_>>().len() >= count {
                return seen;
            }
        }
        seen.reconnects += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// A long-polling client through the balancer: after a failed poll it polls again, and then
/// (like atmosphere.js after a reconnect) takes the first frame for a handshake.
async fn polling_client(lb: String, path: &'static str, count: usize) -> Seen {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let url = format!("{lb}{path}");
    let mut poller = Poller::handshake(&http, &url).await;
    let mut seen = Seen::default();
    let mut reconnecting = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && seen.messages.iter().collect::<HashSet<_>>().len() < count {
        let response = http
            .get(format!(
                "{url}?{}&X-Atmosphere-Session-Token={}",
                atmo_query("long-polling", &poller.id, true),
                poller.token
            ))
            .send()
            .await;
        let Ok(response) = response.and_then(|r| r.error_for_status()) else {
            reconnecting = true;
            seen.reconnects += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        poller.token = header(&response, "x-atmosphere-session-token");
        let Ok(body) = response.text().await else {
            reconnecting = true;
            seen.reconnects += 1;
            continue;
        };
        let mut frames = unframe(&body).into_iter();
        if reconnecting && !body.is_empty() {
            let handshake = frames.next().unwrap();
            assert_eq!(
                handshake,
                format!("{}|0|X|", poller.id),
                "reconnect starts with the handshake"
            );
            reconnecting = false;
        }
        seen.messages.extend(frames.filter(|m| m != "X"));
    }
    seen
}

/// Clients spread over the nodes by the balancer; node 1 goes away in the middle of a stream of
/// 80 messages (published through node 2); every client ends up with every message, in order.
/// Returns the duplicates per client.
async fn stream_through_a_node_failure(graceful: bool) -> Vec<usize> {
    let cluster = Cluster::up(NODE_ARGS);
    let http = reqwest::Client::new();
    const PATH: &str = "/cluster/failover";
    const COUNT: usize = 80;
    let published: Vec<String> = (0..COUNT).map(|i| format!("m{i}")).collect();
    let mut clients = Vec::new();
    for i in 0..4 {
        // Two WebSocket clients start on node 1 for certain; the others wherever the balancer
        // puts them. Every reconnection goes through the balancer.
        let first = if i < 2 {
            cluster.node(1, "")
        } else {
            cluster.lb("")
        };
        clients.push(tokio::spawn(websocket_client(
            first,
            cluster.lb(""),
            PATH,
            format!("ws-{i}"),
            COUNT,
        )));
        clients.push(tokio::spawn(polling_client(cluster.lb(""), PATH, COUNT)));
    }
    // Let every client connect.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, message) in published.iter().enumerate() {
        if i == COUNT / 2 {
            if graceful {
                cluster.stop_node(1);
            } else {
                cluster.kill_node(1);
            }
        }
        assert_eq!(post(&http, &cluster.node(2, PATH), message).await, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut duplicates = Vec::new();
    let mut reconnects = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let seen = client.await.unwrap();
        let who = format!("client {i} ({} reconnects)", seen.reconnects);
        duplicates.push(seen.assert_complete(&published, &who));
        reconnects += seen.reconnects;
    }
    // The clients that started on node 1 had to move.
    assert!(reconnects >= 2, "the clients of node 1 did not reconnect");
    duplicates
}

/// kill -9 one node mid-stream: its clients reconnect through the balancer and lose nothing.
/// WebSocket clients may see a few messages twice (their cursor is recorded every 2 s, and a
/// killed node cannot record the last one); the duplicates are counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_mid_stream_loses_no_message() {
    let duplicates = stream_through_a_node_failure(false).await;
    println!("duplicates per client after kill -9: {duplicates:?}");
}

/// SIGTERM one node mid-stream: it records where each client stands before closing, so its
/// clients continue elsewhere with nothing lost and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_hands_clients_over_without_loss_or_duplicates() {
    let duplicates = stream_through_a_node_failure(true).await;
    assert!(
        duplicates.iter().all(|&d| d == 0),
        "duplicates after a graceful shutdown: {duplicates:?}"
    );
}

fn redis_cli(cluster: &Cluster, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &(cluster.port + 9).to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Each node talks to Redis over one connection, whatever its number of topics; it subscribes to
/// a topic's channel while it has local members and unsubscribes after the last one left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_connection_per_node_and_channels_follow_local_interest() {
    let cluster = Cluster::up("--admin --reconnect-window-secs 1");
    let mut sockets = Vec::new();
    for i in 0..5 {
        let path = format!("/cluster/interest-{i}");
        let url = cluster.node(1, &format!("{path}?{}", atmo_query("websocket", "0", true)));
        let mut ws = ws_connect(&url).await;
        ws_next(&mut ws).await; // handshake
        sockets.push(ws);
    }
    let channels = redis_cli(&cluster, &["pubsub", "channels", "nimbus:b:*"]);
    for i in 0..5 {
        assert!(
            channels.contains(&format!("nimbus:b:{{/cluster/interest-{i}}}")),
            "{channels}"
        );
    }
    let clients = redis_cli(&cluster, &["client", "list"]);
    let from_nodes = clients
        .lines()
        .filter(|l| !l.contains("cmd=client"))
        .count();
    assert_eq!(from_nodes, 3, "one connection per node:\n{clients}");

    for mut ws in sockets {
        ws.close(None).await.unwrap();
    }
    // The connections leave after the reconnect window (1 s); the topics free themselves after
    // their grace period (5 s) and unsubscribe.
    within(15.0, "the channels to be unsubscribed", async {
        while !redis_cli(&cluster, &["pubsub", "channels", "nimbus:b:*"]).is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// Cursor notes are written in batches, so a note can reach Redis after a newer record (its
/// client detached and saved where it stands meanwhile, or moved on): a late note must never
/// move a session record back, or the next node would resend what the client already has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cursor_note_never_moves_a_session_record_back() {
    let redis = Redis::start();
    let (server, _) = TestServer::start_clustered(&redis.url(), "notes", |_| {}, |_| {});
    let broker = server.node.broker.clone();
    let session: nimbus::topic::SessionId = "late-note".into();
    let record = |epoch, cursor| SessionRecord {
        topic: Some("/notes".into()),
        epoch,
        cursor,
        polling: false,
        node: Some("notes".into()),
        floor: None,
    };
    let stands = |broker: std::sync::Arc<dyn nimbus::broker::Broker>| {
        let session = session.clone();
        async move {
            let record = broker.load_session(session).await.expect("Redis answers");
            record.map(|r| (r.epoch, r.cursor))
        }
    };
    // Notes are written in batches every 250 ms, in the order they were taken: a marker noted
    // after each note (another session, no record of its own) has landed once the note has.
    let landed = |marker: String| {
        let redis = &redis;
        within(10.0, "the cursor notes to be written", async move {
            let key = format!("nimbus:s:{marker}");
            while redis.cli(&["hget", &key, "noted"]).trim().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    broker
        .save_session(session.clone(), record(7, 10))
        .await
        .expect("record saved");
    // Each note, and where the record must stand once it had time to land.
    for (note, stands_then, what) in [
        ((7, 4), (7, 10), "an older cursor"),
        ((6, 50), (7, 10), "an older epoch"),
        ((7, 12), (7, 12), "a newer cursor"),
        ((8, 3), (8, 3), "a newer epoch"),
    ] {
        broker.note_cursor(session.clone(), note.0, note.1);
        let marker = format!("late-note-marker-{}-{}", note.0, note.1);
        broker.note_cursor(marker.as_str().into(), 1, 1);
        landed(marker).await;
        assert_eq!(stands(broker.clone()).await, Some(stands_then), "{what}");
    }
}

/// Publishes that queue while a call to Redis is out go to Redis together in the next call
/// (issue 27: one round trip and one script run for many messages); every topic still numbers
/// its messages in the order they were sent, and the other node relays every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_publishes_crosses_the_cluster_complete_in_order_and_batched() {
    const TOPICS: usize = 8;
    const EACH: usize = 150;
    let redis = Redis::start();
    let unlimited = |c: &mut nimbus::Config| c.max_publishes_per_sec = 0;
    let (a, _) = TestServer::start_clustered(&redis.url(), "burst-a", unlimited, |_| {});
    let (b, _) = TestServer::start_clustered(&redis.url(), "burst-b", unlimited, |_| {});
    let mut subscribers = Vec::new();
    let mut publishers = Vec::new();
    for t in 0..TOPICS {
        let topic = format!("/cluster/burst-{t}");
        for (node, sockets) in [(&b, &mut subscribers), (&a, &mut publishers)] {
            let (mut ws, _) = common::ws_open(node, &topic, "0", true).await;
            ws_next(&mut ws).await; // handshake: joined, and the node subscribed to the topic
            sockets.push(ws);
        }
    }
    let sent = |t: usize| (0..EACH).map(move |i| format!("{t}:{i}"));
    // Every publisher writes its messages without waiting, all at once.
    let bursts = publishers.iter_mut().enumerate().map(|(t, ws)| async move {
        for message in sent(t) {
            ws.feed(WsMessage::text(message)).await.unwrap();
        }
        ws.flush().await.unwrap();
    });
    futures::future::join_all(bursts).await;
    let readers = subscribers.iter_mut().map(|ws| async move {
        let mut got = Vec::new();
        within(
            20.0,
            "every message of the burst on the other node",
            async {
                while got.len() < EACH {
                    match ws.next().await {
                        Some(Ok(WsMessage::Text(text))) => got.extend(
                            unframe(text.as_str())
                                .into_iter()
                                .filter(|m| m.as_str() != "X"),
                        ),
                        Some(Ok(_)) => {}
                        other => panic!("expected a text frame, got {other:?}"),
                    }
                }
            },
        )
        .await;
        got
    });
    let received = futures::future::join_all(readers).await;
    for (t, got) in received.into_iter().enumerate() {
        assert_eq!(
            got,
            sent(t).collect::<Vec<_>>(),
            "topic {t}: all, once, in order"
        );
    }
    let page = common::scrape(&a).await;
    let figure = |name: &str| -> f64 { common::sample_as(&page, name) };
    let calls = figure("nimbus_redis_publish_batch_messages_count");
    let messages = figure("nimbus_redis_publish_batch_messages_sum");
    assert_eq!(messages, (TOPICS * EACH) as f64, "{page}");
    assert!(
        calls < messages,
        "{messages} messages went to Redis in {calls} calls: none shared a call"
    );
    println!("{messages} messages in {calls} publish calls");
}
