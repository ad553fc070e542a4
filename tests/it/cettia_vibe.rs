//! `/vibe`, the Vibe 3.0.0-Alpha1 dialect: the seed's request/response pair reproduced on the
//! wire (chunk sizes included; only the date and the ids may differ), long-polling with
//! `lastEventIds` acknowledgements and JSONP, WebSocket, abort and bad requests.
use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{within, ws_open_url, ws_send, ws_text, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ID: &str = "d009d9f3-088f-4977-8ec0-99576f84cb4c";

/// Read from `stream` into `buf` until it holds `pattern`; returns the bytes up to its end.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, pattern: &[u8]) -> Vec<u8> {
    within(5.0, "bytes on the raw connection", async {
        loop {
            if let Some(i) = buf.windows(pattern.len()).position(|w| w == pattern) {
                return buf.drain(..i + pattern.len()).collect();
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

async fn read_exact(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Vec<u8> {
    within(5.0, "bytes on the raw connection", async {
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..len).collect()
    })
    .await
}

/// The status line and the headers (names lower-cased) of a response head.
fn parse_head(head: &[u8]) -> (String, BTreeMap<String, String>) {
    let text = String::from_utf8(head.to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers)
}

/// The seed's headers, less `Date` and `Server` (a date, and Jetty's name), plus
/// `x-nimbus-node` (the node's id) which Nimbus adds to every response.
fn without_dates_and_ids(mut headers: BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers.remove("date");
    assert!(headers.remove("x-nimbus-node").is_some());
    headers
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn the_seed_exchange_reproduces_byte_for_byte() {
    let server = TestServer::start(|_| {});
    let mut get = TcpStream::connect(server.addr).await.unwrap();
    get.write_all(
        format!(
            "GET /vibe?id={ID}&_=32fb5d&when=open&transport=sse&heartbeat=20000 HTTP/1.1\r\n\
             Cache-Control: no-cache\r\n\
             Accept: text/event-stream\r\n\
             Host: localhost:8080\r\n\
             Connection: keep-alive\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let head = read_until(&mut get, &mut buf, b"\r\n\r\n").await;
    let (status, headers) = parse_head(&head);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        without_dates_and_ids(headers),
        expected(&[
            ("cache-control", "no-cache, no-store, must-revalidate"),
            ("pragma", "no-cache"),
            ("expires", "0"),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("content-type", "text/event-stream; charset=utf-8"),
            ("transfer-encoding", "chunked"),
        ])
    );
    // `801` and the padding: 2048 spaces and a newline.
    let padding = read_exact(&mut get, &mut buf, 5 + 0x801 + 2).await;
    assert_eq!(
        padding,
        format!("801\r\n{}\n\r\n", " ".repeat(2048)).into_bytes()
    );

    let mut post = TcpStream::connect(server.addr).await.unwrap();
    let event = r#"data={"id":"0","type":"echo","data":"An echo message","reply":false}"#;
    post.write_all(
        format!(
            "POST /vibe?id={ID}&_=6a5e3d HTTP/1.1\r\n\
             content-type: text/plain; charset=utf-8\r\n\
             Host: localhost:8080\r\n\
             Connection: keep-alive\r\n\
             Transfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{event}\r\n0\r\n\r\n",
            event.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut post_buf = Vec::new();
    let head = read_until(&mut post, &mut post_buf, b"\r\n\r\n").await;
    let (status, headers) = parse_head(&head);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        without_dates_and_ids(headers),
        expected(&[
            ("cache-control", "no-cache, no-store, must-revalidate"),
            ("pragma", "no-cache"),
            ("expires", "0"),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("content-length", "0"),
        ])
    );

    let chunk = read_until(&mut get, &mut buf, b"\n\n\r\n").await;
    assert_eq!(
        String::from_utf8(chunk).unwrap(),
        "47\r\ndata: {\"id\":\"1\",\"type\":\"echo\",\"data\":\"An echo message\",\"reply\":false}\n\n\r\n"
    );
}

fn vibe_url(server: &TestServer, id: &str, rest: &str) -> String {
    server.url(&format!("/vibe?id={id}&_=1{rest}"))
}

async fn vibe_post(server: &TestServer, id: &str, json: &str) -> u16 {
    reqwest::Client::new()
        .post(vibe_url(server, id, ""))
        .header("content-type", "text/plain; charset=utf-8")
        .body(format!("data={json}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn get_text(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

fn echo(id: u32, data: &str) -> String {
    format!(r#"{{"id":"{id}","type":"echo","data":"{data}","reply":false}}"#)
}

#[tokio::test]
async fn long_polling_resends_until_acknowledged_and_batches_as_an_array() {
    let server = TestServer::start(|_| {});
    let id = "lp-socket";
    let (status, _, body) = get_text(&vibe_url(
        &server,
        id,
        "&when=open&transport=longpollajax&heartbeat=20000",
    ))
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let poll = |ack: &str| {
        vibe_url(
            &server,
            id,
            &format!("&when=poll&transport=longpollajax&lastEventIds={ack}"),
        )
    };
    let parked = tokio::spawn(reqwest::get(poll("")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        vibe_post(
            &server,
            id,
            r#"{"id":"0","type":"echo","data":"a","reply":false}"#
        )
        .await,
        200
    );
    let first = within(5.0, "the parked poll", parked)
        .await
        .unwrap()
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(first, echo(1, "a"));
    assert_eq!(
        vibe_post(
            &server,
            id,
            r#"{"id":"1","type":"echo","data":"b","reply":false}"#
        )
        .await,
        200
    );
    assert_eq!(
        vibe_post(
            &server,
            id,
            r#"{"id":"2","type":"echo","data":"c","reply":false}"#
        )
        .await,
        200
    );
    // Event 1 is not acknowledged: it comes again, with the two new ones, as an array.
    let (_, ct, batch) = get_text(&poll("")).await;
    assert_eq!(ct, "text/plain; charset=utf-8");
    assert_eq!(
        batch,
        format!("[{},{},{}]", echo(1, "a"), echo(2, "b"), echo(3, "c"))
    );
    let (_, _, rest) = get_text(&poll("1,2")).await;
    assert_eq!(rest, echo(3, "c"));
    // Everything acknowledged: the poll waits.
    let waiting = tokio::spawn(reqwest::get(poll("3")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    // Abort deletes the socket: the parked poll ends empty, a POST finds nothing.
    let (status, ct, _) = get_text(&vibe_url(&server, id, "&when=abort")).await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    let ended = within(5.0, "the parked poll", waiting)
        .await
        .unwrap()
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ended, "");
    assert_eq!(
        vibe_post(
            &server,
            id,
            r#"{"id":"3","type":"echo","data":"d","reply":false}"#
        )
        .await,
        500
    );
}

#[tokio::test]
async fn jsonp_long_polling_wraps_the_answer() {
    let server = TestServer::start(|_| {});
    let id = "jsonp-socket";
    let (status, ct, _) = get_text(&vibe_url(
        &server,
        id,
        "&when=open&transport=longpolljsonp&callback=vibe_1&heartbeat=false",
    ))
    .await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    assert_eq!(
        vibe_post(
            &server,
            id,
            r#"{"id":"0","type":"echo","data":"x","reply":false}"#
        )
        .await,
        200
    );
    let (_, ct, body) = get_text(&vibe_url(
        &server,
        id,
        "&when=poll&transport=longpolljsonp&callback=vibe_1",
    ))
    .await;
    assert_eq!(ct, "text/javascript; charset=utf-8");
    assert_eq!(
        body,
        format!("vibe_1({});", serde_json::to_string(&echo(1, "x")).unwrap())
    );
}

#[tokio::test]
async fn websocket_and_streamxhr_carry_plain_json_events() {
    let server = TestServer::start(|_| {});
    let (mut ws, _) =
        ws_open_url(&server.ws_url("/vibe?id=ws-socket&when=open&transport=ws&heartbeat=20000"))
            .await;
    ws_send(
        &mut ws,
        r#"{"id":"0","type":"echo","data":"hey","reply":false}"#,
    )
    .await;
    assert_eq!(ws_text(&mut ws).await, echo(1, "hey"));
    ws_send(
        &mut ws,
        r#"{"id":"1","type":"heartbeat","data":null,"reply":false}"#,
    )
    .await;
    assert_eq!(
        ws_text(&mut ws).await,
        r#"{"id":"2","type":"heartbeat","data":null,"reply":false}"#
    );

    let mut stream = common::BodyReader::open(&vibe_url(
        &server,
        "xhr-socket",
        "&when=open&transport=streamxhr&heartbeat=20000",
    ))
    .await;
    assert_eq!(
        stream.response_headers["content-type"],
        "text/plain; charset=utf-8"
    );
    stream.expect(&format!("{}\n", " ".repeat(2048))).await;
    assert_eq!(
        vibe_post(
            &server,
            "xhr-socket",
            r#"{"id":"0","type":"echo","data":"s","reply":false}"#
        )
        .await,
        200
    );
    stream.expect(&format!("data: {}\n\n", echo(1, "s"))).await;
}

#[tokio::test]
async fn bad_vibe_requests_get_a_status_and_a_sentence() {
    let server = TestServer::start(|_| {});
    for (url, want) in [
        (vibe_url(&server, "x", "&when=open&transport=carrier"), 501),
        (vibe_url(&server, "x", "&when=later"), 501),
        (server.url("/vibe?when=open&transport=sse"), 400),
        (
            vibe_url(&server, "x", "&when=open&transport=sse&heartbeat=soon"),
            400,
        ),
        (vibe_url(&server, "nobody", "&when=poll"), 500),
    ] {
        let (status, _, body) = get_text(&url).await;
        assert_eq!(status, want, "{url}: {body}");
        assert!(body.trim().len() > 10, "{body:?}");
    }
    assert_eq!(vibe_post(&server, "nobody", "{}").await, 500);
    // A Vibe client cannot take over a Cettia socket by choosing its id: ids of the form the
    // server issues are not for clients to choose (400, before any socket is looked up).
    let (mut ws, _) = ws_open_url(&server.ws_url("/cettia?cettia-version=1.0")).await;
    let handshake = ws_text(&mut ws).await;
    let cettia_id = common::socket_id(&handshake);
    let (status, _, body) = get_text(&vibe_url(
        &server,
        &cettia_id,
        "&when=open&transport=longpollajax",
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("form of ids the server issues"), "{body}");
    let put = reqwest::Client::new()
        .put(vibe_url(&server, "x", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
}
