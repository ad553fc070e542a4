//! `GET /metrics` as an operator reads it: sessions by protocol and transport follow clients
//! as they come and go, publish-to-write latency is observed for every message fanned out,
//! dropped deliveries are labelled by reason, and a clustered node shows its Redis round trips.
use crate::common;

use std::time::Duration;

use common::{cluster::Redis, lp_handshake, topic_url, within, ws_open, ws_text, BodyReader};

async fn page(server: &common::TestServer) -> String {
    reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample whose line starts with `series` (name and labels), if present.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn sessions(protocol: &str, transport: &str) -> String {
    format!("nimbus_sessions_open{{protocol=\"{protocol}\",transport=\"{transport}\"}}")
}

/// Wait until the page's `series` equals `want`.
async fn wait_for(server: &common::TestServer, series: &str, want: f64) {
    within(10.0, &format!("{series} to be {want}"), async {
        loop {
            if sample(&page(server).await, series) == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn sessions_are_counted_by_protocol_and_transport_and_latency_per_message() {
    // Sessions outlive their transports by the reconnect window: keep it short.
    let server = common::TestServer::start(|c| c.reconnect_window_secs = 1);
    let topic = "/metrics/room";
    let before = page(&server).await;
    for transport in ["websocket", "sse", "streaming", "long-polling"] {
        assert_eq!(
            sample(&before, &sessions("atmosphere", transport)),
            Some(0.0),
            "every transport has a series from the start:\n{before}"
        );
    }
    let (mut ws, _) = ws_open(&server, topic, "0", true).await;
    ws_text(&mut ws).await; // handshake
    let mut sse = BodyReader::open(&topic_url(&server, topic, "sse", "0", true)).await;
    let _poller = lp_handshake(&server, topic, true).await;
    wait_for(&server, &sessions("atmosphere", "websocket"), 1.0).await;
    wait_for(&server, &sessions("atmosphere", "sse"), 1.0).await;
    wait_for(&server, &sessions("atmosphere", "long-polling"), 1.0).await;
    assert_eq!(
        sample(&page(&server).await, &sessions("atmosphere", "streaming")),
        Some(0.0)
    );

    common::publish_all(&server, topic, &["hello".to_string()]).await;
    assert_eq!(ws_text(&mut ws).await, "5|hello");
    sse.read_until(5.0, |text| text.contains("hello")).await;
    let after = page(&server).await;
    let observed = sample(&after, "nimbus_publish_to_write_seconds_count").unwrap();
    assert!(observed >= 1.0, "one message fanned out:\n{after}");
    for reason in ["history_gone", "relay_queue_full"] {
        let series = format!("nimbus_deliveries_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&after, &series), Some(0.0), "{series} in\n{after}");
    }
    assert!(
        sample(&after, "nimbus_redis_rtt_seconds_count").is_none(),
        "a node alone has no Redis"
    );

    // The clients leave: once their reconnect window has passed, their sessions end and
    // leave the gauge.
    drop(ws);
    drop(sse);
    wait_for(&server, &sessions("atmosphere", "sse"), 0.0).await;
    wait_for(&server, &sessions("atmosphere", "websocket"), 0.0).await;
}

#[tokio::test]
async fn cettia_sockets_are_counted_by_transport() {
    let server = common::TestServer::start(|_| {});
    let series = sessions("cettia", "websocket");
    let url = server.ws_url("/cettia?cettia-version=1.0");
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    wait_for(&server, &series, 1.0).await;
    drop(socket);
    // The socket waits out its resume window after the transport ends: it stays counted on
    // the transport it last used until it is deleted, so only the open count is asserted.
    let page = page(&server).await;
    assert_eq!(
        sample(&page, &sessions("cettia", "long-polling")),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_clustered_node_shows_its_redis_round_trips() {
    let redis = Redis::start();
    let (server, _) = common::TestServer::start_clustered(&redis.url(), "m1", |_| {}, |_| {});
    common::publish_all(&server, "/metrics/clustered", &["one".to_string()]).await;
    within(10.0, "a Redis round trip in /metrics", async {
        loop {
            let page = page(&server).await;
            if sample(&page, "nimbus_redis_rtt_seconds_count").is_some_and(|n| n >= 1.0) {
                let sum = sample(&page, "nimbus_redis_rtt_seconds_sum").unwrap();
                assert!(sum > 0.0 && sum < 10.0, "plausible round trips:\n{page}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
