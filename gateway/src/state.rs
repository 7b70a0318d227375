//! What the request path shares: the served model set, the bounds, the monitor and the series. Below both edges
//! (REST and gRPC build on it), above the parts it holds.

use std::sync::Arc;
use std::time::Duration;

use crate::budget::MemoryBudget;
use crate::metrics::request_series::RequestMetrics;
use crate::registry::Registry;
use crate::repository::ModelDirControl;
use crate::stack::Limits;

/// What the routes share.
pub struct AppState {
    /// The served model set.
    pub registry: Arc<Registry>,
    /// Request bodies above this size get 413.
    pub max_body_bytes: usize,
    /// The server's request timeout, the latest deadline a request can have.
    pub request_timeout: Duration,
    /// The reconcile loop, in GitOps mode.
    pub controller: Option<reconciler::controller::ControllerHandle>,
    /// The push webhook's shared secret.
    pub webhook_secret: Option<crate::auth::Secret>,
    /// Who may change state (admin calls, feedback).
    pub tokens: crate::auth::Tokens,
    /// The in-flight memory budget every request's body and tensors are charged to.
    pub budget: MemoryBudget,
    /// The longest a request body may take to arrive.
    pub body_timeout: Duration,
    /// The edge's bounds, as configured.
    pub limits: Limits,
    /// What `GET /metrics` renders.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The live monitor, fed with sampled predictions.
    pub monitor: Option<monitor::live::Monitor>,
    /// The monitor's gauges (quality is set when labels arrive).
    pub monitor_metrics: crate::metrics::monitor_series::MonitorMetrics,
    /// Requests in flight across REST and gRPC; beyond its permits, 503 (UNAVAILABLE) at once.
    pub concurrency: Arc<tokio::sync::Semaphore>,
    /// Model-directory mode: what loading and unloading by hand need.
    pub model_dir: Option<ModelDirControl>,
    /// The request path's series (requests, durations, queues); the loader gives each version its handles.
    pub request_metrics: RequestMetrics,
    /// Counts `GET /metrics` answers, so a caller can wait for the next scrape instead of polling.
    pub scrapes: tokio::sync::watch::Sender<u64>,
    /// Traces of inference requests (off without an OTLP endpoint).
    pub tracing: crate::traces::Tracing,
    /// Rollouts' mirrored runs (shadow, comparison) in flight, across every rollout.
    pub mirrors: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The state for `registry` under `limits`.
    pub fn new(registry: Arc<Registry>, limits: &Limits) -> Self {
        Self {
            registry,
            max_body_bytes: limits.max_body_bytes,
            request_timeout: limits.request_timeout,
            controller: None,
            webhook_secret: None,
            // No token and not known to be loopback-only: state-changing calls are refused until the caller says.
            tokens: crate::auth::Tokens::default(),
            budget: MemoryBudget::new(limits.max_inflight_bytes),
            body_timeout: limits.body_timeout,
            limits: *limits,
            metrics: Arc::default(),
            monitor: None,
            monitor_metrics: crate::metrics::monitor_series::MonitorMetrics::default(),
            concurrency: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests.get())),
            model_dir: None,
            request_metrics: RequestMetrics::default(),
            scrapes: tokio::sync::watch::Sender::new(0),
            tracing: crate::traces::Tracing::disabled(),
            mirrors: Arc::new(tokio::sync::Semaphore::new(crate::serving::MAX_MIRRORS_IN_FLIGHT)),
        }
    }
}
