//! Surveys: every node's report, gathered by one node for the backend API's cluster-wide
//! `topics` and `info`.
//!
//! The asking node publishes a [`Command::Survey`] on the control channel; every node (the
//! asker included) answers with a [`Command::Report`] of its own sessions, topics and counters,
//! and the asker collects the reports until it has one per live node (the nodes beating in
//! Redis) or [`SURVEY_WAIT`] has passed; what is missing is said in the answer, not hidden.
//! Reports go to every node on the channel, so a survey costs the cluster N small messages
//! (or, with topics, each node's topic list): an operator's call, not a client's.
use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::command::{Command, Commands};
use super::report::{NodeReport, Pending, Survey};
use crate::topic::StoreError;

/// Longest a survey waits for the last live node's report.
pub const SURVEY_WAIT: Duration = Duration::from_secs(2);
/// Surveys in flight on one node, at most: past it a call is refused (503) rather than queued.
pub const MAX_SURVEYS: usize = 16;

/// Removes a survey's waiter however the survey ends.
struct Waiting<'a> {
    pending: &'a Pending,
    survey: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending.0.lock().remove(&self.survey);
    }
}

impl Commands {
    /// Every node's report (with its topics' member counts if `members`): this node's alone
    /// when it is not clustered.
    pub async fn survey(&self, members: bool) -> Result<Survey, StoreError> {
        let Some(control) = self.control() else {
            return Ok(Survey {
                reports: vec![self.report_here(members).await],
                missing: 0,
            });
        };
        // This node beats too; a node that has not beaten yet still answers, and is welcome.
        let expected = control.live_nodes().await?.max(1);
        let survey = uuid::Uuid::new_v4().simple().to_string();
        let (reports_in, mut reports) = mpsc::unbounded_channel();
        {
            let mut pending = self.pending_surveys().0.lock();
            if pending.len() >= MAX_SURVEYS {
                return Err(StoreError::Unreachable(
                    "too many surveys of the cluster in flight; retry".into(),
                ));
            }
            pending.insert(survey.clone(), reports_in);
        }
        let _waiting = Waiting {
            pending: self.pending_surveys(),
            survey: survey.clone(),
        };
        let ask = Command::Survey {
            survey: survey.clone(),
            members,
        };
        control
            .publish_control(serde_json::to_vec(&ask).expect("commands serialize"))
            .await?;
        let mut got: BTreeMap<String, NodeReport> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + SURVEY_WAIT;
        while got.len() < expected {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(report)) => {
                    got.insert(report.node.clone(), report);
                }
                _ => break,
            }
        }
        Ok(Survey {
            missing: expected.saturating_sub(got.len()),
            reports: got.into_values().collect(),
        })
    }

    /// Answer survey `survey` with this node's report (on the relay task: the report is
    /// gathered on a task of its own).
    pub(super) fn answer_survey(&self, survey: String, members: bool) {
        let me = self.clone();
        tokio::spawn(async move {
            let Some(control) = me.control() else { return };
            let report = Command::Report {
                survey,
                report: Box::new(me.report_here(members).await),
            };
            let payload = serde_json::to_vec(&report).expect("commands serialize");
            if let Err(error) = control.publish_control(payload).await {
                tracing::warn!(%error, "survey report not sent");
            }
        });
    }

    /// This node's report.
    pub async fn report_here(&self, members: bool) -> NodeReport {
        let node = self.node();
        let sessions: BTreeMap<String, usize> = self
            .local_sessions()
            .iter()
            .map(|s| (s.protocol().to_string(), s.count()))
            .collect();
        let stats = node.snapshot(0);
        let members = if members {
            node.topics
                .member_counts()
                .await
                .into_iter()
                .map(|(topic, n)| (topic.to_string(), n))
                .collect()
        } else {
            Vec::new()
        };
        NodeReport {
            node: stats.node,
            clustered: stats.clustered,
            broker_ready: stats.broker_ready,
            sessions,
            topics: stats.topics,
            published: stats.published,
            delivered: stats.delivered,
            websockets_open: stats.websockets_open,
            members,
        }
    }
}
