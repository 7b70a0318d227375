//! The in-flight memory budget: one byte count shared by every request, REST and gRPC, so the requests a server
//! holds at once can never add up to more memory than the operator allowed (`--max-inflight-bytes`).
//!
//! What a request is charged, and when:
//! - its body, chunk by chunk as it arrives (nothing is buffered past the budget: the chunk that does not fit ends the
//!   read with 503 and `Retry-After`), so a client must actually send bytes to hold them;
//! - before decoding, [`DECODE_FACTOR`] times the body, the most its decoded tensors may cost (the decoder refuses a
//!   request that would need more with a 400); after decoding, what the tensors did not use is given back.
//!
//! The charge is held until the answer is written, and released when the request ends however it ends (the permit is
//! dropped with the request's future, also on timeout or disconnect). Checks never wait: a full budget is a 503 now,
//! not a queue.
//!
//! The limit is what resident memory may grow by. Requests are admitted up to the limit less a headroom
//! ([`headroom`]: an eighth, at least 32 MiB, at most half), because memory also goes where no request is charged:
//! buffers freed but not yet returned by the allocator, each connection's read buffer, allocator metadata. With it,
//! the hostile suite's peak stays under idle + limit (`cargo test -p gateway --test hostile -- --nocapture` prints
//! both); without it, that test's 32 concurrent 16 MiB bodies went past the limit.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::ApiError;

/// The most a request's decoded tensors may cost, as a multiple of its body. Numbers cost at most 4x their JSON text
/// (`0,` is 2 bytes and an FP64 is 8); a BYTES element costs 24 bytes plus its text, so short strings are the worst
/// case: `"",` is 3 bytes of JSON and an empty binary string 4, both 24 in memory. 8x covers every datatype in both
/// encodings; the decoder also allows a fixed [`DECODE_SLACK`] so small requests never hit the multiple.
pub const DECODE_FACTOR: usize = 8;

/// Decoding may always use this much besides [`DECODE_FACTOR`] times the body (a few rows of any model).
pub const DECODE_SLACK: usize = 64 * 1024;

/// The default `--max-inflight-bytes`: half of the 2 GiB memory limit in `configs/k8s`, leaving the other half for
/// the models, ONNX Runtime's arenas, batches being run and the monitor.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 1 << 30;

/// The shared budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    bytes: Arc<Semaphore>,
    limit: usize,
}

/// What one request holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: MemoryBudget,
    held: Option<OwnedSemaphorePermit>,
}

/// What of a `limit` is kept back from requests: an eighth, at least 32 MiB, at most half.
pub fn headroom(limit: usize) -> usize {
    (limit / 8).max(32 << 20).min(limit / 2)
}

// === impl MemoryBudget ===

impl MemoryBudget {
    /// A budget of `limit` bytes (at least one byte; at most tokio's semaphore limit), of which requests may hold
    /// all but the [`headroom`].
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self { bytes: Arc::new(Semaphore::new(limit - headroom(limit))), limit }
    }

    /// The configured limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged to requests right now.
    pub fn in_use(&self) -> usize {
        self.limit - headroom(self.limit) - self.bytes.available_permits()
    }

    /// An empty charge for one request.
    pub fn charge(&self) -> Charge {
        Charge { budget: self.clone(), held: None }
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_INFLIGHT_BYTES)
    }
}

// === impl Charge ===

impl Charge {
    /// Adds `bytes` to what this request holds, or refuses with 503 if the budget cannot cover them now.
    pub fn add(&mut self, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let refused = || ApiError::MemoryBudget { limit_bytes: self.budget.limit };
        let wanted = u32::try_from(bytes).map_err(|_| refused())?;
        let permit = Arc::clone(&self.budget.bytes).try_acquire_many_owned(wanted).map_err(|_| refused())?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }

    /// Gives back all but `keep` bytes of what this request holds.
    pub fn shrink_to(&mut self, keep: usize) {
        if let Some(held) = &mut self.held {
            let surplus = held.num_permits().saturating_sub(keep);
            drop(held.split(surplus));
        }
    }

    /// Bytes this request holds.
    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_refuse_past_the_limit_and_are_given_back() {
        // A tiny budget keeps half back (the 32 MiB floor is capped at half the limit).
        let budget = MemoryBudget::new(2000);
        assert_eq!(headroom(2000), 1000);
        assert_eq!(headroom(1 << 30), 128 << 20);
        assert_eq!(headroom(128 << 20), 32 << 20);
        let mut a = budget.charge();
        a.add(600).unwrap();
        a.add(300).unwrap();
        assert_eq!((a.held(), budget.in_use()), (900, 900));
        let mut b = budget.charge();
        let refused = b.add(200).unwrap_err();
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after_seconds(), Some(1));
        a.shrink_to(100);
        assert_eq!(budget.in_use(), 100);
        b.add(200).unwrap();
        drop(a);
        assert_eq!(budget.in_use(), 200);
        drop(b);
        assert_eq!(budget.in_use(), 0);
        // More than a u32 of permits at once is refused, not wrapped.
        assert!(MemoryBudget::new(usize::MAX).charge().add(usize::MAX).is_err());
    }
}
