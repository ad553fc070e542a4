//! Graceful shutdown: leave the rotation, hand clients to other nodes, then stop.
//!
//! On SIGTERM or SIGINT the node
//! 1. reports not ready (`/readyz` 503) and keeps serving for a moment, so load balancers stop
//!    sending it new requests (HAProxy checks every second);
//! 2. closes every client transport (WebSocket close 1012 "service restart", streams ended,
//!    parked long-polls answered) after recording, in a cluster, where each client stands; the
//!    clients reconnect through the balancer and resume on another node;
//! 3. stops the HTTP server, giving in-flight requests what is left of `--drain-secs`.
use std::time::Duration;

use actix_web::dev::ServerHandle;

use crate::atmosphere::messages::DropTransport;
use crate::atmosphere::Atmosphere;

pub async fn on_signal(atmosphere: Atmosphere, server: ServerHandle) {
    let node = atmosphere.node().clone();
    wait_for_signal().await;
    let budget = Duration::from_secs(node.config.drain_secs);
    tracing::info!(?budget, "shutting down: draining");
    node.start_draining();
    // Leave the rotation first: a third of the budget, at most three health-check intervals.
    tokio::time::sleep((budget / 3).min(Duration::from_secs(3))).await;
    let connections = atmosphere.connections();
    tracing::info!(count = connections.len(), "closing client transports");
    for connection in &connections {
        // `send`, not `do_send`: wait until each connection has handled it (and queued its
        // session record), whatever its mailbox holds.
        let _ = tokio::time::timeout(Duration::from_secs(1), connection.send(DropTransport)).await;
    }
    // Let the session records and the last answers go out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop(true).await;
    tracing::info!("stopped");
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals; shutdown only by kill");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
