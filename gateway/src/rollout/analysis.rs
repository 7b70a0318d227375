//! The checks: each compares the candidate with the stable on the step's counters and says passed, failed, or
//! waiting (fewer than `min_samples` on a side: low traffic neither passes nor fails).

use monitor::stats::numeric::{psi, Bins};
use serde::Serialize;

use super::{Rollout, StepCounters, Variant};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// `error_rate_increase`, `latency_p99_ratio`, `agreement`, `prediction_psi` or `quality_drop`.
    pub name: &'static str,
    /// The value measured, once there are samples.
    pub value: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// `max` or `min`: which side of the threshold passes.
    pub bound: &'static str,
    /// `Some(true)` passed, `Some(false)` failed, `None` waiting for samples.
    pub passed: Option<bool>,
    /// Samples on each side (stable, candidate).
    pub samples: (u64, u64),
    /// What the value is made of, in words.
    pub detail: String,
}

impl CheckResult {
    /// One line: name, value, threshold and the figures behind it.
    pub fn describe(&self) -> String {
        let value = self.value.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
        let op = if self.bound == "max" { ">" } else { "<" };
        format!("{} = {value} {op} {} ({})", self.name, self.threshold, self.detail)
    }
}

/// Each variant's quality on labelled predictions (metric value, labelled pairs), and the metric.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityInputs {
    /// The metric's name.
    pub metric: &'static str,
    /// Whether a larger value is better (accuracy) or worse (mae).
    pub higher_is_better: bool,
    /// The stable's (value, pairs).
    pub stable: Option<(f64, u64)>,
    /// The candidate's (value, pairs).
    pub candidate: Option<(f64, u64)>,
}

/// Successful requests each side needs before its p99 latency is judged.
pub(super) const P99_SAMPLES: u64 = 200;

/// Runs every configured check.
pub(super) fn run(rollout: &Rollout, counters: &StepCounters, quality: Option<QualityInputs>) -> Vec<CheckResult> {
    let checks = &rollout.checks;
    let min = rollout.spec.analysis.min_samples.max(1);
    let candidate = &counters.variants[Variant::Candidate as usize].counts();
    // The stable's side: the step's own traffic, or, when the step sends it too little (a canary at 100%), all of
    // its traffic since the rollout began.
    let step_stable = counters.variants[Variant::Stable as usize].counts();
    let stable = &if step_stable.judged() >= min { step_stable } else { rollout.totals(Variant::Stable) };
    let mut results = Vec::new();
    let verdict_at = |min: u64, samples: (u64, u64), value: Option<f64>, threshold: f64, max: bool| {
        if samples.0 < min || samples.1 < min {
            return None;
        }
        value.map(|v| if max { v <= threshold } else { v >= threshold })
    };
    let verdict = |samples: (u64, u64), value: Option<f64>, threshold: f64, max: bool| {
        verdict_at(min, samples, value, threshold, max)
    };
    if let Some(limit) = checks.error_rate_increase {
        let samples = (stable.judged(), candidate.judged());
        let rate = |errors: u64, n: u64| if n == 0 { 0.0 } else { errors as f64 / n as f64 };
        let (s, c) = (rate(stable.errors(), samples.0), rate(candidate.errors(), samples.1));
        let value = (samples.0 > 0 && samples.1 > 0).then_some(c - s);
        results.push(CheckResult {
            name: "error_rate_increase",
            value,
            threshold: limit,
            bound: "max",
            passed: verdict(samples, value, limit, true),
            samples,
            detail: format!(
                "candidate {}/{} errors, stable {}/{}",
                candidate.errors(),
                samples.1,
                stable.errors(),
                samples.0
            ),
        });
    }
    if let Some(limit) = checks.latency_p99_ratio {
        let samples = (stable.successes(), candidate.successes());
        let (s, c) = (stable.quantile(0.99), candidate.quantile(0.99));
        let value = match (s, c) {
            (Some(s), Some(c)) if s > 0.0 => Some(c / s),
            _ => None,
        };
        results.push(CheckResult {
            name: "latency_p99_ratio",
            value,
            threshold: limit,
            bound: "max",
            // A p99 of fewer than 200 samples is about the maximum: one slow request would decide.
            passed: verdict_at(min.max(P99_SAMPLES), samples, value, limit, true),
            samples,
            detail: format!(
                "p99 candidate {} ms, stable {} ms",
                c.map_or_else(|| "-".to_owned(), |c| format!("{:.3}", c * 1e3)),
                s.map_or_else(|| "-".to_owned(), |s| format!("{:.3}", s * 1e3))
            ),
        });
    }
    if let Some(limit) = checks.agreement {
        let compared = counters.compared.lock().map(|c| c.clone()).unwrap_or_default();
        let samples = (compared.rows, compared.rows);
        let value = compared.agreement();
        results.push(CheckResult {
            name: "agreement",
            value,
            threshold: limit,
            bound: "min",
            passed: verdict(samples, value, limit, false),
            samples,
            detail: format!(
                "{} of {} rows agree, mean |diff| {:.4}",
                compared.agreed, compared.rows, compared.mean_abs_diff
            ),
        });
    }
    if let Some(limit) = checks.prediction_psi {
        let mut s = counters.predictions[0].sorted();
        if (s.len() as u64) < min {
            s = rollout.baseline.sorted();
        }
        let c = counters.predictions[1].sorted();
        let samples = (s.len() as u64, c.len() as u64);
        let value = Bins::from_sorted_reference(&s)
            .and_then(|bins| (!c.is_empty()).then(|| psi(&bins.counts_sorted(&s), &bins.counts_sorted(&c))).flatten());
        results.push(CheckResult {
            name: "prediction_psi",
            value,
            threshold: limit,
            bound: "max",
            passed: verdict(samples, value, limit, true),
            samples,
            detail: format!("candidate's {} predictions against the stable's {}", samples.1, samples.0),
        });
    }
    if let Some(limit) = checks.quality_drop {
        let q = quality.unwrap_or(QualityInputs {
            metric: "accuracy",
            higher_is_better: true,
            stable: None,
            candidate: None,
        });
        let samples = (q.stable.map_or(0, |s| s.1), q.candidate.map_or(0, |c| c.1));
        let value = match (q.stable, q.candidate) {
            (Some((s, _)), Some((c, _))) if q.higher_is_better => Some(s - c),
            (Some((s, _)), Some((c, _))) => Some(c - s),
            _ => None,
        };
        let shown = |v: Option<(f64, u64)>| v.map_or_else(|| "-".to_owned(), |(v, _)| format!("{v:.4}"));
        results.push(CheckResult {
            name: "quality_drop",
            value,
            threshold: limit,
            bound: "max",
            passed: verdict(samples, value, limit, true),
            samples,
            detail: format!(
                "{} candidate {} on {} labels, stable {} on {}",
                q.metric,
                shown(q.candidate),
                samples.1,
                shown(q.stable),
                samples.0
            ),
        });
    }
    results
}
