//! Direct delivery: a member whose transport can take a frame without a message to its actor.
//!
//! A WebSocket client that is caught up with its topic lends the topic a way to write to its
//! WebSocket; the topic then delivers by writing the shared frame to the WebSocket itself, with no
//! actor message and no task wake-up per recipient. Anything out of the ordinary (the member
//! fell behind, its WebSocket is full, it is reconnecting) makes the member refuse, and the
//! message goes to its actor as [`super::Deliver`], which serves it from the history.
use super::Envelope;

/// Implemented by members that can be written to directly.
pub trait DirectWrite: Send + Sync {
    /// Deliver `envelope`, numbered in topic `epoch`, now. Returns `false` when the member
    /// cannot take it directly; the topic then hands it to the member's actor.
    fn try_deliver(&self, epoch: u64, envelope: &Envelope) -> bool;
}

/// Ask the CPU to start loading a member's lane into its cache, so that the next delivery
/// does not stall on it. A fan-out walks thousands of members, each delivery a system call
/// long (microseconds), and the lane touched first by each is cold: `perf` put ~6 % of a
/// node's CPU on that one load in the 5,000-subscriber bench. A hint, never a fault.
pub fn prefetch(direct: &dyn DirectWrite) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = (direct as *const dyn DirectWrite).cast::<i8>();
        for offset in (0..std::mem::size_of_val(direct)).step_by(64) {
            // SAFETY: a prefetch only hints the cache; it reads nothing the program sees and
            // cannot fault (the addresses are the live member's own bytes anyway). It is
            // `unsafe` only because it is a `target_feature` intrinsic (SSE, which every
            // x86_64 CPU has).
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = direct;
}
