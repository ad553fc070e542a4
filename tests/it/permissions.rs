//! Topic namespaces from the configuration file (`--config`): who may subscribe and publish,
//! token grants, user-limited topics; refused on each protocol's wire.
use crate::common;

use common::{atmo_query, ws_until_close, BodyReader, TestServer};

const SECRET: &str = "permissions-secret";
const CONFIG: &str = r#"
[[namespace]]
prefix = "/chat/"
subscribe = "anonymous"
publish = "user"

[[namespace]]
prefix = "/chat/vip/"
subscribe = "grant"
publish = "grant"

[[namespace]]
prefix = "/news/"
publish = "nobody"

[[namespace]]
prefix = "/dm/"
subscribe = "user"
publish = "user"
user_limited = true
"#;

fn token(sub: &str, topics: &[&str]) -> String {
    common::signed_token(SECRET, sub, topics)
}

fn server() -> TestServer {
    let path = std::env::temp_dir().join(format!("nimbus-permissions-{}.toml", std::process::id()));
    std::fs::write(&path, CONFIG).unwrap();
    TestServer::start(move |c| {
        c.jwt_hmac_secret = Some(SECRET.into());
        c.allow_anonymous = true;
        c.config = Some(path);
    })
}

fn url(server: &TestServer, topic: &str, transport: &str, auth: Option<&str>) -> String {
    let mut query = atmo_query(transport, "0", true);
    if let Some(auth) = auth {
        query.push_str(&format!("&X-Atmosphere-Auth={auth}"));
    }
    server.url(&format!("{topic}?{query}"))
}

async fn get_status(url: String) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

async fn post_status(url: String) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .body("hi")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let reason = response
        .headers()
        .get("x-atmosphere-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let _ = response.text().await;
    (status, reason)
}

/// Atmosphere: each namespace's rules hold for subscribing (GET) and publishing (POST), a
/// refusal is 403 naming why, and a topic in no namespace stays open.
#[tokio::test]
async fn atmosphere_clients_meet_their_namespace() {
    let server = server();
    let alice = token("alice", &[]);
    let vera = token("vera", &["/chat/vip/*"]);
    let lp = "long-polling";
    assert_eq!(get_status(url(&server, "/chat/lobby", lp, None)).await, 200);
    let (status, reason) = post_status(url(&server, "/chat/lobby", lp, None)).await;
    assert_eq!(status, 403);
    assert!(reason.contains("signed-in users"), "{reason}");
    assert_eq!(
        post_status(url(&server, "/chat/lobby", lp, Some(&alice)))
            .await
            .0,
        200
    );

    assert_eq!(
        get_status(url(&server, "/chat/vip/lounge", lp, Some(&alice))).await,
        403
    );
    assert_eq!(
        get_status(url(&server, "/chat/vip/lounge", lp, Some(&vera))).await,
        200
    );
    assert_eq!(
        post_status(url(&server, "/chat/vip/lounge", lp, Some(&vera)))
            .await
            .0,
        200
    );

    assert_eq!(
        get_status(url(&server, "/news/today", "sse", None)).await,
        200
    );
    assert_eq!(
        post_status(url(&server, "/news/today", lp, Some(&alice)))
            .await
            .0,
        403
    );

    let eve = token("eve", &[]);
    let bob = token("bob", &[]);
    assert_eq!(
        get_status(url(&server, "/dm/alice,bob", lp, Some(&bob))).await,
        200
    );
    assert_eq!(
        get_status(url(&server, "/dm/alice,bob", lp, Some(&eve))).await,
        403
    );
    assert_eq!(
        get_status(url(&server, "/dm/alice,bob", lp, None)).await,
        403
    );

    assert_eq!(
        post_status(url(&server, "/elsewhere", lp, None)).await.0,
        200
    );
}

/// A WebSocket publishing where it may only listen is closed with `1008` and the reason;
/// its listeners receive nothing.
#[tokio::test]
async fn a_websocket_publishing_where_it_may_not_is_closed() {
    let server = server();
    let mut listener = BodyReader::open(&url(&server, "/news/wire", "streaming", None)).await;
    let ws_url = url(
        &server,
        "/news/wire",
        "websocket",
        Some(&token("alice", &[])),
    )
    .replacen("http", "ws", 1);
    let (mut ws, _) = common::ws_open_url(&ws_url).await;
    let _handshake = common::ws_text(&mut ws).await;
    common::ws_send(&mut ws, "not allowed").await;
    let (close, _) = ws_until_close(&mut ws, 5.0).await;
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("server only"), "{}", close.reason);
    let heard = listener
        .read_for(std::time::Duration::from_millis(300))
        .await;
    assert!(!heard.contains("not allowed"), "{heard}");
}

/// Cettia: opening a socket on a topic its user may not subscribe to is 403; a `message` to a
/// topic where it may not publish is rejected through its reply callback.
#[tokio::test]
async fn cettia_sockets_meet_their_namespace() {
    let server = server();
    let open = |topic: &str, tok: &str| {
        server.url(&format!(
            "/cettia?cettia-version=1.0&cettia-transport-version=1.0&cettia-transport-name=longpoll\
             &cettia-transport-when=open&topic={topic}&token={tok}"
        ))
    };
    assert_eq!(
        get_status(open("/chat/vip/lounge", &token("alice", &[]))).await,
        403
    );
    assert_eq!(
        get_status(open("/chat/vip/lounge", &token("vera", &["/chat/vip/*"]))).await,
        200
    );

    let ws = server.ws_url(&format!(
        "/cettia?cettia-version=1.0&cettia-transport-name=websocket&topic=/news/desk&token={}",
        token("alice", &[])
    ));
    let (mut ws, _) = common::ws_open_url(&ws).await;
    let _handshake = common::ws_text(&mut ws).await;
    common::ws_send(
        &mut ws,
        r#"{"id":1,"type":"message","data":"scoop","reply":true}"#,
    )
    .await;
    let reply = common::ws_text(&mut ws).await;
    assert!(reply.contains("\"type\":\"reply\""), "{reply}");
    assert!(
        reply.contains("\"exception\":true") && reply.contains("server only"),
        "{reply}"
    );
}
