//! The reconcile loop, shaped like kube-rs's controller: one level-triggered, idempotent reconcile of the whole
//! desired set per trigger, a requeue after the poll interval on success, and capped, jittered backoff on errors.
//!
//! Triggers (the poll timer, a webhook, an admin call) merge into a channel of capacity 1, so a burst of pushes is one
//! sync. The loop keeps reading triggers while a sync runs: a push webhook naming a commit other than the one in
//! flight supersedes it (the sync is cancelled before its swap, recorded as superseded, and the new head is synced
//! at once); any other trigger during a sync runs one more sync right after it. Each sync: ls-remote; if the head is a commit already applied or already refused, nothing more (a bad commit
//! is not retried until a new one arrives); else fetch, validate every manifest, check the history (no force-push
//! unless allowed), fetch and verify every artifact, and hand the desired state to the gateway's `apply`, which loads,
//! checks, warms and swaps it, or refuses it whole. git2 runs on the blocking pool under a deadline. Last applied and
//! last attempted commits are tracked separately, as Flux does.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use git2::Oid;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::artifacts::{ArtifactCache, DvcConfig};
use crate::manifest;
use crate::metrics::SyncMetrics;
use crate::plan;
use crate::source::{GitSource, GitSpec};
use crate::DesiredState;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The repository, branch and manifest folder.
    pub spec: GitSpec,
    /// Where the bare clone and the artifact cache live.
    pub data_dir: PathBuf,
    /// How often to look at the remote without a webhook.
    pub poll_interval: Duration,
    /// Where DVC pointers are resolved.
    pub dvc: DvcConfig,
    /// The longest one Git operation (ls-remote, fetch and reads) may take before it is cancelled.
    pub git_timeout: Duration,
    /// The longest wait between retries after errors.
    pub max_backoff: Duration,
    /// A PEM bundle of CA certificates trusted for https artifacts (besides Mozilla's roots).
    pub ca_file: Option<PathBuf>,
}

impl ControllerConfig {
    fn cache(&self) -> ArtifactCache {
        ArtifactCache::new(&self.data_dir).with_ca_file(self.ca_file.clone())
    }
}

/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The start-up sync.
    Startup,
    /// The poll timer or a retry.
    Poll,
    /// A verified push webhook.
    Webhook,
    /// An authenticated admin call.
    Admin,
    /// An admin rollback.
    Rollback,
}

/// The outcome of one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new commit is serving.
    Applied,
    /// Nothing to do: the head is already applied, or already refused.
    Unchanged,
    /// The commit was refused; the last applied set keeps serving.
    Refused,
    /// The remote could not be read; retried with backoff.
    FetchFailed,
    /// A newer push arrived while this commit was being prepared or loaded; it was dropped before its swap.
    Superseded,
}

impl Outcome {
    /// The outcome as it is written in the status and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Refused => "refused",
            Outcome::FetchFailed => "fetch_failed",
            Outcome::Superseded => "superseded",
        }
    }
}

/// A commit and when it was seen or applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitRecord {
    /// The commit id.
    pub commit: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// One sync, as the status history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncRecord {
    /// The commit tried, if the remote was read.
    pub commit: Option<String>,
    /// What started it.
    pub trigger: Trigger,
    /// What came of it.
    pub outcome: Outcome,
    /// Why it was refused or failed.
    pub reason: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
}

/// Everything the status endpoint reports about the loop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// The remote.
    pub repo: String,
    /// The branch.
    pub branch: String,
    /// The branch head last seen on the remote.
    pub observed: Option<CommitRecord>,
    /// The commit whose models are serving.
    pub last_applied: Option<CommitRecord>,
    /// The last commit a sync tried (applied or refused).
    pub last_attempted: Option<SyncRecord>,
    /// The last error, cleared by the next successful sync.
    pub last_error: Option<String>,
    /// True when an admin rollback pinned an older commit than the branch head.
    pub diverged_from_head: bool,
    /// The last syncs, newest first.
    pub history: VecDeque<SyncRecord>,
    /// Commits applied before, newest first: what a rollback may return to.
    pub applied_commits: VecDeque<String>,
    /// Whether a sync is running now.
    pub reconciling: bool,
    /// The commit the running sync is preparing or loading, once its ls-remote has answered.
    pub reconciling_commit: Option<String>,
    /// Syncs finished since start, whatever their outcome (rollbacks included).
    pub syncs: u64,
}

/// Syncs kept in the status history.
pub const HISTORY: usize = 20;
/// Applied commits kept for rollback.
pub const ROLLBACK_DEPTH: usize = 10;

/// The handle the gateway keeps: trigger syncs, roll back, read the status.
#[derive(Clone)]
pub struct ControllerHandle {
    triggers: mpsc::Sender<Wake>,
    rollbacks: mpsc::Sender<(String, oneshot::Sender<Result<(), String>>)>,
    status: watch::Receiver<SyncStatus>,
    metrics: SyncMetrics,
}

/// The loop's inputs, returned by [`channels`] beside the handle.
pub struct ControllerInputs {
    triggers: mpsc::Receiver<Wake>,
    rollbacks: mpsc::Receiver<(String, oneshot::Sender<Result<(), String>>)>,
    reporter: Reporter,
}

/// Where a finished sync is written: the status (and its history) and the metrics.
struct Reporter {
    status: watch::Sender<SyncStatus>,
    metrics: SyncMetrics,
}

/// A trigger, and the commit it announces when it knows one (a push webhook's `after`).
#[derive(Debug, Clone, Copy)]
struct Wake {
    trigger: Trigger,
    commit: Option<Oid>,
}

/// A handle and the loop's inputs, connected.
pub fn channels(config: &ControllerConfig) -> (ControllerHandle, ControllerInputs) {
    // Capacity 1: a trigger while one is pending is merged into it (try_send fails and that is fine).
    let (trigger_tx, trigger_rx) = mpsc::channel(1);
    // A few rollbacks may wait; more get "busy" from try_send.
    let (rollback_tx, rollback_rx) = mpsc::channel(4);
    let status = SyncStatus {
        repo: crate::redact::url(&config.spec.url),
        branch: config.spec.branch.clone(),
        ..SyncStatus::default()
    };
    let (status_tx, status_rx) = watch::channel(status);
    let metrics = SyncMetrics::default();
    (
        ControllerHandle { triggers: trigger_tx, rollbacks: rollback_tx, status: status_rx, metrics: metrics.clone() },
        ControllerInputs {
            triggers: trigger_rx,
            rollbacks: rollback_rx,
            reporter: Reporter { status: status_tx, metrics },
        },
    )
}

// === impl ControllerHandle ===

impl ControllerHandle {
    /// Asks for a sync now. Returns false when one is already pending (the two merge).
    pub fn trigger(&self, trigger: Trigger) -> bool {
        self.triggers.try_send(Wake { trigger, commit: None }).is_ok()
    }

    /// A verified push of `commit` (hex) to the followed branch: syncs now, and supersedes a sync in flight for
    /// another commit. Returns false when a trigger is already pending (the two merge; the pending one re-reads
    /// the branch head, so the push is not lost).
    pub fn pushed(&self, commit: Option<&str>) -> bool {
        let commit = commit.and_then(|c| Oid::from_str(c).ok()).filter(|c| !c.is_zero());
        self.triggers.try_send(Wake { trigger: Trigger::Webhook, commit }).is_ok()
    }

    /// Rolls back to `commit`, one of the applied commits kept in the status, from the local clone and cache (no
    /// network). The rollback holds until the branch head changes.
    pub async fn rollback(&self, commit: String) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.rollbacks.try_send((commit, reply)).map_err(|_| "a rollback is already in progress".to_owned())?;
        answer.await.unwrap_or_else(|_| Err("the reconciler stopped".to_owned()))
    }

    /// The status, and each change to it.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// The loop's metrics, to register in the server's registry.
    pub fn metrics(&self) -> &SyncMetrics {
        &self.metrics
    }
}

/// Runs the loop until `shutdown`. `apply` hands a desired state to the gateway and says whether it now serves it;
/// it is called by this one task only, so there is one writer.
pub async fn run<A, F>(config: ControllerConfig, inputs: ControllerInputs, mut apply: A, shutdown: CancellationToken)
where
    A: FnMut(DesiredState) -> F,
    F: Future<Output = Result<(), String>>,
{
    let ControllerInputs { mut triggers, mut rollbacks, reporter } = inputs;
    let mut state = LoopState::default();
    let mut backoff = Backoff::new(Duration::from_millis(500), config.max_backoff);
    let mut next = tokio::time::Instant::now();
    let mut trigger = Trigger::Startup;
    // A trigger that arrived during the last sync: the next one starts without waiting.
    let mut pending: Option<Wake> = None;
    loop {
        if let Some(wake) = pending.take() {
            trigger = wake.trigger;
        } else {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                Some((commit, reply)) = rollbacks.recv() => {
                    let result = rollback(&config, &reporter, &mut state, &mut apply, &commit).await;
                    let _ = reply.send(result);
                    continue;
                }
                Some(wake) = triggers.recv() => trigger = wake.trigger,
                () = tokio::time::sleep_until(next) => {}
            }
        }
        let supersede = CancellationToken::new();
        let in_flight = Arc::new(std::sync::Mutex::new(None));
        let running = sync(&config, &reporter, &mut state, &mut apply, trigger, &supersede, &in_flight);
        tokio::pin!(running);
        let outcome = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                outcome = &mut running => break outcome,
                Some(wake) = triggers.recv(), if pending.is_none() => {
                    let current = *in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let (Some(new), Some(current)) = (wake.commit, current) {
                        if new != current {
                            tracing::info!(%current, %new, "a newer push supersedes the sync in flight");
                            supersede.cancel();
                        }
                    }
                    pending = Some(wake);
                }
            }
        };
        trigger = Trigger::Poll;
        let wait = match outcome {
            Outcome::FetchFailed => backoff.next(),
            _ => {
                backoff.reset();
                config.poll_interval
            }
        };
        next = tokio::time::Instant::now() + wait;
    }
}

/// What the loop remembers between syncs.
#[derive(Default)]
struct LoopState {
    applied: Option<Oid>,
    refused: Option<Oid>,
    /// The branch head when a rollback pinned an older commit; the pin holds until the head moves.
    pinned_at_head: Option<Oid>,
}

/// What the blocking half of a sync found.
enum Prepared {
    Unchanged(Oid),
    Ready(Oid, DesiredState),
    Refused(Oid, String),
}

/// One sync. `supersede` cancels it before its swap: the Git work stops at its next progress callback, and the
/// gateway's `apply` future is dropped (it swaps only at its very end, so dropping it leaves the served set as it was).
/// `in_flight` is set to the branch head as soon as ls-remote has read it.
async fn sync<A, F>(
    config: &ControllerConfig,
    reporter: &Reporter,
    state: &mut LoopState,
    apply: &mut A,
    trigger: Trigger,
    supersede: &CancellationToken,
    in_flight: &Arc<std::sync::Mutex<Option<Oid>>>,
) -> Outcome
where
    A: FnMut(DesiredState) -> F,
    F: Future<Output = Result<(), String>>,
{
    let started = SystemTime::now();
    let status = &reporter.status;
    status.send_modify(|s| {
        s.reconciling = true;
        s.reconciling_commit = None;
    });
    let known = (state.applied, state.refused, state.pinned_at_head);
    let seen = Arc::clone(in_flight);
    let prepared = blocking(config, Some(supersede), move |source, config| prepare(source, config, known, &seen)).await;
    if let Some(head) = *in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
        status.send_modify(|s| s.reconciling_commit = Some(head.to_string()));
    }
    let superseded = || Some("a newer push arrived before this commit was swapped in; it was dropped".to_owned());
    let (commit, outcome, reason) = match prepared {
        Err(_) if supersede.is_cancelled() => {
            (*in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner), Outcome::Superseded, superseded())
        }
        Err(error) => (None, Outcome::FetchFailed, Some(error)),
        Ok(Prepared::Unchanged(head)) => (Some(head), Outcome::Unchanged, None),
        Ok(Prepared::Refused(head, reason)) => (Some(head), Outcome::Refused, Some(reason)),
        Ok(Prepared::Ready(head, desired)) => {
            tokio::select! {
                applied = apply(desired) => match applied {
                    Ok(()) => (Some(head), Outcome::Applied, None),
                    Err(reason) => (Some(head), Outcome::Refused, Some(reason)),
                },
                () = supersede.cancelled() => (Some(head), Outcome::Superseded, superseded()),
            }
        }
    };
    match (outcome, commit) {
        (Outcome::Applied, Some(head)) => {
            state.applied = Some(head);
            state.refused = None;
            state.pinned_at_head = None;
        }
        (Outcome::Refused, Some(head)) => state.refused = Some(head),
        _ => {}
    }
    if let Some(head) = commit {
        if state.pinned_at_head.is_some_and(|pinned| pinned != head) {
            state.pinned_at_head = None;
        }
    }
    record(reporter, trigger, started, commit, outcome, reason, state.pinned_at_head.is_some());
    if outcome != Outcome::Unchanged {
        tracing::info!(?trigger, ?outcome, commit = ?commit.map(|c| c.to_string()), "sync finished");
    }
    outcome
}

/// The blocking half: ls-remote, and unless nothing changed, fetch, validate and resolve.
fn prepare(
    source: &GitSource,
    config: &ControllerConfig,
    known: (Option<Oid>, Option<Oid>, Option<Oid>),
    in_flight: &std::sync::Mutex<Option<Oid>>,
) -> Result<Prepared, String> {
    let (applied, refused, pinned_at_head) = known;
    let head = source.remote_head().map_err(|e| e.to_string())?;
    if Some(head) == applied || Some(head) == refused || Some(head) == pinned_at_head {
        return Ok(Prepared::Unchanged(head));
    }
    *in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(head);
    let head = source.fetch().map_err(|e| e.to_string())?;
    Ok(match validate(source, config, head, applied) {
        Ok(desired) => Prepared::Ready(head, desired),
        Err(reason) => Prepared::Refused(head, reason),
    })
}

/// Validates `commit` as a whole and resolves its artifacts.
fn validate(
    source: &GitSource,
    config: &ControllerConfig,
    commit: Oid,
    applied: Option<Oid>,
) -> Result<DesiredState, String> {
    let files = source.manifests(commit).map_err(|e| e.to_string())?;
    if files.is_empty() {
        return Err(format!("no manifests (*.yaml) in {}/", config.spec.path));
    }
    let deployments = manifest::parse_commit(&files).map_err(|e| e.to_string())?;
    if let Some(applied) = applied {
        let descends = source.descends_from(commit, applied).map_err(|e| e.to_string())?;
        if !descends && !deployments.iter().all(|d| d.allow_history_rewrite) {
            return Err(format!(
                "history rewritten: {commit} does not descend from the applied {applied} (a force-push or reset); \
                 set spec.allow_history_rewrite in every manifest to allow it"
            ));
        }
    }
    let cache = config.cache();
    plan::desired_state(&deployments, source, commit, &cache, &config.dvc)
}

async fn rollback<A, F>(
    config: &ControllerConfig,
    reporter: &Reporter,
    state: &mut LoopState,
    apply: &mut A,
    commit: &str,
) -> Result<(), String>
where
    A: FnMut(DesiredState) -> F,
    F: Future<Output = Result<(), String>>,
{
    let started = SystemTime::now();
    let status = &reporter.status;
    let known = status.borrow().applied_commits.iter().any(|c| c == commit);
    if !known {
        return Err(format!("commit {commit} is not one of the applied commits kept for rollback"));
    }
    let oid = Oid::from_str(commit).map_err(|e| e.to_string())?;
    // From the local clone and the artifact cache only: no ls-remote, no fetch.
    let desired = blocking(config, None, move |source, config| {
        let files = source.manifests(oid).map_err(|e| e.to_string())?;
        let deployments = manifest::parse_commit(&files).map_err(|e| e.to_string())?;
        plan::desired_state(&deployments, source, oid, &config.cache(), &config.dvc)
    })
    .await?;
    apply(desired).await?;
    let head = status.borrow().observed.as_ref().and_then(|o| Oid::from_str(&o.commit).ok());
    state.applied = Some(oid);
    state.pinned_at_head = head.filter(|&h| h != oid);
    record(reporter, Trigger::Rollback, started, Some(oid), Outcome::Applied, None, state.pinned_at_head.is_some());
    tracing::warn!(commit, "rolled back by an admin call; holding until the branch head changes");
    Ok(())
}

/// Runs `work` with a freshly opened clone on the blocking pool, cancelling it after the Git timeout or when `cancel`
/// fires.
async fn blocking<T: Send + 'static>(
    config: &ControllerConfig,
    cancel_token: Option<&CancellationToken>,
    work: impl FnOnce(&GitSource, &ControllerConfig) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let cancel = Arc::new(AtomicBool::new(false));
    let config_owned = config.clone();
    let flag = Arc::clone(&cancel);
    let task = tokio::task::spawn_blocking(move || {
        let dir = GitSource::clone_dir(&config_owned.data_dir);
        let source = GitSource::open(&dir, config_owned.spec.clone(), flag).map_err(|e| e.to_string())?;
        work(&source, &config_owned)
    });
    let cancelled = async {
        match cancel_token {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let task = async {
        tokio::select! {
            finished = task => Ok(finished),
            () = cancelled => Err(()),
        }
    };
    match tokio::time::timeout(config.git_timeout, task).await {
        Ok(Err(())) => {
            cancel.store(true, Ordering::Relaxed);
            Err("cancelled".to_owned())
        }
        Ok(Ok(Ok(result))) => result,
        Ok(Ok(Err(error))) => Err(format!("reconcile task failed: {error}")),
        Err(_) => {
            cancel.store(true, Ordering::Relaxed);
            Err(format!("git did not answer within {:?}; cancelled", config.git_timeout))
        }
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn record(
    reporter: &Reporter,
    trigger: Trigger,
    started: SystemTime,
    commit: Option<Oid>,
    outcome: Outcome,
    reason: Option<String>,
    diverged: bool,
) {
    let now = SystemTime::now();
    let took = now.duration_since(started).unwrap_or_default();
    let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    let now_unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    reporter.metrics.observe(outcome, took.as_secs_f64(), now_unix);
    let status = &reporter.status;
    let record = SyncRecord {
        commit: commit.map(|c| c.to_string()),
        trigger,
        outcome,
        reason: reason.clone(),
        started_unix_ms: unix_ms(started),
        duration_ms,
    };
    if let Some(reason) = &reason {
        tracing::warn!(?trigger, ?outcome, commit = ?record.commit, %reason, "sync did not apply; the last good set keeps serving");
    }
    status.send_modify(|s| {
        s.reconciling = false;
        s.reconciling_commit = None;
        s.syncs += 1;
        s.diverged_from_head = diverged;
        if let (Some(commit), true) = (&record.commit, trigger != Trigger::Rollback) {
            s.observed = Some(CommitRecord { commit: commit.clone(), at_unix_ms: unix_ms(now) });
        }
        match outcome {
            Outcome::Applied => {
                let commit = record.commit.clone().unwrap_or_default();
                s.last_applied = Some(CommitRecord { commit: commit.clone(), at_unix_ms: unix_ms(now) });
                s.applied_commits.retain(|c| *c != commit);
                s.applied_commits.push_front(commit);
                s.applied_commits.truncate(ROLLBACK_DEPTH);
                s.last_error = None;
                s.last_attempted = Some(record.clone());
            }
            Outcome::Refused => {
                s.last_error = reason;
                s.last_attempted = Some(record.clone());
            }
            Outcome::FetchFailed => s.last_error = reason,
            Outcome::Superseded | Outcome::Unchanged => {}
        }
        if outcome != Outcome::Unchanged {
            s.history.push_front(record);
            s.history.truncate(HISTORY);
        }
    });
}

/// Capped exponential backoff with jitter, reset on success.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), current: min }
    }

    fn next(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        // Up to half the base again, from the clock's nanoseconds: enough to keep many replicas from retrying in step.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 2000.0);
        (base + jitter).min(self.max)
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests;
