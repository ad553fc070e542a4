//! Broadcasts to one session and to a set reach exactly those sessions.
use crate::common;

use std::time::Duration;

use nimbus::topic::{Audience, Message};

async fn handshake(server: &common::TestServer, topic: &str) -> String {
    let url = server.url(&format!(
        "{topic}?{}",
        common::atmo_query("long-polling", "0", true)
    ));
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    body.split('|')
        .nth(1)
        .expect("handshake carries the uuid")
        .to_string()
}

async fn poll(server: &common::TestServer, topic: &str, id: &str) -> String {
    let url = server.url(&format!(
        "{topic}?{}",
        common::atmo_query("long-polling", id, true)
    ));
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// `Audience::One` and `Audience::Set` deliver only to the named tracking ids; the others see
/// only what was sent to everyone.
#[tokio::test]
async fn targeted_sends_reach_only_their_audience() {
    let server = common::TestServer::start(|c| c.heartbeat_secs = 2);
    let topic = "/room/targeted";
    let (a, b, c) = (
        handshake(&server, topic).await,
        handshake(&server, topic).await,
        handshake(&server, topic).await,
    );
    let broker = &server.node.broker;
    broker
        .publish(
            topic,
            Audience::One(a.as_str().into()),
            Message::text("for-a"),
        )
        .unwrap();
    broker
        .publish(
            topic,
            Audience::Set(vec![a.as_str().into(), b.as_str().into()].into()),
            Message::text("for-ab"),
        )
        .unwrap();
    broker
        .publish(topic, Audience::All, Message::text("for-all"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    assert_eq!(poll(&server, topic, &a).await, "5|for-a6|for-ab7|for-all");
    assert_eq!(poll(&server, topic, &b).await, "6|for-ab7|for-all");
    assert_eq!(poll(&server, topic, &c).await, "7|for-all");
}
