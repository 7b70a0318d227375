//! How a `vane serve` process runs. Built from command-line flags (with `VANE_*` environment overrides) in
//! `main.rs`; what to serve comes from the model directory, not from here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::gitops::GitOpsConfig;
use crate::infer::ModelSettings;
use crate::stack::Limits;

/// Everything `gateway::start` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen for HTTP; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where to serve the V2 protocol over gRPC, if at all; port 0 picks a free one.
    pub grpc_listen: Option<SocketAddr>,
    /// The Triton-style model repository to serve.
    pub model_dir: PathBuf,
    /// The edge's bounds.
    pub limits: Limits,
    /// How each model version runs.
    pub models: ModelSettings,
    /// How long shutdown waits for in-flight requests and workers.
    pub shutdown_grace: Duration,
    /// How often to look for new, changed or removed versions in `model_dir`; `None` or zero: never.
    pub poll_interval: Option<Duration>,
    /// GitOps mode: serve what a Git repository's manifests say (then `model_dir` and `poll_interval` are unused).
    pub gitops: Option<GitOpsConfig>,
    /// Where drift alerts go (Alertmanager, webhooks).
    pub alerting: monitor::notify::NotifyConfig,
    /// The URL on-call staff reach this server at, for links in alerts [default: http://<listen>].
    pub external_url: Option<String>,
    /// Whether predictions are observed by the monitor (drift, quality, alerts).
    pub monitoring: bool,
    /// Whether the request series (counts, durations, queue and batch histograms) are recorded.
    pub request_metrics: bool,
    /// How often a monitoring window with new rows is evaluated.
    pub monitor_interval: Duration,
    /// OpenTelemetry traces of inference requests (off without an endpoint).
    pub tracing: crate::traces::TraceConfig,
    /// The admin calls' bearer token (`VANE_ADMIN_TOKEN`): repository load/unload, sync, rollback.
    pub admin_token: Option<crate::auth::Secret>,
    /// The feedback call's bearer token (`VANE_FEEDBACK_TOKEN`); the admin token is accepted there too.
    pub feedback_token: Option<crate::auth::Secret>,
    /// TLS on both listeners; `None`: plain TCP (TLS terminates in front of Vane).
    pub tls: Option<crate::tls::TlsConfig>,
    /// Other replicas' base URLs: a rollout they rolled back or aborted is rolled back here too.
    pub rollout_peers: Vec<String>,
    /// How often the peers are read.
    pub rollout_peer_interval: Duration,
}

/// Every 5 s: alerts hold for minutes and the dashboard refreshes every 10 s, and evaluating all features each
/// second was most of the monitor's cost under load.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(5);

/// The default listen address: loopback, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The default gRPC listen address: Triton's port after the HTTP one, loopback as well.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:8081";

/// The default shutdown grace: long enough for any in-flight inference here, short enough for Kubernetes' default
/// 30 s termination grace period.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The default model-directory poll: a new version is served within seconds of being copied in, for one directory
/// listing and a few `stat` calls per poll.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

// === impl ServeConfig ===

impl ServeConfig {
    /// A config with every default, serving `model_dir` on `listen`.
    pub fn new(listen: SocketAddr, model_dir: PathBuf) -> Self {
        Self {
            listen,
            grpc_listen: None,
            model_dir,
            limits: Limits::default(),
            models: ModelSettings::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            poll_interval: Some(DEFAULT_POLL_INTERVAL),
            gitops: None,
            alerting: monitor::notify::NotifyConfig::default(),
            external_url: None,
            monitoring: true,
            request_metrics: true,
            monitor_interval: DEFAULT_MONITOR_INTERVAL,
            tracing: crate::traces::TraceConfig {
                endpoint: None,
                sample_rate: crate::traces::DEFAULT_SAMPLE_RATE,
                queue_capacity: crate::traces::DEFAULT_QUEUE_CAPACITY,
            },
            admin_token: None,
            feedback_token: None,
            tls: None,
            rollout_peers: Vec::new(),
            rollout_peer_interval: Duration::from_secs(1),
        }
    }
}
