//! Cettia sockets in a cluster (`scripts/cluster.sh`: Redis, three nodes, HAProxy round-robin
//! without affinity), plus nodes started in the test process on the same Redis where the
//! application API is needed: a socket resumes on another node with what was sent to it while
//! it was away (in order, once, event ids continuing), sends by socket id and by tag reach
//! sockets on any node, `delete` fires once on the node holding the socket, and a long-polling
//! Cettia client keeps working through the balancer.
use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{atmo_query, within, ws_open_url, ws_send, ws_silent, ws_text, TestServer, Ws};
use nimbus::cettia::Value;

const NODE_ARGS: &str = "--admin --heartbeat-secs 5";

fn ws_base(http: &str) -> String {
    http.replacen("http://", "ws://", 1)
}

/// Open a Cettia socket over WebSocket at `url`; returns it and the id of its handshake.
async fn open(url: &str) -> (Ws, String) {
    let (mut ws, _) = ws_open_url(url).await;
    let handshake = ws_text(&mut ws).await;
    let id = handshake
        .strip_prefix("?cettia-version=1.0&cettia-id=")
        .unwrap_or_else(|| panic!("not a handshake: {handshake}"))
        .split('&')
        .next()
        .unwrap()
        .to_string();
    (ws, id)
}

fn event(id: u64, kind: &str, data: &str) -> String {
    format!(r#"{{"id":"{id}","type":"{kind}","data":{data},"reply":false}}"#)
}

async fn publish(http: &reqwest::Client, url: &str, message: &str) {
    let status = http
        .post(format!(
            "{url}?{}",
            atmo_query("long-polling", "publisher", true)
        ))
        .body(message.to_string())
        .send()
        .await
        .expect("POST answered")
        .status();
    assert_eq!(status, 200, "POST {message} to {url}");
}

/// Wait for `what` in a node's log (the cluster runs with `nimbus=debug`).
/// POST event `i` of type `echo` (data `e{i}`) to an HTTP transport, as the Cettia client does.
async fn post_echo(http: &reqwest::Client, transport_url: &str, i: u64) -> reqwest::Response {
    http.post(transport_url)
        .header("content-type", "text/plain; charset=utf-8")
        .body(format!(
            r#"data={{"id":{i},"type":"echo","data":"e{i}","reply":false}}"#
        ))
        .send()
        .await
        .unwrap()
}

async fn log_says(cluster: &Cluster, node: &str, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cluster.log(node).contains(what) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A socket opened on node 1 leaves; node 3's application sends to it by id and by tag and an
/// Atmosphere client publishes to its topic on nodes 2 and 3; it comes back on node 2 with its
/// cettia-id: same id, the events kept for it in order once, event ids continuing, then live
/// traffic from every node; node 1 handed it over and no longer has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_resumes_on_another_node_with_what_was_sent_while_away() {
    let cluster = Cluster::up(NODE_ARGS);
    let (_app, app) = TestServer::start_clustered(&cluster.redis_url(), "app", |_| {}, |_| {});
    let http = reqwest::Client::new();
    let topic = "/cettia-cluster/room";
    let query = format!("/cettia?cettia-version=1.0&topic={topic}&tag=reader");
    let (mut ws, id) = open(&ws_base(&cluster.node(1, &query))).await;
    ws_send(
        &mut ws,
        r#"{"id":1,"type":"echo","data":"hi","reply":false}"#,
    )
    .await;
    assert_eq!(ws_text(&mut ws).await, event(0, "echo", "\"hi\""));
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // While it is away: a send by id, a topic message, a send by tag, another topic message.
    app.send_to(&id, "direct", Value::from("d1")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&http, &cluster.node(2, topic), "m1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.send_to_tag("reader", "direct", Value::from("d2"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&http, &cluster.node(3, topic), "m2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let resume = format!("/cettia?cettia-version=1.0&cettia-id={id}");
    let (mut ws, again) = open(&ws_base(&cluster.node(2, &resume))).await;
    assert_eq!(again, id, "the same socket");
    assert_eq!(ws_text(&mut ws).await, event(1, "direct", "\"d1\""));
    assert_eq!(ws_text(&mut ws).await, event(2, "message", "\"m1\""));
    assert_eq!(ws_text(&mut ws).await, event(3, "direct", "\"d2\""));
    assert_eq!(ws_text(&mut ws).await, event(4, "message", "\"m2\""));
    ws_silent(&mut ws, Duration::from_millis(500)).await;
    assert!(
        log_says(&cluster, "nimbus1", "socket handed over").await,
        "node 1 did not hand the socket over:\n{}",
        cluster.log("nimbus1")
    );

    // Live traffic from any node, and the socket's own `message` events reach its topic.
    publish(&http, &cluster.node(1, topic), "m3").await;
    assert_eq!(ws_text(&mut ws).await, event(5, "message", "\"m3\""));
    app.send_to(&id, "direct", Value::from("d3")).unwrap();
    assert_eq!(ws_text(&mut ws).await, event(6, "direct", "\"d3\""));
    let query = format!("/cettia?cettia-version=1.0&topic={topic}");
    let (mut other, _) = open(&ws_base(&cluster.node(3, &query))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws_send(
        &mut ws,
        r#"{"id":2,"type":"message","data":"from the socket","reply":false}"#,
    )
    .await;
    assert_eq!(
        ws_text(&mut ws).await,
        event(7, "message", "\"from the socket\"")
    );
    assert_eq!(
        ws_text(&mut other).await,
        event(0, "message", "\"from the socket\"")
    );

    // Away again, back on node 3: nothing twice, the counter goes on.
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut ws, again) = open(&ws_base(&cluster.node(3, &resume))).await;
    assert_eq!(again, id);
    ws_silent(&mut ws, Duration::from_millis(500)).await;
    ws_send(
        &mut ws,
        r#"{"id":3,"type":"echo","data":"back","reply":false}"#,
    )
    .await;
    assert_eq!(ws_text(&mut ws).await, event(8, "echo", "\"back\""));
    assert!(log_says(&cluster, "nimbus2", "socket handed over").await);
}

/// The node holding an away socket is killed (`kill -9`): nobody answers the handover, and the
/// node the client comes back to continues from the socket's last record after a short wait:
/// same id, what was queued for it a second before the kill, the topic messages published
/// after the kill (from the shared history), event ids continuing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_of_a_killed_node_resumes_from_its_last_record() {
    let cluster = Cluster::up(NODE_ARGS);
    let (_app, app) = TestServer::start_clustered(&cluster.redis_url(), "app", |_| {}, |_| {});
    let http = reqwest::Client::new();
    let topic = "/cettia-cluster/killed";
    let query = format!("/cettia?cettia-version=1.0&topic={topic}");
    let (ws, id) = open(&ws_base(&cluster.node(1, &query))).await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.send_to(&id, "direct", Value::from("d1")).unwrap();
    publish(&http, &cluster.node(2, topic), "m1").await;
    // The record is rewritten within a second of a change while the socket is away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill_node(1);
    publish(&http, &cluster.node(3, topic), "m2").await;
    let resume = format!("/cettia?cettia-version=1.0&cettia-id={id}");
    let started = Instant::now();
    let (mut ws, again) = open(&ws_base(&cluster.node(2, &resume))).await;
    assert_eq!(again, id, "the same socket");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ws_text(&mut ws).await, event(0, "direct", "\"d1\""));
    assert_eq!(ws_text(&mut ws).await, event(1, "message", "\"m1\""));
    assert_eq!(ws_text(&mut ws).await, event(2, "message", "\"m2\""));
    ws_silent(&mut ws, Duration::from_millis(500)).await;
    publish(&http, &cluster.node(3, topic), "m3").await;
    assert_eq!(ws_text(&mut ws).await, event(3, "message", "\"m3\""));
}

/// Sends by id keep flowing (from a node that does not hold the socket) while the socket
/// moves from node 1 to node 2: its client receives every one, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_during_a_move_arrive_once_in_order() {
    let cluster = Cluster::up(NODE_ARGS);
    let (_app, app) = TestServer::start_clustered(&cluster.redis_url(), "app", |_| {}, |_| {});
    let (mut ws, id) = open(&ws_base(&cluster.node(1, "/cettia?cettia-version=1.0"))).await;
    let mut received = Vec::new();
    for i in 0..20 {
        app.send_to(&id, "n", Value::from(i)).unwrap();
    }
    for _ in 0..20 {
        received.push(ws_text(&mut ws).await);
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sender = {
        let (app, id) = (app.clone(), id.clone());
        tokio::spawn(async move {
            for i in 20..300 {
                app.send_to(&id, "n", Value::from(i)).unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resume = format!("/cettia?cettia-version=1.0&cettia-id={id}");
    let (mut ws, again) = open(&ws_base(&cluster.node(2, &resume))).await;
    assert_eq!(again, id);
    while received.len() < 300 {
        received.push(common::ws_text_within(&mut ws, 10.0).await);
    }
    sender.await.unwrap();
    ws_silent(&mut ws, Duration::from_millis(500)).await;
    let expected: Vec<String> = (0..300).map(|i| event(i, "n", &i.to_string())).collect();
    let wrong: Vec<(usize, &String)> = received
        .iter()
        .enumerate()
        .filter(|(i, r)| **r != expected[*i])
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "first differences (position, event): {wrong:?}"
    );
}

/// Sends by socket id and by tag issued on one node reach sockets on the other nodes (and
/// only the tagged ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_by_id_and_by_tag_reach_sockets_on_other_nodes() {
    let cluster = Cluster::up(NODE_ARGS);
    let (_app, app) = TestServer::start_clustered(&cluster.redis_url(), "app", |_| {}, |_| {});
    let tagged = "/cettia?cettia-version=1.0&tag=vip";
    let (mut one, _) = open(&ws_base(&cluster.node(1, tagged))).await;
    let (mut three, three_id) = open(&ws_base(&cluster.node(3, tagged))).await;
    let (mut two, two_id) = open(&ws_base(&cluster.node(2, "/cettia?cettia-version=1.0"))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The application's node holds none of them: it reaches them all through the others.
    assert_eq!(app.send_to_tag("vip", "news", Value::from(1)), 0);
    assert_eq!(ws_text(&mut one).await, event(0, "news", "1"));
    assert_eq!(ws_text(&mut three).await, event(0, "news", "1"));
    ws_silent(&mut two, Duration::from_millis(300)).await;

    app.send_to(&two_id, "hello", Value::from("two")).unwrap();
    app.send_to(&three_id, "hello", Value::from("three"))
        .unwrap();
    assert_eq!(ws_text(&mut two).await, event(0, "hello", "\"two\""));
    assert_eq!(ws_text(&mut three).await, event(1, "hello", "\"three\""));
    ws_silent(&mut one, Duration::from_millis(300)).await;
}

/// Two nodes of one cluster (in this process, for their application handlers): a socket
/// created on A resumes on B; A drops its copy without `delete`; `delete` fires once, on B,
/// when the resume window passes, and the socket is gone from the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_fires_once_on_the_node_holding_the_socket() {
    let cluster = Cluster::up(NODE_ARGS);
    let counters = |deleted: Arc<AtomicUsize>, closed: Arc<AtomicUsize>| {
        move |cettia: &nimbus::cettia::Cettia| {
            cettia.on_delete(move |_| {
                deleted.fetch_add(1, Ordering::SeqCst);
            });
            cettia.on_close(move |_| {
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    };
    let window = |c: &mut nimbus::Config| c.cettia_resume_window_secs = 3;
    let (a_deleted, a_closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (b_deleted, b_closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, a_app) = TestServer::start_clustered(
        &cluster.redis_url(),
        "node-a",
        window,
        counters(a_deleted.clone(), a_closed.clone()),
    );
    let (b, b_app) = TestServer::start_clustered(
        &cluster.redis_url(),
        "node-b",
        window,
        counters(b_deleted.clone(), b_closed.clone()),
    );
    let (ws, id) = open(&a.ws_url("/cettia?cettia-version=1.0&topic=/cettia-cluster/del")).await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a_closed.load(Ordering::SeqCst), 1);
    let resume = format!("/cettia?cettia-version=1.0&cettia-id={id}");
    let (ws, again) = open(&b.ws_url(&resume)).await;
    assert_eq!(again, id);
    assert_eq!(a_app.counts().0, 0, "node A dropped its copy");
    assert!(b_app.socket(&id).is_some(), "node B holds it");
    drop(ws);
    // A's window (3 s from its close) and B's pass.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        a_deleted.load(Ordering::SeqCst),
        0,
        "no delete where it left"
    );
    assert_eq!(
        b_deleted.load(Ordering::SeqCst),
        1,
        "one delete where it was"
    );
    assert_eq!(b_app.counts().0, 0);
    // Gone from the cluster: its id now gets a fresh socket, on any node.
    let (_ws, fresh) = open(&a.ws_url(&resume)).await;
    assert_ne!(fresh, id);
}

const Q: &str = "cettia-version=1.0&cettia-transport-version=1.0";

/// One long-polling Cettia client whose every request goes through the balancer (so lands on
/// the next node in turn): the open, each poll, each POSTed event. It receives its socket
/// handshake, the echoes of its events and the messages of its topic, each once and in order,
/// with event ids counting up by one, while its polls are served by several nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_client_works_through_the_balancer() {
    let cluster = Cluster::up(NODE_ARGS);
    let http = reqwest::Client::new();
    let topic = "/cettia-cluster/lp";
    let open = http
        .get(cluster.lb(&format!(
            "/cettia?{Q}&cettia-transport-name=longpoll&cettia-transport-when=open&topic={topic}"
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tid = open
        .split_once("cettia-transport-id=")
        .unwrap_or_else(|| panic!("{open}"))
        .1
        .to_string();
    let poll_url = cluster.lb(&format!(
        "/cettia?{Q}&cettia-transport-name=longpoll&cettia-transport-when=poll&cettia-transport-id={tid}"
    ));
    let post_url = cluster.lb(&format!(
        "/cettia?{Q}&cettia-transport-name=longpoll&cettia-transport-id={tid}"
    ));
    // The poller: one poll at a time, as the client does.
    let poller = {
        let (http, poll_url) = (http.clone(), poll_url.clone());
        tokio::spawn(async move {
            let mut received = Vec::new();
            let mut nodes = HashSet::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while received.len() < 21 && Instant::now() < deadline {
                let response = http.get(&poll_url).send().await.expect("poll answered");
                assert_eq!(response.status(), 200, "poll");
                let node = response.headers()["x-nimbus-node"]
                    .to_str()
                    .unwrap()
                    .to_string();
                nodes.insert(node.clone());
                let body = response.text().await.unwrap();
                if body.is_empty() {
                    // The transport was closed: a failure, reported with the logs below.
                    received.push(format!("<closed by {node}>"));
                    break;
                }
                received.push(body);
            }
            (received, nodes)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut expected_data = Vec::new();
    for i in 0..10 {
        let status = post_echo(&http, &post_url, i).await.status();
        assert_eq!(status, 200);
        expected_data.push(("echo".to_string(), format!("e{i}")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        publish(&http, &cluster.lb(topic), &format!("m{i}")).await;
        expected_data.push(("message".to_string(), format!("m{i}")));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (received, nodes) = within(40.0, "the poller", poller).await.unwrap();
    if received.iter().any(|r| r.starts_with("<closed")) {
        panic!(
            "{received:?}\n--- node 1\n{}\n--- node 2\n{}\n--- node 3\n{}",
            cluster.log("nimbus1"),
            cluster.log("nimbus2"),
            cluster.log("nimbus3")
        );
    }
    assert!(
        received[0].starts_with("?cettia-version=1.0&cettia-id="),
        "{:?}",
        received[0]
    );
    let events: Vec<serde_json::Value> = received[1..]
        .iter()
        .map(|b| serde_json::from_str(b).unwrap_or_else(|_| panic!("{b}")))
        .collect();
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (0..20).collect::<Vec<_>>(), "{received:?}");
    // Echoes keep their order, topic messages theirs; each once.
    let of = |kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["data"].as_str().unwrap().to_string())
            .collect()
    };
    let want = |kind: &str| -> Vec<String> {
        expected_data
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, d)| d.clone())
            .collect()
    };
    assert_eq!(of("echo"), want("echo"), "{received:?}");
    assert_eq!(of("message"), want("message"), "{received:?}");
    assert!(nodes.len() >= 2, "polls served by {nodes:?} only");
}

/// The first poll of a long-polling transport, sent the moment its open is answered, to
/// another node: that node finds the transport's socket (the open is answered only once the
/// records saying where it is are written) and serves the socket's handshake. A poll that
/// beat those writes got `500 no such socket` and the client gave up on the transport (seen
/// with the real client in `scripts/cettia-cluster.sh`, mostly on a cluster's first sockets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_poll_on_another_node_right_after_the_open_finds_the_socket() {
    let cluster = Cluster::up(NODE_ARGS);
    let http = reqwest::Client::new();
    for i in 0..20 {
        let (opener, poller) = if i % 2 == 0 { (1, 2) } else { (2, 3) };
        let open = http
            .get(cluster.node(
                opener,
                &format!(
                    "/cettia?{Q}&cettia-transport-name=longpoll&cettia-transport-when=open&topic=/first-poll/{i}"
                ),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(open.status(), 200, "open {i}");
        let open = open.text().await.unwrap();
        let tid = open
            .split_once("cettia-transport-id=")
            .unwrap_or_else(|| panic!("{open}"))
            .1
            .to_string();
        let poll = http
            .get(cluster.node(
                poller,
                &format!(
                    "/cettia?{Q}&cettia-transport-name=longpoll&cettia-transport-when=poll&cettia-transport-id={tid}"
                ),
            ))
            .send()
            .await
            .unwrap();
        let status = poll.status();
        let body = poll.text().await.unwrap();
        assert_eq!(status, 200, "first poll {i} on node {poller}: {body}");
        assert!(
            body.starts_with("?cettia-version=1.0&cettia-id="),
            "first poll {i}: {body:?}"
        );
    }
}

/// An HTTP streaming Cettia client through the balancer: its stream stays on one node, its
/// POSTed events land on every node in turn and are forwarded to the stream's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_client_posts_through_the_balancer() {
    let cluster = Cluster::up(NODE_ARGS);
    let http = reqwest::Client::new();
    let mut stream = common::BodyReader::open(&cluster.lb(&format!(
        "/cettia?{Q}&cettia-transport-name=stream&cettia-transport-when=open"
    )))
    .await;
    stream.expect(&format!("{}\n", " ".repeat(2047))).await;
    // The transport handshake, then the socket handshake (maybe in one chunk).
    let handshakes = stream
        .read_until(5.0, |t| t.contains("cettia-id=") && t.ends_with("\n\n"))
        .await;
    let (transport, socket) = handshakes
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("{handshakes:?}"));
    let tid = transport
        .split_once("cettia-transport-id=")
        .unwrap_or_else(|| panic!("{handshakes:?}"))
        .1
        .to_string();
    assert!(
        socket.starts_with("data: 1?cettia-version=1.0&cettia-id="),
        "{handshakes:?}"
    );
    let post_url = cluster.lb(&format!(
        "/cettia?{Q}&cettia-transport-name=stream&cettia-transport-id={tid}"
    ));
    let mut nodes = HashSet::new();
    for i in 0..6 {
        let response = post_echo(&http, &post_url, i).await;
        assert_eq!(response.status(), 200);
        nodes.insert(
            response.headers()["x-nimbus-node"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        stream
            .expect(&format!(
                "data: 1{}\n\n",
                event(i, "echo", &format!("\"e{i}\""))
            ))
            .await;
    }
    assert_eq!(nodes.len(), 3, "POSTs served by {nodes:?}");
}

/// On a Redis Cluster (`--redis-cluster`, sharded pub/sub for the control channel too): a
/// socket moves between two nodes and a send by id from one reaches it on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_move_and_sends_cross_nodes_on_a_redis_cluster() {
    let redis = common::cluster::RedisCluster::start();
    let clustered = |c: &mut nimbus::Config| c.redis_cluster = true;
    let (a, a_app) = TestServer::start_clustered(&redis.urls(), "rc-a", clustered, |_| {});
    let (b, _b_app) = TestServer::start_clustered(&redis.urls(), "rc-b", clustered, |_| {});
    let (ws, id) = open(&a.ws_url("/cettia?cettia-version=1.0")).await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a_app.send_to(&id, "kept", Value::from(1)).unwrap();
    let resume = format!("/cettia?cettia-version=1.0&cettia-id={id}");
    let (mut ws, again) = open(&b.ws_url(&resume)).await;
    assert_eq!(again, id);
    assert_eq!(ws_text(&mut ws).await, event(0, "kept", "1"));
    assert_eq!(a_app.counts().0, 0, "node A dropped its copy");
    a_app.send_to(&id, "live", Value::from(2)).unwrap();
    assert_eq!(ws_text(&mut ws).await, event(1, "live", "2"));
}
