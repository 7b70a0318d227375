//! GitOps mode: the reconciler's loop drives the registry, and the admin API reaches the loop.

use std::sync::Arc;

use reconciler::controller::{self, ControllerConfig, ControllerHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::infer::ModelLoader;
use crate::registry::Registry;

/// How `vane serve --repo` runs.
#[derive(Debug, Clone)]
pub struct GitOpsConfig {
    /// The loop's settings.
    pub controller: ControllerConfig,
    /// The shared secret push webhooks are signed with; `None` disables the webhook.
    pub webhook_secret: Option<crate::auth::Secret>,
}

/// Starts the reconcile loop. Its `apply` is [`Registry::apply`]: load, check, warm, swap, or refuse whole.
pub fn spawn(
    config: &GitOpsConfig,
    registry: Arc<Registry>,
    loader: ModelLoader,
    shutdown: CancellationToken,
) -> (ControllerHandle, JoinHandle<()>) {
    let (handle, inputs) = controller::channels(&config.controller);
    let apply = move |desired| {
        let (registry, loader) = (Arc::clone(&registry), loader.clone());
        async move { registry.apply(&loader, desired).await.map(|_| ()).map_err(|e| e.to_string()) }
    };
    let task = tokio::spawn(controller::run(config.controller.clone(), inputs, apply, shutdown));
    (handle, task)
}
