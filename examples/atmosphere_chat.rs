//! A small chat application embedding Nimbus with its Atmosphere API, the shape of an
//! Atmosphere `@ManagedService`:
//!
//! - on open (`@Ready`): greet the client, alone, and tell the room it joined;
//! - on message (`@Message`): refuse empty-looking and over-long messages (the client is told
//!   why), and prefix every other one with a short name for its sender;
//! - on leave (`@Disconnect`): tell the room the client left.
//!
//! Cettia clients keep the stock behaviour. Try it with the chat page at `/`:
//!
//! `cargo run --example atmosphere_chat -- --bind 127.0.0.1:8080`
use std::net::TcpListener;

use clap::Parser;
use nimbus::atmosphere::{Atmosphere, Client, Verdict};
use nimbus::cettia::Cettia;
use nimbus::node::Node;

/// Longest message the room accepts, in characters.
const MAX_CHARS: usize = 500;

/// A short name for a client: the start of its tracking id.
fn name(client: &Client) -> &str {
    let id = client.id();
    &id[..id.len().min(8)]
}

fn app(atmosphere: &Atmosphere) {
    atmosphere.on_open(|client| {
        let _ = client.send(&format!("welcome, you are {}", name(client)));
        let _ = client
            .server()
            .publish(client.topic(), &format!("{} joined", name(client)));
    });
    atmosphere.on_message(|client, text| {
        if text.trim().is_empty() {
            return Verdict::Refuse("say something".into());
        }
        if text.chars().count() > MAX_CHARS {
            return Verdict::Refuse(format!("messages are {MAX_CHARS} characters at most"));
        }
        Verdict::Transform(format!("{}: {text}", name(client)))
    });
    atmosphere.on_leave(|client| {
        let _ = client
            .server()
            .publish(client.topic(), &format!("{} left", name(client)));
    });
}

fn main() -> anyhow::Result<()> {
    let config = nimbus::Config::parse();
    tracing_subscriber::fmt().init();
    actix_web::rt::System::new().block_on(async move {
        let listener = TcpListener::bind(config.bind)?;
        let node = Node::new(config).map_err(std::io::Error::other)?;
        let atmosphere = Atmosphere::new(node.clone());
        app(&atmosphere);
        let cettia = Cettia::with_defaults(node.clone());
        nimbus::server::serve_apps(node, listener, atmosphere, cettia, |_| {})?.await
    })?;
    Ok(())
}
