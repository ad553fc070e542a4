//! Nimbus: a real-time broadcast server.
//!
//! Nimbus speaks the Atmosphere protocol and Cettia 1.0 (with its Vibe 3.0.0-Alpha1 dialect) over
//! WebSocket, Server-Sent Events, HTTP streaming and long-polling. The crate is laid out in
//! floors, each using only the ones below it (see `docs/ARCHITECTURE.md`):
//!
//! - [`server`]: the edge and the only composition root: routes, CORS and cache headers,
//!   health checks, the chat page, building the node (and its Redis broker).
//! - [`atmosphere`] and [`cettia`]: one folder per protocol session: the session actors, their
//!   messages, their HTTP glue, and the application API of each protocol.
//! - [`session`]: the session core both protocols share: topic membership and catch-up, the
//!   slow-consumer policy, attaching a WebSocket.
//! - [`cluster`]: the Redis broker that spreads topics, histories and sessions over nodes.
//! - [`node`]: what one node shares across its workers (config, topics, broker, counters).
//! - [`gate`]: every check a client meets, in one place: tokens, session ids bound to their
//!   user, topic names and permissions, the topics cap and the publish rate.
//! - [`broker`]: the seam between sessions and the outside world (in-process by default).
//! - [`protocol`]: pure codecs that turn requests into intents and messages into wire frames.
//! - [`topic`]: broadcaster actors, one per topic, with a bounded replay history; they reach
//!   the cluster through their own [`topic::Upstream`].
//! - [`transport`]: protocol-blind I/O: the WebSocket writer, streaming bodies, parked polls.
//! - [`config`]: command-line flags and their environment twins.
//! - [`metrics`]: the labelled counters and gauges `/metrics` serves beside the node's own.
//!
//! There are two `unsafe` blocks, each saving a cache miss per delivered message: a WebSocket's
//! descriptor borrowed from the stream that owns it (`transport::ws::outbox`), and a prefetch
//! hint for the next member of a fan-out (`topic::direct::prefetch`).
#![deny(unsafe_code)]
#![deny(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::too_many_lines
)]

pub mod atmosphere;
pub mod broker;
pub mod cettia;
pub mod cluster;
pub mod config;
pub mod error;
pub mod gate;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod protocol;
pub mod server;
pub mod session;
pub mod topic;
pub mod transport;
pub mod webhook;

pub use config::Config;
