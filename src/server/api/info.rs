//! `info {}`: the answering node (its id, whether it is clustered and its broker reachable,
//! its sessions by protocol, topics and counters, at the top level), and the cluster: every
//! live node's report (a survey, `crate::session::survey`), the totals, and how many live
//! nodes did not answer in time.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{Api, ApiError};
use crate::session::NodeReport;

/// One node's report as the API shows it (its topic list is for `topics`).
fn node_json(report: &NodeReport) -> Value {
    let mut json = serde_json::to_value(report).expect("reports serialize");
    if let Some(fields) = json.as_object_mut() {
        fields.remove("members");
    }
    json
}

pub async fn call(api: &Api<'_>) -> Result<Value, ApiError> {
    let mut answer = node_json(&api.commands.report_here(false).await);
    // One node's survey is its own report; the distinct topics need each node's list.
    let survey = api.commands.survey(true).await?;
    let mut sessions: BTreeMap<&str, usize> = BTreeMap::new();
    let mut topics: BTreeSet<&str> = BTreeSet::new();
    for report in &survey.reports {
        for (protocol, n) in &report.sessions {
            *sessions.entry(protocol).or_default() += n;
        }
        topics.extend(report.members.iter().map(|(t, _)| t.as_str()));
    }
    answer["cluster"] = json!({
        "nodes": survey.reports.iter().map(node_json).collect::<Vec<_>>(),
        "nodes_missing": survey.missing,
        "sessions": sessions,
        "topics": topics.len(),
        "published": survey.reports.iter().map(|r| r.published).sum::<u64>(),
        "delivered": survey.reports.iter().map(|r| r.delivered).sum::<u64>(),
        "websockets_open": survey.reports.iter().map(|r| r.websockets_open).sum::<u64>(),
    });
    Ok(answer)
}
