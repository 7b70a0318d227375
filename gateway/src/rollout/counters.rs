//! The exact counters a rollout is judged on: per variant, requests, errors and a latency histogram (atomics, one
//! add each on the request path); the comparisons of mirrored pairs; and a bounded window of each variant's
//! predictions for prediction drift.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Latency buckets: upper bounds 50 µs x 1.25^i, i = 0..63 (the last one ~63 s), and one for anything slower. A
/// quantile read from them is within 25% of the true one, finer than any latency check worth setting.
pub(super) const LATENCY_BUCKETS: usize = 64;
const FIRST_BOUND_SECONDS: f64 = 50e-6;
const GROWTH: f64 = 1.25;

/// Predictions kept per variant and step for prediction drift (8 bytes each).
pub(super) const PREDICTION_WINDOW: usize = 4096;

/// One variant's counts: one atomic add per request (its latency bucket, or an error counter), so two cores counting
/// at once contend on as little as possible. The request count is their sum.
#[derive(Debug)]
pub struct VariantCounters {
    /// Server-side failures (5xx): the model failed, timed out, or its queue was full.
    errors: AtomicU64,
    /// Client errors (4xx), not held against the variant.
    refused: AtomicU64,
    /// Latency of successful requests.
    latency: [AtomicU64; LATENCY_BUCKETS + 1],
}

impl Default for VariantCounters {
    fn default() -> Self {
        Self {
            errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A variant's counts read at one moment, which can be added up over steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    errors: u64,
    refused: u64,
    latency: [u64; LATENCY_BUCKETS + 1],
}

impl Default for Counts {
    fn default() -> Self {
        Self { errors: 0, refused: 0, latency: [0; LATENCY_BUCKETS + 1] }
    }
}

/// [`Counts`] as numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VariantReport {
    /// Requests counted.
    pub requests: u64,
    /// Server-side failures (5xx).
    pub errors: u64,
    /// Client errors (4xx), not held against the variant.
    pub client_errors: u64,
    /// errors / (requests - client errors).
    pub error_rate: Option<f64>,
    /// Median latency of successful requests (bucket upper bound).
    pub latency_p50_seconds: Option<f64>,
    /// 99th percentile latency of successful requests (bucket upper bound).
    pub latency_p99_seconds: Option<f64>,
}

impl VariantCounters {
    /// Counts one request: `ok`, or failed by the server (`fault`) or by the client.
    pub fn record(&self, ok: bool, fault: bool, seconds: f64) {
        let counter = if ok {
            &self.latency[bucket(seconds)]
        } else if fault {
            &self.errors
        } else {
            &self.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> Counts {
        Counts {
            errors: self.errors.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }

    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.counts().requests()
    }
}

impl Counts {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Counts) {
        self.errors += other.errors;
        self.refused += other.refused;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.successes() + self.errors + self.refused
    }

    /// Server-side failures counted.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Requests judged for the error rate: all but the client's errors.
    pub fn judged(&self) -> u64 {
        self.successes() + self.errors
    }

    /// Successful requests (those with a latency).
    pub fn successes(&self) -> u64 {
        self.latency.iter().sum()
    }

    /// The `q` quantile of the successful requests' latency (the upper bound of its bucket), in seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.successes();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        None
    }

    /// The numbers.
    pub fn report(&self) -> VariantReport {
        let judged = self.judged();
        VariantReport {
            requests: self.requests(),
            errors: self.errors,
            client_errors: self.refused,
            error_rate: (judged > 0).then(|| self.errors as f64 / judged as f64),
            latency_p50_seconds: self.quantile(0.5),
            latency_p99_seconds: self.quantile(0.99),
        }
    }
}

/// The bucket of a latency.
fn bucket(seconds: f64) -> usize {
    if seconds.is_nan() || seconds <= FIRST_BOUND_SECONDS {
        return 0;
    }
    let i = ((seconds / FIRST_BOUND_SECONDS).ln() / GROWTH.ln()).ceil();
    if i >= LATENCY_BUCKETS as f64 {
        LATENCY_BUCKETS
    } else {
        i as usize
    }
}

/// The upper bound of bucket `i` (the overflow bucket reports the last finite bound).
pub(super) fn upper_bound(i: usize) -> f64 {
    FIRST_BOUND_SECONDS * GROWTH.powi(i.min(LATENCY_BUCKETS - 1) as i32)
}

/// Comparisons of the two variants' answers to the same inputs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Compared {
    /// Rows compared.
    pub rows: u64,
    /// Of those, where both agree.
    pub agreed: u64,
    /// Pairs that could not be compared (an output missing or not numeric, or the other run failed).
    pub incomparable: u64,
    /// Mean absolute difference.
    pub mean_abs_diff: f64,
    /// Mean relative difference (|a - b| / |a|).
    pub mean_rel_diff: f64,
    /// Largest absolute difference.
    pub max_abs_diff: f64,
}

impl Compared {
    /// Adds one row.
    pub fn add(&mut self, agree: bool, abs: f64, rel: f64) {
        self.rows += 1;
        self.agreed += u64::from(agree);
        let n = self.rows as f64;
        if abs.is_finite() {
            self.mean_abs_diff += (abs - self.mean_abs_diff) / n;
            self.max_abs_diff = self.max_abs_diff.max(abs);
        }
        if rel.is_finite() {
            self.mean_rel_diff += (rel - self.mean_rel_diff) / n;
        }
    }

    /// agreed / rows.
    pub fn agreement(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.agreed as f64 / self.rows as f64)
    }
}

/// A bounded window of predictions: the last [`PREDICTION_WINDOW`]. Writers that find it busy skip (counted), so the
/// request path never waits on it.
#[derive(Debug, Default)]
pub struct PredictionWindow {
    values: Mutex<VecDeque<f64>>,
    skipped: AtomicU64,
}

impl PredictionWindow {
    /// Adds `values` (rows of one answer), unless another request is adding at this moment.
    pub fn extend(&self, values: &[f64]) {
        let Ok(mut window) = self.values.try_lock() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        for &v in values.iter().filter(|v| v.is_finite()) {
            if window.len() == PREDICTION_WINDOW {
                window.pop_front();
            }
            window.push_back(v);
        }
    }

    /// The values, sorted.
    pub fn sorted(&self) -> Vec<f64> {
        let mut values: Vec<f64> = self.values.lock().map(|w| w.iter().copied().collect()).unwrap_or_default();
        values.sort_by(f64::total_cmp);
        values
    }
}

/// Everything one step counts.
#[derive(Debug, Default)]
pub struct StepCounters {
    /// Per variant (stable, candidate).
    pub variants: [VariantCounters; 2],
    /// Mirrored pairs compared.
    pub compared: Mutex<Compared>,
    /// Per variant, its predictions.
    pub predictions: [PredictionWindow; 2],
}

impl StepCounters {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }
}
