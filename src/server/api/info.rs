//! `info {}`: the answering node (its id, whether it is clustered and its broker reachable,
//! its sessions by protocol, topics and counters, at the top level), and the cluster: every
//! live node's report (a survey, `crate::session::survey`), the totals, and how many live
//! nodes did not answer in time.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{Api, ApiError};
use crate::session::NodeReport;

fn node_json(report: &NodeReport) -> Value {
    json!({
        "node": report.node,
        "clustered": report.clustered,
        "broker_ready": report.broker_ready,
        "sessions": report.sessions,
        "topics": report.topics,
        "published": report.published,
        "delivered": report.delivered,
        "websockets_open": report.websockets_open,
    })
}

pub async fn call(api: &Api<'_>) -> Result<Value, ApiError> {
    let here = api.commands.report_here(false).await;
    let mut answer = node_json(&here);
    let cluster = if here.clustered {
        // The distinct topics need each node's list.
        let survey = api.commands.survey(true).await?;
        let mut sessions: BTreeMap<&str, usize> = BTreeMap::new();
        let mut topics: BTreeSet<&str> = BTreeSet::new();
        for report in &survey.reports {
            for (protocol, n) in &report.sessions {
                *sessions.entry(protocol).or_default() += n;
            }
            topics.extend(report.members.iter().map(|(t, _)| t.as_str()));
        }
        json!({
            "nodes": survey.reports.iter().map(node_json).collect::<Vec<_>>(),
            "nodes_missing": survey.missing,
            "sessions": sessions,
            "topics": topics.len(),
            "published": survey.reports.iter().map(|r| r.published).sum::<u64>(),
            "delivered": survey.reports.iter().map(|r| r.delivered).sum::<u64>(),
            "websockets_open": survey.reports.iter().map(|r| r.websockets_open).sum::<u64>(),
        })
    } else {
        json!({
            "nodes": [node_json(&here)],
            "nodes_missing": 0,
            "sessions": here.sessions,
            "topics": here.topics,
            "published": here.published,
            "delivered": here.delivered,
            "websockets_open": here.websockets_open,
        })
    };
    answer["cluster"] = cluster;
    Ok(answer)
}
