//! Nimbus: a real-time broadcast server.
//!
//! Nimbus speaks the Atmosphere protocol and Cettia 1.0 (with its Vibe 3.0.0-Alpha1 dialect) over
//! WebSocket, Server-Sent Events, HTTP streaming and long-polling. The crate is laid out the way a message travels:
//!
//! - [`server`]: the HTTP edge (routes, CORS and cache headers, health checks, the chat page).
//! - [`protocol`]: pure codecs that turn requests into intents and messages into wire frames.
//! - [`transport`]: connection actors, one per logical client, owning whichever transport is
//!   attached (WebSocket, SSE, streaming body, parked long-poll).
//! - [`topic`]: broadcaster actors, one per topic, with a bounded replay history.
//! - [`broker`]: the seam between topics and the outside world (in-process by default).
//! - [`cluster`]: the Redis broker that spreads topics, histories and sessions over nodes.
//! - [`config`]: command-line flags and their environment twins.
//! - [`cettia`]: the Cettia/Vibe socket API for applications embedding Nimbus.
//!
//! There are two `unsafe` blocks, each saving a cache miss per delivered message: a WebSocket's
//! descriptor borrowed from the stream that owns it (`transport::ws::outbox`), and a prefetch
//! hint for the next member of a fan-out (`topic::direct::prefetch`).
#![deny(unsafe_code)]

pub mod broker;
pub mod cluster;
pub mod config;
pub mod error;
pub mod node;
pub mod protocol;
pub mod server;
pub mod topic;
pub mod transport;

pub use config::Config;
pub use transport::cettia;
