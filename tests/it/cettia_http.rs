//! Cettia 1.0 over HTTP, byte for byte where the suite does not look: streaming padding and
//! `data:` framing (plain and SSE), long-polling (one message per poll, binary, JSONP, the
//! re-poll window), CORS, abort, and the status codes of bad requests.
use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{within, BodyReader, TestServer};
use nimbus::cettia::Value;
use nimbus::protocol::cettia::Event;

const Q: &str = "cettia-version=1.0&cettia-transport-version=1.0";

fn open_url(server: &TestServer, name: &str, extra: &str) -> String {
    server.url(&format!(
        "/cettia?{Q}&cettia-transport-name={name}&cettia-transport-when=open{extra}"
    ))
}

fn tid_url(server: &TestServer, tid: &str, extra: &str) -> String {
    server.url(&format!("/cettia?{Q}&cettia-transport-id={tid}{extra}"))
}

async fn post(
    server: &TestServer,
    tid: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(tid_url(server, tid, "&cettia-transport-name=stream"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST answered");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn post_event(server: &TestServer, tid: &str, json: &str) {
    let (status, body) = post(
        server,
        tid,
        "text/plain; charset=utf-8",
        format!("data={json}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// `?...&cettia-transport-id=<tid>` → tid.
fn transport_id(handshake: &str) -> String {
    let (_, tid) = handshake
        .split_once("cettia-transport-id=")
        .unwrap_or_else(|| panic!("no transport id in {handshake:?}"));
    tid.trim_end_matches(['\n', '"', ')', ';']).to_string()
}

/// Open a stream; returns the reader (after the padding) and the transport id.
async fn open_stream(server: &TestServer, extra: &str) -> (BodyReader, String) {
    let mut stream = BodyReader::open(&open_url(server, "stream", extra)).await;
    stream.expect(&format!("{}\n", " ".repeat(2047))).await;
    let handshake = stream.read_until(5.0, |t| t.ends_with("\n\n")).await;
    assert!(
        handshake.starts_with("data: ?cettia-transport-version=1.0&cettia-transport-id="),
        "{handshake:?}"
    );
    let tid = transport_id(handshake.trim_end());
    (stream, tid)
}

#[tokio::test]
async fn sse_stream_pads_handshakes_and_frames_text_and_binary() {
    let server = TestServer::start(|_| {});
    let (mut stream, tid) = open_stream(&server, "&cettia-transport-sse=true").await;
    assert_eq!(
        stream.response_headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let handshake = stream.read_until(5.0, |t| t.ends_with("\n\n")).await;
    assert!(
        handshake.starts_with("data: 1?cettia-version=1.0&cettia-id="),
        "{handshake:?}"
    );
    assert!(
        handshake.ends_with("&cettia-heartbeat=20000&cettia-_heartbeat=5000\n\n"),
        "{handshake:?}"
    );

    // A text event whose data holds an (escaped) line break stays on one data: line.
    post_event(
        &server,
        &tid,
        r#"{"id":0,"type":"echo","data":"a\nb","reply":false}"#,
    )
    .await;
    stream
        .expect("data: 1{\"id\":\"0\",\"type\":\"echo\",\"data\":\"a\\nb\",\"reply\":false}\n\n")
        .await;

    // A binary event comes back as MessagePack, base64 behind the `2` prefix.
    let mut binary = Event::new(1, "echo", Value::Binary(b"data".to_vec()));
    binary.reply = false;
    let (status, _) = post(
        &server,
        &tid,
        "application/octet-stream",
        binary.to_msgpack(),
    )
    .await;
    assert_eq!(status, 200);
    let line = stream.read_until(5.0, |t| t.ends_with("\n\n")).await;
    let b64 = line
        .strip_prefix("data: 2")
        .and_then(|l| l.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("{line:?}"));
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let echoed = Event::decode_binary(&bytes).unwrap();
    assert_eq!(echoed.id, Value::from("1"));
    assert_eq!(echoed.data, Value::Binary(b"data".to_vec()));
}

#[tokio::test]
async fn plain_stream_is_text_plain_and_accepts_bare_text_plain_posts() {
    let server = TestServer::start(|_| {});
    let (mut stream, tid) = open_stream(&server, "").await;
    assert_eq!(
        stream.response_headers["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(stream.response_headers["x-accel-buffering"], "no");
    stream.read_until(5.0, |t| t.ends_with("\n\n")).await;
    // Form-posting fallbacks send bare text/plain and a trailing CRLF.
    let (status, body) = post(
        &server,
        &tid,
        "text/plain",
        "data={\"id\":5,\"type\":\"echo\",\"data\":\"라면\",\"reply\":false}\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    stream
        .expect("data: 1{\"id\":\"0\",\"type\":\"echo\",\"data\":\"라면\",\"reply\":false}\n\n")
        .await;
}

#[tokio::test]
async fn cors_headers_echo_the_origin_or_allow_any() {
    let server = TestServer::start(|c| c.cors_origins = vec!["*".into()]);
    let client = reqwest::Client::new();
    let url = open_url(&server, "longpoll", "");
    let any = client.get(&url).send().await.unwrap();
    let h = any.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-headers"], "content-type");
    assert_eq!(h["cache-control"], "no-cache, no-store, must-revalidate");
    assert_eq!(h["pragma"], "no-cache");
    assert_eq!(h["expires"], "0");
    let from = client
        .get(&url)
        .header("origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        from.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    assert_eq!(from.headers()["access-control-allow-credentials"], "true");
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/cettia"))
        .header("origin", "http://app.example")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    assert!(preflight.text().await.unwrap().is_empty());
    // Without an Origin (as the reference server does): `*`, the preflight included.
    let bare = client
        .request(reqwest::Method::OPTIONS, server.url("/cettia"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 200);
    assert_eq!(bare.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn long_poll_carries_one_message_per_poll_text_and_binary() {
    let server = TestServer::start(|_| {});
    let open = reqwest::get(open_url(&server, "longpoll", ""))
        .await
        .unwrap();
    assert_eq!(open.headers()["content-type"], "text/plain; charset=utf-8");
    let tid = transport_id(&open.text().await.unwrap());
    let poll_url = tid_url(
        &server,
        &tid,
        "&cettia-transport-name=longpoll&cettia-transport-when=poll",
    );
    let handshake = reqwest::get(&poll_url).await.unwrap().text().await.unwrap();
    assert!(
        handshake.starts_with("?cettia-version=1.0&cettia-id="),
        "{handshake}"
    );

    // Two events queued while no poll is parked: one per poll, in order.
    post_event(
        &server,
        &tid,
        r#"{"id":1,"type":"echo","data":"one","reply":false}"#,
    )
    .await;
    post_event(
        &server,
        &tid,
        r#"{"id":2,"type":"echo","data":"two","reply":false}"#,
    )
    .await;
    let first = reqwest::get(&poll_url).await.unwrap().text().await.unwrap();
    assert_eq!(
        first,
        r#"{"id":"0","type":"echo","data":"one","reply":false}"#
    );
    let second = reqwest::get(&poll_url).await.unwrap().text().await.unwrap();
    assert_eq!(
        second,
        r#"{"id":"1","type":"echo","data":"two","reply":false}"#
    );

    // A parked poll is answered by the next message, binary as application/octet-stream.
    let parked = tokio::spawn(reqwest::get(poll_url.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let event = Event::new(3, "echo", Value::Binary(vec![0, 1, 2]));
    let (status, _) = post(
        &server,
        &tid,
        "application/octet-stream",
        event.to_msgpack(),
    )
    .await;
    assert_eq!(status, 200);
    let answer = within(5.0, "the parked poll", parked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.headers()["content-type"], "application/octet-stream");
    let echoed = Event::decode_binary(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(echoed.data, Value::Binary(vec![0, 1, 2]));
}

#[tokio::test]
async fn jsonp_long_poll_wraps_every_answer_in_the_callback() {
    let server = TestServer::start(|_| {});
    let jsonp = "&cettia-transport-jsonp=true&cettia-transport-callback=socket_7";
    let open = reqwest::get(open_url(&server, "longpoll", jsonp))
        .await
        .unwrap();
    assert_eq!(
        open.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let body = open.text().await.unwrap();
    assert!(
        body.starts_with("socket_7(\"?cettia-transport-version=1.0&cettia-transport-id="),
        "{body}"
    );
    assert!(body.ends_with("\");"), "{body}");
    let tid = transport_id(&body);
    let poll_url = tid_url(
        &server,
        &tid,
        &format!("&cettia-transport-name=longpoll&cettia-transport-when=poll{jsonp}"),
    );
    let handshake = reqwest::get(&poll_url).await.unwrap().text().await.unwrap();
    assert!(
        handshake.starts_with("socket_7(\"?cettia-version=1.0&cettia-id="),
        "{handshake}"
    );
    post_event(
        &server,
        &tid,
        r#"{"id":1,"type":"echo","data":"q\"uote","reply":false}"#,
    )
    .await;
    let event = reqwest::get(&poll_url).await.unwrap().text().await.unwrap();
    assert_eq!(
        event,
        r#"socket_7("{\"id\":\"0\",\"type\":\"echo\",\"data\":\"q\\\"uote\",\"reply\":false}");"#
    );
    // A callback that is not an identifier is refused.
    let bad = reqwest::get(open_url(
        &server,
        "longpoll",
        "&cettia-transport-jsonp=true&cettia-transport-callback=alert(1)",
    ))
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn abort_closes_the_transport_and_later_polls_get_an_empty_answer() {
    let server = TestServer::start(|_| {});
    let tid = transport_id(
        &reqwest::get(open_url(&server, "longpoll", ""))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let poll_url = tid_url(
        &server,
        &tid,
        "&cettia-transport-name=longpoll&cettia-transport-when=poll",
    );
    reqwest::get(&poll_url).await.unwrap();
    let parked = tokio::spawn(reqwest::get(poll_url.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let abort = reqwest::get(tid_url(&server, &tid, "&cettia-transport-when=abort"))
        .await
        .unwrap();
    assert_eq!(abort.status(), 200);
    assert_eq!(
        abort.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(abort.text().await.unwrap().is_empty());
    let parked = within(5.0, "the parked poll", parked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parked.status(), 200);
    assert!(
        parked.text().await.unwrap().is_empty(),
        "an empty answer means closed"
    );
    let late = reqwest::get(&poll_url).await.unwrap();
    assert_eq!(late.status(), 200);
    assert!(late.text().await.unwrap().is_empty());
    // Abort of a stream ends its body.
    let (mut stream, tid) = open_stream(&server, "").await;
    stream.read_until(5.0, |t| t.ends_with("\n\n")).await;
    reqwest::get(tid_url(&server, &tid, "&cettia-transport-when=abort"))
        .await
        .unwrap();
    assert_eq!(stream.read_to_end(5.0).await, "");
    // An abort for an unknown transport is still 200.
    let unknown = reqwest::get(tid_url(&server, "nope", "&cettia-transport-when=abort"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 200);
}

#[tokio::test]
async fn long_poll_transport_closes_when_the_client_does_not_poll_again_within_3s() {
    let server = TestServer::start(|_| {});
    let tid = transport_id(
        &reqwest::get(open_url(&server, "longpoll", ""))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let poll_url = tid_url(
        &server,
        &tid,
        "&cettia-transport-name=longpoll&cettia-transport-when=poll",
    );
    reqwest::get(&poll_url).await.unwrap(); // the socket handshake
                                            // The time without a poll is what is tested: 2 s, a POST, 1.5 s more (3.5 s in all).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    post_event(
        &server,
        &tid,
        r#"{"id":1,"type":"heartbeat","reply":false}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = post(
        &server,
        &tid,
        "text/plain; charset=utf-8",
        "data={\"id\":2,\"type\":\"echo\",\"reply\":false}",
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("closed"), "{body}");
}

#[tokio::test]
async fn bad_requests_get_the_reference_status_and_a_sentence() {
    let server = TestServer::start(|c| c.max_message_bytes = 1024);
    let client = reqwest::Client::new();
    let check = |status: u16, body: String, want: u16| {
        assert_eq!(status, want, "{body}");
        assert!(body.trim().len() > 10, "a sentence explains: {body:?}");
    };
    let r = client.put(server.url("/cettia")).send().await.unwrap();
    check(r.status().as_u16(), r.text().await.unwrap(), 405);
    let r = client
        .get(open_url(&server, "carrier-pigeon", ""))
        .send()
        .await
        .unwrap();
    check(r.status().as_u16(), r.text().await.unwrap(), 501);
    let r = client
        .get(server.url("/cettia?cettia-transport-when=later"))
        .send()
        .await
        .unwrap();
    check(r.status().as_u16(), r.text().await.unwrap(), 501);
    let r = client.get(server.url("/cettia")).send().await.unwrap();
    check(r.status().as_u16(), r.text().await.unwrap(), 501);
    let r = client
        .get(tid_url(&server, "nope", "&cettia-transport-when=poll"))
        .send()
        .await
        .unwrap();
    check(r.status().as_u16(), r.text().await.unwrap(), 500);
    let (status, body) = post(&server, "nope", "text/plain; charset=utf-8", "data={}").await;
    check(status, body, 500);
    let r = client
        .get(open_url(&server, "longpoll", "&topic=no-slash"))
        .send()
        .await
        .unwrap();
    check(r.status().as_u16(), r.text().await.unwrap(), 400);

    let (mut stream, tid) = open_stream(&server, "").await;
    stream.read_until(5.0, |t| t.ends_with("\n\n")).await;
    let (status, body) = post(
        &server,
        &tid,
        "text/plain; charset=utf-8",
        format!("data={}", "x".repeat(4096)),
    )
    .await;
    check(status, body, 413);
    let (status, body) = post(&server, &tid, "text/plain; charset=utf-8", "data=not json").await;
    check(status, body, 400);
    // The bad event closed that transport; a fresh one has another content-type problem.
    assert_eq!(stream.read_to_end(5.0).await, "");
    let (mut stream, tid) = open_stream(&server, "").await;
    stream.read_until(5.0, |t| t.ends_with("\n\n")).await;
    let (status, body) = post(&server, &tid, "application/json", "{}").await;
    check(status, body, 500);
    assert_eq!(stream.read_to_end(5.0).await, "", "the transport is closed");
}

/// A node whose Cettia application counts the transports it closed (`on_close`).
fn start_counting_closes(
    configure: impl FnOnce(&mut nimbus::Config),
) -> (TestServer, nimbus::cettia::Cettia, Arc<AtomicUsize>) {
    let closes = Arc::new(AtomicUsize::new(0));
    let counter = closes.clone();
    let (server, cettia) = common::TestServer::start_with_cettia(configure, move |app| {
        app.on_close(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    });
    (server, cettia, closes)
}

/// Open a long-polling transport (`extra` adds to the query); its transport id.
async fn longpoll_open(server: &TestServer, extra: &str) -> String {
    let url = open_url(server, "longpoll", extra);
    transport_id(&reqwest::get(url).await.unwrap().text().await.unwrap())
}

/// One poll of transport `tid`; what it answered.
async fn longpoll_poll(server: &TestServer, tid: &str) -> String {
    let url = tid_url(
        server,
        tid,
        "&cettia-transport-name=longpoll&cettia-transport-when=poll",
    );
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Abort transport `tid` and wait until the application saw a transport close.
async fn longpoll_abort(server: &TestServer, tid: &str, closes: &AtomicUsize) {
    let before = closes.load(Ordering::SeqCst);
    reqwest::get(tid_url(server, tid, "&cettia-transport-when=abort"))
        .await
        .unwrap();
    within(5.0, "the aborted transport to close", async {
        while closes.load(Ordering::SeqCst) == before {
            // A backoff inside a deadline loop, not an ordering wait.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_long_poller_resumes_its_socket_with_the_events_sent_while_away() {
    let (server, cettia, closes) = start_counting_closes(|_| {});
    let tid = longpoll_open(&server, "").await;
    let id = common::socket_id(&longpoll_poll(&server, &tid).await);
    longpoll_abort(&server, &tid, &closes).await;
    let socket = cettia.socket(&id).expect("kept for the resume window");
    socket.send("note", Value::from("while away")).unwrap();
    socket.send("note", Value::from("still away")).unwrap();

    let tid = longpoll_open(&server, &format!("&cettia-id={id}")).await;
    let again = longpoll_poll(&server, &tid).await;
    assert!(again.contains(&format!("cettia-id={id}&")), "{again}");
    assert_eq!(
        longpoll_poll(&server, &tid).await,
        r#"{"id":"0","type":"note","data":"while away","reply":false}"#
    );
    assert_eq!(
        longpoll_poll(&server, &tid).await,
        r#"{"id":"1","type":"note","data":"still away","reply":false}"#
    );
}

/// `--max-lag-messages` measures one thing on both protocols: how far the client falls behind
/// on its current transport. What it is owed when it comes back (its resume queue, up to the
/// same bound) is not lag: a long-poller returning to a full queue, one message per poll, is
/// not dropped as a slow consumer when more arrive; falling behind once back still is.
#[tokio::test]
async fn a_long_poller_back_to_a_full_queue_is_not_a_slow_consumer() {
    const MAX_LAG: usize = 4;
    let (server, cettia, closes) = start_counting_closes(|c| c.max_lag_messages = MAX_LAG as u64);
    let tid = longpoll_open(&server, "").await;
    let id = common::socket_id(&longpoll_poll(&server, &tid).await);
    longpoll_abort(&server, &tid, &closes).await;
    let socket = cettia.socket(&id).expect("kept for the resume window");
    for i in 0..MAX_LAG {
        socket.send("away", Value::from(format!("{i}"))).unwrap();
    }
    let dropped = common::stat(&server, "slow_consumers_dropped").await;

    let tid = longpoll_open(&server, &format!("&cettia-id={id}")).await;
    let again = longpoll_poll(&server, &tid).await;
    assert!(again.contains(&format!("cettia-id={id}&")), "{again}");
    // Two more while the client reads its queue one poll at a time.
    socket.send("back", Value::from("0")).unwrap();
    socket.send("back", Value::from("1")).unwrap();
    let mut read = Vec::new();
    for _ in 0..MAX_LAG + 2 {
        read.push(longpoll_poll(&server, &tid).await);
    }
    for (i, text) in read.iter().enumerate() {
        let (kind, n) = if i < MAX_LAG {
            ("away", i)
        } else {
            ("back", i - MAX_LAG)
        };
        assert!(
            text.contains(&format!(r#""type":"{kind}","data":"{n}""#)),
            "message {i}: {text}"
        );
    }
    assert_eq!(
        common::stat(&server, "slow_consumers_dropped").await,
        dropped,
        "a client reading what it was owed is not a slow consumer"
    );
    // Behind by more than the bound on this transport: dropped.
    for i in 0..=MAX_LAG {
        socket.send("flood", Value::from(format!("{i}"))).unwrap();
    }
    common::wait_stat(&server, "slow_consumers_dropped", 5.0, |n| n > dropped).await;
}
