//! Vane's gateway: the KServe V2 / Open Inference Protocol over ONNX Runtime.
//!
//! Data flow: hyper accepts a connection ([`server`]); each request passes the tower stack ([`stack`]: timeout,
//! load shed, global concurrency limit) into the router ([`routes`]), which reads the body under a size cap,
//! decodes JSON tensors, takes one lock-free load of the served model set ([`registry`]), checks the inputs
//! against the model's signature and queues the job to that model version's worker threads ([`infer`]). The
//! workers own the ONNX Runtime sessions; the answer comes back on a oneshot.
//!
//! Threads: tokio's workers run hyper and the routes and never run inference; each model version has its own named
//! OS threads (`infer-<model>-<version>-<n>`); loading models runs on tokio's blocking pool.

pub mod auth;
pub mod budget;
pub mod config;
pub mod demo;
pub mod errors;
pub mod gitops;
pub mod grpc;
pub mod infer;
pub mod metrics;
pub mod observe;
pub mod protocol;
pub mod registry;
pub mod repository;
pub mod rollout;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod serving;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod traces;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::ServeConfig;
use errors::{LoadError, RuntimeError};
use infer::{ModelLoader, WorkerGroup};
use registry::{ModelTable, Registry};
use repository::WatchStatus;
use routes::AppState;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// ONNX Runtime could not be loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The model directory could not be read.
    #[error(transparent)]
    ModelDir(#[from] reconciler::Error),
    /// A model could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The GitOps data dir cannot be used (missing and not creatable, or writable by others).
    #[error("{0}")]
    DataDir(String),
    /// The monitor's thread could not be started.
    #[error("cannot start the monitor thread: {0}")]
    Monitor(#[source] std::io::Error),
    /// The trace exporter could not be set up.
    #[error("cannot export traces: {0}")]
    Tracing(#[from] traces::TraceError),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A blocking start-up task panicked.
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running gateway: its address, its registry, and the handle to stop it.
pub struct Server {
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    grpc: Option<JoinHandle<()>>,
    registry: Arc<Registry>,
    loader: ModelLoader,
    /// Cancelled to begin shutdown (by a signal handler or [`Server::stop`]).
    shutdown: CancellationToken,
    /// Cancelled by the shutdown sequence once readiness is false: closes the listener.
    stop_accepting: CancellationToken,
    accepting: watch::Receiver<bool>,
    serving: JoinHandle<()>,
    /// The directory poller or the reconcile loop.
    background: Vec<JoinHandle<()>>,
    sync: watch::Receiver<WatchStatus>,
    controller: Option<reconciler::controller::ControllerHandle>,
    evaluations: watch::Receiver<u64>,
    scrapes: watch::Receiver<u64>,
    tls_reloads: Option<watch::Receiver<u64>>,
    grace: Duration,
    tracing: traces::Tracing,
    /// Weak: the server's stop waits for the models' workers, which the state's registry holds.
    state: std::sync::Weak<AppState>,
}

/// Loads ONNX Runtime and every model in `config.model_dir`, binds the listener and starts serving (and, with a
/// poll interval, watching the directory). Returns once the server is ready: every model is loaded and warmed, and
/// the socket accepts connections. In GitOps mode (`config.gitops`) it returns once the socket accepts connections;
/// the server turns ready when the first sync has applied a commit.
pub async fn start(config: ServeConfig) -> Result<Server, StartError> {
    tokio::task::spawn_blocking(runtime::environment).await??;
    let tracing = traces::Tracing::start(&config.tracing)?;
    let request_metrics = if config.request_metrics {
        metrics::request_series::RequestMetrics::default()
    } else {
        metrics::request_series::RequestMetrics::disabled()
    };
    let loader = ModelLoader::new(config.models, WorkerGroup::new()).with_metrics(request_metrics.clone());
    let registry = Arc::new(Registry::new());
    let shutdown = CancellationToken::new();
    // Model-directory mode loads before serving; GitOps mode serves at once (not ready) and its first sync loads.
    let desired = match &config.gitops {
        Some(_) => None,
        None => {
            let model_dir = config.model_dir.clone();
            let desired = tokio::task::spawn_blocking(move || reconciler::model_dir::scan(&model_dir)).await??;
            registry.apply(&loader, desired.clone()).await?;
            Some(desired)
        }
    };
    if let Some(gitops) = &config.gitops {
        let dir = gitops.controller.data_dir.clone();
        let memory = tokio::task::spawn_blocking(move || {
            reconciler::durable::ensure_private_dir(&dir)
                .map(|()| rollout::memory::Memory::open(dir.join("rollouts.json")))
        })
        .await
        .map_err(|e| StartError::DataDir(e.to_string()))?
        .map_err(StartError::DataDir)?;
        // Before the first sync: a rollout decided before a restart starts as decided.
        registry.set_rollout_memory(memory);
    }
    let (controller, controller_task) = match &config.gitops {
        Some(gitops) => {
            let (handle, task) = gitops::spawn(gitops, Arc::clone(&registry), loader.clone(), shutdown.child_token());
            (Some(handle), Some(task))
        }
        None => (None, None),
    };

    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let mut metrics = metrics::Metrics::new();
    request_metrics.register(metrics.registry_mut());
    tracing.register(metrics.registry_mut());
    metrics.registry_mut().register_collector(Box::new(rollout::metrics::RolloutCollector(Arc::clone(&registry))));
    if let Some(controller) = &controller {
        controller.metrics().register(metrics.registry_mut());
    }
    // The monitor's thread computes the statistics; each report updates the gauges there, off the request path.
    let monitor_metrics = metrics::monitor_series::MonitorMetrics::default();
    let recorder = monitor_metrics.clone();
    let (evaluations_tx, evaluations) = watch::channel(0u64);
    let monitor_config = monitor::live::MonitorConfig {
        notify: config.alerting.clone(),
        base_url: config.external_url.clone().unwrap_or_else(|| format!("http://{addr}")),
        evaluate_every: config.monitor_interval,
        ..monitor::live::MonitorConfig::default()
    };
    let monitor = monitor::live::Monitor::start(monitor_config, move |event| {
        match event {
            monitor::live::Event::Report(report) => recorder.record(report),
            monitor::live::Event::Retired { model, version } => recorder.retire(model, version),
            monitor::live::Event::Alerts(alerts) => recorder.record_alerts(alerts),
        }
        evaluations_tx.send_modify(|n| *n += 1);
    })
    .map_err(StartError::Monitor)?;
    monitor_metrics.register(metrics.registry_mut(), monitor.counters());
    metrics::monitor_series::MonitorMetrics::register_delivery(metrics.registry_mut(), monitor.notify_counters());
    let mut state = AppState::new(Arc::clone(&registry), &config.limits);
    state.metrics = Arc::new(metrics);
    state.request_metrics = request_metrics;
    state.tracing = tracing.clone();
    // Off: no prediction is observed (the thread still answers the API with empty reports).
    state.monitor = config.monitoring.then_some(monitor);
    state.monitor_metrics = monitor_metrics;
    state.controller = controller.clone();
    state.webhook_secret = config.gitops.as_ref().and_then(|g| g.webhook_secret.clone());
    // Calls with no token configured are taken only when no listener is reachable from other hosts.
    let loopback = config.listen.ip().is_loopback() && config.grpc_listen.is_none_or(|a| a.ip().is_loopback());
    state.tokens =
        auth::Tokens { admin: config.admin_token.clone(), feedback: config.feedback_token.clone(), loopback };
    if config.gitops.is_none() {
        state.model_dir = Some(repository::ModelDirControl { dir: config.model_dir.clone(), loader: loader.clone() });
    }
    let scrapes = state.scrapes.subscribe();
    let state = Arc::new(state);
    let service = stack::build(Arc::clone(&state), &config.limits);
    let stop_accepting = CancellationToken::new();
    let tls = match config.tls.clone() {
        None => None,
        Some(tls) => {
            let stop = shutdown.child_token();
            Some(tokio::task::spawn_blocking(move || tls::Tls::start(&tls, stop)).await??)
        }
    };
    let (grpc_addr, grpc) = match config.grpc_listen {
        None => (None, None),
        Some(listen) => {
            let listener = grpc::bind(listen).await.map_err(|source| StartError::Bind { addr: listen, source })?;
            let bound = listener.local_addr().map_err(|source| StartError::Bind { addr: listen, source })?;
            let task =
                grpc::serve(listener, Arc::clone(&state), stop_accepting.clone(), config.shutdown_grace, tls.clone());
            (Some(bound), Some(tokio::spawn(task)))
        }
    };
    let tls_reloads = tls.as_ref().map(tls::Tls::reloads);
    let (accepting_tx, accepting) = watch::channel(true);
    let serving = tokio::spawn(server::serve(
        listener,
        service,
        stop_accepting.clone(),
        accepting_tx,
        config.shutdown_grace,
        config.limits,
        tls,
    ));
    let (sync_tx, sync) = watch::channel(WatchStatus::default());
    let poller = desired.zip(config.poll_interval.filter(|i| !i.is_zero())).map(|(desired, interval)| {
        let watch = repository::poll_model_dir(
            config.model_dir.clone(),
            desired,
            interval,
            Arc::clone(&registry),
            loader.clone(),
            sync_tx,
            shutdown.child_token(),
        );
        tokio::spawn(watch)
    });
    let rollouts = tokio::spawn(rollout::driver::drive(
        Arc::clone(&registry),
        state.monitor.clone(),
        config.external_url.clone().unwrap_or_else(|| format!("http://{addr}")),
        shutdown.child_token(),
    ));
    let peers = tokio::spawn(rollout::peers::adopt_stops(
        Arc::clone(&registry),
        config.rollout_peers.clone(),
        config.rollout_peer_interval,
        shutdown.child_token(),
    ));
    let background = poller.into_iter().chain(controller_task).chain([rollouts, peers]).collect();
    let grpc_text = grpc_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(%addr, grpc = %grpc_text, models = ?registry.snapshot().names().collect::<Vec<_>>(), "vane is serving");
    Ok(Server {
        addr,
        grpc_addr,
        grpc,
        registry,
        loader,
        shutdown,
        stop_accepting,
        accepting,
        serving,
        background,
        sync,
        controller,
        evaluations,
        scrapes,
        tls_reloads,
        grace: config.shutdown_grace,
        tracing,
        state: Arc::downgrade(&state),
    })
}

// === impl Server ===

impl Server {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gRPC server's bound address, when it serves gRPC.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// What the router serves from: the model set, the monitor, the request series and the tracer this server
    /// runs with (for driving [`routes::route`] in-process, as the benches do); `None` once the server has stopped.
    /// Drop it before [`Server::stop`], which waits for the models' workers that it holds.
    pub fn state(&self) -> Option<Arc<AppState>> {
        self.state.upgrade()
    }

    /// The served model set.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The loader, to apply a new desired state with [`Registry::apply`].
    pub fn loader(&self) -> &ModelLoader {
        &self.loader
    }

    /// What the model-directory poller has done.
    pub fn sync_status(&self) -> watch::Receiver<WatchStatus> {
        self.sync.clone()
    }

    /// Counts the monitor's events so far (reports, alert changes, retired versions), and each new one (a test
    /// waits on it instead of polling).
    pub fn monitor_evaluations(&self) -> watch::Receiver<u64> {
        self.evaluations.clone()
    }

    /// Counts the `/metrics` answers so far, and each new one (a test waits for a scraper's next visit).
    pub fn metrics_scrapes(&self) -> watch::Receiver<u64> {
        self.scrapes.clone()
    }

    /// Counts the TLS certificate reloads, and each new one (a test waits for a rotation instead of polling), when
    /// serving TLS.
    pub fn tls_reloads(&self) -> Option<watch::Receiver<u64>> {
        self.tls_reloads.clone()
    }

    /// The reconcile loop's handle, in GitOps mode.
    pub fn controller(&self) -> Option<&reconciler::controller::ControllerHandle> {
        self.controller.as_ref()
    }

    /// True while the listener accepts connections; false once shutdown has closed it.
    pub fn accepting(&self) -> watch::Receiver<bool> {
        self.accepting.clone()
    }

    /// A token that starts shutdown when cancelled (e.g. from a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until shutdown is requested, then drains in order: readiness goes false, the listener closes, open
    /// requests finish within the grace period, the poller stops, the models are dropped and their worker threads
    /// are waited for. Returns whether every worker thread exited within the grace period.
    pub async fn run_until_stopped(self) -> bool {
        let Self { registry, loader, shutdown, stop_accepting, serving, grpc, background, grace, tracing, .. } = self;
        shutdown.cancelled().await;
        registry.set_not_ready();
        stop_accepting.cancel();
        if let Err(error) = serving.await {
            tracing::error!(%error, "the accept loop failed");
        }
        if let Some(Err(error)) = match grpc {
            Some(task) => Some(task.await),
            None => None,
        } {
            tracing::error!(%error, "the gRPC server failed");
        }
        for task in background {
            // A sync may be inside a Git operation or a load; it gets the grace period, then is stopped.
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("the reconciler was still busy when the grace period ended; stopping it");
                abort.abort();
            }
        }
        registry.swap(ModelTable::default());
        registry.set_not_ready();
        drop(registry);
        let workers = loader.workers().clone();
        drop(loader);
        let joined = tokio::task::spawn_blocking(move || workers.wait(grace)).await.unwrap_or(false);
        if joined {
            tracing::info!("all inference workers stopped");
        } else {
            tracing::warn!("some inference workers were still busy when the grace period ended");
        }
        // The last requests' spans go out before the process ends (blocks up to a few seconds: off the runtime).
        if tracing.enabled() {
            let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        }
        joined
    }

    /// Requests shutdown and waits for it to finish; returns whether every worker thread exited.
    pub async fn stop(self) -> bool {
        self.shutdown.cancel();
        self.run_until_stopped().await
    }
}
