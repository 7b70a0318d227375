//! The analysis loop: every rollout of the served table is evaluated every `analysis.interval` (its checks read
//! exact counters, so a short interval is as sound as a long one), on a blocking thread; a rollback raises an alert
//! that names the failed checks and their values, resolved when a new commit replaces the rollout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use monitor::alerts::{Alert, Breach, State};
use monitor::feedback::unix_ms;
use monitor::live::Monitor;
use tokio_util::sync::CancellationToken;

use super::{Phase, QualityInputs, Rollout};
use crate::registry::Registry;

/// How often the loop looks for due rollouts (the shortest interval a rollout may ask for).
const TICK: Duration = Duration::from_millis(100);

/// The alert a rollback raises.
pub const ROLLBACK_ALERT: &str = "VaneRolloutRolledBack";

/// Runs until `shutdown`. `monitor` gives the labelled quality of each version, and sends the alerts.
pub async fn drive(registry: Arc<Registry>, monitor: Option<Monitor>, base_url: String, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Firing rollback alerts, by model, with the rollout that raised them.
    let mut firing: BTreeMap<String, (Arc<Rollout>, Alert)> = BTreeMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let table = registry.snapshot();
        let mut resolved = Vec::new();
        firing.retain(|model, (rollout, alert)| {
            let current = table.rollout(model).is_some_and(|r| Arc::ptr_eq(r, rollout));
            if !current {
                alert.state = State::Resolved;
                alert.resolved_unix_ms = Some(unix_ms(SystemTime::now()));
                resolved.push(alert.clone());
            }
            current
        });
        if let Some(monitor) = &monitor {
            monitor.notify(resolved);
        }
        let now = Instant::now();
        let due: Vec<Arc<Rollout>> = table.rollouts().filter(|r| r.due(now)).cloned().collect();
        if !due.is_empty() {
            let quality_source = monitor.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for rollout in due {
                    let quality = quality_source.as_ref().and_then(|m| quality(&rollout, m));
                    rollout.evaluate(now, quality);
                }
            })
            .await;
        }
        // Every rollback fires once, however it came: this replica's analysis, a peer's, or a restart that restored
        // it.
        for rollout in table.rollouts().filter(|r| r.plan().phase == Phase::RolledBack) {
            if firing.get(&rollout.model).is_some_and(|(fired, _)| Arc::ptr_eq(fired, rollout)) {
                continue;
            }
            let alert = rollback_alert(rollout, &base_url);
            if let Some(monitor) = &monitor {
                monitor.notify(vec![alert.clone()]);
            }
            firing.insert(rollout.model.clone(), (Arc::clone(rollout), alert));
        }
    }
}

/// The alert for a rollback: which candidate, which checks failed, with what values (from the decision that rolled
/// it back; a restored rollback names its remembered reason).
pub fn rollback_alert(rollout: &Rollout, base_url: &str) -> Alert {
    let report = rollout.report();
    let decision = report.decisions.iter().rev().find(|d| d.action.ends_with("rollback"));
    let failed: Vec<_> =
        decision.map(|d| d.checks.iter().filter(|c| c.passed == Some(false)).collect()).unwrap_or_default();
    let reason = decision.map(|d| d.reason.clone()).or(report.reason).unwrap_or_default();
    let now = unix_ms(SystemTime::now());
    Alert {
        name: ROLLBACK_ALERT,
        model: rollout.model.clone(),
        version: rollout.spec.candidate,
        commit: rollout.revision.as_deref().map(str::to_owned),
        statistic: failed.first().map_or_else(|| "rollout".to_owned(), |c| c.name.to_owned()),
        threshold: failed.first().map_or(0.0, |c| c.threshold),
        severity: "ticket",
        state: State::Firing,
        breaches: failed.iter().map(|c| Breach { feature: c.name.to_owned(), value: c.value.unwrap_or(f64::NAN) }).collect(),
        since_unix_ms: now,
        fired_unix_ms: Some(now),
        resolved_unix_ms: None,
        summary: format!(
            "{} version {} rolled back to version {}: {reason}. All traffic is on the stable; a commit that changes the \
             rollout (another candidate, or its block) starts a new one.",
            rollout.model, rollout.spec.candidate, rollout.spec.stable
        ),
        windows: 1,
        model_sha256: None,
        data_sha256: None,
        dashboard: format!("{}/api/v1/rollouts", base_url.trim_end_matches('/')),
    }
}

/// Each side's quality on its labelled predictions, in the metric the checks name.
fn quality(rollout: &Rollout, monitor: &Monitor) -> Option<QualityInputs> {
    rollout.checks.quality_drop?;
    let reports = monitor.feedback().reports(Some(&rollout.model));
    let named = rollout.checks.quality_metric.as_deref();
    let regression = reports.iter().any(|r| r.regression.is_some());
    let metric: &'static str = match named {
        Some("precision") => "precision",
        Some("recall") => "recall",
        Some("f1") => "f1",
        Some("roc_auc") => "roc_auc",
        Some("mae") => "mae",
        Some("rmse") => "rmse",
        Some("r2") => "r2",
        Some(_) => "accuracy",
        None if regression => "mae",
        None => "accuracy",
    };
    let side = |version: u64| {
        let report = reports.iter().find(|r| r.version == version)?;
        let value = match (&report.classification, &report.regression) {
            (Some(c), _) => match metric {
                "precision" => Some(c.rates.precision),
                "recall" => Some(c.rates.recall),
                "f1" => Some(c.rates.f1),
                "roc_auc" => c.roc_auc,
                _ => Some(c.rates.accuracy),
            },
            (_, Some(r)) => match metric {
                "rmse" => r.rmse,
                "r2" => r.r2,
                _ => r.mae,
            },
            _ => None,
        }?;
        Some((value, report.window_pairs as u64))
    };
    Some(QualityInputs {
        metric,
        higher_is_better: !matches!(metric, "mae" | "rmse"),
        stable: side(rollout.spec.stable),
        candidate: side(rollout.spec.candidate),
    })
}
