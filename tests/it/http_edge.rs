//! The HTTP edge: CORS, no-cache and `X-Nimbus-Node` headers, headers versus query parameters,
//! and bad input (each answered with a status and a sentence, after which the node keeps
//! serving everyone else).
use crate::common;

use std::time::Duration;

use common::{assert_still_serves, frame, topic_url, ws_open, ws_text, ws_until_close};
use futures::SinkExt;
use reqwest::{Method, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

const ORIGIN: &str = "https://app.example";

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// With `--cors-origins '*'` any `Origin` is echoed, with credentials allowed and the
/// Atmosphere headers exposed; a request without `Origin` gets no CORS headers.
#[tokio::test]
async fn cors_echoes_the_origin_with_credentials() {
    let server = common::TestServer::start(|c| c.cors_origins = vec!["*".into()]);
    let client = reqwest::Client::new();
    let url = topic_url(&server, "/edge/cors", "long-polling", "0", true);
    let response = client
        .get(&url)
        .header("Origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&response, "access-control-allow-credentials"),
        Some("true")
    );
    let exposed = header(&response, "access-control-expose-headers").unwrap();
    // atmosphere.js reads the session token from long-poll and streaming responses.
    for name in ["X-Atmosphere-tracking-id", "X-Atmosphere-Session-Token"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    assert!(header(&response, "vary").unwrap().contains("Origin"));

    // Errors carry CORS headers too, or the page could not read why it was refused.
    let error = client
        .get(server.url("/edge/cors"))
        .header("Origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(error.status(), 400);
    assert_eq!(header(&error, "access-control-allow-origin"), Some(ORIGIN));

    let response = client.get(&url).send().await.unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(header(&response, "access-control-allow-credentials"), None);
}

/// A preflight `OPTIONS` is answered by the node itself: the methods and the Atmosphere
/// headers a browser may send.
#[tokio::test]
async fn cors_preflight_lists_methods_and_headers() {
    let server = common::TestServer::start(|c| c.cors_origins = vec!["*".into()]);
    let response = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            server.url("/edge/preflight?X-Atmosphere-Transport=long-polling"),
        )
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let methods = header(&response, "access-control-allow-methods").unwrap();
    for method in ["OPTIONS", "GET", "POST"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = header(&response, "access-control-allow-headers").unwrap();
    for name in [
        "Content-Type",
        "X-Atmosphere-Framework",
        "X-Atmosphere-tracking-id",
        "X-Atmosphere-Transport",
        "X-Atmosphere-TrackMessageSize",
        "X-Heartbeat-Server",
        "X-atmo-protocol",
    ] {
        assert!(allowed.contains(name), "{name} missing from {allowed}");
    }
    assert_eq!(header(&response, "x-nimbus-node"), Some("test-node"));
}

/// With `cors_origins` set, only listed origins are echoed; others get no CORS headers and
/// their preflight is refused with 403.
#[tokio::test]
async fn cors_allow_list_refuses_other_origins() {
    let server =
        common::TestServer::start(|c| c.cors_origins = vec!["https://good.example".into()]);
    let client = reqwest::Client::new();
    let url = topic_url(&server, "/edge/allow", "long-polling", "0", true);

    let good = client
        .get(&url)
        .header("Origin", "https://good.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&good, "access-control-allow-origin"),
        Some("https://good.example")
    );
    assert_eq!(
        header(&good, "access-control-allow-credentials"),
        Some("true")
    );

    let evil = client
        .get(&url)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&evil, "access-control-allow-origin"), None);
    assert_eq!(header(&evil, "access-control-allow-credentials"), None);

    let preflight = |origin: &'static str| {
        client
            .request(Method::OPTIONS, server.url("/edge/allow"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
    let accepted = preflight("https://good.example").await.unwrap();
    assert_eq!(accepted.status(), 200);
    assert_eq!(
        header(&accepted, "access-control-allow-origin"),
        Some("https://good.example")
    );
}

/// Topic responses (long-poll, streaming) and errors forbid caching.
#[tokio::test]
async fn responses_forbid_caching() {
    let server = common::TestServer::start(|_| {});
    let poll = reqwest::get(topic_url(&server, "/edge/cache", "long-polling", "0", true))
        .await
        .unwrap();
    let stream = reqwest::get(topic_url(&server, "/edge/cache", "streaming", "0", true))
        .await
        .unwrap();
    let error = reqwest::get(server.url("/edge/cache")).await.unwrap();
    assert_eq!(error.status(), 400);
    for response in [&poll, &stream, &error] {
        let cache = header(response, "cache-control").unwrap();
        assert!(
            cache.contains("no-cache") && cache.contains("no-store"),
            "{cache}"
        );
        assert_eq!(header(response, "pragma"), Some("no-cache"));
        assert!(header(response, "expires").is_some());
    }
}

/// Every response names the node in `X-Nimbus-Node`: successes, errors of every kind,
/// unknown reserved paths, preflights and the WebSocket 101.
#[tokio::test]
async fn every_response_names_the_node() {
    let server = common::TestServer::start(|c| c.max_message_bytes = 16);
    let client = reqwest::Client::new();
    let mut checked = Vec::new();
    let mut check = |what: &str, response: reqwest::Response, status: u16| {
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(
            header(&response, "x-nimbus-node"),
            Some("test-node"),
            "{what}"
        );
        checked.push(what.to_string());
    };
    let q = |transport: &str| common::atmo_query(transport, "0", true);

    check(
        "healthz",
        client.get(server.url("/healthz")).send().await.unwrap(),
        200,
    );
    check(
        "stats",
        client
            .get(server.url("/_nimbus/stats"))
            .send()
            .await
            .unwrap(),
        200,
    );
    check(
        "handshake poll",
        client
            .get(server.url(&format!("/n/t?{}", q("long-polling"))))
            .send()
            .await
            .unwrap(),
        200,
    );
    check(
        "no params",
        client.get(server.url("/n/t")).send().await.unwrap(),
        400,
    );
    check(
        "unknown transport",
        client
            .get(server.url("/n/t?X-Atmosphere-Transport=pigeon"))
            .send()
            .await
            .unwrap(),
        400,
    );
    check(
        "too large",
        client
            .post(server.url(&format!("/n/t?{}", q("long-polling"))))
            .body("x".repeat(17))
            .send()
            .await
            .unwrap(),
        413,
    );
    check(
        "old client",
        client
            .get(
                server.url("/n/t?X-Atmosphere-Transport=long-polling&X-Atmosphere-Framework=2.0.0"),
            )
            .send()
            .await
            .unwrap(),
        501,
    );
    check(
        "unknown reserved path",
        client
            .get(server.url("/_nimbus/no-such-thing"))
            .send()
            .await
            .unwrap(),
        404,
    );
    check(
        "admin disabled",
        client
            .post(server.url("/_nimbus/admin/drop-transports"))
            .send()
            .await
            .unwrap(),
        404,
    );
    check(
        "method not allowed",
        client.put(server.url("/n/t")).send().await.unwrap(),
        405,
    );
    check(
        "preflight",
        client
            .request(Method::OPTIONS, server.url("/n/t"))
            .send()
            .await
            .unwrap(),
        200,
    );

    let (_ws, response) = ws_open(&server, "/n/t", "0", true).await;
    assert_eq!(response.headers()["x-nimbus-node"], "test-node");
    assert_eq!(checked.len(), 11);
}

/// Paths under the reserved `/_nimbus/` prefix are not topics: an unknown one is a 404, and a
/// client cannot subscribe there.
#[tokio::test]
async fn reserved_paths_are_not_topics() {
    let server = common::TestServer::start(|_| {});
    let response = reqwest::get(topic_url(
        &server,
        "/_nimbus/stats/sub",
        "long-polling",
        "0",
        true,
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(common::stat(&server, "connections").await, 0);
}

/// Every `X-Atmosphere-*` value may come as a header instead of a query parameter, and a
/// header wins over a query parameter of the same name.
#[tokio::test]
async fn headers_are_read_and_win_over_the_query() {
    let server = common::TestServer::start(|_| {});
    let client = reqwest::Client::new();

    // Headers only.
    let response = client
        .get(server.url("/edge/headers"))
        .header("X-Atmosphere-tracking-id", "0")
        .header("X-Atmosphere-Framework", "5.0.7")
        .header("X-Atmosphere-Transport", "long-polling")
        .header("X-Atmosphere-TrackMessageSize", "true")
        .header("X-atmo-protocol", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let uuid = header(&response, "x-atmosphere-tracking-id")
        .unwrap()
        .to_string();
    assert_eq!(
        response.text().await.unwrap(),
        frame(&format!("{uuid}|0|X|"))
    );

    // The query says SSE, no TrackMessageSize, id `query-id`; the headers say long-polling,
    // TrackMessageSize, id `header-id`: the answer is a length-prefixed long-poll handshake
    // for `header-id` (a new id, so the poll starts with the handshake).
    let response = client
        .get(server.url(
            "/edge/headers?X-Atmosphere-Transport=sse&X-Atmosphere-tracking-id=query-id\
             &X-Atmosphere-TrackMessageSize=false&X-atmo-protocol=true&X-Atmosphere-Framework=5.0.7",
        ))
        .header("X-Atmosphere-Transport", "long-polling")
        .header("X-Atmosphere-tracking-id", "header-id")
        .header("X-Atmosphere-TrackMessageSize", "true")
        .send()
        .await
        .unwrap();
    assert!(header(&response, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        header(&response, "x-atmosphere-tracking-id"),
        Some("header-id")
    );
    assert_eq!(response.text().await.unwrap(), frame("header-id|0|X|"));
}

/// An unknown transport is a 400 that names the transports, over HTTP and WebSocket alike.
#[tokio::test]
async fn an_unknown_transport_is_400() {
    let server = common::TestServer::start(|_| {});
    let response = reqwest::get(topic_url(&server, "/edge/bad", "carrier-pigeon", "0", true))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("websocket, sse, streaming, long-polling"),
        "{body}"
    );

    let url = server.ws_url(&format!(
        "/edge/bad?{}",
        common::atmo_query("carrier-pigeon", "0", true)
    ));
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected a 400, got {other:?}"),
    }
    assert_still_serves(&server).await;
}

/// Tracking ids are `[A-Za-z0-9_-]{1,128}`: anything else is a 400 (GET, POST and WebSocket
/// upgrade); 128 characters are fine.
#[tokio::test]
async fn a_malformed_tracking_id_is_400() {
    let server = common::TestServer::start(|_| {});
    let client = reqwest::Client::new();
    let too_long = "a".repeat(129);
    for id in [
        "a%20b",
        "abc$",
        "%C3%A9t%C3%A9",
        "a.b",
        "a%2Fb",
        too_long.as_str(),
    ] {
        let url = topic_url(&server, "/edge/id", "long-polling", id, true);
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 400, "GET with id {id:?}");
        let body = response.text().await.unwrap();
        assert!(body.contains("[A-Za-z0-9_-]"), "{body}");
        assert_eq!(
            client.post(&url).body("hi").send().await.unwrap().status(),
            400
        );
        let ws = server.ws_url(&format!(
            "/edge/id?{}",
            common::atmo_query("websocket", id, true)
        ));
        match tokio_tungstenite::connect_async(ws).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
            other => panic!("expected a 400 for {id:?}, got {other:?}"),
        }
    }
    let longest = "Z".repeat(128);
    let body = common::lp_poll(&server, "/edge/id", &longest, true).await;
    assert_eq!(body, frame(&format!("{longest}|0|X|")));
    assert_still_serves(&server).await;
}

/// A POST larger than `max_message_bytes` is refused with 413 (one at the limit passes), and a
/// POST that is not UTF-8 with 400.
#[tokio::test]
async fn oversize_and_invalid_posts_are_refused() {
    let server = common::TestServer::start(|c| c.max_message_bytes = 1024);
    let topic = "/edge/post";
    let id = common::lp_handshake(&server, topic, true).await;
    let client = reqwest::Client::new();

    let response = client
        .post(topic_url(&server, topic, "long-polling", "sender", true))
        .body("x".repeat(1025))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.text().await.unwrap().contains("1024"));

    let status = common::post(&client, &server, topic, "sender", vec![b'a', 0xff, 0xfe]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let exactly = "y".repeat(1024);
    assert_eq!(
        common::post(&client, &server, topic, "sender", exactly.clone()).await,
        200
    );
    // Only the acceptable message was published.
    assert_eq!(
        common::lp_poll(&server, topic, &id, true).await,
        frame(&exactly)
    );
    assert_eq!(common::stat(&server, "published").await, 1);
    assert_still_serves(&server).await;
}

/// A GET on a topic path without Atmosphere parameters is a 400 whose body says what to send.
#[tokio::test]
async fn a_plain_get_on_a_topic_explains_what_is_expected() {
    let server = common::TestServer::start(|_| {});
    let response = reqwest::get(server.url("/chat/lobby")).await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(header(&response, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    let body = response.text().await.unwrap();
    assert!(body.contains("X-Atmosphere-Transport"), "{body}");
    assert!(body.contains("websocket"), "{body}");
    assert_still_serves(&server).await;
}

/// A client older than 2.2.1 (`X-Atmosphere-Framework`) is told 501 with `X-Atmosphere-error`,
/// as the Java server does; atmosphere.js 5 (which reports `5.0.7`) is accepted.
#[tokio::test]
async fn an_old_protocol_version_is_501() {
    let server = common::TestServer::start(|_| {});
    for version in ["2.1.9", "1.0", "2.2.0-javascript", "garbage"] {
        let response = reqwest::get(server.url(&format!(
            "/edge/old?X-Atmosphere-Transport=long-polling&X-Atmosphere-tracking-id=0\
             &X-Atmosphere-Framework={version}&X-atmo-protocol=true"
        )))
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED, "{version}");
        assert_eq!(
            header(&response, "x-atmosphere-error"),
            Some("Atmosphere Protocol version not supported.")
        );
    }
    for version in ["2.2.1", "3.1.3-javascript", "5.0.7"] {
        let response = reqwest::get(server.url(&format!(
            "/edge/old?X-Atmosphere-Transport=long-polling&X-Atmosphere-tracking-id=0\
             &X-Atmosphere-Framework={version}&X-atmo-protocol=true"
        )))
        .await
        .unwrap();
        assert_eq!(response.status(), 200, "{version}");
    }
    assert_still_serves(&server).await;
}

/// A WebSocket frame over `max_message_bytes` closes the socket with 1009 (one at the limit is
/// published); other clients of the topic are unaffected.
#[tokio::test]
async fn an_oversize_websocket_frame_closes_with_1009() {
    let server = common::TestServer::start(|c| c.max_message_bytes = 1024);
    let topic = "/edge/ws-size";
    let (mut observer, _) = ws_open(&server, topic, "observer", true).await;
    ws_text(&mut observer).await;
    let (mut ws, _) = ws_open(&server, topic, "big-sender", true).await;
    ws_text(&mut ws).await;

    let exactly = "z".repeat(1024);
    common::ws_send(&mut ws, &exactly).await;
    assert_eq!(ws_text(&mut observer).await, frame(&exactly));

    common::ws_send(&mut ws, &"z".repeat(1025)).await;
    let (close, texts) = ws_until_close(&mut ws, 5.0).await;
    assert_eq!(
        texts,
        vec![frame(&exactly)],
        "its own message, then the close"
    );
    assert_eq!(close.expect("a close frame").code, CloseCode::Size);
    common::ws_silent(&mut observer, Duration::from_millis(200)).await;
    assert_eq!(common::stat(&server, "published").await, 1);
    assert_still_serves(&server).await;
}

/// A WebSocket message that is not UTF-8 closes the socket with 1007 ("invalid frame payload
/// data"), whether it came as a binary frame or as a text frame; a binary frame that is
/// valid UTF-8 is published as text.
#[tokio::test]
async fn invalid_utf8_over_websocket_closes_with_1007() {
    let server = common::TestServer::start(|_| {});
    let topic = "/edge/ws-utf8";
    let (mut observer, _) = ws_open(&server, topic, "observer", true).await;
    ws_text(&mut observer).await;

    let (mut binary, _) = ws_open(&server, topic, "binary-sender", true).await;
    ws_text(&mut binary).await;
    binary
        .send(WsMessage::binary("binary but UTF-8 ü".as_bytes().to_vec()))
        .await
        .unwrap();
    assert_eq!(ws_text(&mut observer).await, frame("binary but UTF-8 ü"));
    binary
        .send(WsMessage::binary(vec![b'a', 0xff, 0xfe]))
        .await
        .unwrap();
    let (close, _) = ws_until_close(&mut binary, 5.0).await;
    assert_eq!(close.expect("a close frame").code, CloseCode::Invalid);

    let (mut text, _) = ws_open(&server, topic, "text-sender", true).await;
    ws_text(&mut text).await;
    let raw = Frame::message(vec![b'b', 0xc3, 0x28], OpCode::Data(Data::Text), true);
    text.send(WsMessage::Frame(raw)).await.unwrap();
    let (close, _) = ws_until_close(&mut text, 5.0).await;
    assert_eq!(close.expect("a close frame").code, CloseCode::Invalid);

    common::ws_silent(&mut observer, Duration::from_millis(200)).await;
    assert_still_serves(&server).await;
}

/// A malformed `X-Heartbeat-Server` is a 400.
#[tokio::test]
async fn a_malformed_heartbeat_request_is_400() {
    let server = common::TestServer::start(|_| {});
    let url = format!(
        "{}&X-Heartbeat-Server=soon",
        topic_url(&server, "/edge/hb", "long-polling", "0", true)
    );
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("X-Heartbeat-Server"));
    assert_still_serves(&server).await;
}

/// A WebSocket client connected through a series of bad requests from others keeps receiving,
/// and nothing of the bad requests reached it.
#[tokio::test]
async fn bad_input_does_not_disturb_connected_clients() {
    let server = common::TestServer::start(|c| c.max_message_bytes = 64);
    let topic = "/edge/calm";
    let (mut observer, _) = ws_open(&server, topic, "observer", true).await;
    ws_text(&mut observer).await;
    let client = reqwest::Client::new();
    let q = common::atmo_query("long-polling", "0", true);
    for (method, path, body, status) in [
        (Method::GET, topic.to_string(), "", 400),
        (
            Method::GET,
            format!("{topic}?X-Atmosphere-Transport=nope"),
            "",
            400,
        ),
        (
            Method::GET,
            format!("{topic}?X-Atmosphere-Transport=sse&X-Atmosphere-tracking-id=%00"),
            "",
            400,
        ),
        (
            Method::GET,
            format!("{topic}?X-Atmosphere-Transport=sse&X-Atmosphere-Framework=1.0"),
            "",
            501,
        ),
        (
            Method::POST,
            format!("{topic}?{q}"),
            "0123456789012345678901234567890123456789012345678901234567890123456789",
            413,
        ),
        (Method::DELETE, format!("{topic}?{q}"), "", 405),
        (Method::GET, format!("{topic}?%%%&&=="), "", 400),
    ] {
        let response = client
            .request(method.clone(), server.url(&path))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
    }
    common::publish_all(&server, topic, &["fine".to_string()]).await;
    assert_eq!(ws_text(&mut observer).await, "4|fine");
    common::ws_silent(&mut observer, Duration::from_millis(200)).await;
    assert_still_serves(&server).await;
}

/// Browsers do not apply CORS to WebSocket upgrades, so with an allow-list the node itself
/// refuses an upgrade from another origin (403) and accepts one from a listed origin.
#[tokio::test]
async fn websocket_upgrade_respects_the_allow_list() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server =
        common::TestServer::start(|c| c.cors_origins = vec!["https://good.example".into()]);
    let url = server.ws_url(&format!(
        "/edge/ws-origin?{}",
        common::atmo_query("websocket", "0", true)
    ));
    let request_from = |origin: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    let refused = tokio_tungstenite::connect_async(request_from("https://evil.example")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("upgrade from a foreign origin was not refused: {other:?}"),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request_from("https://good.example"))
        .await
        .expect("listed origin is accepted");
    let handshake = common::ws_text(&mut ws).await;
    assert!(handshake.ends_with("|0|X|"), "{handshake}");
}

/// Requests that ask to upgrade the connection leave the HTTP dispatcher for the node's own
/// WebSocket handling; those it does not accept still get a complete HTTP answer (status,
/// sentence, the node's headers) and the connection is closed after it.
#[tokio::test]
async fn refused_upgrades_get_a_whole_answer_and_a_closed_connection() {
    let server = common::TestServer::start(|_| {});
    // Reading to the end proves the node closed the connection.
    let exchange = |request: String| async move {
        common::raw_exchange(server.addr, &request)
            .await
            .to_ascii_lowercase()
    };
    let upgrade = common::UPGRADE_HEADERS;

    // A malformed tracking id on a WebSocket upgrade.
    let answer = exchange(format!(
        "GET /edge/upgrade?{} HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n",
        common::atmo_query("websocket", "a.b", true)
    ))
    .await;
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("x-nimbus-node: "), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains("[a-za-z0-9_-]"), "the sentence: {answer}");

    // An upgrade that is not a WebSocket handshake (no key) on a topic.
    let answer = exchange(format!(
        "GET /edge/upgrade?{} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        common::atmo_query("websocket", "0", true)
    ))
    .await;
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("x-nimbus-node: "), "{answer}");

    // An upgrade header on a reserved path: the ordinary answer.
    let answer = exchange(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n")).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    assert!(answer.contains("x-nimbus-node: "), "{answer}");
    assert_still_serves(&server).await;
}
