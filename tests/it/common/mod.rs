//! Starts a real Nimbus node on `127.0.0.1:0` for a test, in its own thread and actix system.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use nimbus::node::Node;
use nimbus::Config;

pub mod cluster;

/// How long a test waits for a node it starts.
const START_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// A node serving on loopback; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    /// Start a node with the defaults, adjusted by `configure`.
    pub fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_with_cettia(configure, |_| {}).0
    }

    /// Start a node whose Cettia application is the default one plus what `app` registers;
    /// returns the application's handle too.
    pub fn start_with_cettia(
        configure: impl FnOnce(&mut Config),
        app: impl FnOnce(&nimbus::cettia::Cettia),
    ) -> (TestServer, nimbus::cettia::Cettia) {
        let (server, _, cettia) = Self::start_apps(configure, |_| {}, app);
        (server, cettia)
    }

    /// Start a node whose Atmosphere application is what `app` registers on a bare
    /// [`nimbus::atmosphere::Atmosphere`] (Cettia keeps its defaults); returns its handle too.
    pub fn start_with_atmosphere(
        configure: impl FnOnce(&mut Config),
        app: impl FnOnce(&nimbus::atmosphere::Atmosphere),
    ) -> (TestServer, nimbus::atmosphere::Atmosphere) {
        let (server, atmosphere, _) = Self::start_apps(configure, app, |_| {});
        (server, atmosphere)
    }

    /// Start a node with both applications: a bare Atmosphere plus `atmosphere_app`, and the
    /// default Cettia plus `cettia_app`.
    fn start_apps(
        configure: impl FnOnce(&mut Config),
        atmosphere_app: impl FnOnce(&nimbus::atmosphere::Atmosphere),
        cettia_app: impl FnOnce(&nimbus::cettia::Cettia),
    ) -> (
        TestServer,
        nimbus::atmosphere::Atmosphere,
        nimbus::cettia::Cettia,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let mut config = Config::for_bind(addr);
        config.workers = Some(2);
        config.node_id = Some("test-node".into());
        config.web_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web").into();
        configure(&mut config);
        let node = Node::new(config).expect("a usable test configuration");
        let atmosphere = nimbus::atmosphere::Atmosphere::new(node.clone());
        atmosphere_app(&atmosphere);
        let cettia = nimbus::cettia::Cettia::with_defaults(node.clone());
        cettia_app(&cettia);
        let (tx, rx) = std::sync::mpsc::channel();
        let served = (node.clone(), atmosphere.clone(), cettia.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let (node, atmosphere, cettia) = served;
                let server = nimbus::server::serve_apps(node, listener, atmosphere, cettia, |_| {})
                    .expect("serve");
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            })
        });
        let handle = rx
            .recv_timeout(START_WITHIN)
            .expect("the server to start within 30 s");
        (TestServer { addr, node, handle }, atmosphere, cettia)
    }

    /// Start a node of the cluster whose Redis is `redis_url` (the node's Cettia application
    /// is the default one plus what `app` registers); returns the application's handle too.
    pub fn start_clustered(
        redis_url: &str,
        node_id: &str,
        configure: impl FnOnce(&mut Config) + Send + 'static,
        app: impl FnOnce(&nimbus::cettia::Cettia) + Send + 'static,
    ) -> (TestServer, nimbus::cettia::Cettia) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let mut config = Config::for_bind(addr);
        config.workers = Some(2);
        config.node_id = Some(node_id.into());
        config.redis_url = Some(redis_url.into());
        config.web_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web").into();
        configure(&mut config);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let node = Node::clustered(config).await.expect("Redis reachable");
                let cettia = nimbus::cettia::Cettia::with_defaults(node.clone());
                app(&cettia);
                let server =
                    nimbus::server::serve_with(node.clone(), listener, cettia.clone(), |_| {})
                        .expect("serve");
                tx.send((server.handle(), node, cettia)).unwrap();
                let _ = server.await;
            })
        });
        // Bounded: a node that cannot reach Redis fails the test instead of hanging it.
        let (handle, node, cettia) = rx
            .recv_timeout(START_WITHIN)
            .expect("the clustered node to start within 30 s");
        (TestServer { addr, node, handle }, cettia)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        std::thread::spawn(move || futures::executor::block_on(handle.stop(false)));
    }
}

/// The query atmosphere.js 5 sends, for `transport` and `tracking_id`, with TrackMessageSize.
pub fn atmo_query(transport: &str, tracking_id: &str, track_message_size: bool) -> String {
    let mut q = format!(
        "X-Atmosphere-tracking-id={tracking_id}&X-Atmosphere-Framework=5.0.7&X-Atmosphere-Transport={transport}"
    );
    if track_message_size {
        q.push_str("&X-Atmosphere-TrackMessageSize=true");
    }
    q.push_str("&X-atmo-protocol=true");
    q
}

// === Helpers shared by the wire-format tests ===

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::{self, protocol::CloseFrame, Message as WsMessage};

/// Await `fut`, failing the test (with `what`) if it takes longer than `secs` seconds.
pub async fn within<T>(secs: f64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs_f64(secs), fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// The URL of `topic` with the atmosphere.js query for `transport`.
pub fn topic_url(server: &TestServer, topic: &str, transport: &str, id: &str, tml: bool) -> String {
    server.url(&format!("{topic}?{}", atmo_query(transport, id, tml)))
}

/// `GET /_nimbus/stats` as JSON.
pub async fn stats(server: &TestServer) -> serde_json::Value {
    let body = reqwest::get(server.url("/_nimbus/stats"))
        .await
        .expect("stats reachable")
        .text()
        .await
        .unwrap();
    serde_json::from_str(&body).expect("stats are JSON")
}

/// The `cettia-transport-id` a Cettia transport handshake carries.
pub fn transport_id(handshake: &str) -> String {
    handshake
        .split_once("cettia-transport-id=")
        .expect("a transport handshake")
        .1
        .split(['&', '\n'])
        .next()
        .unwrap()
        .to_string()
}

/// The `cettia-id` a Cettia socket handshake carries.
pub fn socket_id(handshake: &str) -> String {
    handshake
        .split_once("cettia-id=")
        .expect("a socket handshake")
        .1
        .split(['&', '\n'])
        .next()
        .unwrap()
        .to_string()
}

/// The node's `/metrics` page.
pub async fn scrape(server: &TestServer) -> String {
    let response = within(
        5.0,
        "the /metrics page",
        reqwest::get(server.url("/metrics")),
    )
    .await;
    response.unwrap().text().await.unwrap()
}

/// The value of `sample` (a metric's name with its labels, as the page writes them) in a
/// `/metrics` page; panics, showing the page, if it has no such sample.
pub fn sample(metrics: &str, sample: &str) -> u64 {
    sample_as(metrics, sample)
}

/// A sample of any number type (a histogram's `_sum` is a float: `1200.0`).
pub fn sample_as<T: std::str::FromStr>(metrics: &str, sample: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let prefix = format!("{sample} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {sample} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

pub async fn stat(server: &TestServer, name: &str) -> u64 {
    stats(server).await[name]
        .as_u64()
        .unwrap_or_else(|| panic!("stats have no counter {name}"))
}

/// Poll the stats until `name` satisfies `pred` (within `secs`); returns the value.
pub async fn wait_stat(
    server: &TestServer,
    name: &str,
    secs: f64,
    pred: impl Fn(u64) -> bool,
) -> u64 {
    within(
        secs,
        &format!("stats {name} to reach the expected value"),
        async {
            loop {
                let value = stat(server, name).await;
                if pred(value) {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await
}

/// POST `body` to `topic` as atmosphere.js does (with the sender's query); returns the status.
pub async fn post(
    client: &reqwest::Client,
    server: &TestServer,
    topic: &str,
    sender_id: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::StatusCode {
    let response = client
        .post(topic_url(server, topic, "long-polling", sender_id, true))
        .header("Content-Type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("POST answered");
    response.status()
}

/// POST each message in order, asserting every POST is accepted.
pub async fn publish_all(server: &TestServer, topic: &str, messages: &[String]) {
    let client = reqwest::Client::new();
    for message in messages {
        let status = post(&client, server, topic, "publisher", message.clone()).await;
        assert_eq!(status, 200, "POST of {message:?} refused");
    }
}

/// The long-poll handshake (`tracking-id=0`): returns the issued tracking id.
pub async fn lp_handshake(server: &TestServer, topic: &str, tml: bool) -> String {
    let body = within(5.0, "the long-poll handshake", async {
        reqwest::get(topic_url(server, topic, "long-polling", "0", tml))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await;
    let fields: Vec<&str> = body.split('|').collect();
    let uuid = if tml { fields[1] } else { fields[0] };
    uuid.to_string()
}

/// One long-poll as `id`; returns the response (its body not yet read).
pub async fn lp_poll_response(
    server: &TestServer,
    topic: &str,
    id: &str,
    tml: bool,
    extra_query: &str,
) -> reqwest::Response {
    let url = format!(
        "{}{extra_query}",
        topic_url(server, topic, "long-polling", id, tml)
    );
    within(10.0, "a long-poll answer", reqwest::get(url))
        .await
        .expect("poll answered")
}

/// One long-poll as `id`; returns its body.
pub async fn lp_poll(server: &TestServer, topic: &str, id: &str, tml: bool) -> String {
    let response = lp_poll_response(server, topic, id, tml, "").await;
    assert_eq!(response.status(), 200);
    within(10.0, "a long-poll body", response.text())
        .await
        .unwrap()
}

/// Split a TrackMessageSize body into messages exactly as atmosphere.js does: `len|msg` with
/// `len` counted in UTF-16 code units. Panics on anything that is not a whole number of frames.
pub fn unframe(mut data: &str) -> Vec<String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let bar = data
            .find('|')
            .unwrap_or_else(|| panic!("no length prefix in {data:?}"));
        let len: usize = data[..bar]
            .parse()
            .unwrap_or_else(|_| panic!("length {:?} is not a number", &data[..bar]));
        let rest = &data[bar + 1..];
        let (mut units, mut bytes) = (0, 0);
        for c in rest.chars() {
            if units >= len {
                break;
            }
            units += c.len_utf16();
            bytes += c.len_utf8();
        }
        assert_eq!(units, len, "frame shorter than its prefix in {data:?}");
        out.push(rest[..bytes].to_string());
        data = &rest[bytes..];
    }
    out
}

/// `len|msg` for one message, the length in UTF-16 code units.
pub fn frame(message: &str) -> String {
    format!("{}|{message}", message.encode_utf16().count())
}

/// Messages that exercise framing: delimiters, quotes, line breaks, non-BMP characters.
pub fn tricky_messages() -> Vec<String> {
    vec![
        "hello".to_string(),
        "a|b||c|".to_string(),
        r#"{"say":"\"quoted\" 'single'"}"#.to_string(),
        "line one\nline two\n\nline four".to_string(),
        "ü€😀 and 12|34".to_string(),
        "5|already framed?".to_string(),
    ]
}

/// A streaming response body (SSE or HTTP streaming) read incrementally.
pub struct BodyReader {
    pub response_headers: reqwest::header::HeaderMap,
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl BodyReader {
    /// GET `url` and keep its body open; the status must be 200.
    pub async fn open(url: &str) -> BodyReader {
        let response = within(5.0, "streaming response headers", reqwest::get(url))
            .await
            .expect("GET answered");
        assert_eq!(response.status(), 200, "GET {url}");
        BodyReader {
            response_headers: response.headers().clone(),
            stream: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// Read more bytes into the buffer; false at the end of the body.
    async fn fill(&mut self) -> bool {
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                true
            }
            Some(Err(error)) => panic!("body read failed: {error}"),
            None => false,
        }
    }

    /// The next bytes must be exactly `expected` (within 5 s).
    pub async fn expect(&mut self, expected: &str) {
        let what = format!("{expected:?} on the stream");
        within(5.0, &what, async {
            while self.buf.len() < expected.len() {
                if !self.fill().await {
                    break;
                }
            }
        })
        .await;
        let n = expected.len().min(self.buf.len());
        let got = String::from_utf8_lossy(&self.buf[..n]).into_owned();
        assert_eq!(got, expected, "unexpected bytes on the stream");
        self.buf.drain(..n);
    }

    /// Everything that arrives within `wait` (the buffer is emptied).
    pub async fn read_for(&mut self, wait: Duration) -> String {
        let _ = tokio::time::timeout(wait, async { while self.fill().await {} }).await;
        String::from_utf8(std::mem::take(&mut self.buf)).expect("UTF-8 stream")
    }

    /// Read until the buffered text satisfies `done` (within `secs`); returns and empties it.
    pub async fn read_until(&mut self, secs: f64, done: impl Fn(&str) -> bool) -> String {
        within(secs, "the expected stream content", async {
            loop {
                if let Ok(text) = std::str::from_utf8(&self.buf) {
                    if done(text) {
                        break;
                    }
                }
                assert!(self.fill().await, "stream ended early");
            }
        })
        .await;
        String::from_utf8(std::mem::take(&mut self.buf)).unwrap()
    }

    /// Wait for the end of the body (within `secs`); returns what was left.
    pub async fn read_to_end(&mut self, secs: f64) -> String {
        within(secs, "the end of the stream", async {
            while self.fill().await {}
        })
        .await;
        String::from_utf8(std::mem::take(&mut self.buf)).unwrap()
    }
}

/// A WebSocket client.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The upgrade headers of a WebSocket handshake, for requests written by hand.
pub const UPGRADE_HEADERS: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Write `request` on a new connection and read the answer to its end: returns when the node
/// closes the connection (which the read proves).
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within(5.0, "the node to close", stream.read_to_end(&mut answer))
        .await
        .unwrap();
    String::from_utf8(answer).unwrap()
}

/// Open a WebSocket to `topic` as atmosphere.js would; returns the socket and the 101 response.
pub async fn ws_open(
    server: &TestServer,
    topic: &str,
    id: &str,
    tml: bool,
) -> (Ws, tungstenite::handshake::client::Response) {
    let url = server.ws_url(&format!("{topic}?{}", atmo_query("websocket", id, tml)));
    within(
        5.0,
        "the WebSocket upgrade",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("WebSocket upgrade accepted")
}

/// The next text frame (within `secs`); fails on anything else.
pub async fn ws_text_within(ws: &mut Ws, secs: f64) -> String {
    within(secs, "a WebSocket text frame", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => return text.as_str().to_string(),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
}

/// The next text frame (within 5 s).
pub async fn ws_text(ws: &mut Ws) -> String {
    ws_text_within(ws, 5.0).await
}

/// Assert that no frame arrives for `wait`.
pub async fn ws_silent(ws: &mut Ws, wait: Duration) {
    if let Ok(frame) = tokio::time::timeout(wait, ws.next()).await {
        panic!("expected silence for {wait:?}, got {frame:?}");
    }
}

/// Read until the server's close frame (within `secs`); returns it and the text frames before it.
pub async fn ws_until_close(ws: &mut Ws, secs: f64) -> (Option<CloseFrame>, Vec<String>) {
    within(secs, "the server's close frame", async {
        let mut texts = Vec::new();
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => texts.push(text.as_str().to_string()),
                Some(Ok(WsMessage::Close(frame))) => return (frame, texts),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("socket failed before a close frame: {error}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    })
    .await
}

/// Send one text frame.
pub async fn ws_send(ws: &mut Ws, text: &str) {
    within(5.0, "a WebSocket send", ws.send(WsMessage::text(text)))
        .await
        .expect("frame sent");
}

/// Open a WebSocket to an arbitrary URL (for tests that add query parameters).
pub async fn ws_open_url(url: &str) -> (Ws, tungstenite::handshake::client::Response) {
    within(
        5.0,
        "the WebSocket upgrade",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("WebSocket upgrade accepted")
}

/// The client is still well served: a fresh long-poller gets its handshake and a message
/// published after it (used after every bad input).
pub async fn assert_still_serves(server: &TestServer) {
    let topic = "/still/serving";
    let id = lp_handshake(server, topic, true).await;
    let poll = {
        let url = topic_url(server, topic, "long-polling", &id, true);
        tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_all(server, topic, &["still here".to_string()]).await;
    let body = within(5.0, "the poll after a bad input", poll)
        .await
        .unwrap();
    assert_eq!(body, "10|still here");
}

/// An HS256 token for `sub`, signed with `secret`, valid ten minutes, granting `topics`.
pub fn signed_token(secret: &str, sub: &str, topics: &[&str]) -> String {
    let exp = nimbus::session::identity::unix_now() + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": sub, "exp": exp, "topics": topics}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Call the backend API of the node at `base` with `key`: `(status, JSON body)`.
pub async fn api(
    base: &str,
    key: &str,
    method: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/{method}"))
        .header("Authorization", format!("apikey {key}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}
