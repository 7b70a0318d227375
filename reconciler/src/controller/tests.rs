//! The loop against real repositories made with git, with `apply` recording what it is given.

use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::*;
use crate::source::tests::WorkRepo;

fn manifest(name: &str, model_path: &str, bytes: &[u8], extra: &str) -> String {
    let sha = hex::encode(Sha256::digest(bytes));
    format!(
        "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}}}\nspec:\n  versions:\n    - version: 1\n      model: {{path: {model_path}, sha256: {sha}}}\n{extra}"
    )
}

/// Commits a model file and its manifest.
fn publish(work: &WorkRepo, bytes: &[u8], extra: &str) -> Oid {
    work.write("models/m.onnx", bytes);
    work.write("deploy/m.yaml", manifest("m", "models/m.onnx", bytes, extra).as_bytes());
    work.commit("publish")
}

struct Running {
    handle: ControllerHandle,
    applied: Arc<Mutex<Vec<DesiredState>>>,
    refuse: Arc<Mutex<Option<String>>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    data: tempfile::TempDir,
}

fn config(url: String, data: &tempfile::TempDir) -> ControllerConfig {
    ControllerConfig {
        poll_interval: Duration::from_secs(3600),
        git_timeout: Duration::from_secs(30),
        sync_timeout: Duration::from_secs(60),
        max_backoff: Duration::from_secs(3600),
        ..ControllerConfig::new(GitSpec::new(url, "main", "deploy"), data.path().to_path_buf())
    }
}

fn start(url: String) -> Running {
    start_in(url, tempfile::tempdir().unwrap())
}

/// The loop on `url` with the data dir `data` (a previous run's, to test a restart).
fn start_in(url: String, data: tempfile::TempDir) -> Running {
    let config = config(url, &data);
    let (handle, inputs) = channels(&config);
    let applied = Arc::new(Mutex::new(Vec::new()));
    let refuse: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let shutdown = CancellationToken::new();
    let (sink, verdict) = (Arc::clone(&applied), Arc::clone(&refuse));
    let apply = move |desired: DesiredState| {
        let result = match verdict.lock().unwrap().clone() {
            Some(reason) => Err(reason),
            None => {
                sink.lock().unwrap().push(desired);
                Ok(())
            }
        };
        std::future::ready(result)
    };
    let task = tokio::spawn(run(config, inputs, apply, shutdown.clone()));
    Running { handle, applied, refuse, shutdown, task, data }
}

impl Running {
    /// Stops the loop and returns its data dir, as a process stopping would leave it.
    async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.data
    }

    /// Waits (at most 30 s) until the status satisfies `condition`, returning it.
    async fn until(&self, condition: impl Fn(&SyncStatus) -> bool) -> SyncStatus {
        let mut status = self.handle.status();
        let waited = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| condition(s))).await;
        let status = waited.expect("status reached in time").expect("loop alive");
        status.clone()
    }

    /// Triggers a sync and waits until it has finished.
    async fn sync(&self, trigger: Trigger) -> SyncStatus {
        let done = self.handle.status().borrow().syncs;
        assert!(self.handle.trigger(trigger));
        self.until(|s| s.syncs > done).await
    }
}

fn head_of(status: &SyncStatus) -> Option<&str> {
    status.last_applied.as_ref().map(|c| c.commit.as_str())
}

#[tokio::test]
async fn first_sync_then_a_push_is_applied_and_a_quiet_sync_changes_nothing() {
    let work = WorkRepo::new();
    let first = publish(&work, b"model one", "");
    let running = start(work.url());
    let status = running.until(|s| s.last_applied.is_some()).await;
    assert_eq!(head_of(&status), Some(first.to_string().as_str()));
    let desired = running.applied.lock().unwrap()[0].clone();
    assert_eq!(desired.revision, Some(first.to_string()));
    assert_eq!(
        desired.models[0].versions[0].fingerprint,
        format!("sha256:{}", hex::encode(Sha256::digest(b"model one")))
    );
    assert_eq!(std::fs::read(&desired.models[0].versions[0].path).unwrap(), b"model one");

    let second = publish(&work, b"model two", "");
    let status = running.sync(Trigger::Webhook).await;
    assert_eq!(head_of(&status), Some(second.to_string().as_str()));
    assert_eq!(status.history[0].trigger, Trigger::Webhook);
    assert_eq!(status.applied_commits, [second.to_string(), first.to_string()]);

    let status = running.sync(Trigger::Admin).await;
    assert_eq!(running.applied.lock().unwrap().len(), 2, "nothing new to apply");
    assert_eq!(status.history.len(), 2);
    running.shutdown.cancel();
}

#[tokio::test]
async fn a_bad_commit_is_refused_with_its_reason_not_retried_and_a_fix_recovers() {
    let work = WorkRepo::new();
    let good = publish(&work, b"model one", "");
    let running = start(work.url());
    running.until(|s| s.last_applied.is_some()).await;

    type Breaker = Box<dyn Fn(&WorkRepo)>;
    let cases: Vec<(Breaker, &str)> = vec![
        (Box::new(|w: &WorkRepo| w.write("deploy/m.yaml", b"apiVersion: [")), "deploy/m.yaml: invalid manifest"),
        (
            Box::new(|w: &WorkRepo| {
                w.write("deploy/m.yaml", manifest("m", "models/m.onnx", b"model one", "  colour: red\n").as_bytes())
            }),
            "unknown field `colour`",
        ),
        (
            Box::new(|w: &WorkRepo| {
                w.write("deploy/m.yaml", manifest("m", "models/missing.onnx", b"x", "").as_bytes())
            }),
            "models/missing.onnx at commit",
        ),
        (Box::new(|w: &WorkRepo| w.write("models/m.onnx", b"tampered")), "has sha256"),
        (
            Box::new(|w: &WorkRepo| w.write("deploy/m.yaml", manifest("m", "../m.onnx", b"x", "").as_bytes())),
            "may not leave",
        ),
    ];
    let mut serving = good;
    for (break_it, reason) in cases {
        publish(&work, b"model one", "");
        break_it(&work);
        let bad = work.commit("bad");
        let status = running.sync(Trigger::Webhook).await;
        assert_eq!(head_of(&status), Some(serving.to_string().as_str()), "still serving the good commit");
        let attempted = status.last_attempted.as_ref().unwrap();
        assert_eq!((attempted.outcome, attempted.commit.clone()), (Outcome::Refused, Some(bad.to_string())));
        let got = attempted.reason.clone().unwrap();
        assert!(got.contains(reason), "{got:?} should contain {reason:?}");
        assert_eq!(status.last_error.as_deref(), Some(got.as_str()));
        // Not retried until a new commit arrives.
        let history = status.history.len();
        let status = running.sync(Trigger::Admin).await;
        assert_eq!(status.history.len(), history, "the refused commit was not tried again");
        // Revert to the good content in a new commit: recovers.
        work.git(&["checkout", "-q", &good.to_string(), "--", "."]);
        let fixed = work.commit("fix");
        let status = running.sync(Trigger::Webhook).await;
        assert_eq!(head_of(&status), Some(fixed.to_string().as_str()));
        assert_eq!(status.last_error, None);
        serving = fixed;
    }
}

#[tokio::test]
async fn the_gateway_refusing_a_state_leaves_the_old_commit_applied() {
    let work = WorkRepo::new();
    let good = publish(&work, b"model one", "");
    let running = start(work.url());
    running.until(|s| s.last_applied.is_some()).await;
    *running.refuse.lock().unwrap() = Some("cannot load models/m.onnx: corrupt".into());
    publish(&work, b"model two", "");
    let status = running.sync(Trigger::Webhook).await;
    assert_eq!(head_of(&status), Some(good.to_string().as_str()));
    assert_eq!(status.last_attempted.as_ref().unwrap().reason.as_deref(), Some("cannot load models/m.onnx: corrupt"));
}

#[tokio::test]
async fn a_force_push_is_refused_unless_every_manifest_allows_it() {
    let work = WorkRepo::new();
    let first = publish(&work, b"model one", "");
    let running = start(work.url());
    running.until(|s| s.last_applied.is_some()).await;
    let second = publish(&work, b"model two", "");
    running.sync(Trigger::Webhook).await;
    work.git(&["reset", "-q", "--hard", &first.to_string()]);
    publish(&work, b"model three", "");
    let status = running.sync(Trigger::Webhook).await;
    assert_eq!(head_of(&status), Some(second.to_string().as_str()));
    assert!(status.last_error.as_deref().unwrap().contains("history rewritten"), "{:?}", status.last_error);
    let allowed = publish(&work, b"model three", "  allow_history_rewrite: true\n");
    let status = running.sync(Trigger::Webhook).await;
    assert_eq!(head_of(&status), Some(allowed.to_string().as_str()));
}

#[tokio::test]
async fn the_remote_going_away_keeps_serving_and_reports_then_recovers_and_rollback_needs_no_network() {
    let work = WorkRepo::new();
    let first = publish(&work, b"model one", "");
    let remote = tempfile::tempdir().unwrap();
    let bare = remote.path().join("deploy.git");
    work.git(&["clone", "-q", "--bare", &work.url(), bare.to_str().unwrap()]);
    let running = start(bare.display().to_string());
    running.until(|s| s.last_applied.is_some()).await;
    let second = publish(&work, b"model two", "");
    work.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
    running.sync(Trigger::Webhook).await;

    let moved = remote.path().join("elsewhere.git");
    std::fs::rename(&bare, &moved).unwrap();
    let status = running.sync(Trigger::Admin).await;
    assert_eq!(head_of(&status), Some(second.to_string().as_str()), "still serving");
    let error = status.last_error.as_deref().unwrap();
    assert!(error.contains("cannot be read (No such file or directory") && error.contains("moved, deleted"), "{error}");
    assert_eq!(status.remote_error.as_deref(), Some(error), "degraded while the remote is unreachable");

    // Rollback with the remote gone: from the local clone and the artifact cache.
    running.handle.rollback(first.to_string()).await.unwrap();
    let status = running.handle.status().borrow().clone();
    assert_eq!(head_of(&status), Some(first.to_string().as_str()));
    assert!(status.diverged_from_head);
    let desired = running.applied.lock().unwrap().last().unwrap().clone();
    assert_eq!(std::fs::read(&desired.models[0].versions[0].path).unwrap(), b"model one");
    assert!(running
        .handle
        .rollback("0123456789012345678901234567890123456789".into())
        .await
        .unwrap_err()
        .contains("not one of the applied"));

    // The remote comes back at the same head: the rollback holds.
    std::fs::rename(&moved, &bare).unwrap();
    let status = running.sync(Trigger::Admin).await;
    assert_eq!(head_of(&status), Some(first.to_string().as_str()), "the pin holds while the head is unchanged");
    assert_eq!(status.last_error, None, "fetch recovered");
    assert_eq!(status.remote_error, None);
    // A new push moves the head: applied, no longer diverged.
    let third = publish(&work, b"model three", "");
    work.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
    let status = running.sync(Trigger::Webhook).await;
    assert_eq!(head_of(&status), Some(third.to_string().as_str()));
    assert!(!status.diverged_from_head);
}

#[tokio::test]
async fn a_newer_push_supersedes_the_sync_in_flight_before_its_swap() {
    let work = WorkRepo::new();
    let slow = publish(&work, b"model one", "");
    let data = tempfile::tempdir().unwrap();
    let config = config(work.url(), &data);
    let (handle, inputs) = channels(&config);
    // The first commit's load never ends (a warm-up that hangs); every other commit applies at once.
    let applied = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&applied);
    let slow_id = slow.to_string();
    let apply = move |desired: DesiredState| {
        let hangs = desired.revision.as_deref() == Some(slow_id.as_str());
        let sink = Arc::clone(&sink);
        async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            sink.lock().unwrap().push(desired.revision);
            Ok(())
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(run(config, inputs, apply, shutdown.clone()));
    let mut status = handle.status();
    let in_flight = Some(slow.to_string());
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.reconciling_commit == in_flight))
        .await
        .expect("the first sync reaches its load")
        .unwrap();

    let fast = publish(&work, b"model two", "");
    assert!(handle.pushed(Some(&fast.to_string())));
    let status = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.last_applied.is_some()))
        .await
        .expect("the newer push is applied")
        .unwrap()
        .clone();
    assert_eq!(head_of(&status), Some(fast.to_string().as_str()));
    assert_eq!(status.history[1].outcome, Outcome::Superseded, "{:?}", status.history);
    assert_eq!(status.history[1].commit, Some(slow.to_string()));
    assert_eq!(status.history[0].trigger, Trigger::Webhook);
    assert_eq!(*applied.lock().unwrap(), [Some(fast.to_string())], "the superseded commit was never applied");
    assert!(!status.reconciling && status.reconciling_commit.is_none());
    shutdown.cancel();
}

/// A loop whose load waits for `gate`, started and waited for until its first sync is loading `loading`: a trigger
/// sent then surely arrives while that sync runs.
struct Gated {
    handle: ControllerHandle,
    gate: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
    status: watch::Receiver<SyncStatus>,
    _data: tempfile::TempDir,
}

async fn start_gated(url: String, loading: Oid) -> Gated {
    let data = tempfile::tempdir().unwrap();
    let config = config(url, &data);
    let (handle, inputs) = channels(&config);
    let gate = Arc::new(tokio::sync::Notify::new());
    let opened = Arc::clone(&gate);
    let apply = move |_desired: DesiredState| {
        let opened = Arc::clone(&opened);
        async move {
            opened.notified().await;
            Ok(())
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(run(config, inputs, apply, shutdown.clone()));
    let mut status = handle.status();
    let in_flight = Some(loading.to_string());
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.reconciling_commit == in_flight))
        .await
        .expect("the first sync reaches its load")
        .unwrap();
    Gated { handle, gate, shutdown, status, _data: data }
}

#[tokio::test]
async fn a_push_of_the_commit_in_flight_does_not_cancel_it() {
    let work = WorkRepo::new();
    let first = publish(&work, b"model one", "");
    let Gated { handle, gate, shutdown, mut status, _data } = start_gated(work.url(), first).await;
    assert!(handle.pushed(Some(&first.to_string())));
    // The loop takes the wake (it reads triggers during a sync); then the load may finish.
    tokio::time::timeout(Duration::from_secs(30), async {
        while handle.triggers.capacity() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    gate.notify_one();
    let status = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.syncs >= 2))
        .await
        .expect("the sync finishes, then the pending push runs one more (unchanged) sync")
        .unwrap()
        .clone();
    assert_eq!(head_of(&status), Some(first.to_string().as_str()));
    assert_eq!(status.history.len(), 1, "one applied sync, then an unchanged one: {:?}", status.history);
    assert_eq!(status.history[0].outcome, Outcome::Applied);
    shutdown.cancel();
}

#[tokio::test]
async fn a_restart_with_the_remote_gone_serves_the_last_applied_commit_and_keeps_refusing_what_it_refused() {
    let work = WorkRepo::new();
    let good = publish(&work, b"model one", "");
    let remote = tempfile::tempdir().unwrap();
    let bare = remote.path().join("deploy.git");
    work.git(&["clone", "-q", "--bare", &work.url(), bare.to_str().unwrap()]);
    let running = start(bare.display().to_string());
    running.until(|s| s.last_applied.is_some()).await;
    work.write("models/m.onnx", b"tampered");
    let bad = work.commit("bad");
    work.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
    let status = running.sync(Trigger::Webhook).await;
    assert_eq!(status.refused.front().map(|r| r.commit.clone()), Some(bad.to_string()));
    let data = running.stop().await;

    // Restart with the remote moved away: the last applied commit serves from the local clone and cache.
    let moved = remote.path().join("elsewhere.git");
    std::fs::rename(&bare, &moved).unwrap();
    let running = start_in(bare.display().to_string(), data);
    let status = running.until(|s| s.last_applied.is_some() && s.remote_error.is_some()).await;
    assert_eq!(head_of(&status), Some(good.to_string().as_str()));
    assert_eq!(running.applied.lock().unwrap()[0].revision, Some(good.to_string()));
    assert_eq!(status.history[1].trigger, Trigger::Restore, "{:?}", status.history);
    assert_eq!(status.history[0].outcome, Outcome::FetchFailed);
    assert_eq!(status.last_attempted.as_ref().and_then(|a| a.commit.clone()), Some(bad.to_string()));
    let data = running.stop().await;

    // Restart with the remote back: the refused head is not tried again.
    std::fs::rename(&moved, &bare).unwrap();
    let running = start_in(bare.display().to_string(), data);
    let status = running.until(|s| s.syncs >= 2).await;
    assert_eq!(status.history[0].trigger, Trigger::Restore, "the startup sync found nothing new: {:?}", status.history);
    assert_eq!(status.remote_error, None);
    assert_eq!(running.applied.lock().unwrap().len(), 1, "only the restore applied anything");
    let data = running.stop().await;

    // A state file that cannot be read is reported, and Vane starts from Git.
    std::fs::write(data.path().join("state.json"), b"{not json").unwrap();
    let running = start_in(bare.display().to_string(), data);
    let status = running.until(|s| s.syncs >= 1).await;
    assert!(status.state_error.as_deref().unwrap().contains("is not valid"), "{:?}", status.state_error);
    assert_eq!(status.history[0].outcome, Outcome::Refused, "from Git: the head is tried (and refused) again");
}

#[tokio::test]
async fn a_commit_the_process_died_applying_twice_is_refused_at_the_next_start() {
    let work = WorkRepo::new();
    let good = publish(&work, b"model one", "");
    let running = start(work.url());
    running.until(|s| s.last_applied.is_some()).await;
    let data = running.stop().await;
    let killer = publish(&work, b"model two", "");
    // What a process killed twice during the sync of `killer` leaves behind.
    let store = crate::durable::DurableStore::new(data.path());
    let source = format!("{} main deploy", work.url());
    let mut durable = store.load(&source).unwrap().unwrap();
    durable.in_progress = Some(Attempt { commit: killer.to_string(), attempts: INTERRUPTED_LIMIT });
    store.save(&durable).unwrap();
    let running = start_in(work.url(), data);
    let status = running.until(|s| s.syncs >= 2).await;
    assert_eq!(head_of(&status), Some(good.to_string().as_str()));
    let refusal = status.refused.front().unwrap();
    assert_eq!(refusal.commit, killer.to_string());
    assert!(refusal.reason.contains("stopped 2 times in a row while applying"), "{}", refusal.reason);
    assert_eq!(running.applied.lock().unwrap().len(), 1, "the restore only; the killer is not loaded");
    let durable = store.load(&source).unwrap().unwrap();
    assert_eq!(durable.in_progress, None);
}

/// A captured webhook replayed during a sync names an old commit: the head is read, has not moved, and the sync in
/// flight goes on (before, any other `after` cancelled it, so a replay every few seconds stopped every deployment).
#[tokio::test]
async fn a_replayed_webhook_does_not_cancel_the_sync_in_flight() {
    let work = WorkRepo::new();
    let old = publish(&work, b"model one", "");
    let current = publish(&work, b"model two", "");
    let Gated { handle, gate, shutdown, mut status, _data } = start_gated(work.url(), current).await;
    assert!(handle.pushed(Some(&old.to_string())), "the replay of an old push");
    tokio::time::timeout(Duration::from_secs(30), async {
        while handle.metrics().push_checks("unmoved") == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the head is checked");
    gate.notify_one();
    let status = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.last_applied.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(head_of(&status), Some(current.to_string().as_str()), "the sync in flight was not cancelled");
    assert_eq!(status.history[0].outcome, Outcome::Applied);
    assert!(status.history.iter().all(|r| r.outcome != Outcome::Superseded), "{:?}", status.history);
    assert_eq!(handle.metrics().push_checks("moved"), 0);
    shutdown.cancel();
}

/// With --allowed-signers, only a head signed by a listed key deploys: an unsigned head and one signed by an
/// unlisted key are refused like any bad commit (the signer's fingerprint in the reason), and the good one serves.
#[tokio::test]
async fn only_heads_signed_by_an_allowed_signer_deploy() {
    let keys = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let key = keys.path().join(name);
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        key
    };
    let (alice, mallory) = (keygen("alice"), keygen("mallory"));
    let allowed = keys.path().join("allowed_signers");
    let alice_pub = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    std::fs::write(&allowed, format!("alice@example.com {alice_pub}")).unwrap();
    let work = WorkRepo::new();
    let sign = |key: &std::path::Path, message: &str| {
        work.git(&["add", "-A"]);
        let signing = format!("user.signingkey={}", key.display());
        work.git(&["-c", "gpg.format=ssh", "-c", &signing, "commit", "-q", "-S", "--allow-empty", "-m", message]);
        Oid::from_str(&work.git(&["rev-parse", "HEAD"])).unwrap()
    };
    work.write("models/m.onnx", b"model one");
    work.write("deploy/m.yaml", manifest("m", "models/m.onnx", b"model one", "").as_bytes());
    let signed = sign(&alice, "signed by alice");

    let data = tempfile::tempdir().unwrap();
    let mut config = config(work.url(), &data);
    config.signers = crate::signers::SignerPolicy {
        allowed: Some(crate::signers::AllowedSigners::load(&allowed).unwrap()),
        paths: Vec::new(),
    };
    let (handle, inputs) = channels(&config);
    let applied = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&applied);
    let apply = move |desired: DesiredState| {
        sink.lock().unwrap().push(desired.revision);
        std::future::ready(Ok(()))
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(run(config, inputs, apply, shutdown.clone()));
    let mut status = handle.status();
    let wait = |status: &mut watch::Receiver<SyncStatus>, syncs: u64| {
        let mut status = status.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.syncs >= syncs))
                .await
                .unwrap()
                .unwrap()
                .clone()
        }
    };
    let first = wait(&mut status, 1).await;
    assert_eq!(head_of(&first), Some(signed.to_string().as_str()), "{:?}", first.last_error);

    work.write("models/m.onnx", b"model two");
    work.write("deploy/m.yaml", manifest("m", "models/m.onnx", b"model two", "").as_bytes());
    let unsigned = Oid::from_str(&{
        work.git(&["add", "-A"]);
        work.git(&["commit", "-q", "-m", "unsigned"]);
        work.git(&["rev-parse", "HEAD"])
    })
    .unwrap();
    assert!(handle.trigger(Trigger::Webhook));
    let status_now = wait(&mut status, 2).await;
    let attempted = status_now.last_attempted.unwrap();
    assert_eq!(attempted.commit, Some(unsigned.to_string()));
    assert!(attempted.reason.unwrap().contains("is not signed"));

    let by_mallory = sign(&mallory, "signed by an unlisted key");
    assert!(handle.trigger(Trigger::Webhook));
    let status_now = wait(&mut status, 3).await;
    let attempted = status_now.last_attempted.clone().unwrap();
    assert_eq!(attempted.commit, Some(by_mallory.to_string()));
    let reason = attempted.reason.unwrap();
    assert!(reason.contains("is signed by key SHA256:") && reason.contains("does not list"), "{reason}");
    assert_eq!(head_of(&status_now), Some(signed.to_string().as_str()), "the signed commit keeps serving");
    assert_eq!(*applied.lock().unwrap(), [Some(signed.to_string())], "nothing unsigned was loaded");
    shutdown.cancel();
}

/// A quiet poll (nothing new) writes no state: the file is rewritten only when something a restart needs changed.
#[tokio::test]
async fn a_quiet_sync_does_not_rewrite_the_state_file() {
    let work = WorkRepo::new();
    publish(&work, b"model one", "");
    let running = start(work.url());
    running.until(|s| s.last_applied.is_some()).await;
    let file = running.data.path().join("state.json");
    let before = std::fs::read(&file).unwrap();
    let status = running.sync(Trigger::Admin).await;
    assert_eq!(status.syncs, 2);
    assert_eq!(std::fs::read(&file).unwrap(), before, "an unchanged sync wrote the state");
    let pushed = publish(&work, b"model two", "");
    running.sync(Trigger::Webhook).await;
    let text = String::from_utf8(std::fs::read(&file).unwrap()).unwrap();
    assert!(text.contains(&pushed.to_string()), "a new commit is written");
}
