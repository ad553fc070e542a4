//! Starts a real Nimbus node on `127.0.0.1:0` for a test, in its own thread and actix system.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use nimbus::node::Node;
use nimbus::Config;

/// A node serving on loopback; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    /// Start a node with the defaults, adjusted by `configure`.
    pub fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let mut config = Config::for_bind(addr);
        config.workers = Some(2);
        config.node_id = Some("test-node".into());
        config.web_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web").into();
        configure(&mut config);
        let node = Node::new(config);
        let (tx, rx) = std::sync::mpsc::channel();
        let served = node.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = nimbus::server::serve(served, listener).expect("serve");
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            })
        });
        let handle = rx.recv().expect("server started");
        TestServer { addr, node, handle }
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
