//! A small application embedding Nimbus with its Cettia API: the default behaviour (topics from
//! `?topic=`, `echo`, `message` broadcast to Atmosphere and Cettia clients alike) plus
//!
//! - on open: tag the socket with its `?user=` name and greet it; on close and delete: log;
//! - `whisper` `{to, text}`: send `whisper` to every socket tagged `to` (on this node), and
//!   resolve the reply with how many were reached;
//! - `announce` `<data>`: publish to `/announcements` (every client in that topic, through the
//!   broker).
//!
//! `cargo run --example cettia_chat -- --bind 127.0.0.1:8080`
use std::net::TcpListener;

use clap::Parser;
use nimbus::cettia::{Cettia, Value};
use nimbus::node::Node;

fn field<'a>(data: &'a Value, name: &str) -> Option<&'a Value> {
    data.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

fn app(cettia: &Cettia) {
    cettia.on_open(|socket| {
        let user = socket
            .query("user")
            .next()
            .unwrap_or("anonymous")
            .to_string();
        socket.tag(&user);
        let _ = socket.send("welcome", Value::from(format!("hello, {user}")));
    });
    cettia.on_close(|socket| tracing::info!(socket = socket.id(), "transport lost; may resume"));
    cettia.on_delete(|socket| tracing::info!(socket = socket.id(), "socket deleted"));
    cettia.on("whisper", |socket, data, reply| {
        let (Some(to), Some(text)) = (
            field(&data, "to").and_then(Value::as_str),
            field(&data, "text").cloned(),
        ) else {
            if let Some(reply) = reply {
                reply.reject(Value::from("whisper needs {to, text}"));
            }
            return;
        };
        let reached = socket.server().send_to_tag(to, "whisper", text);
        if let Some(reply) = reply {
            reply.resolve(Value::from(reached as u64));
        }
    });
    cettia.on("announce", |socket, data, reply| {
        let outcome = socket.server().publish("/announcements", data);
        if let Some(reply) = reply {
            match outcome {
                Ok(()) => reply.resolve(Value::Nil),
                Err(error) => reply.reject(Value::from(error.to_string())),
            }
        }
    });
}

fn main() -> anyhow::Result<()> {
    let config = nimbus::Config::parse();
    tracing_subscriber::fmt().init();
    actix_web::rt::System::new().block_on(async move {
        let listener = TcpListener::bind(config.bind)?;
        let node = Node::new(config).map_err(std::io::Error::other)?;
        let cettia = Cettia::with_defaults(node.clone());
        app(&cettia);
        nimbus::server::serve_with(node, listener, cettia, |_| {})?.await
    })?;
    Ok(())
}
