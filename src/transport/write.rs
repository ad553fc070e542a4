//! What a non-blocking write into a transport came to.

/// Result of a non-blocking write.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Taken by the transport (written, or queued within its bound).
    Written,
    /// The transport is full; wait until it is writable (see [`super::writable`]) first.
    Full,
    /// The client is gone.
    Closed,
}
