//! The Cettia 1.0 conformance testee, written on Nimbus's public API.
//!
//! `cargo run --release --example cettia_testee -- --bind 127.0.0.1:8000` serves what the
//! official suite (`test/server.js` of `cettia-protocol@1.0.0`) drives:
//!
//! - `GET /setup?heartbeat=<ms>&_heartbeat=<ms>`: the heartbeat of sockets created afterwards;
//! - `/cettia` with, on every socket: `abort` closes the socket, `echo` sends the data back,
//!   `/reply/inbound` resolves or rejects the event's reply with `data.data` as `data.type`
//!   says, and `/reply/outbound` sends `test` asking for a reply, then sends `done` with the
//!   value the client resolved or rejected it with.
//!
//! Every `nimbus` flag applies (`--help`).
use std::net::TcpListener;

use actix_web::{web, HttpResponse};
use clap::Parser;
use nimbus::cettia::{Cettia, Value};
use nimbus::node::Node;

/// `data.<name>` of an event's map data.
fn field(data: &Value, name: &str) -> Value {
    match data {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Nil),
        _ => Value::Nil,
    }
}

fn testee(cettia: &Cettia) {
    cettia.on("abort", |socket, _, _| socket.close());
    cettia.on("echo", |socket, data, _| {
        let _ = socket.send("echo", data);
    });
    cettia.on("/reply/inbound", |_, data, reply| {
        let Some(reply) = reply else { return };
        let value = field(&data, "data");
        match field(&data, "type").as_str() {
            Some("resolved") => reply.resolve(value),
            _ => reply.reject(value),
        }
    });
    cettia.on("/reply/outbound", |socket, data, _| {
        let _ = socket.send_with_reply("test", field(&data, "data"), |socket, outcome| {
            let value = match outcome {
                Ok(v) | Err(v) => v,
            };
            let _ = socket.send("done", value);
        });
    });
}

#[derive(serde::Deserialize)]
struct Setup {
    heartbeat: Option<u64>,
    #[serde(rename = "_heartbeat")]
    fast_heartbeat: Option<u64>,
}

async fn setup(cettia: web::Data<Cettia>, query: web::Query<Setup>) -> HttpResponse {
    let (heartbeat, fast) = (
        query.heartbeat.unwrap_or(20_000),
        query.fast_heartbeat.unwrap_or(5_000),
    );
    cettia.set_heartbeat(heartbeat, fast);
    HttpResponse::Ok().finish()
}

fn main() -> anyhow::Result<()> {
    let config = nimbus::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    actix_web::rt::System::new().block_on(async move {
        let listener = TcpListener::bind(config.bind)?;
        let node = Node::new(config).map_err(std::io::Error::other)?;
        let cettia = Cettia::new(node.clone());
        testee(&cettia);
        eprintln!("cettia testee on http://{}/cettia", listener.local_addr()?);
        nimbus::server::serve_with(node, listener, cettia, |routes| {
            routes.route("/setup", web::get().to(setup));
        })?
        .await
    })?;
    Ok(())
}
