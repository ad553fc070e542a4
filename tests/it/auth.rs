//! Identity at the door, the same for both protocols and every transport: JSON Web Tokens
//! (HS256, RS256, ES256) where each protocol's client puts them, Atmosphere's 401 answers, a
//! live connection closed when its token expires, and session ids bound to their user.
use crate::common;

use common::{atmo_query, within, ws_until_close, BodyReader, TestServer};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use tokio_tungstenite::tungstenite;

const SECRET: &str = "test-secret";

fn now() -> u64 {
    nimbus::session::identity::unix_now()
}

/// An HS256 token for `sub` expiring `exp_in` seconds from now (negative: already expired).
fn token(sub: &str, exp_in: i64) -> String {
    token_with(SECRET, sub, exp_in)
}

fn token_with(secret: &str, sub: &str, exp_in: i64) -> String {
    let exp = (now() as i64 + exp_in) as u64;
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn secured() -> TestServer {
    TestServer::start(|c| c.jwt_hmac_secret = Some(SECRET.into()))
}

/// The URL of `topic` for `transport` as atmosphere.js 5 builds it with `authToken`.
fn atmo_url(
    server: &TestServer,
    topic: &str,
    transport: &str,
    id: &str,
    auth: Option<&str>,
) -> String {
    let mut query = atmo_query(transport, id, true);
    if let Some(auth) = auth {
        query.push_str(&format!("&X-Atmosphere-Auth={auth}"));
    }
    server.url(&format!("{topic}?{query}"))
}

async fn post_as(server: &TestServer, topic: &str, id: &str, auth: &str, text: &str) -> u16 {
    reqwest::Client::new()
        .post(atmo_url(server, topic, "long-polling", id, Some(auth)))
        .body(text.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A valid token opens each of the four transports; a message posted with it reaches all.
#[tokio::test]
async fn a_valid_token_opens_every_atmosphere_transport() {
    let server = secured();
    let alice = token("alice", 300);
    let topic = "/auth/open";
    let ws_url = atmo_url(&server, topic, "websocket", "0", Some(&alice)).replacen("http", "ws", 1);
    let (mut ws, response) = common::ws_open_url(&ws_url).await;
    assert_eq!(response.status(), 101);
    let _handshake = common::ws_text(&mut ws).await;
    let mut sse = BodyReader::open(&atmo_url(&server, topic, "sse", "0", Some(&alice))).await;
    let mut streaming =
        BodyReader::open(&atmo_url(&server, topic, "streaming", "0", Some(&alice))).await;
    let handshake = reqwest::get(atmo_url(&server, topic, "long-polling", "0", Some(&alice)))
        .await
        .unwrap();
    assert_eq!(handshake.status(), 200);
    let id = handshake.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    // Everyone is in before the message goes out.
    common::wait_stat(&server, "connections", 5.0, |n| n >= 4).await;
    assert_eq!(post_as(&server, topic, &id, &alice, "hello").await, 200);

    assert_eq!(common::ws_text(&mut ws).await, "5|hello");
    sse.read_until(5.0, |t| t.contains("5|hello")).await;
    streaming.read_until(5.0, |t| t.contains("5|hello")).await;
    let polled = reqwest::get(atmo_url(&server, topic, "long-polling", &id, Some(&alice)))
        .await
        .unwrap();
    assert_eq!(polled.status(), 200);
    assert!(polled.text().await.unwrap().contains("5|hello"));
}

/// Without a token, with an expired one or a forged one, every transport (and a POST) gets
/// 401 with `X-Atmosphere-error`; an expired token also gets `X-Atmosphere-Auth-Expired`,
/// which atmosphere.js reports through `authExpired`.
#[tokio::test]
async fn a_missing_expired_or_forged_token_is_401_on_every_transport() {
    let server = secured();
    let expired = token("alice", -120);
    let forged = token_with("not-the-secret", "alice", 300);
    let cases = [
        (None, false),
        (Some(expired.as_str()), true),
        (Some(forged.as_str()), false),
    ];
    for (auth, is_expired) in cases {
        for transport in ["sse", "streaming", "long-polling"] {
            let response = reqwest::get(atmo_url(&server, "/auth/no", transport, "0", auth))
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{transport} with {auth:?}");
            assert!(response.headers().contains_key("x-atmosphere-error"));
            assert_eq!(
                response.headers().contains_key("x-atmosphere-auth-expired"),
                is_expired,
                "{transport} with {auth:?}"
            );
        }
        let ws_url =
            atmo_url(&server, "/auth/no", "websocket", "0", auth).replacen("http", "ws", 1);
        match tokio_tungstenite::connect_async(ws_url).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected a 401 upgrade refusal, got {other:?}"),
        }
        let post = reqwest::Client::new()
            .post(atmo_url(&server, "/auth/no", "long-polling", "0", auth))
            .body("intrusion")
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 401);
    }
    let metrics = common::scrape(&server).await;
    for reason in ["missing", "expired", "invalid"] {
        let line = format!("nimbus_auth_failures_total{{reason=\"{reason}\"}}");
        let count = common::sample(&metrics, &line);
        assert_eq!(count, 5, "{reason}: 4 transports and a POST");
    }
}

/// A WebSocket whose token expires mid-session is closed with `1008` "token expired"; an
/// SSE stream and a streaming response end; a reconnect with the old token is 401 and one
/// with a new token is served again.
#[tokio::test]
async fn a_live_connection_is_closed_when_its_token_expires() {
    let server = secured();
    let short = token("bob", 2);
    let topic = "/auth/expiring";
    let ws_url = atmo_url(&server, topic, "websocket", "0", Some(&short)).replacen("http", "ws", 1);
    let (mut ws, response) = common::ws_open_url(&ws_url).await;
    let id = response.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut sse = BodyReader::open(&atmo_url(&server, topic, "sse", "0", Some(&short))).await;
    let mut streaming =
        BodyReader::open(&atmo_url(&server, topic, "streaming", "0", Some(&short))).await;
    let poller = reqwest::get(atmo_url(&server, topic, "long-polling", "0", Some(&short)))
        .await
        .unwrap();
    let poller_id = poller.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    // A parked poll is answered when the token runs out (its hold is 30 s without heartbeats
    // asked for, so an answer within 15 s is the expiry's).
    let parked = tokio::spawn({
        let url = atmo_url(&server, topic, "long-polling", &poller_id, Some(&short))
            + "&X-Heartbeat-Server=0";
        async move { reqwest::get(url).await.unwrap().status() }
    });

    // The door takes a token 5 s past its `exp` (issuers' clocks drift): the close comes then.
    let (close, _) = ws_until_close(&mut ws, 15.0).await;
    let close = close.expect("a close frame with a reason");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "token expired");
    sse.read_to_end(10.0).await;
    streaming.read_to_end(10.0).await;
    assert_eq!(within(10.0, "the parked poll", parked).await.unwrap(), 200);
    let next = reqwest::get(atmo_url(
        &server,
        topic,
        "long-polling",
        &poller_id,
        Some(&short),
    ))
    .await
    .unwrap();
    assert_eq!(next.status(), 401);

    let again = reqwest::get(atmo_url(&server, topic, "sse", &id, Some(&short)))
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    assert!(again.headers().contains_key("x-atmosphere-auth-expired"));
    let fresh = token("bob", 300);
    let ws_url = atmo_url(&server, topic, "websocket", &id, Some(&fresh)).replacen("http", "ws", 1);
    let (_ws, response) = common::ws_open_url(&ws_url).await;
    assert_eq!(response.status(), 101);
}

/// The take-over probe: a tracking id is bound to the user it was issued to. Another user's
/// poll, POST or close with it is 403 and sees nothing of the victim's messages; a made-up id
/// is 403 too; the victim keeps its session.
#[tokio::test]
async fn another_users_tracking_id_is_refused() {
    let server = secured();
    let (victim, mallory) = (token("victim", 300), token("mallory", 300));
    let topic = "/auth/private";
    let handshake = reqwest::get(atmo_url(&server, topic, "long-polling", "0", Some(&victim)))
        .await
        .unwrap();
    let id = handshake.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    let poll = reqwest::get(atmo_url(
        &server,
        topic,
        "long-polling",
        &id,
        Some(&mallory),
    ))
    .await
    .unwrap();
    assert_eq!(poll.status(), 403);
    assert!(!poll.text().await.unwrap().contains('|'));
    assert_eq!(
        post_as(&server, topic, &id, &mallory, "as the victim").await,
        403
    );
    let close = reqwest::Client::new()
        .post(atmo_url(&server, topic, "close", &id, Some(&mallory)))
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), 403);
    let made_up = reqwest::get(atmo_url(
        &server,
        topic,
        "long-polling",
        "invented-id",
        Some(&mallory),
    ))
    .await
    .unwrap();
    assert_eq!(made_up.status(), 403);

    // The victim's session still works and receives what is published.
    let victim_poll = tokio::spawn({
        let url = atmo_url(&server, topic, "long-polling", &id, Some(&victim));
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    });
    common::wait_stat(&server, "connections", 5.0, |n| n >= 1).await;
    let publisher = token("publisher", 300);
    // Posting with no tracking id at all: a plain POST with the token as a header.
    let status = reqwest::Client::new()
        .post(server.url(topic))
        .header("X-Atmosphere-Auth", &publisher)
        .body("17|secret-for-victim")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let body = within(10.0, "the victim's poll", victim_poll)
        .await
        .unwrap();
    assert!(body.contains("secret-for-victim"), "{body}");
}

/// RS256 and ES256 tokens verify against `--jwt-public-key`.
#[tokio::test]
async fn public_key_tokens_are_verified() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    for (public, private, algorithm) in [
        ("rsa-public.pem", "rsa-private.pem", Algorithm::RS256),
        ("ec-public.pem", "ec-private.pem", Algorithm::ES256),
    ] {
        let server =
            TestServer::start(|c| c.jwt_public_key = Some(format!("{keys}/{public}").into()));
        let pem = std::fs::read(format!("{keys}/{private}")).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .unwrap();
        let claims = serde_json::json!({"sub": "carol", "exp": now() + 300});
        let good = encode(&Header::new(algorithm), &claims, &key).unwrap();
        let ok = reqwest::get(atmo_url(
            &server,
            "/auth/pk",
            "long-polling",
            "0",
            Some(&good),
        ))
        .await
        .unwrap();
        assert_eq!(ok.status(), 200, "{algorithm:?}");
        // An HS256 token made with the public key as its secret (the classic confusion).
        let pem_text = std::fs::read_to_string(format!("{keys}/{public}")).unwrap();
        let confused = token_with(&pem_text, "carol", 300);
        let refused = reqwest::get(atmo_url(
            &server,
            "/auth/pk",
            "long-polling",
            "0",
            Some(&confused),
        ))
        .await
        .unwrap();
        assert_eq!(refused.status(), 401, "{algorithm:?}");
    }
}

/// With `--allow-anonymous`, a client without a token is served; one with a bad token is not.
#[tokio::test]
async fn anonymous_clients_are_served_where_allowed() {
    let server = TestServer::start(|c| {
        c.jwt_hmac_secret = Some(SECRET.into());
        c.allow_anonymous = true;
    });
    let open = reqwest::get(atmo_url(&server, "/auth/anon", "long-polling", "0", None))
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let forged = token_with("wrong", "x", 300);
    let bad = reqwest::get(atmo_url(
        &server,
        "/auth/anon",
        "long-polling",
        "0",
        Some(&forged),
    ))
    .await
    .unwrap();
    assert_eq!(bad.status(), 401);
}

// === Cettia ===

const CETTIA: &str = "cettia-version=1.0&cettia-transport-version=1.0";

fn cettia_open(server: &TestServer, name: &str, extra: &str) -> String {
    server.url(&format!(
        "/cettia?{CETTIA}&cettia-transport-name={name}&cettia-transport-when=open{extra}"
    ))
}

/// The `cettia-id` a socket handshake names (the second SSE event of a stream).
fn socket_id_of(handshake: &str) -> String {
    let start = handshake.find("cettia-id=").expect("a socket handshake") + "cettia-id=".len();
    handshake[start..]
        .split(['&', '\n', '"'])
        .next()
        .unwrap()
        .to_string()
}

/// A Cettia socket opens with a token in its URI (`token=`), is refused without one (401), and
/// another user cannot resume it with its `cettia-id` (403).
#[tokio::test]
async fn cettia_sockets_need_a_token_and_keep_their_ids() {
    let server = secured();
    let dave = token("dave", 300);
    let mut stream = BodyReader::open(&cettia_open(
        &server,
        "stream",
        &format!("&cettia-transport-sse=true&token={dave}"),
    ))
    .await;
    let handshake = stream.read_until(5.0, |t| t.contains("cettia-id=")).await;
    let id = socket_id_of(&handshake);

    for (token, status) in [
        (None, 401),
        (Some(token_with("x", "dave", 300)), 401),
        (Some(token("dave", -120)), 401),
    ] {
        let extra = token.map(|t| format!("&token={t}")).unwrap_or_default();
        let response = reqwest::get(cettia_open(&server, "longpoll", &extra))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{extra}");
    }
    let eve = token("eve", 300);
    let resume = reqwest::get(cettia_open(
        &server,
        "longpoll",
        &format!("&cettia-id={id}&token={eve}"),
    ))
    .await
    .unwrap();
    assert_eq!(resume.status(), 403);
    let own = reqwest::get(cettia_open(
        &server,
        "longpoll",
        &format!("&cettia-id={id}&token={dave}"),
    ))
    .await
    .unwrap();
    assert_eq!(own.status(), 200);
}

/// A Cettia WebSocket whose token expires hears why (an `error` event) and is closed `1008`.
#[tokio::test]
async fn a_cettia_websocket_is_closed_when_its_token_expires() {
    let server = secured();
    let short = token("frank", 2);
    let url = server.ws_url(&format!(
        "/cettia?{CETTIA}&cettia-transport-name=websocket&token={short}"
    ));
    let (mut ws, _) = common::ws_open_url(&url).await;
    let (close, texts) = ws_until_close(&mut ws, 15.0).await;
    assert!(
        texts
            .iter()
            .any(|t| t.contains("\"type\":\"error\"") && t.contains("token expired")),
        "{texts:?}"
    );
    assert_eq!(u16::from(close.expect("a close frame").code), 1008);
}
