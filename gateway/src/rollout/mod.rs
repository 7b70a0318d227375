//! Progressive delivery: one model's traffic moving from its stable version to a candidate, judged on the model's
//! own signals.
//!
//! A [`Rollout`] is built with the model table from the applied commit's `rollout` block and lives as long as its
//! spec and both loaded versions do: a commit that changes the candidate, the stable or the spec builds a new one
//! (analysis starts over), any other commit keeps it. The request path reads one [`Plan`] (an `ArcSwap` load): the
//! phase, the step's weight, and the step's counters. Every decision (next step, promote, roll back, pause) is a new
//! plan stored in one swap, so a request is routed by exactly one plan and counted in exactly one step.
//!
//! Assignment is a consistent hash of the key (a header, else the request id): SHA-256 of the model name and the
//! key, read as a number in [0, 2^64) and compared with the weight. Every replica maps a key the same way, and a
//! larger weight only adds keys to the candidate.

mod analysis;
pub mod client;
mod counters;
pub mod driver;
pub mod memory;
pub mod metrics;
pub mod peers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use reconciler::manifest::{RolloutSpec, Strategy};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use analysis::{CheckResult, QualityInputs};
pub use counters::{Compared, Counts, PredictionWindow, StepCounters, VariantCounters, VariantReport};

use crate::infer::Tensor;

/// Which side of a rollout served (or mirrored) a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The version serving before the rollout.
    Stable = 0,
    /// The version being rolled out.
    Candidate = 1,
}

impl Variant {
    /// `stable` or `candidate`, as the `vane-variant` header says.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Candidate => "candidate",
        }
    }

    /// The other side.
    pub fn other(self) -> Self {
        match self {
            Variant::Stable => Variant::Candidate,
            Variant::Candidate => Variant::Stable,
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Steps are running and the analysis decides.
    Progressing,
    /// Held by a person: the split stays, steps do not advance and nothing is promoted; a failing candidate is
    /// still rolled back.
    Paused,
    /// The candidate serves all traffic; the old stable stays loaded and a rollback stays instant until the grace
    /// period ends.
    Promoted,
    /// Promoted and past the grace period.
    Complete,
    /// A check failed `failure_limit` times: all traffic is on the stable, the candidate stays loaded, unused, until
    /// the next commit.
    RolledBack,
    /// Stopped by a person: all traffic on the stable.
    Aborted,
    /// A shadow or A/B test that passed and was not asked to promote: the stable keeps serving.
    Concluded,
}

impl Phase {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::Complete => "complete",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
            Phase::Concluded => "concluded",
        }
    }

    /// Every phase, for the metrics.
    pub const ALL: [Phase; 7] = [
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoted,
        Phase::Complete,
        Phase::RolledBack,
        Phase::Aborted,
        Phase::Concluded,
    ];

    /// Whether the steps are still running (traffic split, counters live).
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }
}

/// What the request path reads, swapped whole on every decision.
#[derive(Debug)]
pub struct Plan {
    /// The phase.
    pub phase: Phase,
    /// The step (index into the spec's steps; past the end once finished).
    pub step: usize,
    /// Keys whose position is below this go to the candidate (canary, A/B) or are mirrored to it (shadow).
    threshold: u128,
    /// The step's counters.
    pub counters: Arc<StepCounters>,
    /// When the step began.
    pub step_started: Instant,
}

/// One decision, as the API lists it and the log line says it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Unix milliseconds.
    pub at_unix_ms: u64,
    /// `step`, `promote`, `complete`, `rollback`, `abort`, `pause`, `resume`, `conclude` or `adopt_rollback`.
    pub action: &'static str,
    /// Who decided: `analysis`, `operator` or `peer`.
    pub by: &'static str,
    /// The step it was taken at.
    pub step: usize,
    /// Why, in one line.
    pub reason: String,
    /// The checks at that moment.
    pub checks: Vec<CheckResult>,
}

/// The analysis's own state, behind one mutex that only the driver and admin calls take.
#[derive(Debug, Default)]
struct Progress {
    /// Failed evaluations so far.
    failures: u32,
    /// The last evaluation's checks.
    last_checks: Vec<CheckResult>,
    /// The decisions, oldest first (the last [`MAX_DECISIONS`]).
    decisions: std::collections::VecDeque<Decision>,
    /// When the candidate was promoted.
    promoted_at: Option<Instant>,
    /// Why it is not progressing, when rolled back or aborted.
    reason: Option<String>,
    /// When the analysis last ran.
    last_evaluated: Option<Instant>,
    /// Decisions taken, by action (all of them; `decisions` keeps the last few).
    counts: std::collections::BTreeMap<&'static str, u64>,
}

/// Decisions kept per rollout.
const MAX_DECISIONS: usize = 64;

/// One model's rollout.
pub struct Rollout {
    /// The model.
    pub model: String,
    /// The spec from the manifest.
    pub spec: RolloutSpec,
    /// The checks in force (the spec's, or the standard ones), read once.
    pub checks: reconciler::manifest::RolloutChecks,
    /// The commit that started it.
    pub revision: Option<Arc<str>>,
    /// The output compared (name, column) and whether it is a score judged against a threshold.
    pub output: (String, usize),
    /// Two scores agree when on the same side of this (binary classification), else when within the tolerance.
    pub decision_threshold: Option<f64>,
    plan: ArcSwap<Plan>,
    progress: Mutex<Progress>,
    /// Mirrors dropped: (no free slot, server busy).
    pub mirrors_dropped: AtomicU64,
    /// Every step's counters so far, oldest first (at most [`MAX_ROLLOUT_STEPS`]): summed, the totals since the
    /// rollout began (the request path counts each request once, in its step).
    steps: Mutex<Vec<Arc<StepCounters>>>,
    /// The stable's predictions since the rollout began: the baseline when a step sends it too little traffic.
    baseline: PredictionWindow,
    /// A counter for requests without a key, so they still spread by the weight.
    unkeyed: AtomicU64,
    /// Counts evaluations and decisions, so a caller can wait for the next one instead of polling.
    events: tokio::sync::watch::Sender<u64>,
    /// The model, both artifacts and the spec, hashed: what a remembered (or a peer's) decision is about.
    pub identity: String,
    memory: Arc<memory::Memory>,
    /// A decision to write to `memory` once the analysis's lock is released (writing syncs a file).
    unwritten: Mutex<Option<(Phase, String)>>,
    started: Instant,
    started_at: SystemTime,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout").field("model", &self.model).field("phase", &self.plan.load().phase).finish()
    }
}

/// How a request goes: the variant that answers it, whether the other one also runs it (mirrored), and the step's
/// counters to count it in (none once the rollout is decided).
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The variant whose answer the client gets.
    pub variant: Variant,
    /// Whether the other variant runs the same inputs in the background, for comparison.
    pub mirror: bool,
    /// The step's counters, while the steps run.
    pub counters: Option<Arc<StepCounters>>,
}

// === impl Rollout ===

impl Rollout {
    /// A rollout at its first step (or as it was decided, when `memory` recalls `identity`); `output` is the
    /// compared output and column.
    pub fn new(
        model: &str,
        spec: RolloutSpec,
        identity: String,
        output: (String, usize),
        decision_threshold: Option<f64>,
        revision: Option<Arc<str>>,
        memory: Arc<memory::Memory>,
    ) -> Self {
        let now = Instant::now();
        // A decision this rollout already took (before a restart, or on a peer before this process started) stands.
        let recalled = memory.recall(&identity);
        let restored = recalled.as_ref().and_then(memory::restored_phase);
        let first = Arc::new(StepCounters::new());
        let plan = Plan {
            phase: restored.unwrap_or(Phase::Progressing),
            step: 0,
            threshold: threshold(spec.steps[0].weight),
            counters: Arc::clone(&first),
            step_started: now,
        };
        let rollout = Self {
            model: model.to_owned(),
            checks: spec.checks(),
            spec,
            revision,
            output,
            decision_threshold,
            plan: ArcSwap::from_pointee(plan),
            progress: Mutex::new(Progress {
                reason: recalled.as_ref().map(|r| r.reason.clone()),
                promoted_at: restored.filter(|p| *p == Phase::Promoted).map(|_| now),
                ..Progress::default()
            }),
            identity,
            memory,
            unwritten: Mutex::new(None),
            mirrors_dropped: AtomicU64::new(0),
            steps: Mutex::new(vec![Arc::clone(&first)]),
            baseline: PredictionWindow::default(),
            unkeyed: AtomicU64::new(0),
            events: tokio::sync::watch::Sender::new(0),
            started: now,
            started_at: SystemTime::now(),
        };
        rollout.log_start(restored);
        rollout
    }

    fn log_start(&self, restored: Option<Phase>) {
        if let Some(phase) = restored {
            tracing::info!(model = %self.model, candidate = self.spec.candidate, phase = phase.as_str(), reason = ?self.stop_reason(), "rollout restored as decided before");
            return;
        }
        let step = &self.spec.steps[0];
        tracing::info!(
            model = %self.model,
            strategy = ?self.spec.strategy,
            stable = self.spec.stable,
            candidate = self.spec.candidate,
            weight = step.weight,
            revision = ?self.revision,
            "rollout started"
        );
    }

    /// Whether this rollout has `identity` (see [`memory::identity`]): then a new table keeps it and its analysis
    /// goes on, even when a version was reloaded (a changed serving setting or reference data).
    pub fn is_current(&self, identity: &str) -> bool {
        self.identity == identity
    }

    /// The version number of `variant`.
    pub fn version(&self, variant: Variant) -> u64 {
        match variant {
            Variant::Stable => self.spec.stable,
            Variant::Candidate => self.spec.candidate,
        }
    }

    /// The current plan.
    pub fn plan(&self) -> arc_swap::Guard<Arc<Plan>> {
        self.plan.load()
    }

    /// The variant that answers requests naming no version now: the candidate once promoted, else the stable.
    pub fn default_variant(&self) -> Variant {
        self.default_variant_of(self.plan.load().phase)
    }

    /// Assigns a request: `key` is the key header's value, else the request id; `None` spreads by a counter.
    pub fn assign(&self, key: Option<&[u8]>) -> Assignment {
        let plan = self.plan.load();
        if !plan.phase.is_active() {
            return Assignment { variant: self.default_variant_of(plan.phase), mirror: false, counters: None };
        }
        let position = match key {
            Some(key) => position(&self.model, key),
            // No key: spread evenly, nothing to keep consistent across replicas (a mixed counter, not a digest).
            None => spread(self.unkeyed.fetch_add(1, Ordering::Relaxed)),
        };
        let inside = u128::from(position) < plan.threshold;
        let counters = Some(Arc::clone(&plan.counters));
        match self.spec.strategy {
            Strategy::Shadow => Assignment { variant: Variant::Stable, mirror: inside, counters },
            Strategy::Canary | Strategy::Ab => {
                let variant = if inside { Variant::Candidate } else { Variant::Stable };
                // Agreement needs both answers to the same inputs: the stable runs the candidate's requests too.
                let mirror = inside && self.checks.agreement.is_some();
                Assignment { variant, mirror, counters }
            }
        }
    }

    fn default_variant_of(&self, phase: Phase) -> Variant {
        match phase {
            Phase::Promoted | Phase::Complete => Variant::Candidate,
            _ => Variant::Stable,
        }
    }

    /// Counts a served (or, in a shadow, mirrored) request of `variant` in its step's `counters`.
    pub fn record(
        &self,
        counters: &StepCounters,
        variant: Variant,
        outcome: Result<&[Tensor], ServerFault>,
        seconds: f64,
    ) {
        counters.variants[variant as usize].record(outcome.is_ok(), matches!(outcome, Err(ServerFault::Yes)), seconds);
        // Predictions are kept only for the check that reads them.
        if let (Ok(outputs), true) = (outcome, self.checks.prediction_psi.is_some()) {
            if let Some(values) = column(outputs, &self.output) {
                counters.predictions[variant as usize].extend(&values);
                if variant == Variant::Stable {
                    self.baseline.extend(&values);
                }
            }
        }
    }

    /// Compares the two variants' outputs for the same inputs.
    pub fn compare(&self, counters: &StepCounters, stable: &[Tensor], candidate: &[Tensor]) {
        let (Some(a), Some(b)) = (column(stable, &self.output), column(candidate, &self.output)) else {
            counters.compared.lock().map(|mut c| c.incomparable += 1).ok();
            return;
        };
        let tolerance = self.checks.agreement_tolerance.unwrap_or(1e-6);
        let Ok(mut compared) = counters.compared.lock() else { return };
        for (x, y) in a.iter().zip(&b) {
            if x.is_nan() || y.is_nan() {
                compared.incomparable += 1;
                continue;
            }
            let agree = match self.decision_threshold {
                Some(t) => (*x >= t) == (*y >= t),
                None => (x - y).abs() <= tolerance,
            };
            compared.add(agree, (x - y).abs(), (x - y).abs() / x.abs().max(f64::MIN_POSITIVE));
        }
    }

    /// Runs the analysis once (the driver calls this every `analysis.interval`, off the async threads) and returns
    /// the decision it took, if any. `quality` gives each variant's labelled quality when the model has one.
    pub fn evaluate(&self, now: Instant, quality: Option<QualityInputs>) -> Option<Decision> {
        let decision = self.evaluate_locked(now, quality);
        self.write_unwritten();
        self.events.send_modify(|n| *n += 1);
        decision
    }

    /// Writes the last decision that ended or settled the rollout, with no other lock held. Blocking (the driver,
    /// the admin calls and the peer reader call in from blocking threads).
    fn write_unwritten(&self) {
        let taken = self.unwritten.lock().ok().and_then(|mut u| u.take());
        if let Some((phase, reason)) = taken {
            self.memory.remember(&self.identity, &self.model, phase, &reason);
        }
    }

    fn evaluate_locked(&self, now: Instant, quality: Option<QualityInputs>) -> Option<Decision> {
        let Ok(mut progress) = self.progress.lock() else { return None };
        let plan = self.plan.load_full();
        progress.last_evaluated = Some(now);
        if plan.phase == Phase::Promoted {
            let since = progress.promoted_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            if since >= self.spec.grace_period {
                let reason = format!("grace period of {:?} over; the old stable is no longer a rollback", since);
                return Some(self.decide(&mut progress, &plan, Phase::Complete, "complete", "analysis", reason));
            }
            return None;
        }
        if !plan.phase.is_active() {
            return None;
        }
        let checks = analysis::run(self, &plan.counters, quality);
        progress.last_checks = checks.clone();
        let failed: Vec<&CheckResult> = checks.iter().filter(|c| c.passed == Some(false)).collect();
        if !failed.is_empty() {
            progress.failures += 1;
            let what = failed.iter().map(|c| c.describe()).collect::<Vec<_>>().join("; ");
            tracing::info!(model = %self.model, failures = progress.failures, limit = self.spec.analysis.failure_limit, checks = %what, "rollout check failed");
            if progress.failures >= self.spec.analysis.failure_limit {
                let reason = format!(
                    "candidate version {} failed {} of {} allowed evaluations: {what}",
                    self.spec.candidate, progress.failures, self.spec.analysis.failure_limit
                );
                return Some(self.decide(&mut progress, &plan, Phase::RolledBack, "rollback", "analysis", reason));
            }
            return None;
        }
        if plan.phase == Phase::Paused || checks.iter().any(|c| c.passed.is_none()) {
            return None;
        }
        let step = &self.spec.steps[plan.step];
        let served = plan.counters.variants[Variant::Candidate as usize].requests();
        if now.saturating_duration_since(plan.step_started) < step.duration || served < step.min_requests {
            return None;
        }
        let next = plan.step + 1;
        if next < self.spec.steps.len() {
            let weight = self.spec.steps[next].weight;
            let reason = format!("step {} passed every check; weight {weight}%", plan.step + 1);
            let counters = Arc::new(StepCounters::new());
            if let Ok(mut steps) = self.steps.lock() {
                steps.push(Arc::clone(&counters));
            }
            let next_plan = Plan {
                phase: Phase::Progressing,
                step: next,
                threshold: threshold(weight),
                counters,
                step_started: now,
            };
            return Some(self.store(&mut progress, next_plan, "step", "analysis", reason));
        }
        let promote = self.spec.strategy == Strategy::Canary || self.spec.promote;
        let reason = format!("all {} steps passed every check", self.spec.steps.len());
        Some(if promote {
            self.decide(&mut progress, &plan, Phase::Promoted, "promote", "analysis", reason)
        } else {
            self.decide(&mut progress, &plan, Phase::Concluded, "conclude", "analysis", reason)
        })
    }

    /// A person's (or a peer's) decision: `promote`, `abort`, `pause`, `resume`, or `adopt_rollback` with the peer's
    /// reason. Refused (with why) when it does not apply to the phase.
    /// Blocking: a decision that ends the rollout is written to the data dir.
    pub fn operate(&self, action: &str, by: &'static str, reason: Option<String>) -> Result<Decision, String> {
        let decision = self.operate_locked(action, by, reason);
        self.write_unwritten();
        decision
    }

    fn operate_locked(&self, action: &str, by: &'static str, reason: Option<String>) -> Result<Decision, String> {
        let Ok(mut progress) = self.progress.lock() else { return Err("the rollout's state is poisoned".to_owned()) };
        let plan = self.plan.load_full();
        let phase = plan.phase;
        let refuse = || Err(format!("cannot {action} a rollout that is {}", phase.as_str()));
        let said = |default: &str| reason.clone().unwrap_or_else(|| default.to_owned());
        Ok(match action {
            "promote" if phase.is_active() || phase == Phase::Concluded => {
                self.decide(&mut progress, &plan, Phase::Promoted, "promote", by, said("promoted by hand"))
            }
            "abort" if phase.is_active() || phase == Phase::Promoted || phase == Phase::Concluded => {
                self.decide(&mut progress, &plan, Phase::Aborted, "abort", by, said("aborted by hand"))
            }
            "adopt_rollback" if phase != Phase::RolledBack && phase != Phase::Aborted => self.decide(
                &mut progress,
                &plan,
                Phase::RolledBack,
                "adopt_rollback",
                by,
                said("rolled back by a peer"),
            ),
            "pause" if phase == Phase::Progressing => {
                self.decide(&mut progress, &plan, Phase::Paused, "pause", by, said("paused by hand"))
            }
            "resume" if phase == Phase::Paused => {
                self.decide(&mut progress, &plan, Phase::Progressing, "resume", by, said("resumed by hand"))
            }
            "promote" | "abort" | "pause" | "resume" | "adopt_rollback" => return refuse(),
            other => return Err(format!("unknown action {other:?}; use promote, abort, pause or resume")),
        })
    }

    /// Moves to `phase`, keeping the step and its counters.
    fn decide(
        &self,
        progress: &mut Progress,
        plan: &Plan,
        phase: Phase,
        action: &'static str,
        by: &'static str,
        reason: String,
    ) -> Decision {
        let next = Plan {
            phase,
            step: plan.step,
            threshold: plan.threshold,
            counters: Arc::clone(&plan.counters),
            step_started: plan.step_started,
        };
        match phase {
            Phase::Promoted => progress.promoted_at = Some(Instant::now()),
            Phase::RolledBack | Phase::Aborted => progress.reason = Some(reason.clone()),
            _ => {}
        }
        self.store(progress, next, action, by, reason)
    }

    fn store(
        &self,
        progress: &mut Progress,
        plan: Plan,
        action: &'static str,
        by: &'static str,
        reason: String,
    ) -> Decision {
        let decision = Decision {
            at_unix_ms: monitor::feedback::unix_ms(SystemTime::now()),
            action,
            by,
            step: plan.step,
            reason,
            checks: progress.last_checks.clone(),
        };
        let phase = plan.phase;
        self.plan.store(Arc::new(plan));
        if !phase.is_active() {
            if let Ok(mut unwritten) = self.unwritten.lock() {
                *unwritten = Some((phase, decision.reason.clone()));
            }
        }
        self.events.send_modify(|n| *n += 1);
        if progress.decisions.len() == MAX_DECISIONS {
            progress.decisions.pop_front();
        }
        progress.decisions.push_back(decision.clone());
        *progress.counts.entry(action).or_default() += 1;
        let level_warn = matches!(phase, Phase::RolledBack | Phase::Aborted);
        let (model, reason) = (&self.model, &decision.reason);
        if level_warn {
            tracing::warn!(model = %model, action, by, candidate = self.spec.candidate, stable = self.spec.stable, phase = phase.as_str(), %reason, "rollout decision");
        } else {
            tracing::info!(model = %model, action, by, candidate = self.spec.candidate, stable = self.spec.stable, phase = phase.as_str(), %reason, "rollout decision");
        }
        decision
    }

    /// Whether a check reads the compared output (agreement, prediction drift).
    pub fn reads_output(&self) -> bool {
        self.checks.agreement.is_some() || self.checks.prediction_psi.is_some()
    }

    /// A receiver that sees a change after every evaluation and every decision.
    pub fn events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// Decisions taken so far, by action.
    pub fn decision_counts(&self) -> Vec<(&'static str, u64)> {
        self.progress.lock().map(|p| p.counts.iter().map(|(a, n)| (*a, *n)).collect()).unwrap_or_default()
    }

    /// Why the rollout stopped, when it was rolled back or aborted.
    pub fn stop_reason(&self) -> Option<String> {
        self.progress.lock().ok().and_then(|p| p.reason.clone())
    }

    /// The candidate's share of traffic now, in percent (shadow: the share mirrored).
    pub fn weight(&self) -> f64 {
        let plan = self.plan.load();
        match plan.phase {
            Phase::Progressing | Phase::Paused => self.spec.steps[plan.step].weight,
            Phase::Promoted | Phase::Complete => 100.0,
            _ => 0.0,
        }
    }

    /// What `GET /api/v1/rollouts` shows.
    pub fn report(&self) -> Report {
        let plan = self.plan.load_full();
        let progress = self.progress.lock().ok();
        let step_counters = |v: Variant| plan.counters.variants[v as usize].counts().report();
        Report {
            model: self.model.clone(),
            identity: self.identity.clone(),
            strategy: self.spec.strategy,
            stable: self.spec.stable,
            candidate: self.spec.candidate,
            revision: self.revision.as_deref().map(str::to_owned),
            phase: plan.phase,
            step: plan.step + 1,
            steps: self.spec.steps.len(),
            weight: self.weight(),
            serving_default: self.default_variant_of(plan.phase),
            started_unix_ms: monitor::feedback::unix_ms(self.started_at),
            running_seconds: self.started.elapsed().as_secs_f64(),
            step_seconds: plan.step_started.elapsed().as_secs_f64(),
            failures: progress.as_ref().map_or(0, |p| p.failures),
            failure_limit: self.spec.analysis.failure_limit,
            reason: progress.as_ref().and_then(|p| p.reason.clone()),
            step_counters: StepReport {
                stable: step_counters(Variant::Stable),
                candidate: step_counters(Variant::Candidate),
                compared: plan.counters.compared.lock().map(|c| c.clone()).unwrap_or_default(),
            },
            totals: StepTotals {
                stable: self.totals(Variant::Stable).report(),
                candidate: self.totals(Variant::Candidate).report(),
            },
            mirrors_dropped: self.mirrors_dropped.load(Ordering::Relaxed),
            checks: progress.as_ref().map(|p| p.last_checks.clone()).unwrap_or_default(),
            decisions: progress.as_ref().map(|p| p.decisions.iter().cloned().collect()).unwrap_or_default(),
        }
    }

    /// `variant`'s counts since the rollout began: every step's, added up.
    pub fn totals(&self, variant: Variant) -> Counts {
        let mut total = Counts::default();
        if let Ok(steps) = self.steps.lock() {
            for step in steps.iter() {
                total.add(&step.variants[variant as usize].counts());
            }
        }
        total
    }

    /// Whether the analysis is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        let last = self.progress.lock().ok().and_then(|p| p.last_evaluated);
        last.is_none_or(|at| now.saturating_duration_since(at) >= self.spec.analysis.interval)
    }
}

/// Whether a failure is the server's (counted as an error of the variant) or the client's (a bad request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFault {
    /// A 5xx: the model failed, timed out or its queue was full.
    Yes,
    /// A 4xx: the request was wrong for the model.
    No,
}

/// What `GET /api/v1/rollouts` lists for one model.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The model.
    pub model: String,
    /// The rollout's identity: the model, both artifacts and the spec, hashed (replicas compare it).
    pub identity: String,
    /// canary, shadow or ab.
    pub strategy: Strategy,
    /// The stable version.
    pub stable: u64,
    /// The candidate version.
    pub candidate: u64,
    /// The commit that started the rollout.
    pub revision: Option<String>,
    /// Where it is.
    pub phase: Phase,
    /// 1-based.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// The candidate's share of traffic now, percent (shadow: the share mirrored).
    pub weight: f64,
    /// The variant answering requests outside the split.
    pub serving_default: Variant,
    /// When it began (Unix milliseconds).
    pub started_unix_ms: u64,
    /// Seconds since it began.
    pub running_seconds: f64,
    /// Seconds since the step began.
    pub step_seconds: f64,
    /// Failed evaluations so far.
    pub failures: u32,
    /// Failed evaluations that roll back.
    pub failure_limit: u32,
    /// Why it stopped, when rolled back or aborted.
    pub reason: Option<String>,
    /// The step's counters.
    pub step_counters: StepReport,
    /// Counts since the rollout began.
    pub totals: StepTotals,
    /// Mirrored runs dropped: no free slot, a busy server, or a full queue.
    pub mirrors_dropped: u64,
    /// The last evaluation's checks.
    pub checks: Vec<CheckResult>,
    /// The decisions, oldest first.
    pub decisions: Vec<Decision>,
}

/// The step's counters per variant, and the comparisons.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// The stable version.
    pub stable: VariantReport,
    /// The candidate version.
    pub candidate: VariantReport,
    /// The mirrored pairs compared.
    pub compared: Compared,
}

/// Totals per variant since the rollout began.
#[derive(Debug, Serialize)]
pub struct StepTotals {
    /// The stable version.
    pub stable: VariantReport,
    /// The candidate version.
    pub candidate: VariantReport,
}

/// A key's place in [0, 2^64): the first 8 bytes of SHA-256(model, 0, key). The same on every replica and build.
pub fn position(model: &str, key: &[u8]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update([0]);
    hasher.update(key);
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A counter's place in [0, 2^64), evenly spread (splitmix64's finaliser).
fn spread(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Positions below this are inside a `weight` percent band.
fn threshold(weight: f64) -> u128 {
    let share = (weight / 100.0).clamp(0.0, 1.0);
    ((share * 2f64.powi(64)) as u128).min(1 << 64)
}

/// The compared output's column `index`, one value per row; `None` when the output is missing or not numeric.
pub fn column(outputs: &[Tensor], (name, index): &(String, usize)) -> Option<Vec<f64>> {
    outputs.iter().find(|t| *t.name == **name)?.column(*index)
}

#[cfg(test)]
mod tests;
