//! A session record: where one logical client stands, kept by cluster brokers so that the next
//! poll or reconnect can be served by any node.

/// What a node needs to continue a client it has never seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRecord {
    /// The topic the session belongs to.
    pub topic: Option<String>,
    /// Epoch of `cursor` (cursors of another topic epoch are not comparable).
    pub epoch: u64,
    /// The last sequence handed to the client.
    pub cursor: u64,
    /// A long-poll is (or was, when its node died or its client gave up) outstanding.
    pub polling: bool,
    /// The node that last served the session.
    pub node: Option<String>,
    /// The earliest cursor the session may take in `epoch` (where it joined): what its client
    /// acknowledges never reaches before it, on whichever node.
    pub floor: Option<u64>,
}

impl SessionRecord {
    /// The cursor, if it belongs to `epoch`.
    pub fn cursor_in(&self, epoch: u64) -> Option<u64> {
        (self.epoch == epoch && epoch != 0).then_some(self.cursor)
    }
}
