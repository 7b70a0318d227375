//! Counters of one model version's queue and workers, readable from anywhere without a lock.
//!
//! The request path only increments and decrements atomics. Worker threads additionally wake anyone waiting for a
//! change ([`ModelStats::changed`]); that is how tests (and, later, metrics) observe the queue without sleeping.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Live counters of one model version.
#[derive(Debug, Default)]
pub struct ModelStats {
    incoming: AtomicUsize,
    queued: AtomicUsize,
    queue_high_water: AtomicUsize,
    running: AtomicUsize,
    batches: AtomicU64,
    batched_requests: AtomicU64,
    rows: AtomicU64,
    largest_batch_rows: AtomicUsize,
    changed: Notify,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests that resolved this model version and are being decoded and checked, not yet queued.
    pub incoming: usize,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// The most requests ever waiting in the queue at once.
    pub queue_high_water: usize,
    /// Requests in the batches the workers are running now.
    pub running: usize,
    /// Runs of the model (a batch of one request counts).
    pub batches: u64,
    /// Requests answered by those runs.
    pub batched_requests: u64,
    /// Rows run.
    pub rows: u64,
    /// The most rows run in one batch.
    pub largest_batch_rows: usize,
}

// === impl ModelStats ===

impl ModelStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            incoming: self.incoming.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            queue_high_water: self.queue_high_water.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            batched_requests: self.batched_requests.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            largest_batch_rows: self.largest_batch_rows.load(Ordering::Relaxed),
        }
    }

    /// Waits until `condition` holds for the counters. Woken by every change a worker makes.
    pub async fn wait_until(&self, condition: impl Fn(&StatsSnapshot) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Register before checking, so a change between the check and the await is not missed.
            changed.as_mut().enable();
            if condition(&self.snapshot()) {
                return;
            }
            changed.await;
        }
    }

    pub(super) fn incoming(&self) -> &AtomicUsize {
        &self.incoming
    }

    pub(super) fn is_incoming(&self) -> bool {
        self.incoming.load(Ordering::Relaxed) > 0
    }

    pub(super) fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the queue's real length after a send (the `queued` counter briefly includes refused attempts).
    pub(super) fn observe_depth(&self, depth: usize) {
        self.queue_high_water.fetch_max(depth, Ordering::Relaxed);
    }

    /// A queued job was taken off the queue without being enqueued by `enqueued` failing (the send failed).
    pub(super) fn unqueued(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn dequeued(&self, jobs: usize) {
        self.queued.fetch_sub(jobs, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub(super) fn started(&self, jobs: usize, rows: usize) {
        self.running.fetch_add(jobs, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_requests.fetch_add(jobs as u64, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.largest_batch_rows.fetch_max(rows, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub(super) fn finished(&self, jobs: usize) {
        self.running.fetch_sub(jobs, Ordering::Relaxed);
        self.changed.notify_waiters();
    }
}

/// Counts a request as incoming to a model version while it is alive.
pub(super) struct IncomingGuard<'a>(&'a AtomicUsize);

impl<'a> IncomingGuard<'a> {
    pub(super) fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for IncomingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
