//! Watching a model directory: a new version folder is loaded and warmed, then swapped in; a removed one drains.
//!
//! A poll (not inotify): it works the same on every file system, including network mounts and container volumes,
//! and a copy in progress is harmless: a half-written file fails to load, the last good set keeps serving, and the
//! next poll tries again once the file has changed (its fingerprint is its size and modification time).

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
    // A state is tried once, until the directory changes again.
    let mut last_tried = Some(served);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
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
