//! `topics {}`: every topic with members anywhere in the cluster, with its member count summed
//! over the nodes (a survey of every live node, `crate::session::survey`); which nodes
//! answered, and how many live nodes did not in time.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Api, ApiError};

pub async fn call(api: &Api<'_>) -> Result<Value, ApiError> {
    let survey = api.commands.survey(true).await?;
    let mut members: BTreeMap<&str, usize> = BTreeMap::new();
    for report in &survey.reports {
        for (topic, n) in &report.members {
            *members.entry(topic).or_default() += n;
        }
    }
    let topics: Vec<Value> = members
        .into_iter()
        .map(|(topic, n)| json!({"topic": topic, "subscribers": n}))
        .collect();
    let nodes: Vec<&str> = survey.reports.iter().map(|r| r.node.as_str()).collect();
    Ok(json!({
        "node": api.node.id,
        "topics": topics,
        "nodes": nodes,
        "nodes_missing": survey.missing,
    }))
}
