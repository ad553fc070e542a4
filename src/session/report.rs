//! What a survey gathers: one node's report of itself, the reports of a survey, and the
//! surveys a node waits on. Data only, so both the control channel's commands and the survey
//! that sends them name it without naming each other.
use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What one node reports of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub clustered: bool,
    pub broker_ready: bool,
    /// Its sessions by protocol.
    pub sessions: BTreeMap<String, usize>,
    /// Topics with local members.
    pub topics: usize,
    pub published: u64,
    pub delivered: u64,
    pub websockets_open: u64,
    /// Its topics with their local member counts, when the survey asked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<(String, usize)>,
}

/// The reports of a survey, ordered by node, and how many live nodes did not answer in time.
#[derive(Debug)]
pub struct Survey {
    pub reports: Vec<NodeReport>,
    pub missing: usize,
}

/// Surveys this node is waiting on: survey id -> where their reports go.
#[derive(Default)]
pub(super) struct Pending(pub(super) Mutex<HashMap<String, mpsc::UnboundedSender<NodeReport>>>);

impl Pending {
    /// Hand a report to the survey waiting for it (one of another node is not ours).
    pub(super) fn deliver(&self, survey: &str, report: NodeReport) {
        if let Some(waiting) = self.0.lock().get(survey) {
            let _ = waiting.send(report);
        }
    }
}
