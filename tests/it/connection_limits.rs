//! Connection limits (issue 25, W2/W3): how many connections one client address and one user
//! may hold in the whole cluster, how fast an address may open them, the client address a
//! trusted balancer names, and one publish rate per anonymous address however many sessions
//! it mints.
use crate::common;

use common::cluster::{Cluster, Redis};
use common::{atmo_query, within, TestServer};
use reqwest::{Client, Response};

/// The balancer every request of these tests comes through (loopback), trusted or not.
fn trusting_loopback(config: &mut nimbus::Config) {
    config.trusted_proxies = "127.0.0.1/32".parse().unwrap();
}

/// Open an Atmosphere session on `transport` as the balancer forwarding for `from` (with the
/// token `token`, if any); the response is kept open by the caller.
async fn open_atmosphere(base: &str, transport: &str, from: &str) -> Response {
    open_as(base, transport, Some(from), None).await
}

async fn open_as(base: &str, transport: &str, from: Option<&str>, token: Option<&str>) -> Response {
    let mut url = format!("{base}/limits/room?{}", atmo_query(transport, "0", true));
    if let Some(token) = token {
        url.push_str(&format!("&X-Atmosphere-Auth={token}"));
    }
    let mut request = Client::new().get(url);
    if let Some(from) = from {
        request = request.header("X-Forwarded-For", from);
    }
    within(5.0, "the open answered", request.send())
        .await
        .unwrap()
}

fn tracking_id(response: &Response) -> String {
    response.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// A Cettia socket opening on `stream` from `from`: its status.
async fn open_cettia(server: &TestServer, from: &str) -> Response {
    let url = server.url(
        "/cettia?cettia-version=1.0&cettia-transport-version=1.0&cettia-transport-name=stream\
         &cettia-transport-when=open&cettia-transport-sse=true",
    );
    let request = Client::new().get(url).header("X-Forwarded-For", from);
    within(5.0, "the Cettia open answered", request.send())
        .await
        .unwrap()
}

/// The status of a WebSocket upgrade of a new Atmosphere session from `from`.
async fn websocket_status(server: &TestServer, from: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = server.ws_url(&format!(
        "/limits/room?{}",
        atmo_query("websocket", "0", true)
    ));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Forwarded-For", from.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

async fn limit_hits(server: &TestServer, limit: &str) -> u64 {
    let metrics = common::scrape(server).await;
    let line = format!("nimbus_limit_hits_total{{limit=\"{limit}\"}}");
    if metrics.contains(&line) {
        common::sample(&metrics, &line)
    } else {
        0
    }
}

/// One address holds at most `--max-connections-per-address` sessions: past it a new session
/// is refused `429` (with why) on every protocol and transport, while another address, and a
/// session of the full address resuming, are served; once a session ends its place is free.
#[tokio::test]
async fn an_address_over_its_connection_cap_is_refused_on_every_protocol() {
    let server = TestServer::start(|c| {
        trusting_loopback(c);
        c.max_connections_per_address = 2;
    });
    let base = server.url("");
    let full = "198.51.100.1";
    let first = open_atmosphere(&base, "streaming", full).await;
    assert_eq!(first.status(), 200);
    let second = open_cettia(&server, full).await;
    assert_eq!(second.status(), 200);

    for transport in ["streaming", "sse", "long-polling"] {
        let refused = open_atmosphere(&base, transport, full).await;
        assert_eq!(refused.status(), 429, "{transport}");
        assert_eq!(refused.headers()["retry-after"], "1");
        let why = refused.headers()["x-atmosphere-error"].to_str().unwrap();
        assert!(why.contains("too many connections"), "{why}");
    }
    assert_eq!(websocket_status(&server, full).await, 429);
    assert_eq!(open_cettia(&server, full).await.status(), 429);
    assert_eq!(limit_hits(&server, "connections_per_address").await, 5);

    // Another address is not held back; the full one's own session still resumes.
    let other = open_atmosphere(&base, "long-polling", "198.51.100.2").await;
    assert_eq!(other.status(), 200);
    let id = tracking_id(&first);
    let resumed = Client::new()
        .get(server.url(&format!(
            "/limits/room?{}",
            atmo_query("streaming", &id, true)
        )))
        .header("X-Forwarded-For", full)
        .send();
    let resumed = within(5.0, "the resume answered", resumed).await.unwrap();
    assert_eq!(
        resumed.status(),
        200,
        "a session resuming is no new connection"
    );

    // The client leaves (atmosphere.js's close): its place is free again.
    let close = Client::new()
        .get(server.url(&format!("/limits/room?{}", atmo_query("close", &id, true))))
        .header("X-Forwarded-For", full)
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), 200);
    within(5.0, "a place freed by the close", async {
        loop {
            let again = open_atmosphere(&base, "streaming", full).await;
            if again.status() == 200 {
                return again;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(second);
}

/// Without `--trusted-proxies` a client's `X-Forwarded-For` is its own claim, never believed:
/// every request from one peer is one address, whatever it writes there.
#[tokio::test]
async fn a_forwarded_address_is_believed_only_from_a_trusted_balancer() {
    let server = TestServer::start(|c| c.max_connections_per_address = 1);
    let base = server.url("");
    let held = open_atmosphere(&base, "streaming", "198.51.100.1").await;
    assert_eq!(held.status(), 200);
    let refused = open_atmosphere(&base, "streaming", "198.51.100.2").await;
    assert_eq!(refused.status(), 429, "the claimed address is not believed");
    drop(held);
}

/// An address opens at most `--max-connects-per-address-per-sec` new sessions a second;
/// another address is not held back, and the refusals are counted.
#[tokio::test]
async fn an_address_over_its_connect_rate_is_refused() {
    let server = TestServer::start(|c| {
        trusting_loopback(c);
        c.max_connects_per_address_per_sec = 3;
    });
    let base = server.url("");
    let mut statuses = Vec::new();
    let mut open = Vec::new();
    for _ in 0..5 {
        let response = open_atmosphere(&base, "long-polling", "198.51.100.7").await;
        statuses.push(response.status().as_u16());
        open.push(response);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let why = open[3].headers()["x-atmosphere-error"].to_str().unwrap();
    assert!(why.contains("too many new connections"), "{why}");
    let other = open_atmosphere(&base, "long-polling", "198.51.100.8").await;
    assert_eq!(other.status(), 200);
    assert_eq!(limit_hits(&server, "connect_rate").await, 2);
}

/// Anonymous clients of one address share one publish bucket however many sessions they mint
/// (the ids are free to make up); another address has its own.
#[tokio::test]
async fn anonymous_sessions_of_one_address_share_one_publish_rate() {
    let server = TestServer::start(|c| {
        trusting_loopback(c);
        c.max_publishes_per_sec = 5;
    });
    let client = Client::new();
    let post = |id: String, from: &'static str| {
        client
            .post(server.url(&format!(
                "/limits/room?{}",
                atmo_query("long-polling", &id, true)
            )))
            .header("X-Forwarded-For", from)
            .body(format!("from {id}"))
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..10 {
        let status = post(format!("minted-{i}"), "198.51.100.3")
            .await
            .unwrap()
            .status();
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429]);
    let other = post("minted-x".into(), "198.51.100.4").await.unwrap();
    assert_eq!(other.status(), 200);
}

/// One user holds at most `--max-connections-per-user` sessions in the whole cluster: with
/// one on each of two nodes, a third is refused on either, while another user is served.
#[tokio::test]
async fn a_user_over_its_connection_cap_is_refused_across_nodes() {
    const SECRET: &str = "connection-caps-secret";
    let redis = Redis::start();
    let configure = |c: &mut nimbus::Config| {
        c.jwt_hmac_secret = Some(SECRET.into());
        c.session_secret = Some("shared-session-secret".into());
        c.max_connections_per_user = 2;
    };
    let (one, _) = TestServer::start_clustered(&redis.url(), "caps-1", configure, |_| {});
    let (two, _) = TestServer::start_clustered(&redis.url(), "caps-2", configure, |_| {});
    let alice = common::signed_token(SECRET, "alice", &[]);
    let bob = common::signed_token(SECRET, "bob", &[]);
    let on_one = open_as(&one.url(""), "streaming", None, Some(&alice)).await;
    assert_eq!(on_one.status(), 200);
    let on_two = open_as(&two.url(""), "streaming", None, Some(&alice)).await;
    assert_eq!(on_two.status(), 200);
    // The nodes write their counts to the cluster's store within 100 ms: wait until it has
    // both of alice's.
    within(10.0, "alice's two connections in the store", async {
        while redis
            .cli(&["HGET", "nimbus:pr:users:{connections:user}", "alice"])
            .trim()
            != "2"
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    for node in [&one, &two] {
        let refused = open_as(&node.url(""), "long-polling", None, Some(&alice)).await;
        assert_eq!(refused.status(), 429);
        let why = refused.headers()["x-atmosphere-error"].to_str().unwrap();
        assert!(why.contains("for your user"), "{why}");
    }
    let bobs = open_as(&one.url(""), "long-polling", None, Some(&bob)).await;
    assert_eq!(bobs.status(), 200);
    drop((on_one, on_two));
}

/// Through the balancer of the local cluster (HAProxy, round-robin, its config forwarding the
/// client's address to nodes that trust it), one address's connections are counted across
/// the nodes: with two held on two nodes, the third is refused on the next, while another
/// address the balancer forwards is let in.
#[tokio::test]
async fn an_address_is_capped_across_the_nodes_behind_the_balancer() {
    let cluster = Cluster::up("--max-connections-per-address 2");
    let base = cluster.lb("");
    let first = open_as(&base, "streaming", None, None).await;
    let second = open_as(&base, "streaming", None, None).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let node = |response: &Response| response.headers()["x-nimbus-node"].clone();
    assert_ne!(node(&first), node(&second), "round-robin: two nodes");
    within(10.0, "both connections in the store", async {
        let count =
            || cluster.redis_cli(&["HGET", "nimbus:pr:users:{connections:address}", "127.0.0.1"]);
        while count().trim() != "2" {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let third = open_as(&base, "streaming", None, None).await;
    assert_eq!(third.status(), 429, "on {:?}", node(&third));
    // The nodes trust the balancer (scripts/cluster.sh, as the compose file does): clients
    // that the header names apart are counted apart. (Here every client is on loopback, the
    // balancer's own range, so the entry a client writes stands for the address the balancer
    // would append in front of a real client.)
    let named = open_as(&base, "streaming", Some("198.51.100.30"), None).await;
    assert_eq!(named.status(), 200, "another address, through the balancer");
    drop((first, second, named));
}
