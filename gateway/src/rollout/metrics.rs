//! The `vane_rollout_*` series, read from the served table's rollouts at each scrape (no series outlives its
//! rollout, and the request path pays nothing for them).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{Phase, Variant};
use crate::registry::Registry;

/// Renders every rollout's series from the current table.
pub struct RolloutCollector(pub Arc<Registry>);

impl std::fmt::Debug for RolloutCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RolloutCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(Labels, M)],
) -> Result<(), std::fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for RolloutCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table = self.0.snapshot();
        let (mut phase, mut weight, mut step, mut failures) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut requests, mut errors, mut p99, mut checks, mut decisions, mut dropped) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for rollout in table.rollouts() {
            let report = rollout.report();
            let model = || vec![("model", rollout.model.clone()), ("candidate", rollout.spec.candidate.to_string())];
            for p in Phase::ALL {
                let mut labels = model();
                labels.push(("phase", p.as_str().to_owned()));
                phase.push((labels, ConstGauge::new(i64::from(p == report.phase))));
            }
            weight.push((model(), ConstGauge::new(report.weight)));
            step.push((model(), ConstGauge::new(report.step as i64)));
            failures.push((model(), ConstGauge::new(i64::from(report.failures))));
            dropped.push((model(), ConstCounter::new(report.mirrors_dropped)));
            for (variant, totals) in
                [(Variant::Stable, &report.totals.stable), (Variant::Candidate, &report.totals.candidate)]
            {
                let mut labels = model();
                labels.push(("variant", variant.as_str().to_owned()));
                requests.push((labels.clone(), ConstCounter::new(totals.requests)));
                errors.push((labels.clone(), ConstCounter::new(totals.errors)));
                if let Some(seconds) = totals.latency_p99_seconds {
                    p99.push((labels, ConstGauge::new(seconds)));
                }
            }
            for check in report.checks.iter().filter(|c| c.value.is_some()) {
                let mut labels = model();
                labels.push(("check", check.name.to_owned()));
                checks.push((labels, ConstGauge::new(check.value.unwrap_or(f64::NAN))));
            }
            for (action, count) in rollout.decision_counts() {
                let mut labels = model();
                labels.push(("action", action.to_owned()));
                decisions.push((labels, ConstCounter::new(count)));
            }
        }
        let e = &mut encoder;
        family(e, "vane_rollout_phase", "1 for the rollout's phase, 0 for the others", MetricType::Gauge, &phase)?;
        family(
            e,
            "vane_rollout_weight_percent",
            "The candidate's share of traffic (shadow: of requests mirrored)",
            MetricType::Gauge,
            &weight,
        )?;
        family(e, "vane_rollout_step", "The step the rollout is at, from 1", MetricType::Gauge, &step)?;
        family(
            e,
            "vane_rollout_failed_evaluations",
            "Evaluations with a failed check so far",
            MetricType::Gauge,
            &failures,
        )?;
        family(
            e,
            "vane_rollout_requests",
            "Requests counted per variant since the rollout began (a shadow's candidate: mirrored runs)",
            MetricType::Counter,
            &requests,
        )?;
        family(
            e,
            "vane_rollout_errors",
            "Server-side failures per variant since the rollout began",
            MetricType::Counter,
            &errors,
        )?;
        family(
            e,
            "vane_rollout_latency_p99_seconds",
            "p99 latency per variant since the rollout began (bucket upper bound)",
            MetricType::Gauge,
            &p99,
        )?;
        family(
            e,
            "vane_rollout_check_value",
            "The last value of each check (thresholds in GET /api/v1/rollouts)",
            MetricType::Gauge,
            &checks,
        )?;
        family(e, "vane_rollout_decisions", "Decisions taken, by action", MetricType::Counter, &decisions)?;
        family(
            e,
            "vane_rollout_mirrors_dropped",
            "Mirrored runs dropped (no slot, busy server, full queue)",
            MetricType::Counter,
            &dropped,
        )?;
        Ok(())
    }
}
