//! Watching a model directory: a new version folder is loaded and warmed, then swapped in; a removed one drains.
//!
//! The operating system's file notifications (inotify, through `notify`) wake the watcher at once: a version folder
//! moved into place is scanned within 50 ms of the last event of its burst. Polling stays as the fallback, for file
//! systems that send no notifications (network mounts, some container volumes) and for a watch that could not be set
//! up. A copy in progress is harmless either way: a half-written file fails to load, the last good set keeps
//! serving, and the next scan tries again once the file has changed (its fingerprint is its size and modification
//! time).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reconciler::DesiredState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::infer::ModelLoader;
use crate::registry::Registry;

/// What model-directory mode needs to load by hand.
#[derive(Clone)]
pub struct ModelDirControl {
    /// The model directory.
    pub dir: std::path::PathBuf,
    /// The loader the poller uses.
    pub loader: crate::infer::ModelLoader,
}

/// What the poller has done, for readiness checks, tests and (later) metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    /// Polls that found a desired state different from the last one tried.
    pub attempts: u64,
    /// Of those, the ones whose set is now served.
    pub applied: u64,
    /// Why the last attempt failed, if it did; cleared by the next success.
    pub last_error: Option<String>,
}

/// How long the directory must be quiet after a notification before it is scanned (a rename or a copy comes as a
/// burst of events), and the longest a burst may delay the scan.
const SETTLE: Duration = Duration::from_millis(50);
const SETTLE_AT_MOST: Duration = Duration::from_secs(1);

/// A watch on `dir` and everything under it, whose events wake the receiver (one pending wake-up at most: the
/// channel holds one, and a full channel means a scan is already due). `None`, logged, when the watch cannot be set
/// up; polling then carries on alone.
fn notifications(dir: &std::path::Path) -> Option<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
    use notify::Watcher;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    };
    let watched = notify::recommended_watcher(handler)
        .and_then(|mut watcher| watcher.watch(dir, notify::RecursiveMode::Recursive).map(|()| watcher));
    match watched {
        Ok(watcher) => Some((watcher, rx)),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "no file notifications for the model directory; polling only");
            None
        }
    }
}

async fn next_event(events: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> Option<()> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits until the burst of events is over: [`SETTLE`] without one, and at most [`SETTLE_AT_MOST`].
async fn settle(events: &mut Option<tokio::sync::mpsc::Receiver<()>>) {
    let Some(rx) = events else { return };
    let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(SETTLE, rx.recv()).await {
            Ok(Some(())) => continue,
            _ => break,
        }
    }
}

/// Polls `dir` every `interval` until `shutdown`, applying each new desired state to `registry`. `served` is the
/// state loaded at start-up.
pub async fn poll_model_dir(
    dir: PathBuf,
    served: DesiredState,
    interval: Duration,
    registry: Arc<Registry>,
    loader: ModelLoader,
    status: watch::Sender<WatchStatus>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Kept alive for as long as the loop runs: dropping the watcher ends its notifications.
    let (_watcher, mut events) = match notifications(&dir) {
        Some((watcher, events)) => (Some(watcher), Some(events)),
        None => (None, None),
    };
    // A state is tried once, until the directory changes again.
    let mut last_tried = Some(served);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
            Some(()) = next_event(&mut events) => settle(&mut events).await,
        }
        let scanned = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || reconciler::model_dir::scan(&dir)).await
        };
        let desired = match scanned {
            Ok(Ok(desired)) => registry.without_unloaded(desired),
            Ok(Err(error)) => {
                record_failure(&status, &mut last_tried, None, error.to_string());
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "model directory scan task failed");
                continue;
            }
        };
        if last_tried.as_ref() == Some(&desired) {
            continue;
        }
        match registry.apply(&loader, desired.clone()).await {
            Ok(changed) => {
                if changed {
                    tracing::info!(dir = %dir.display(), "model directory changed; new model set is serving");
                }
                last_tried = Some(desired);
                status.send_modify(|s| {
                    s.attempts += 1;
                    s.applied += 1;
                    s.last_error = None;
                });
            }
            Err(error) => record_failure(&status, &mut last_tried, Some(desired), error.to_string()),
        }
    }
}

fn record_failure(
    status: &watch::Sender<WatchStatus>,
    last_tried: &mut Option<DesiredState>,
    desired: Option<DesiredState>,
    message: String,
) {
    // Logged once per distinct failure: a broken file is not re-reported every poll.
    if status.borrow().last_error.as_deref() != Some(message.as_str()) {
        tracing::error!(error = %message, "model directory change not applied; still serving the last good set");
    }
    if desired.is_some() {
        *last_tried = desired;
    }
    status.send_modify(|s| {
        s.attempts += 1;
        s.last_error = Some(message);
    });
}
