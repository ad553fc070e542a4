//! `info {}`: the answering node: its id, whether it is clustered and its broker reachable,
//! the sessions it holds by protocol, its topics and its counters.
use serde_json::{json, Value};

use super::{Api, ApiError};

pub async fn call(api: &Api<'_>) -> Result<Value, ApiError> {
    let (sockets, _) = api.cettia.counts();
    let stats = api.node.snapshot(api.atmosphere.len());
    Ok(json!({
        "node": api.node.id,
        "clustered": stats.clustered,
        "broker_ready": stats.broker_ready,
        "sessions": {"atmosphere": api.atmosphere.len(), "cettia": sockets},
        "topics": stats.topics,
        "published": stats.published,
        "delivered": stats.delivered,
        "websockets_open": stats.websockets_open,
    }))
}
