//! Counters of one model version's queue and workers, readable from anywhere without a lock.
//!
//! The request path only increments and decrements atomics. Worker threads additionally wake anyone waiting for a
//! change ([`ModelStats::wait_until`]); that is how tests (and, later, metrics) observe the queue without sleeping.

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
    /// Tasks in [`ModelStats::wait_until`]: with none (the request path's case), changes wake nobody, and skip
    /// `Notify::notify_waiters`, which takes a mutex (three times per request, on a line both cores write).
    waiting: AtomicUsize,
    inline_runs: AtomicU64,
    /// One request's run on its own, timed at load in CPU time (nanoseconds): what decides whether a request may
    /// run on the caller's thread.
    run_nanos: AtomicU64,
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
    /// Runs made on the request's own thread instead of a worker's (counted in `batches` too).
    pub inline_runs: u64,
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
            inline_runs: self.inline_runs.load(Ordering::Relaxed),
        }
    }

    /// Waits until `condition` holds for the counters. Woken by every change a worker makes.
    pub async fn wait_until(&self, condition: impl Fn(&StatsSnapshot) -> bool) {
        // Counted before the first check, so a change after it sees the waiter (both sides order their store before
        // their load with SeqCst).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
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

    /// Wakes the waiters of [`ModelStats::wait_until`], if any.
    fn wake_waiters(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    pub(super) fn incoming(&self) -> &AtomicUsize {
        &self.incoming
    }

    /// Whether the calling request (counted as incoming) is the only one this version has: nothing else on its
    /// way, queued or running, so the batcher would run it alone.
    pub(super) fn is_alone(&self) -> bool {
        self.incoming.load(Ordering::Relaxed) <= 1
            && self.queued.load(Ordering::Relaxed) == 0
            && self.running.load(Ordering::Relaxed) == 0
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
        self.wake_waiters();
    }

    pub(super) fn started(&self, jobs: usize, rows: usize) {
        self.running.fetch_add(jobs, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_requests.fetch_add(jobs as u64, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.largest_batch_rows.fetch_max(rows, Ordering::Relaxed);
        self.wake_waiters();
    }

    /// The load's estimate of one request's run on its own.
    pub fn run_estimate(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.run_nanos.load(Ordering::Relaxed))
    }

    /// Sets the estimate (from the timed runs at load).
    pub(super) fn set_run_estimate(&self, run: std::time::Duration) {
        self.run_nanos.store(u64::try_from(run.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts a run on its caller's thread.
    pub(super) fn ran_inline(&self) {
        self.inline_runs.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn finished(&self, jobs: usize) {
        self.running.fetch_sub(jobs, Ordering::Relaxed);
        self.wake_waiters();
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
