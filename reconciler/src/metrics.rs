//! The reconcile loop's Prometheus metrics, registered by the gateway into its `/metrics` registry. Label sets are
//! bounded: the outcome is one of five values; commits are never labels (they grow without bound), they are in the
//! status endpoint and on the gateway's model info metric.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::controller::Outcome;

/// A sync's outcome as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `applied`, `unchanged`, `refused`, `fetch_failed` or `superseded`.
    pub outcome: &'static str,
}

/// The result of reading the branch head for a push webhook that names another commit than the sync in flight.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeadLabel {
    /// `moved` (the sync in flight was superseded), `unmoved` (a replayed or stale webhook; nothing cancelled) or
    /// `failed` (the remote could not be read; nothing cancelled).
    pub head: &'static str,
}

/// Counters, a duration histogram and timestamps of the loop. Cloning shares the same series.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    syncs: Family<OutcomeLabel, Counter>,
    duration: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
    last_applied: Gauge<f64, AtomicU64>,
    last_success: Gauge<f64, AtomicU64>,
    head_refused: Gauge,
    push_checks: Family<HeadLabel, Counter>,
}

/// Sync duration buckets, in seconds: an unchanged ls-remote takes milliseconds, a push of a small model tens of
/// milliseconds, a large model or a slow remote seconds; the top bucket sits at the default 60 s Git timeout.
const DURATION_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self {
            syncs: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            last_applied: Gauge::default(),
            last_success: Gauge::default(),
            head_refused: Gauge::default(),
            push_checks: Family::default(),
        }
    }
}

impl SyncMetrics {
    /// Registers every series under `vane_sync_*` and `vane_last_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("vane_sync", "Syncs of the Git repository, by outcome", self.syncs.clone());
        registry.register(
            "vane_sync_duration_seconds",
            "Time from a sync's start to its outcome (ls-remote to swap)",
            self.duration.clone(),
        );
        registry.register(
            "vane_last_applied_commit_timestamp_seconds",
            "When the serving commit was applied (Unix time); 0 before the first",
            self.last_applied.clone(),
        );
        registry.register(
            "vane_last_successful_sync_timestamp_seconds",
            "When a sync last read the remote and applied or confirmed the serving state (Unix time)",
            self.last_success.clone(),
        );
        registry.register(
            "vane_sync_head_refused",
            "1 while the branch head is a refused commit and an older one serves (Stalled), else 0",
            self.head_refused.clone(),
        );
        registry.register(
            "vane_sync_push_checks",
            "Push webhooks naming another commit than the sync in flight, by what the remote's head showed: moved \
             (the sync was superseded), unmoved (a replayed or stale webhook; nothing cancelled) or failed",
            self.push_checks.clone(),
        );
    }

    /// Counts a push webhook's head check: `moved`, `unmoved` or `failed`.
    pub(crate) fn push_checked(&self, head: &'static str) {
        self.push_checks.get_or_create(&HeadLabel { head }).inc();
    }

    /// Push webhooks whose head check came out as `head` (`moved`, `unmoved`, `failed`).
    pub fn push_checks(&self, head: &'static str) -> u64 {
        self.push_checks.get_or_create(&HeadLabel { head }).get()
    }

    /// After a restart: whether the branch head was refused (Stalled) when the last run stopped.
    pub(crate) fn restored(&self, head_refused: bool) {
        self.head_refused.set(i64::from(head_refused));
    }

    /// Records a finished sync at `now_unix` seconds.
    pub(crate) fn observe(&self, outcome: Outcome, seconds: f64, now_unix: f64) {
        let label = OutcomeLabel { outcome: outcome.as_str() };
        self.syncs.get_or_create(&label).inc();
        self.duration.get_or_create(&label).observe(seconds);
        match outcome {
            Outcome::Applied => {
                self.last_applied.set(now_unix);
                self.last_success.set(now_unix);
                self.head_refused.set(0);
            }
            Outcome::Unchanged => {
                self.last_success.set(now_unix);
            }
            Outcome::Refused => {
                self.head_refused.set(1);
            }
            Outcome::FetchFailed | Outcome::Superseded => {}
        }
    }
}
