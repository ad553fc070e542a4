//! `topics {}`: the topics with subscribers on the answering node, with their counts.
//! (Cluster-wide totals need the nodes' shared directory, not built yet: in a cluster this
//! answers for the node that got the call, and says which.)
use serde_json::{json, Value};

use super::{Api, ApiError};

pub async fn call(api: &Api<'_>) -> Result<Value, ApiError> {
    let topics: Vec<Value> = api
        .node
        .topics
        .member_counts()
        .await
        .into_iter()
        .map(|(topic, n)| json!({"topic": &*topic, "subscribers": n}))
        .collect();
    Ok(json!({ "node": api.node.id, "topics": topics }))
}
