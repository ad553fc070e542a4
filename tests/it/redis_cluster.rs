//! Nimbus on a Redis Cluster (`--redis-cluster`): a local three-master cluster started by the
//! test; topics spread over the shards, relays use sharded pub/sub, and clients on two nodes
//! see each other's messages on every topic, long-polls included.
use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{start_nimbus, RedisCluster};
use common::{atmo_query, unframe};

async fn handshake(http: &reqwest::Client, url: &str) -> (String, String) {
    let response = http
        .get(format!("{url}?{}", atmo_query("long-polling", "0", true)))
        .send()
        .await
        .unwrap();
    let token = response.headers()["x-atmosphere-session-token"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.text().await.unwrap();
    let id = unframe(&body)[0].split('|').next().unwrap().to_string();
    (id, token)
}

async fn poll(http: &reqwest::Client, url: &str, id: &str, token: &mut String) -> Vec<String> {
    let response = http
        .get(format!(
            "{url}?{}&X-Atmosphere-Session-Token={token}",
            atmo_query("long-polling", id, true)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    *token = response.headers()["x-atmosphere-session-token"]
        .to_str()
        .unwrap()
        .to_string();
    unframe(&response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_spread_over_shards_and_reach_clients_on_every_node() {
    let redis = RedisCluster::start();
    let urls = redis.urls();
    let args = [
        "--redis-cluster",
        "--redis-url",
        &urls,
        "--heartbeat-secs",
        "5",
    ];
    let (_a, node_a) = start_nimbus("a", &args);
    let (_b, node_b) = start_nimbus("b", &args);
    let http = reqwest::Client::new();
    let topics: Vec<String> = (0..8).map(|i| format!("/sharded/room-{i}")).collect();

    // A long-poller per topic, handshaken on node A.
    let mut clients = Vec::new();
    for topic in &topics {
        clients.push(handshake(&http, &format!("{node_a}{topic}")).await);
    }
    // Messages POSTed to node B; each client polls alternately on B and A.
    for (topic, _) in topics.iter().zip(&clients) {
        for i in 0..3 {
            let status = http
                .post(format!(
                    "{node_b}{topic}?{}",
                    atmo_query("long-polling", "publisher", true)
                ))
                .body(format!("{topic} #{i}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200);
        }
    }
    for (n, (topic, (id, token))) in topics.iter().zip(clients.iter_mut()).enumerate() {
        let mut received = Vec::new();
        let nodes = [&node_b, &node_a];
        let mut turn = n;
        while received.len() < 3 {
            let url = format!("{}{topic}", nodes[turn % 2]);
            turn += 1;
            let messages =
                tokio::time::timeout(Duration::from_secs(10), poll(&http, &url, id, token))
                    .await
                    .expect("poll answered");
            received.extend(messages.into_iter().filter(|m| m != "X"));
        }
        let expected: Vec<String> = (0..3).map(|i| format!("{topic} #{i}")).collect();
        assert_eq!(received, expected, "client of {topic}");
    }

    // The relays were sharded channels, spread over more than one master.
    let per_shard = redis.shard_channels();
    let all: HashSet<&String> = per_shard.iter().flatten().collect();
    for topic in &topics {
        let channel = format!("nimbus:b:{{{topic}}}");
        assert!(
            all.contains(&channel),
            "{channel} not a shard channel: {per_shard:?}"
        );
    }
    let used = per_shard.iter().filter(|c| !c.is_empty()).count();
    assert!(used >= 2, "all topics on one shard: {per_shard:?}");
}
