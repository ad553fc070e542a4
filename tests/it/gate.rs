//! The gate, tried as an attacker would: a node secured the way an operator of a chat service
//! would start it (a token secret, anonymous clients allowed, `/private/` needing a grant and
//! user-limited `/dm/` topics), and every protocol and transport asked for what it must refuse.
use crate::common;

use std::time::Duration;

use common::{within, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "gate-secret";
const CONFIG: &str = r#"
[[namespace]]
prefix = "/private/"
subscribe = "grant"
publish = "grant"

[[namespace]]
prefix = "/dm/"
subscribe = "user"
publish = "user"
user_limited = true
"#;

const VIBE_TRANSPORTS: [&str; 4] = ["sse", "streamxhr", "longpollajax", "longpolljsonp"];

fn token(sub: &str, topics: &[&str]) -> String {
    common::signed_token(SECRET, sub, topics)
}

fn server(configure: impl FnOnce(&mut nimbus::Config)) -> TestServer {
    let path = std::env::temp_dir().join(format!(
        "nimbus-gate-{}-{}.toml",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&path, CONFIG).unwrap();
    TestServer::start(move |c| {
        c.jwt_hmac_secret = Some(SECRET.into());
        c.allow_anonymous = true;
        c.config = Some(path);
        configure(c);
    })
}

fn vibe_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A `/vibe` URL: `when`, `transport` and the rest of the query.
fn vibe(server: &TestServer, id: &str, when: &str, transport: &str, rest: &str) -> String {
    let mut url = format!("/vibe?id={id}&when={when}&transport={transport}&heartbeat=false");
    if transport == "longpolljsonp" {
        url.push_str("&callback=cb");
    }
    server.url(&format!("{url}{rest}"))
}

/// The status of a GET, without waiting for a streaming body to end.
async fn status_of(url: String) -> u16 {
    within(5.0, "the response head", async {
        reqwest::get(url).await.unwrap().status().as_u16()
    })
    .await
}

/// The status of a WebSocket upgrade the server refused (0 if it accepted).
async fn upgrade_status(url: String) -> u16 {
    let url = url.replacen("http://", "ws://", 1);
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 0,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected upgrade failure: {other}"),
    }
}

/// B1: `/vibe` asks the gate for every topic it names, on every transport, as `/cettia` and
/// Atmosphere do.
#[tokio::test]
async fn vibe_refuses_topics_its_client_may_not_read_on_every_transport() {
    let server = server(|_| {});
    let dm = "&topic=%2Fdm%2Falice%2Cbob";
    let private = "&topic=%2Fprivate%2Fx";
    let eve = format!("&token={}", token("eve", &[]));
    for transport in VIBE_TRANSPORTS {
        for (topic, who) in [(dm, ""), (dm, eve.as_str()), (private, eve.as_str())] {
            let url = vibe(
                &server,
                &vibe_id(),
                "open",
                transport,
                &format!("{topic}{who}"),
            );
            assert_eq!(status_of(url).await, 403, "{transport} {topic} {who:.12}");
        }
    }
    for (topic, who) in [(dm, ""), (private, eve.as_str())] {
        let url = vibe(&server, &vibe_id(), "open", "ws", &format!("{topic}{who}"));
        assert_eq!(upgrade_status(url).await, 403, "ws {topic}");
    }
    // Their own users are let in.
    let alice = format!("&token={}", token("alice", &["/private/*"]));
    for transport in VIBE_TRANSPORTS {
        let url = vibe(
            &server,
            &vibe_id(),
            "open",
            transport,
            &format!("{dm}{alice}"),
        );
        assert_eq!(status_of(url).await, 200, "{transport}");
        let url = vibe(
            &server,
            &vibe_id(),
            "open",
            transport,
            &format!("{private}{alice}"),
        );
        assert_eq!(status_of(url).await, 200, "{transport}");
    }
    let url = vibe(&server, &vibe_id(), "open", "ws", &format!("{dm}{alice}"));
    assert_eq!(upgrade_status(url).await, 0);
}

/// B2: a Vibe id belongs to the client that first opened it: another user (or an anonymous
/// client) naming it to poll, post, re-open or abort is refused, and the socket still serves
/// its owner.
#[tokio::test]
async fn vibe_socket_ids_are_refused_to_anyone_but_their_owner() {
    let server = server(|_| {});
    let http = reqwest::Client::new();
    let id = vibe_id();
    let alice = format!("&token={}", token("alice", &["/private/*"]));
    let eve = format!("&token={}", token("eve", &["/private/*"]));
    let open = vibe(
        &server,
        &id,
        "open",
        "longpollajax",
        &format!("&topic=%2Fprivate%2Fx{alice}"),
    );
    assert_eq!(status_of(open).await, 200);

    for who in [eve.as_str(), ""] {
        let poll = vibe(&server, &id, "poll", "longpollajax", who);
        assert_eq!(status_of(poll).await, 403, "poll as {who:.12}");
        let post = http
            .post(vibe(&server, &id, "poll", "longpollajax", who))
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(r#"data={"id":"1","type":"message","data":"as alice","reply":false}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(post.status().as_u16(), 403, "post as {who:.12}");
        let reopen = vibe(
            &server,
            &id,
            "open",
            "sse",
            &format!("&topic=%2Fprivate%2Fx{who}"),
        );
        assert_eq!(status_of(reopen).await, 403, "re-open as {who:.12}");
        let abort = vibe(&server, &id, "abort", "longpollajax", who);
        assert_eq!(status_of(abort).await, 403, "abort as {who:.12}");
    }
    let reopen_ws = vibe(&server, &id, "open", "ws", &eve);
    assert_eq!(upgrade_status(reopen_ws).await, 403);

    // Alice still has her socket: what is published to her topic reaches her poll.
    let poll = vibe(&server, &id, "poll", "longpollajax", &alice);
    let mut waiting = tokio::spawn(async move { reqwest::get(poll).await.unwrap().text().await });
    let body = within(5.0, "alice's poll", async {
        loop {
            let message = nimbus::topic::Message::text("for alice");
            let to = nimbus::topic::Audience::All;
            server
                .node
                .broker
                .publish("/private/x", to, message)
                .unwrap();
            // A backoff inside the deadline: until her poll (parked, her topic joined) answers.
            tokio::select! {
                answered = &mut waiting => return answered.unwrap().unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
    .await;
    assert!(body.contains("for alice"), "{body}");
}

/// B2, the shared namespace: a client may not choose a Vibe id of the form the node issues
/// (an Atmosphere tracking id, say), so targeted delivery can never reach it by mistake.
#[tokio::test]
async fn vibe_ids_of_the_issued_form_are_refused() {
    let server = server(|_| {});
    let issued = server
        .node
        .gate
        .issue(&nimbus::session::Identity::anonymous());
    let url = vibe(&server, &issued, "open", "sse", "");
    assert_eq!(status_of(url).await, 400);
}

/// B4: a connection names more topics than the cap: refused as a whole with a reason, never
/// half-joined in silence; within the cap it is let in.
#[tokio::test]
async fn a_socket_naming_more_topics_than_the_cap_is_refused() {
    let server = server(|c| c.max_topics_per_connection = 8);
    let topics = |n: usize| {
        (0..n)
            .map(|i| format!("&topic=%2Fmany%2F{i}"))
            .collect::<String>()
    };
    let cettia = |n: usize| {
        server.url(&format!(
            "/cettia?cettia-version=1.0&cettia-transport-version=1.0&cettia-transport-name=longpoll&cettia-transport-when=open&heartbeat=20000{}",
            topics(n)
        ))
    };
    let response = reqwest::get(cettia(9)).await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let why = response.text().await.unwrap();
    assert!(why.contains("at most 8 topics"), "{why}");
    assert_eq!(status_of(cettia(8)).await, 200);
    let url = vibe(&server, &vibe_id(), "open", "sse", &topics(9));
    assert_eq!(status_of(url).await, 403);
    let url = vibe(&server, &vibe_id(), "open", "ws", &topics(9));
    assert_eq!(upgrade_status(url).await, 403);
}

/// B3: a WebSocket frame whose header announces more than `--max-message-bytes` is refused
/// with `1009` as soon as its header arrives, not buffered while the client sends it.
#[tokio::test]
async fn a_websocket_frame_announcing_more_than_the_limit_is_closed_from_its_header() {
    let server = TestServer::start(|c| c.max_message_bytes = 4096);
    for path in [
        "/chat/room?X-Atmosphere-Transport=websocket&X-Atmosphere-tracking-id=0&X-atmo-protocol=true",
        "/cettia?cettia-version=1.0&cettia-transport-version=1.0&cettia-transport-name=websocket&heartbeat=20000",
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // A masked binary frame announcing 2^40 bytes, then 64 KB of it.
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
        frame.extend_from_slice(&[7, 7, 7, 7]);
        frame.extend_from_slice(&[0u8; 65536]);
        // The server may close before all of it is taken: a failed write is fine.
        let _ = stream.write_all(&frame).await;
        let received = within(5.0, "the close frame", async {
            let mut bytes = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return bytes,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                }
                // 0x88 (close), a length, then 1009 = 0x03f1.
                if bytes.windows(4).any(|w| w[0] == 0x88 && w[2..] == [0x03, 0xf1]) {
                    return bytes;
                }
            }
        })
        .await;
        assert!(
            received.windows(4).any(|w| w[0] == 0x88 && w[2..] == [0x03, 0xf1]),
            "{path}: no 1009 close in {:?}",
            String::from_utf8_lossy(&received)
        );
    }
    common::assert_still_serves(&server).await;
}

/// W7: a new session presenting a session token from before it joined (`<epoch>-0`) does not
/// read the topic's history from before it came; what is published after it joined arrives.
#[tokio::test]
async fn a_session_token_never_reaches_before_the_session_joined() {
    let server = TestServer::start(|_| {});
    let topic = "/gate/history";
    let first = common::lp_handshake(&server, topic, true).await;
    let earlier: Vec<String> = (0..3).map(|i| format!("before-{i}")).collect();
    common::publish_all(&server, topic, &earlier).await;
    assert!(common::lp_poll(&server, topic, &first, true)
        .await
        .contains("before-2"));

    let handshake = common::lp_poll_response(&server, topic, "0", true, "").await;
    let id = handshake.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    let token = handshake.headers()["x-atmosphere-session-token"]
        .to_str()
        .unwrap()
        .to_string();
    let (epoch, _) = token.split_once('-').unwrap();
    let url = format!(
        "{}&X-Atmosphere-Session-Token={epoch}-0",
        common::topic_url(&server, topic, "long-polling", &id, true)
    );
    let poll = tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
    // Published after the session joined (whether its poll is parked yet or not): the marker
    // shows what the poll got.
    common::publish_all(&server, topic, &["after".to_string()]).await;
    let body = within(5.0, "the poll", poll).await.unwrap();
    assert!(body.contains("after"), "{body}");
    assert!(
        !body.contains("before-"),
        "read history from before it joined: {body}"
    );
}

/// W4: a request body that trickles (a byte, then nothing) is answered `408` when
/// `--body-timeout-secs` is up, on every endpoint that reads one; the node serves others
/// meanwhile.
#[tokio::test]
async fn a_request_body_that_trickles_is_answered_408() {
    let server = TestServer::start(|c| {
        c.body_timeout_secs = 1;
        c.api_key = Some("gate-api-key".into());
    });
    for (path, extra) in [
        ("/gate/slow?X-Atmosphere-Transport=polling", ""),
        ("/api/publish", "Authorization: apikey gate-api-key\r\n"),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{extra}Content-Type: text/plain\r\n\
             Content-Length: 100\r\n\r\nx",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = within(4.0, "the answer to a trickling body", async {
            let mut bytes = Vec::new();
            let mut chunk = [0u8; 1024];
            while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                }
            }
            String::from_utf8_lossy(&bytes).to_string()
        })
        .await;
        assert!(head.starts_with("HTTP/1.1 408"), "{path}: {head}");
    }
    common::assert_still_serves(&server).await;
}

/// Who asks, in the table below.
#[derive(Clone, Copy, Debug)]
enum Asker {
    Anonymous,
    Eve,
    Forged,
}

/// One row of the table: who asks, for which topics, with which id (`None`: a fresh session),
/// the status it must get, and what the row stands for.
type Case<'a> = (Asker, Vec<&'a str>, Option<&'a str>, u16, &'a str);

/// A GET's status, or the status of a refused WebSocket upgrade (`101` when accepted).
async fn open_status(url: String, upgrade: bool) -> u16 {
    if upgrade {
        match upgrade_status(url).await {
            0 => 101,
            refused => refused,
        }
    } else {
        status_of(url).await
    }
}

/// The proof table: every protocol and transport, asked by an anonymous client, another user,
/// a forged token, with another's or a never-issued id, for a topic its namespace forbids,
/// or for more topics than a connection may hold: each gets its refusal on the wire.
#[tokio::test]
async fn every_protocol_and_transport_refuses_what_the_gate_refuses() {
    let server = server(|c| c.max_topics_per_connection = 4);
    let alice = nimbus::session::Identity::user("alice", None);
    let alices_id = server.node.gate.issue(&alice);
    let never_issued = format!("{}-AAAAAAAAAAAAAAAAAAAAAA", "0".repeat(32));
    let token_of = |asker: Asker| match asker {
        Asker::Anonymous => String::new(),
        Asker::Eve => token("eve", &[]),
        Asker::Forged => format!("{}x", token("eve", &[])),
    };
    let dm = "/dm/alice,bob";
    let private = "/private/x";
    let cases: Vec<Case<'_>> = vec![
        (Asker::Anonymous, vec![dm], None, 403, "anonymous in a DM"),
        (Asker::Eve, vec![dm], None, 403, "eve in alice and bob's DM"),
        (
            Asker::Eve,
            vec![private],
            None,
            403,
            "eve without the grant",
        ),
        (Asker::Forged, vec!["/open"], None, 401, "a forged token"),
        (
            Asker::Eve,
            vec!["/open"],
            Some(&alices_id),
            403,
            "eve with alice's id",
        ),
        (
            Asker::Eve,
            vec!["/open"],
            Some(&never_issued),
            403,
            "an id never issued",
        ),
    ];
    let mut failures = Vec::new();

    // Atmosphere: one topic per connection, the path.
    for transport in ["websocket", "sse", "streaming", "long-polling"] {
        for (asker, topics, id, want, what) in &cases {
            let mut query = common::atmo_query(transport, id.unwrap_or("0"), true);
            let token = token_of(*asker);
            if !token.is_empty() {
                query.push_str(&format!("&X-Atmosphere-Auth={token}"));
            }
            let url = server.url(&format!("{}?{query}", topics[0]));
            let got = open_status(url, transport == "websocket").await;
            if got != *want {
                failures.push(format!("atmosphere {transport}, {what}: {got}, not {want}"));
            }
        }
    }

    // Cettia: topics as parameters, ids as cettia-id.
    let too_many = vec!["/a", "/b", "/c", "/d", "/e"];
    let mut cettia_cases = cases.clone();
    cettia_cases.push((
        Asker::Eve,
        too_many.clone(),
        None,
        403,
        "five topics, four allowed",
    ));
    for transport in ["websocket", "stream", "longpoll"] {
        for (asker, topics, id, want, what) in &cettia_cases {
            let mut query = format!(
                "cettia-version=1.0&cettia-transport-version=1.0&cettia-transport-name={transport}"
            );
            if transport != "websocket" {
                query.push_str("&cettia-transport-when=open");
            }
            for topic in topics {
                query.push_str(&format!(
                    "&topic={}",
                    topic.replace('/', "%2F").replace(',', "%2C")
                ));
            }
            if let Some(id) = id {
                query.push_str(&format!("&cettia-id={id}"));
            }
            let token = token_of(*asker);
            if !token.is_empty() {
                query.push_str(&format!("&token={token}"));
            }
            let url = server.url(&format!("/cettia?{query}"));
            let got = open_status(url, transport == "websocket").await;
            if got != *want {
                failures.push(format!("cettia {transport}, {what}: {got}, not {want}"));
            }
        }
    }

    // Vibe: the client chooses its id; alice's is one she opened.
    let alices_vibe = vibe_id();
    let alice_token = format!("&token={}", token("alice", &[]));
    let opened = vibe(&server, &alices_vibe, "open", "longpollajax", &alice_token);
    assert_eq!(status_of(opened).await, 200);
    // The rows of fresh sessions stand for Vibe too; its ids are the client's own.
    let mut vibe_cases: Vec<Case<'_>> = cases.iter().filter(|c| c.2.is_none()).cloned().collect();
    vibe_cases.extend([
        (
            Asker::Eve,
            vec!["/open"],
            Some(alices_vibe.as_str()),
            403,
            "eve with alice's id",
        ),
        (
            Asker::Anonymous,
            vec!["/open"],
            Some(alices_vibe.as_str()),
            403,
            "anonymous with alice's id",
        ),
        (
            Asker::Eve,
            vec!["/open"],
            Some(alices_id.as_str()),
            400,
            "an id of the issued form",
        ),
        (Asker::Eve, too_many, None, 403, "five topics, four allowed"),
    ]);
    for transport in ["ws", "sse", "streamxhr", "longpollajax", "longpolljsonp"] {
        for (asker, topics, id, want, what) in &vibe_cases {
            let mut rest: String = topics
                .iter()
                .map(|t| format!("&topic={}", t.replace('/', "%2F").replace(',', "%2C")))
                .collect();
            let token = token_of(*asker);
            if !token.is_empty() {
                rest.push_str(&format!("&token={token}"));
            }
            let fresh = vibe_id();
            let url = vibe(&server, id.unwrap_or(&fresh), "open", transport, &rest);
            let got = open_status(url, transport == "ws").await;
            if got != *want {
                failures.push(format!("vibe {transport}, {what}: {got}, not {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// W7 through the cluster: a session that joined on one node and polls another with a token
/// from before it joined reads nothing from before it came; a client that really moved gets
/// what it had not seen (its record carries where it joined).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_never_reaches_before_the_session_joined_on_any_node() {
    let cluster = common::cluster::Cluster::up("--heartbeat-secs 5");
    let http = reqwest::Client::new();
    let topic = "/gate/cluster-history";
    let url = |n: u16, id: &str, token: Option<&str>| {
        let mut query = common::atmo_query("long-polling", id, true);
        if let Some(token) = token {
            query.push_str(&format!("&X-Atmosphere-Session-Token={token}"));
        }
        cluster.node(n, &format!("{topic}?{query}"))
    };
    let handshake = |n: u16| {
        let url = url(n, "0", None);
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
            let (id, token) = (
                header("x-atmosphere-tracking-id"),
                header("x-atmosphere-session-token"),
            );
            let _ = response.text().await;
            (id, token)
        }
    };
    let post = |text: String| {
        let http = http.clone();
        let url = url(1, "publisher", None);
        async move {
            let status = http.post(url).body(text).send().await.unwrap().status();
            assert_eq!(status, 200);
        }
    };

    // An honest client joins on node 1 before anything is said.
    let (honest, honest_token) = handshake(1).await;
    for i in 0..3 {
        post(format!("before-{i}")).await;
    }
    // The attacker joins on node 1 after, then polls node 2 with a token of cursor 0.
    let (attacker, token) = handshake(1).await;
    let (epoch, _) = token.split_once('-').unwrap();
    let forged = format!("{epoch}-0");
    let attack = http.get(url(2, &attacker, Some(&forged))).send();
    let attack = tokio::spawn(async move { attack.await.unwrap().text().await.unwrap() });
    post("after".to_string()).await;
    let body = within(10.0, "the attacker's poll", attack).await.unwrap();
    assert!(
        !body.contains("before-"),
        "read history from before it joined: {body}"
    );

    // The honest client moves to node 2 with its own token: it gets everything, once.
    let mut seen = Vec::new();
    let mut token = honest_token;
    while !seen.iter().any(|m: &String| m == "after") {
        let response = within(
            10.0,
            "a poll",
            http.get(url(2, &honest, Some(&token))).send(),
        )
        .await
        .unwrap();
        token = response.headers()["x-atmosphere-session-token"]
            .to_str()
            .unwrap()
            .to_string();
        let body = response.text().await.unwrap();
        seen.extend(common::unframe(&body).into_iter().filter(|m| m != "X"));
    }
    assert_eq!(seen, ["before-0", "before-1", "before-2", "after"]);
}

/// W9: without `--cors-origins`, only the node's own origin may use it from a browser: a
/// foreign `Origin` gets no CORS headers, its preflight `403`, its WebSocket upgrades `403`
/// on both protocols; the node's own origin is served as before.
#[tokio::test]
async fn by_default_only_the_nodes_own_origin_is_served_to_browsers() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start(|_| {});
    let own = format!("http://{}", server.addr);
    let foreign = "https://evil.example";
    let http = reqwest::Client::new();
    let url = common::topic_url(&server, "/gate/cors", "long-polling", "0", true);
    for (origin, allowed) in [(own.as_str(), true), (foreign, false)] {
        let response = http
            .get(&url)
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        let echoed = response
            .headers()
            .get("access-control-allow-origin")
            .cloned();
        assert_eq!(echoed.is_some(), allowed, "{origin}");
        let preflight = http
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status().as_u16(), if allowed { 200 } else { 403 });
        for path in [
            format!("/gate/cors?{}", common::atmo_query("websocket", "0", true)),
            "/cettia?cettia-version=1.0&cettia-transport-version=1.0&cettia-transport-name=websocket"
                .to_string(),
        ] {
            let mut request = server.ws_url(&path).into_client_request().unwrap();
            request.headers_mut().insert("Origin", origin.parse().unwrap());
            let got = match tokio_tungstenite::connect_async(request).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(other) => panic!("{other}"),
            };
            assert_eq!(got, if allowed { 101 } else { 403 }, "{origin} {path}");
        }
    }
}

/// W9: with `--telemetry-bind`, `/metrics` and `/_nimbus/stats` are served there and not on
/// the public port (404 there, never an Atmosphere topic).
#[tokio::test]
async fn telemetry_can_be_kept_off_the_public_port() {
    let telemetry = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = TestServer::start(move |c| c.telemetry_bind = Some(telemetry));
    for path in ["/metrics", "/_nimbus/stats"] {
        let public = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(public.status().as_u16(), 404, "{path} on the public port");
        let private = reqwest::get(format!("http://{telemetry}{path}"))
            .await
            .unwrap();
        assert_eq!(
            private.status().as_u16(),
            200,
            "{path} on the telemetry port"
        );
        let body = private.text().await.unwrap();
        assert!(
            body.contains("nimbus_topics") || body.contains("\"delivered\""),
            "{body}"
        );
    }
    let health = reqwest::get(format!("http://{telemetry}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// W5: an anonymous browser's session ids are bound to the secret of its `nimbus-anon` cookie,
/// which the node sets (HttpOnly) on its first response; another anonymous client holding one
/// of those ids (a leaked URL) is refused, on Atmosphere, Cettia and Vibe alike. A client that
/// keeps no cookie still has its ids as its only secret.
#[tokio::test]
async fn an_anonymous_browsers_sessions_are_refused_to_anyone_without_its_cookie() {
    let server = server(|_| {});
    let http = reqwest::Client::new();
    let room = "/open/w5";
    let atmosphere = |id: &str, transport: &str| {
        server.url(&format!(
            "{room}?{}",
            common::atmo_query(transport, id, true)
        ))
    };
    // The first visit gets a secret.
    let first = http
        .get(atmosphere("0", "long-polling"))
        .send()
        .await
        .unwrap();
    let set = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("nimbus-anon="), "{cookie}");
    let other = format!("nimbus-anon={}", uuid::Uuid::new_v4().simple());
    let with = |request: reqwest::RequestBuilder, cookie: Option<&str>| match cookie {
        Some(cookie) => request.header("Cookie", cookie),
        None => request,
    };
    let handshake = with(http.get(atmosphere("0", "long-polling")), Some(&cookie))
        .send()
        .await
        .unwrap();
    assert!(
        handshake.headers().get("set-cookie").is_none(),
        "it has one"
    );
    let id = handshake.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    for thief in [None, Some(other.as_str())] {
        let post = with(http.post(atmosphere(&id, "long-polling")), thief)
            .body("as the browser")
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 403, "Atmosphere POST with {thief:?}");
        let close = with(http.get(atmosphere(&id, "close")), thief)
            .send()
            .await
            .unwrap();
        assert_eq!(close.status(), 403, "Atmosphere close with {thief:?}");
    }
    let own = with(http.post(atmosphere(&id, "long-polling")), Some(&cookie))
        .body("mine")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);

    // Cettia: the transport id of a stream opened with the cookie.
    let open = server.url(
        "/cettia?cettia-version=1.0&cettia-transport-version=1.0&cettia-transport-name=stream\
         &cettia-transport-when=open&cettia-transport-sse=true",
    );
    let stream = with(http.get(open), Some(&cookie)).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let handshake = within(5.0, "the Cettia handshake", async {
        let mut text = String::new();
        while !text.contains("cettia-transport-id=") || !text.ends_with("\n\n") {
            let chunk = futures::StreamExt::next(&mut body).await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await;
    let tid = common::transport_id(&handshake);
    let event = |cookie: Option<&str>| {
        with(
            http.post(server.url(&format!(
                "/cettia?cettia-version=1.0&cettia-transport-version=1.0&cettia-transport-id={tid}"
            ))),
            cookie,
        )
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(r#"data={"id":1,"type":"noop","data":null,"reply":false}"#)
        .send()
    };
    assert_eq!(event(None).await.unwrap().status(), 403);
    assert_eq!(event(Some(&other)).await.unwrap().status(), 403);
    assert_eq!(event(Some(&cookie)).await.unwrap().status(), 200);

    // Vibe: an id the browser chose is its own.
    let id = vibe_id();
    let opened = with(
        http.get(vibe(&server, &id, "open", "longpollajax", "")),
        Some(&cookie),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(opened.status(), 200);
    let abort = |cookie: Option<&str>| {
        with(
            http.get(vibe(&server, &id, "abort", "longpollajax", "")),
            cookie,
        )
        .send()
    };
    assert_eq!(abort(Some(&other)).await.unwrap().status(), 403);
    assert_eq!(abort(None).await.unwrap().status(), 403);
    assert_eq!(abort(Some(&cookie)).await.unwrap().status(), 200);

    // Without any cookie, as before: the id is the secret.
    let bare = http
        .get(atmosphere("0", "long-polling"))
        .send()
        .await
        .unwrap();
    let bare_id = bare.headers()["x-atmosphere-tracking-id"]
        .to_str()
        .unwrap()
        .to_string();
    let post = http
        .post(atmosphere(&bare_id, "long-polling"))
        .body("no cookie")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
}
