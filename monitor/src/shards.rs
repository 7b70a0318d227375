//! Per-thread shards: what request threads update on every request (the monitor's inbox, the gateway's request
//! counters and histograms) without two cores writing one cache line. A shared counter that every request
//! increments moves its line between cores on every increment; on two busy cores that, not the arithmetic, was the
//! cost of telemetry (`cargo bench --bench telemetry_cost`). Each thread takes a slot the first time it asks and
//! keeps it; a sharded value has one shard per slot (modulo its shard count), and readers sum or drain them all.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// `T` alone on its 128 bytes (a cache line and the one the adjacent-line prefetcher pairs with it).
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

/// One `T` per thread slot. A thread always gets the same shard; two threads share one only when there are more
/// threads than shards, which costs contention, never correctness.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[Padded<T>]>,
}

impl<T> Sharded<T> {
    /// [`shard_count`] shards made by `make`.
    pub fn new(make: impl FnMut() -> T) -> Self {
        Self::with_count(shard_count(), make)
    }

    /// `count` (at least one) shards made by `make`.
    pub fn with_count(count: usize, mut make: impl FnMut() -> T) -> Self {
        Self { shards: (0..count.max(1)).map(|_| Padded(make())).collect() }
    }

    /// The calling thread's shard.
    pub fn mine(&self) -> &T {
        &self.shards[slot() % self.shards.len()].0
    }

    /// Every shard.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|p| &p.0)
    }

    /// The number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Never true: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }
}

/// Shards per sharded value: twice the cores (at least 2, at most 64), so tokio's workers, which take the first
/// slots, rarely share one with each other or with the blocking pool's threads.
pub fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get() * 2).clamp(2, 64))
}

/// This thread's slot: 0 for the first thread that asks, 1 for the next, and so on.
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

/// A counter that each thread increments in its own shard (no cache line shared between cores on the request
/// path); a scrape sums the shards.
#[derive(Debug, Clone)]
pub struct ShardedCounter(Arc<Sharded<AtomicU64>>);

impl Default for ShardedCounter {
    fn default() -> Self {
        Self(Arc::new(Sharded::new(AtomicU64::default)))
    }
}

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.mine().fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_keeps_its_shard_and_threads_spread_over_shards() {
        // More shards than this process will have threads: distinct threads always get distinct shards.
        let sharded = Sharded::with_count(4096, || AtomicU64::new(0));
        assert_eq!(std::mem::align_of::<Padded<AtomicU64>>(), 128);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let first: *const AtomicU64 = sharded.mine();
                    for _ in 0..1000 {
                        let shard = sharded.mine();
                        assert!(std::ptr::eq(shard, first), "a thread moved shards");
                        shard.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let counts: Vec<u64> = sharded.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts.iter().sum::<u64>(), 4000, "nothing lost");
        assert_eq!(counts.iter().filter(|&&c| c > 0).count(), 4, "four threads, four shards");
    }
}
