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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use git2::Oid;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::artifacts::{ArtifactCache, ArtifactPolicy, Deadline, DvcConfig};
use crate::durable::{Attempt, Durable, DurableStore, Refusal, INTERRUPTED_LIMIT, REFUSED_KEPT};
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
    /// The longest a Git read may stall (libgit2's own timeout, set process-wide at start).
    pub git_timeout: Duration,
    /// The one deadline of a whole sync: ls-remote, fetch, validation and every artifact; past it the sync is
    /// cancelled (and retried with backoff, not refused).
    pub sync_timeout: Duration,
    /// What manifests may name as artifact sources, and how large an artifact may be.
    pub artifacts: ArtifactPolicy,
    /// Whose signed commits deploy (`--allowed-signers`), and who may change which path; off by default.
    pub signers: crate::signers::SignerPolicy,
    /// The longest wait between retries after errors.
    pub max_backoff: Duration,
    /// A PEM bundle of CA certificates trusted for https artifacts (besides Mozilla's roots).
    pub ca_file: Option<PathBuf>,
}

/// How often the remote is read without a webhook, by default: Argo CD's poll is 3 minutes and Flux's 1 minute;
/// ls-remote is cheap enough to see a push within seconds, and a webhook makes it immediate.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);

/// The longest wait between retries after errors, by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);

impl ControllerConfig {
    /// Following `spec`, with the bare clone and the artifact cache in `data_dir`, and `vane serve`'s defaults for
    /// the rest: a 15 s poll, 60 s Git reads, 10 minute syncs, retries backing off to 5 minutes, no DVC stores, no
    /// `file://` roots, no signature policy and no extra CA.
    pub fn new(spec: GitSpec, data_dir: PathBuf) -> Self {
        Self {
            spec,
            data_dir,
            poll_interval: DEFAULT_POLL_INTERVAL,
            dvc: DvcConfig::default(),
            git_timeout: Duration::from_secs(60),
            sync_timeout: Duration::from_secs(600),
            artifacts: ArtifactPolicy::default(),
            signers: crate::signers::SignerPolicy::default(),
            max_backoff: DEFAULT_MAX_BACKOFF,
            ca_file: None,
        }
    }

    fn cache(&self, deadline: &Deadline) -> ArtifactCache {
        ArtifactCache::new(&self.data_dir)
            .with_ca_file(self.ca_file.clone())
            .with_policy(self.artifacts.clone())
            .with_deadline(deadline.clone())
    }
}

/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The start-up sync.
    Startup,
    /// The start-up restore of the last applied commit from the local clone and cache (before the remote is read).
    Restore,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The commit id.
    pub commit: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// One sync, as the status history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Everything the status endpoint reports about the loop. Kept in the data dir across restarts
/// ([`crate::durable`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Why the remote could not be read by the last sync that tried; cleared once it is read again. While set, the
    /// last applied commit keeps serving and the status is Degraded.
    pub remote_error: Option<String>,
    /// Why the state kept in the data dir could not be used at start, if it could not (Vane then started from Git).
    pub state_error: Option<String>,
    /// Commits refused, newest first (at most [`REFUSED_KEPT`]): none is retried while it is the branch head, across
    /// restarts too.
    pub refused: VecDeque<Refusal>,
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
    deliveries: Arc<std::sync::Mutex<Deliveries>>,
}

/// Webhook delivery ids seen lately (GitHub's `X-GitHub-Delivery`, Gitea's, GitLab's event UUID), oldest first.
#[derive(Default)]
struct Deliveries {
    order: VecDeque<String>,
    seen: std::collections::HashSet<String>,
}

/// Delivery ids remembered: a replay of any of the last this many deliveries is recognised.
pub const DELIVERIES_KEPT: usize = 4096;
/// Longer delivery ids are not remembered (the providers' are 36-character UUIDs).
const MAX_DELIVERY_ID: usize = 128;

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
        ControllerHandle {
            triggers: trigger_tx,
            rollbacks: rollback_tx,
            status: status_rx,
            metrics: metrics.clone(),
            deliveries: Arc::default(),
        },
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

    /// Records a webhook's delivery id; false when it was seen before (a replay or a redelivery, to be acknowledged
    /// and ignored). Bounded: the last [`DELIVERIES_KEPT`] ids, each at most 128 bytes (a longer one is not kept).
    pub fn first_delivery(&self, id: &str) -> bool {
        if id.len() > MAX_DELIVERY_ID {
            return true;
        }
        let mut deliveries = lock(&self.deliveries);
        if !deliveries.seen.insert(id.to_owned()) {
            return false;
        }
        deliveries.order.push_back(id.to_owned());
        if deliveries.order.len() > DELIVERIES_KEPT {
            if let Some(oldest) = deliveries.order.pop_front() {
                deliveries.seen.remove(&oldest);
            }
        }
        true
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
    let journal = Arc::new(Journal::new(&config));
    let loaded = {
        let journal = Arc::clone(&journal);
        let cache = config.cache(&Deadline::default());
        tokio::task::spawn_blocking(move || {
            cache.remove_leftovers();
            journal.store.load(&journal.source)
        })
        .await
        .unwrap_or_else(|e| Err(format!("reading the state file failed: {e}")))
    };
    match loaded {
        Ok(None) => {}
        Ok(Some(durable)) => restore(&config, &reporter, &journal, &mut state, &mut apply, durable).await,
        Err(error) => {
            tracing::warn!(%error, "the state kept in the data dir cannot be used; starting from Git");
            reporter.status.send_modify(|s| s.state_error = Some(format!("{error}; started from Git")));
        }
    }
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
                    let result = rollback(&config, &reporter, &journal, &mut state, &mut apply, &commit).await;
                    let _ = reply.send(result);
                    continue;
                }
                Some(wake) = triggers.recv() => trigger = wake.trigger,
                () = tokio::time::sleep_until(next) => {}
            }
        }
        let supersede = CancellationToken::new();
        let mut head_check: Option<tokio::task::JoinHandle<Result<Oid, String>>> = None;
        let in_flight = Arc::new(std::sync::Mutex::new(None));
        let running = sync(&config, &reporter, &journal, &mut state, &mut apply, trigger, &supersede, &in_flight);
        tokio::pin!(running);
        let outcome = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // Stopped on purpose: the sync in flight does not count as one the process died in.
                    let journal = Arc::clone(&journal);
                    let _ = tokio::task::spawn_blocking(move || journal.update(|d| d.in_progress = None)).await;
                    return;
                }
                outcome = &mut running => break outcome,
                Some(wake) = triggers.recv(), if pending.is_none() => {
                    let current = *in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let (Some(new), Some(current)) = (wake.commit, current) {
                        // A webhook's word is not enough to cancel (a replayed payload names an old commit): the
                        // remote's head is read, and the sync in flight is cancelled only if it really moved.
                        if new != current && head_check.is_none() {
                            head_check = Some(tokio::spawn(remote_head(config.clone())));
                        }
                    }
                    pending = Some(wake);
                }
                checked = async { head_check.as_mut().expect("guarded").await }, if head_check.is_some() => {
                    head_check = None;
                    let current = *in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match (checked, current) {
                        (Ok(Ok(head)), Some(current)) if head != current => {
                            tracing::info!(%current, %head, "the branch head moved: it supersedes the sync in flight");
                            reporter.metrics.push_checked("moved");
                            supersede.cancel();
                        }
                        (Ok(Ok(head)), _) => {
                            reporter.metrics.push_checked("unmoved");
                            tracing::info!(%head, "a push webhook named another commit, but the head has not moved; the sync in flight goes on");
                        }
                        (Ok(Err(error)), _) => {
                            reporter.metrics.push_checked("failed");
                            tracing::warn!(%error, "could not read the branch head to check a push webhook");
                        }
                        (Err(error), _) => {
                            reporter.metrics.push_checked("failed");
                            tracing::warn!(%error, "the branch head check failed");
                        }
                    }
                }
            }
        };
        if let Some(check) = head_check.take() {
            check.abort();
        }
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
    /// The commit serving.
    applied: Option<Oid>,
    /// The commit new heads are compared with (ancestry, path signers): the one serving, or after a restart whose
    /// restore failed, the one the last run applied.
    baseline: Option<Oid>,
    /// Refused commits, newest first (the status's list, as ids).
    refused: Vec<Oid>,
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
#[allow(clippy::too_many_arguments)]
async fn sync<A, F>(
    config: &ControllerConfig,
    reporter: &Reporter,
    journal: &Arc<Journal>,
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
    let known = Known {
        applied: state.applied,
        baseline: state.applied.or(state.baseline),
        refused: state.refused.clone(),
        pinned_at_head: state.pinned_at_head,
    };
    let seen = Arc::clone(in_flight);
    let journal_for_prepare = Arc::clone(journal);
    let prepared = blocking(config, Some(supersede), move |source, config, deadline| {
        prepare(source, config, deadline, &known, &seen, &journal_for_prepare)
    })
    .await;
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
            state.pinned_at_head = None;
        }
        (Outcome::Refused, Some(head)) => {
            state.refused.retain(|&c| c != head);
            state.refused.insert(0, head);
            state.refused.truncate(REFUSED_KEPT);
        }
        _ => {}
    }
    if let Some(head) = commit {
        if state.pinned_at_head.is_some_and(|pinned| pinned != head) {
            state.pinned_at_head = None;
        }
    }
    let next = record(reporter, trigger, started, commit, outcome, reason.clone(), state.pinned_at_head.is_some());
    // Logged once the status shows it (a reader of the log may ask the status next).
    publish(journal, reporter, state, next, SyncEnded::Yes).await;
    let shown = commit.map(|c| c.to_string());
    if let Some(reason) = &reason {
        tracing::warn!(?trigger, ?outcome, commit = ?shown, %reason, "sync did not apply; the last good set keeps serving");
    }
    // A quiet poll is not news; every other sync is (the start-up one included, so a restart's log says whether it
    // found anything new).
    if outcome != Outcome::Unchanged || trigger != Trigger::Poll {
        tracing::info!(?trigger, ?outcome, commit = ?shown, "sync finished");
    }
    outcome
}

/// What a sync compares the branch head with.
struct Known {
    applied: Option<Oid>,
    baseline: Option<Oid>,
    refused: Vec<Oid>,
    pinned_at_head: Option<Oid>,
}

/// The blocking half: ls-remote, and unless nothing changed, fetch, validate and resolve.
fn prepare(
    source: &GitSource,
    config: &ControllerConfig,
    deadline: &Deadline,
    known: &Known,
    in_flight: &std::sync::Mutex<Option<Oid>>,
    journal: &Journal,
) -> Result<Prepared, String> {
    let head = source.remote_head().map_err(|e| e.to_string())?;
    if Some(head) == known.applied || known.refused.contains(&head) || Some(head) == known.pinned_at_head {
        return Ok(Prepared::Unchanged(head));
    }
    *in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(head);
    // Written before anything the commit names is fetched or loaded: if the process dies during this sync, the next
    // start knows, and a commit that kills it twice is refused instead of retried forever.
    let mut attempt = 0;
    journal.update(|d| {
        let commit = head.to_string();
        attempt = d.in_progress.as_ref().filter(|a| a.commit == commit).map_or(0, |a| a.attempts) + 1;
        d.in_progress = Some(Attempt { commit, attempts: attempt });
    });
    // Logged once written: a process killed after this line is known to have died during this sync.
    tracing::info!(commit = %head, attempt, "a new branch head: fetching, validating and loading it");
    let applied = known.baseline;
    if let Some(refusal) = source.check_local_fetch(head).map_err(|e| e.to_string())? {
        return Ok(Prepared::Refused(head, refusal));
    }
    let fetched = match source.fetch() {
        Ok(fetched) => fetched,
        // A push too large to fetch is a property of the commit: refused, not retried every backoff.
        Err(error @ crate::source::GitError::TooLarge(_)) => return Ok(Prepared::Refused(head, error.to_string())),
        Err(error) => return Err(error.to_string()),
    };
    if fetched != head {
        // Pushed again between ls-remote and the fetch: what was checked is not what arrived. The next sync takes
        // the new head from the start.
        return Err(format!("the branch moved from {head} to {fetched} during the sync; syncing again"));
    }
    // Before anything the commit names is read or downloaded: only a trusted signer's head goes further.
    if config.signers.enabled() {
        if let Err(error) = crate::source::check_commit_size(source, head) {
            return Ok(Prepared::Refused(head, error.to_string()));
        }
        let started = Instant::now();
        match config.signers.check(source.repository(), head, applied) {
            Ok(signer) => {
                let signer = signer.map(|s| format!("{} ({})", s.principals.join(","), s.fingerprint));
                tracing::info!(commit = %head, signer, verify_us = started.elapsed().as_micros() as u64, "signed head verified");
            }
            Err(reason) => return Ok(Prepared::Refused(head, reason)),
        }
    }
    match validate(source, config, deadline, head, applied) {
        Ok(desired) => Ok(Prepared::Ready(head, desired)),
        // Not the commit's fault (a download failed, the deadline passed, the disk): retried with backoff.
        Err(rejection) if rejection.transient => Err(format!("{}; retried with backoff", rejection.reason)),
        Err(rejection) => Ok(Prepared::Refused(head, rejection.reason)),
    }
}

/// Validates `commit` as a whole and resolves its artifacts.
fn validate(
    source: &GitSource,
    config: &ControllerConfig,
    deadline: &Deadline,
    commit: Oid,
    applied: Option<Oid>,
) -> Result<DesiredState, plan::Rejection> {
    let refuse = |reason: String| plan::Rejection { reason, transient: false };
    let files = source.manifests(commit).map_err(|e| refuse(e.to_string()))?;
    if files.is_empty() {
        return Err(refuse(format!("no manifests (*.yaml) in {}/", config.spec.path)));
    }
    let deployments = manifest::parse_commit(&files).map_err(|e| refuse(e.to_string()))?;
    if let Some(applied) = applied {
        let descends = source.descends_from(commit, applied).map_err(|e| refuse(e.to_string()))?;
        if !descends && !deployments.iter().all(|d| d.allow_history_rewrite) {
            return Err(refuse(format!(
                "history rewritten: {commit} does not descend from the applied {applied} (a force-push or reset); \
                 set spec.allow_history_rewrite in every manifest to allow it"
            )));
        }
    }
    let cache = config.cache(deadline);
    plan::desired_state(&deployments, source, commit, &cache, &config.dvc)
}

async fn rollback<A, F>(
    config: &ControllerConfig,
    reporter: &Reporter,
    journal: &Arc<Journal>,
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
    let desired =
        blocking(config, None, move |source, config, deadline| local_desired(source, config, deadline, oid)).await?;
    apply(desired).await?;
    let head = status.borrow().observed.as_ref().and_then(|o| Oid::from_str(&o.commit).ok());
    state.applied = Some(oid);
    state.pinned_at_head = head.filter(|&h| h != oid);
    let diverged = state.pinned_at_head.is_some();
    let next = record(reporter, Trigger::Rollback, started, Some(oid), Outcome::Applied, None, diverged);
    publish(journal, reporter, state, next, SyncEnded::No).await;
    tracing::warn!(commit, "rolled back by an admin call; holding until the branch head changes");
    Ok(())
}

/// The desired state of `commit`, an applied one, from the local clone and the artifact cache only: no ls-remote, no
/// fetch, no download (a missing artifact is an error).
fn local_desired(
    source: &GitSource,
    config: &ControllerConfig,
    deadline: &Deadline,
    commit: Oid,
) -> Result<DesiredState, String> {
    let files = source.manifests(commit).map_err(|e| e.to_string())?;
    let deployments = manifest::parse_commit(&files).map_err(|e| e.to_string())?;
    plan::desired_state(&deployments, source, commit, &config.cache(deadline).offline(), &config.dvc)
        .map_err(String::from)
}

/// Serves the last applied commit of a previous run from the local clone and cache, before the remote is read: a
/// restart during a Git outage serves what it served. Also restores the status (history, refused commits) and
/// refuses a commit the process died applying [`INTERRUPTED_LIMIT`] times in a row.
async fn restore<A, F>(
    config: &ControllerConfig,
    reporter: &Reporter,
    journal: &Arc<Journal>,
    state: &mut LoopState,
    apply: &mut A,
    mut durable: Durable,
) where
    A: FnMut(DesiredState) -> F,
    F: Future<Output = Result<(), String>>,
{
    let started = SystemTime::now();
    if durable.policy != journal.policy && !durable.status.refused.is_empty() {
        tracing::info!(
            refused = durable.status.refused.len(),
            "the operator's policy (artifact sources, limits or signers) changed since these commits were refused; \
             they will be tried again"
        );
        durable.status.refused.clear();
    }
    if let Some(attempt) = durable.in_progress.clone().filter(|a| a.attempts >= INTERRUPTED_LIMIT) {
        let reason = format!(
            "Vane stopped {} times in a row while applying this commit (killed, or out of memory?); it is refused \
             and not retried until a new commit",
            attempt.attempts
        );
        tracing::error!(commit = %attempt.commit, %reason, "refusing a commit the process died applying");
        let status = &mut durable.status;
        status.refused.retain(|r| r.commit != attempt.commit);
        status.refused.push_front(Refusal {
            commit: attempt.commit.clone(),
            reason: reason.clone(),
            at_unix_ms: unix_ms(started),
        });
        status.refused.truncate(REFUSED_KEPT);
        status.last_attempted = Some(SyncRecord {
            commit: Some(attempt.commit),
            trigger: Trigger::Startup,
            outcome: Outcome::Refused,
            reason: Some(reason.clone()),
            started_unix_ms: unix_ms(started),
            duration_ms: 0,
        });
        status.last_error = Some(reason);
        durable.in_progress = None;
    }
    state.refused = durable.status.refused.iter().filter_map(|r| Oid::from_str(&r.commit).ok()).collect();
    state.pinned_at_head = durable.pinned_at_head.as_deref().and_then(|c| Oid::from_str(c).ok());
    let last = durable.status.last_applied.as_ref().and_then(|c| Oid::from_str(&c.commit).ok());
    reporter.status.send_modify(|s| {
        let kept = &durable.status;
        s.observed.clone_from(&kept.observed);
        // Until the restore succeeds (and records it anew) or fails, what the last run applied.
        s.last_applied.clone_from(&kept.last_applied);
        s.last_attempted.clone_from(&kept.last_attempted);
        s.last_error.clone_from(&kept.last_error);
        s.history.clone_from(&kept.history);
        s.applied_commits.clone_from(&kept.applied_commits);
        s.refused.clone_from(&kept.refused);
    });
    *lock(&journal.state) = durable;
    let Some(last) = last else { return };
    state.baseline = Some(last);
    let stalled = {
        let status = reporter.status.borrow();
        let attempted = status.last_attempted.as_ref();
        attempted.is_some_and(|a| a.outcome == Outcome::Refused && a.commit != Some(last.to_string()))
    };
    reporter.metrics.restored(stalled);
    let desired = blocking(config, None, move |source, config, deadline| {
        // The signers may have changed since it was applied: a restored commit meets today's policy too.
        if let Some(allowed) = &config.signers.allowed {
            allowed.verify(source.repository(), last)?;
        }
        local_desired(source, config, deadline, last)
    })
    .await;
    match desired {
        Ok(desired) => match apply(desired).await {
            Ok(()) => {
                state.applied = Some(last);
                let diverged = state.pinned_at_head.is_some();
                let next = record(reporter, Trigger::Restore, started, Some(last), Outcome::Applied, None, diverged);
                // Not a sync's end: a commit the last run died applying stays counted.
                publish(journal, reporter, state, next, SyncEnded::No).await;
                tracing::info!(commit = %last, "serving the last applied commit from the local clone and cache");
            }
            Err(reason) => restore_failed(reporter, state, last, &reason),
        },
        Err(reason) => restore_failed(reporter, state, last, &reason),
    }
}

/// Nothing serves: the next sync applies the branch head whatever it is (a rollback pin would otherwise hold it on a
/// commit that is not loaded); the last run's commit stays the baseline, and the status keeps it as last applied so
/// the next write of the state does not forget it.
fn restore_failed(reporter: &Reporter, state: &mut LoopState, commit: Oid, reason: &str) {
    state.pinned_at_head = None;
    let message = format!(
        "could not serve the last applied commit {commit} from the local clone and cache ({reason}); syncing from Git"
    );
    tracing::warn!(%message);
    reporter.status.send_modify(|s| {
        s.last_error = Some(message);
        s.diverged_from_head = false;
    });
}

/// The durable state and where it is written, shared with the blocking half of a sync.
struct Journal {
    store: DurableStore,
    /// Which remote, branch and folder the state is about.
    source: String,
    /// See [`Durable::policy`].
    policy: String,
    state: std::sync::Mutex<Durable>,
}

impl Journal {
    fn new(config: &ControllerConfig) -> Self {
        let spec = &config.spec;
        let source = format!("{} {} {}", crate::redact::url(&spec.url), spec.branch, spec.path);
        use sha2::Digest;
        let described = format!(
            "{:?} {:?} {} {:?}",
            config.artifacts, config.signers.paths, spec.max_fetch_bytes, config.signers.allowed
        );
        let policy = hex::encode(sha2::Sha256::digest(described.as_bytes()));
        let state = std::sync::Mutex::new(Durable { source: source.clone(), ..Durable::default() });
        Self { store: DurableStore::new(&config.data_dir), source, policy, state }
    }

    /// Applies `change` and writes the result. Blocking. A failed write is logged and the loop goes on: serving
    /// does not depend on it, only the next restart does.
    fn update(&self, change: impl FnOnce(&mut Durable)) {
        let mut durable = lock(&self.state);
        change(&mut durable);
        durable.policy.clone_from(&self.policy);
        if let Err(error) = self.store.save(&durable) {
            tracing::warn!(file = %self.store.path().display(), %error, "could not write the reconciler's state");
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes the status and the rollback pin after a sync; the sync is over, so nothing is in progress.
/// Makes `next` the status: written to the data dir first, then shown, so a status that says "applied" survives a
/// restart. A quiet poll changes only counters and the observed time: it writes nothing (a write is an fsync).
async fn publish(journal: &Arc<Journal>, reporter: &Reporter, state: &LoopState, next: SyncStatus, ended: SyncEnded) {
    persist(journal, state, next.clone(), ended).await;
    reporter.status.send_replace(next);
}

/// Whether what is published ends a sync (which clears the commit in progress) or not (a restore, a rollback).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncEnded {
    Yes,
    No,
}

async fn persist(journal: &Arc<Journal>, state: &LoopState, status: SyncStatus, ended: SyncEnded) {
    let pinned = state.pinned_at_head.map(|c| c.to_string());
    let changed = {
        let kept = lock(&journal.state);
        let quiet = |s: &SyncStatus| SyncStatus {
            syncs: 0,
            observed: s.observed.as_ref().map(|o| CommitRecord { commit: o.commit.clone(), at_unix_ms: 0 }),
            ..s.clone()
        };
        (ended == SyncEnded::Yes && kept.in_progress.is_some())
            || kept.pinned_at_head != pinned
            || quiet(&kept.status) != quiet(&status)
    };
    if !changed {
        return;
    }
    let journal = Arc::clone(journal);
    let _ = tokio::task::spawn_blocking(move || {
        journal.update(|d| {
            d.status = status;
            d.pinned_at_head = pinned;
            if ended == SyncEnded::Yes {
                d.in_progress = None;
            }
        });
    })
    .await;
}

/// The branch head on the remote (ls-remote), read on the blocking pool within the Git timeout.
async fn remote_head(config: ControllerConfig) -> Result<Oid, String> {
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    let timeout = config.git_timeout;
    let task = tokio::task::spawn_blocking(move || {
        let source = GitSource::open(&GitSource::clone_dir(&config.data_dir), config.spec.clone(), flag)
            .map_err(|e| e.to_string())?;
        source.remote_head().map_err(|e| e.to_string())
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(head)) => head,
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => {
            cancel.store(true, Ordering::Relaxed);
            Err(format!("ls-remote did not answer within {timeout:?}"))
        }
    }
}

/// How long cancelled blocking work may take to notice (it checks at each Git progress callback and each artifact
/// chunk) before the loop goes on without it.
const CANCEL_GRACE: Duration = Duration::from_secs(30);

/// Runs `work` with a freshly opened clone on the blocking pool, under the sync's deadline; `cancel` (a newer push)
/// stops it early. Cancelled work is waited for (up to [`CANCEL_GRACE`]) before this returns, so the next sync
/// never runs beside it.
async fn blocking<T: Send + 'static>(
    config: &ControllerConfig,
    cancel_token: Option<&CancellationToken>,
    work: impl FnOnce(&GitSource, &ControllerConfig, &Deadline) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let deadline = Deadline { at: Some(Instant::now() + config.sync_timeout), cancel: Arc::default() };
    let cancel = Arc::clone(&deadline.cancel);
    let config_owned = config.clone();
    let mut task = tokio::task::spawn_blocking(move || {
        let dir = GitSource::clone_dir(&config_owned.data_dir);
        let source = GitSource::open(&dir, config_owned.spec.clone(), Arc::clone(&deadline.cancel))
            .map_err(|e| e.to_string())?;
        work(&source, &config_owned, &deadline)
    });
    let cancelled = async {
        match cancel_token {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let stopped = tokio::select! {
        finished = &mut task => return finished.unwrap_or_else(|e| Err(format!("reconcile task failed: {e}"))),
        () = cancelled => "cancelled".to_owned(),
        () = tokio::time::sleep(config.sync_timeout) => format!(
            "the sync did not finish within {:?} (--sync-timeout); cancelled, retried with backoff",
            config.sync_timeout
        ),
    };
    cancel.store(true, Ordering::Relaxed);
    if tokio::time::timeout(CANCEL_GRACE, task).await.is_err() {
        tracing::warn!("a cancelled sync's Git or artifact work did not stop within {CANCEL_GRACE:?}; going on");
    }
    Err(stopped)
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
) -> SyncStatus {
    let now = SystemTime::now();
    let took = now.duration_since(started).unwrap_or_default();
    let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    let now_unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    // A restore is not a sync: the counters and timestamps keep meaning what they say (set from the status below).
    if trigger != Trigger::Restore {
        reporter.metrics.observe(outcome, took.as_secs_f64(), now_unix);
    }
    let status = &reporter.status;
    let record = SyncRecord {
        commit: commit.map(|c| c.to_string()),
        trigger,
        outcome,
        reason: reason.clone(),
        started_unix_ms: unix_ms(started),
        duration_ms,
    };
    let mut next = status.borrow().clone();
    {
        let s = &mut next;
        s.reconciling = false;
        s.reconciling_commit = None;
        s.syncs += 1;
        s.diverged_from_head = diverged;
        let read_remote = !matches!(trigger, Trigger::Rollback | Trigger::Restore);
        if let (Some(commit), true) = (&record.commit, read_remote) {
            s.observed = Some(CommitRecord { commit: commit.clone(), at_unix_ms: unix_ms(now) });
        }
        match outcome {
            Outcome::FetchFailed => s.remote_error.clone_from(&reason),
            Outcome::Applied | Outcome::Unchanged | Outcome::Refused if read_remote => s.remote_error = None,
            _ => {}
        }
        match outcome {
            Outcome::Applied => {
                let commit = record.commit.clone().unwrap_or_default();
                s.last_applied = Some(CommitRecord { commit: commit.clone(), at_unix_ms: unix_ms(now) });
                s.applied_commits.retain(|c| *c != commit);
                s.applied_commits.push_front(commit);
                s.applied_commits.truncate(ROLLBACK_DEPTH);
                // A restore is not an attempt: the last attempt (maybe a refused head) stays what it was.
                if trigger != Trigger::Restore {
                    s.last_error = None;
                    s.last_attempted = Some(record.clone());
                }
            }
            Outcome::Refused => {
                if let Some(commit) = &record.commit {
                    s.refused.retain(|r| r.commit != *commit);
                    s.refused.push_front(Refusal {
                        commit: commit.clone(),
                        reason: reason.clone().unwrap_or_default(),
                        at_unix_ms: unix_ms(now),
                    });
                    s.refused.truncate(REFUSED_KEPT);
                }
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
    }
    next
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
