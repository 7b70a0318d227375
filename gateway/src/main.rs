//! The `vane` binary: the composition root. Parses flags, sets up logging and signals, and starts the gateway.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gateway::auth::Secret;
use gateway::gitops::GitOpsConfig;
use gateway::infer::ModelSettings;
use gateway::stack::Limits;
use gateway::telemetry::{init_logging, LogFormat};
use gateway::{config, demo, ServeConfig};
use reconciler::artifacts::DvcConfig;
use reconciler::controller::ControllerConfig;
use reconciler::source::{GitAuth, GitSpec, GlobalOptions};
use tokio_util::sync::CancellationToken;

/// mimalloc: glibc's allocator cost a fifth of the CPU under load, as buffers cross between tokio and worker threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Vane: serve ONNX models over the KServe V2 / Open Inference Protocol.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "VANE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a Triton-style model repository: DIR/<model>/<version>/model.onnx.
    Serve(Box<ServeArgs>),
    /// Serve the built-in example models and print curl commands to try them.
    Demo(Box<DemoArgs>),
    /// Compare a current CSV with a reference CSV: drift per column, dataset drift, and optional quality.
    Drift(Box<DriftArgs>),
    /// Watch or steer a rollout on a running server: status, promote, abort, pause, resume.
    Rollout(Box<RolloutArgs>),
}

/// `vane rollout`: the admin API's rollout calls. The admin token is read from VANE_ADMIN_TOKEN.
#[derive(Args)]
struct RolloutArgs {
    /// What to do.
    #[arg(value_enum)]
    action: RolloutAction,
    /// The model (needed by every action but status).
    model: Option<String>,
    /// The server's base URL.
    #[arg(long, env = "VANE_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Why, for the decision log (promote, abort, pause, resume).
    #[arg(long)]
    reason: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RolloutAction {
    Status,
    Promote,
    Abort,
    Pause,
    Resume,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model_dir", "repo"])))]
struct ServeArgs {
    /// A Triton-style model repository to serve and watch: DIR/<model>/<version>/model.onnx.
    #[arg(long, env = "VANE_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    #[command(flatten)]
    git: GitArgs,
    #[command(flatten)]
    run: RunArgs,
}

/// GitOps mode. The webhook secret and the https token come from VANE_WEBHOOK_SECRET and VANE_GIT_TOKEN (never
/// from the command line, where `ps` would show them); an unset secret disables the webhook.
#[derive(Args)]
struct GitArgs {
    /// A Git repository of deployment manifests to serve: a path, or a file://, git://, https:// or ssh:// URL
    /// (or scp-like user@host:path).
    #[arg(long, env = "VANE_REPO")]
    repo: Option<String>,
    /// The branch to follow.
    #[arg(long, env = "VANE_BRANCH", default_value = "main")]
    branch: String,
    /// The folder of manifests in the repository.
    #[arg(long = "path", env = "VANE_DEPLOY_PATH", default_value = "deploy")]
    deploy_path: String,
    /// Where the bare clone, the artifact cache and the reconciler's state live; created 0700, and refused if other
    /// users can write to it [default: $STATE_DIRECTORY/vane, else $XDG_STATE_HOME/vane, else ~/.local/state/vane].
    #[arg(long, env = "VANE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directories laid out as a DVC cache or local DVC remote, where .dvc pointers are resolved (repeatable).
    #[arg(long = "dvc-store", env = "VANE_DVC_STORES", value_delimiter = ',')]
    dvc_stores: Vec<PathBuf>,
    /// The longest a Git read from the remote may stall before the operation fails (and is retried with backoff).
    #[arg(long, env = "VANE_GIT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    git_timeout: Duration,
    /// The one deadline of a whole sync: ls-remote, fetch, validation and every artifact download; past it the sync
    /// is cancelled and retried with backoff (a slow download is not a bad commit).
    #[arg(long, env = "VANE_SYNC_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10m")]
    sync_timeout: Duration,
    /// A folder `file://` artifacts may be read from (repeatable); with none, manifests naming file:// are refused.
    /// Symlinks are resolved before the check; only regular files are read.
    #[arg(long = "artifact-root", env = "VANE_ARTIFACT_ROOTS", value_delimiter = ',')]
    artifact_roots: Vec<PathBuf>,
    /// Allow https artifact hosts that resolve to loopback, private or link-local addresses (an object store on
    /// the cluster network). Off: such hosts are refused, so a manifest cannot reach cloud metadata or internal
    /// services.
    #[arg(long, env = "VANE_ALLOW_PRIVATE_ARTIFACT_HOSTS")]
    allow_private_artifact_hosts: bool,
    /// The largest artifact (download, file or DVC object) streamed into the cache; larger ones are refused as
    /// they arrive. Artifacts kept in Git itself are capped at 256 MiB (libgit2 inflates them whole in memory).
    #[arg(long, env = "VANE_MAX_ARTIFACT_BYTES", default_value_t = reconciler::artifacts::MAX_ARTIFACT_BYTES)]
    max_artifact_bytes: u64,
    /// The most one fetch of the deploy repository may download (and write to the data dir); past it the fetch is
    /// stopped and retried with backoff.
    #[arg(long, env = "VANE_MAX_FETCH_BYTES", default_value_t = reconciler::source::MAX_FETCH_BYTES)]
    max_fetch_bytes: u64,
    /// Deploy only signed commits: an SSH allowed_signers file (the format of git's gpg.ssh.allowedSignersFile).
    /// The branch head must be signed (git -c gpg.format=ssh commit -S) by a key it lists, or it is refused with
    /// the signer's fingerprint in the reason.
    #[arg(long, env = "VANE_ALLOWED_SIGNERS", value_parser = parse_allowed_signers)]
    allowed_signers: Option<reconciler::signers::AllowedSigners>,
    /// Who may change a path: PATH=PRINCIPAL[,PRINCIPAL...] (a file, or a folder ending in /; repeatable). A head
    /// that changes a matching file must be signed by a key whose allowed_signers principals include one of them.
    /// Needs --allowed-signers.
    #[arg(long = "path-signers", value_parser = reconciler::signers::PathRule::parse, requires = "allowed_signers")]
    path_signers: Vec<reconciler::signers::PathRule>,
    /// The longest a TCP connect to the remote may take (libgit2's own timeout).
    #[arg(long, env = "VANE_GIT_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    git_connect_timeout: Duration,
    /// https: the user name sent with VANE_GIT_TOKEN [default: the URL's, else `git`; GitLab OAuth: oauth2].
    #[arg(long, env = "VANE_GIT_USERNAME")]
    git_username: Option<String>,
    /// https: a PEM bundle of CA certificates to trust besides the public ones, for the Git remote and for https
    /// artifacts (a private Git server's or object store's CA).
    #[arg(long, env = "VANE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// ssh: the private key file [default: ask the ssh agent]. A passphrase comes from VANE_SSH_PASSPHRASE.
    #[arg(long, env = "VANE_SSH_KEY")]
    ssh_key: Option<PathBuf>,
    /// ssh: the known_hosts file the server's host key must be in; unknown or changed keys are refused.
    #[arg(long, env = "VANE_SSH_KNOWN_HOSTS", default_value = "~/.ssh/known_hosts")]
    ssh_known_hosts: String,
}

impl GitArgs {
    fn auth(&self) -> GitAuth {
        let secret = |name: &str| std::env::var(name).ok().filter(|s| !s.is_empty());
        let known_hosts = match self.ssh_known_hosts.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(rest)),
            None => Some(PathBuf::from(&self.ssh_known_hosts)),
        };
        GitAuth {
            token: secret("VANE_GIT_TOKEN"),
            username: self.git_username.clone(),
            ssh_key: self.ssh_key.clone(),
            ssh_passphrase: secret("VANE_SSH_PASSPHRASE"),
            known_hosts,
        }
    }

    /// libgit2's process-wide settings; applied before any thread starts.
    fn global_options(&self) -> GlobalOptions {
        GlobalOptions {
            connect_timeout: Some(self.git_connect_timeout),
            // A read that blocks this long is a dead peer; the whole operation is bounded by --git-timeout.
            io_timeout: Some(self.git_timeout),
            ca_file: self.ca_file.clone(),
        }
    }
}

/// `vane drift`: the offline report (the same statistics as the live monitor).
#[derive(Args)]
struct DriftArgs {
    /// The baseline: training or validation data (CSV with a header; an empty cell is missing).
    #[arg(long)]
    reference: PathBuf,
    /// The data to check against it, with the same columns.
    #[arg(long)]
    current: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: DriftFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Set a column's kind, NAME=numeric|categorical|binary (repeatable); others are inferred: text is categorical,
    /// numbers that are only 0 and 1 binary, other numbers numeric.
    #[arg(long = "column", value_parser = monitor::offline::parse_column)]
    columns: Vec<(String, monitor::drift::ColumnKind)>,
    /// Binary classification quality: label=COL,score=COL[,prediction=COL][,positive=V][,threshold=T]. Without
    /// prediction, a row is predicted positive when its score is at least the threshold (0.5).
    #[arg(long, value_parser = monitor::offline::parse_classification)]
    classification: Option<monitor::drift::ClassificationSpec>,
    /// Regression quality: target=COL,prediction=COL.
    #[arg(long, value_parser = monitor::offline::parse_regression)]
    regression: Option<monitor::drift::RegressionSpec>,
    /// Estimate the current file's classification quality from its scores and predictions alone (CBPE; its labels
    /// are not read), with the reference's scores calibrated by isotonic regression, not at all (none), or by
    /// whichever calibrates held-out reference rows better (auto). Needs --classification.
    #[arg(long, value_name = "CALIBRATION", requires = "classification")]
    estimated_quality: Option<monitor::stats::cbpe::Calibration>,
    /// Add multivariate drift: the PCA reconstruction error of the current file against the reference, over every
    /// column but the --classification and --regression ones.
    #[arg(long)]
    multivariate: bool,
    /// Read both CSV files once, row by row, into a bounded summary per column (about 2.6 MiB per column and file,
    /// whatever the length): for files too large to hold. A side's numeric statistics are exact up to 65,536
    /// values and otherwise estimated from a KLL quantile sketch (rank error about 0.07%; the report's `streamed`
    /// block lists the estimated columns); counts, means, categories and missing cells stay exact. Not with
    /// --classification, --regression, --estimated-quality or --multivariate.
    #[arg(long, conflicts_with_all = ["classification", "regression", "estimated_quality", "multivariate"])]
    stream: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DriftFormat {
    Json,
    Html,
}

fn run_drift(args: &DriftArgs) -> Result<(), String> {
    let options = monitor::drift::Options {
        kinds: args.columns.iter().cloned().collect(),
        classification: args.classification.clone(),
        regression: args.regression.clone(),
        estimated_quality: args.estimated_quality,
        multivariate: args.multivariate,
    };
    let report = if args.stream {
        monitor::stream::run(&args.reference, &args.current, &options).map_err(|e| e.to_string())?
    } else {
        monitor::offline::run(&args.reference, &args.current, &options)?
    };
    let format = match args.format {
        DriftFormat::Json => monitor::offline::Format::Json,
        DriftFormat::Html => monitor::offline::Format::Html,
    };
    let title = format!("Drift: {} vs {}", args.current.display(), args.reference.display());
    if let Some(text) = monitor::offline::write(monitor::offline::render(&report, format, &title), args.out.as_ref())? {
        use std::io::Write;
        std::io::stdout().write_all(text.as_bytes()).map_err(|e| format!("cannot write the report: {e}"))?;
    }
    Ok(())
}

#[derive(Args)]
struct DemoArgs {
    /// Do not send the example traffic that drifts after a while.
    #[arg(long)]
    no_traffic: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Address to listen on for HTTP.
    #[arg(long, env = "VANE_LISTEN", default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Address to serve the V2 protocol over gRPC on (`off`: no gRPC).
    #[arg(long, env = "VANE_GRPC_LISTEN", default_value = config::DEFAULT_GRPC_LISTEN, value_parser = parse_grpc_listen)]
    grpc_listen: GrpcListen,
    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, env = "VANE_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Longest a request may take before it gets 504 (e.g. 30s, 500ms).
    #[arg(long, env = "VANE_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    request_timeout: Duration,
    /// Requests handled at once across all connections; more get 503 at once.
    #[arg(long, env = "VANE_MAX_CONCURRENT_REQUESTS", default_value_t = Limits::default().max_concurrent_requests)]
    max_concurrent_requests: NonZeroUsize,
    /// Bytes that requests in progress may hold at once, REST and gRPC together: bodies as they arrive and their
    /// decoded tensors (up to 8x a body). A request that does not fit gets 503 with Retry-After before more of its
    /// body is kept. The default is half the 2 GiB memory limit of the shipped Kubernetes manifests.
    #[arg(long, env = "VANE_MAX_INFLIGHT_BYTES", default_value_t = Limits::default().max_inflight_bytes)]
    max_inflight_bytes: usize,
    /// Longest a request body may take to arrive (408 after), e.g. 10s.
    #[arg(long, env = "VANE_BODY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    body_timeout: Duration,
    /// Longest a client may take to send its request headers, and the longest an HTTP/1 connection may sit idle
    /// between requests, before the connection is closed; also the HTTP/2 keep-alive ping interval and timeout.
    #[arg(long, env = "VANE_HEADER_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    header_timeout: Duration,
    /// Connections open at once, per listener (REST, gRPC); past it, new ones wait in the kernel's backlog.
    #[arg(long, env = "VANE_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: NonZeroUsize,
    /// Serve TLS on both listeners with this PEM certificate chain (leaf first); reloaded when the file changes.
    #[arg(long, env = "VANE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key; reloaded with it.
    #[arg(long, env = "VANE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate signed by a CA in this PEM file.
    #[arg(long, env = "VANE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// How often the certificate and key files are checked for a change (e.g. 10s).
    #[arg(long, env = "VANE_TLS_RELOAD_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    tls_reload_interval: Duration,
    /// HTTP/2 streams (gRPC calls) one connection may have open at once.
    #[arg(long, env = "VANE_MAX_CONCURRENT_STREAMS", default_value_t = Limits::default().max_concurrent_streams)]
    max_concurrent_streams: u32,
    /// Worker threads (each with its own ONNX Runtime session) per model version [default: half the cores, 1 to 4].
    #[arg(long, env = "VANE_WORKERS_PER_MODEL")]
    workers_per_model: Option<NonZeroUsize>,
    /// Requests that may wait per model version before new ones get 503.
    #[arg(long, env = "VANE_QUEUE_CAPACITY", default_value_t = ModelSettings::default().queue_capacity)]
    queue_capacity: NonZeroUsize,
    /// Most rows the dynamic batcher puts in one batch (and accepts in one request); 0 turns batching off.
    #[arg(long, env = "VANE_MAX_BATCH_SIZE", default_value_t = ModelSettings::default().max_batch_size)]
    max_batch_size: usize,
    /// Longest the batcher waits for more rows, from the oldest queued request (e.g. 300us); 0 never waits.
    #[arg(long, env = "VANE_MAX_QUEUE_DELAY", value_parser = humantime::parse_duration, default_value = "300us")]
    max_queue_delay: Duration,
    /// ONNX Runtime intra-op threads per session (1 is fastest on small machines).
    #[arg(long, env = "VANE_INTRA_THREADS", default_value_t = ModelSettings::default().intra_threads)]
    intra_threads: NonZeroUsize,
    /// A model version whose single-request runs take at most this long (timed at load, then a running estimate)
    /// runs requests on the thread that decoded them when a session is free and its queue is empty: the hop to a
    /// worker thread costs more than such a run. 0 keeps every run on the worker threads.
    #[arg(long, env = "VANE_INLINE_MAX_RUN", value_parser = humantime::parse_duration, default_value = "20us")]
    inline_max_run: Duration,
    /// How often to look for changes: new or removed version folders with --model-dir [default: 5s; file
    /// notifications wake it sooner], new commits with --repo [default: 15s]. 0 turns polling off (webhooks still
    /// trigger syncs; a model directory is then not watched at all).
    #[arg(long, env = "VANE_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    poll_interval: Option<Duration>,
    /// How long shutdown waits for in-flight requests (e.g. 10s).
    #[arg(long, env = "VANE_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
    /// Alertmanager to send drift alerts to, e.g. http://alertmanager:9093 (repeatable).
    #[arg(long = "alertmanager-url", env = "VANE_ALERTMANAGER_URLS", value_delimiter = ',')]
    alertmanagers: Vec<String>,
    /// A webhook that gets drift alerts as JSON with a Slack-style "text" field (repeatable).
    #[arg(long = "alert-webhook-url", env = "VANE_ALERT_WEBHOOK_URLS", value_delimiter = ',')]
    alert_webhooks: Vec<String>,
    /// Another replica's base URL, e.g. http://vane-1:8080 (repeatable): a rollout it rolled back or aborted is
    /// rolled back here too, within one --rollout-peer-interval.
    #[arg(long = "rollout-peer", env = "VANE_ROLLOUT_PEERS", value_delimiter = ',')]
    rollout_peers: Vec<String>,
    /// How often the rollout peers are read.
    #[arg(long, env = "VANE_ROLLOUT_PEER_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    rollout_peer_interval: Duration,
    /// The URL on-call staff reach this server at, for the links in alerts [default: http://<listen>].
    #[arg(long, env = "VANE_EXTERNAL_URL")]
    external_url: Option<String>,
    /// Observe no predictions: no drift, quality or alerts (for measuring the monitor's cost).
    #[arg(long, env = "VANE_NO_MONITORING")]
    no_monitoring: bool,
    /// Record no request series (counts, durations, queue and batch histograms; for measuring their cost).
    #[arg(long, env = "VANE_NO_REQUEST_METRICS")]
    no_request_metrics: bool,
    /// How often a monitoring window with new predictions is evaluated.
    #[arg(long, env = "VANE_MONITOR_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    monitor_interval: Duration,
    /// Export traces of inference requests over OTLP/gRPC to this collector, e.g. http://otel-collector:4317
    /// [default: off]. The standard OpenTelemetry variable, so a platform's injected setting just works.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Share of requests traced (0 to 1) when the caller sent no traceparent; a caller's traceparent decides for its
    /// own requests.
    #[arg(long, env = "VANE_TRACE_SAMPLE_RATE", default_value_t = gateway::traces::DEFAULT_SAMPLE_RATE)]
    trace_sample_rate: f64,
    /// Finished spans that may wait for export; more are dropped and counted (vane_trace_spans_dropped_total).
    #[arg(long, env = "VANE_TRACE_QUEUE_CAPACITY", default_value_t = gateway::traces::DEFAULT_QUEUE_CAPACITY)]
    trace_queue_capacity: usize,
}

impl ServeArgs {
    fn config(&self) -> ServeConfig {
        let Some(repo) = &self.git.repo else {
            return self.run.config(self.model_dir.clone().unwrap_or_default());
        };
        let mut config = self.run.config(PathBuf::new());
        let git = &self.git;
        let poll_interval = self.run.poll_interval.unwrap_or(reconciler::controller::DEFAULT_POLL_INTERVAL);
        config.poll_interval = None;
        let spec = GitSpec {
            auth: git.auth(),
            max_fetch_bytes: git.max_fetch_bytes,
            ..GitSpec::new(repo.clone(), git.branch.clone(), git.deploy_path.clone())
        };
        // No default in the shared temp dir: another local user could plant a model there.
        let data_dir = git.data_dir.clone().or_else(reconciler::durable::default_data_dir).unwrap_or_default();
        config.gitops = Some(GitOpsConfig {
            controller: ControllerConfig {
                // Zero means webhooks only: a poll interval far longer than any process lives.
                poll_interval: if poll_interval.is_zero() {
                    Duration::from_secs(u64::from(u32::MAX))
                } else {
                    poll_interval
                },
                dvc: DvcConfig { stores: git.dvc_stores.clone() },
                git_timeout: git.git_timeout,
                sync_timeout: git.sync_timeout,
                artifacts: reconciler::artifacts::ArtifactPolicy {
                    roots: git.artifact_roots.clone(),
                    allow_private_hosts: git.allow_private_artifact_hosts,
                    max_bytes: git.max_artifact_bytes,
                },
                signers: reconciler::signers::SignerPolicy {
                    allowed: git.allowed_signers.clone(),
                    paths: git.path_signers.clone(),
                },
                ca_file: git.ca_file.clone(),
                // Retries of an unreachable remote back off to at most DEFAULT_MAX_BACKOFF.
                ..ControllerConfig::new(spec, data_dir)
            },
            webhook_secret: Secret::from_env("VANE_WEBHOOK_SECRET"),
        });
        config
    }
}

/// `--allowed-signers`: the file is read and checked when the flags are parsed, so a bad one stops the start.
fn parse_allowed_signers(path: &str) -> Result<reconciler::signers::AllowedSigners, String> {
    reconciler::signers::AllowedSigners::load(std::path::Path::new(path))
}

/// `--grpc-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
struct GrpcListen(Option<SocketAddr>);

fn parse_grpc_listen(text: &str) -> Result<GrpcListen, String> {
    if text == "off" {
        return Ok(GrpcListen(None));
    }
    text.parse().map(|a| GrpcListen(Some(a))).map_err(|e| format!("{e} (an address like 127.0.0.1:8081, or off)"))
}

impl RunArgs {
    fn config(&self, model_dir: PathBuf) -> ServeConfig {
        let mut config = ServeConfig::new(self.listen, model_dir);
        config.grpc_listen = self.grpc_listen.0;
        config.limits = Limits {
            max_body_bytes: self.max_body_bytes,
            request_timeout: self.request_timeout,
            max_concurrent_requests: self.max_concurrent_requests,
            max_inflight_bytes: self.max_inflight_bytes,
            body_timeout: self.body_timeout,
            header_read_timeout: self.header_timeout,
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
        };
        config.tls = self.tls_cert.clone().zip(self.tls_key.clone()).map(|(cert, key)| gateway::tls::TlsConfig {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
            reload_every: self.tls_reload_interval,
        });
        // Credentials only from the environment: a command line is visible to every local user in `ps`.
        config.admin_token = Secret::from_env("VANE_ADMIN_TOKEN");
        config.feedback_token = Secret::from_env("VANE_FEEDBACK_TOKEN");
        config.models = ModelSettings {
            workers: self.workers_per_model.unwrap_or(ModelSettings::default().workers),
            queue_capacity: self.queue_capacity,
            intra_threads: self.intra_threads,
            max_batch_size: self.max_batch_size,
            max_queue_delay: self.max_queue_delay,
            inline_max_run: self.inline_max_run,
        };
        config.shutdown_grace = self.shutdown_grace;
        config.alerting = monitor::notify::NotifyConfig {
            alertmanagers: self.alertmanagers.clone(),
            webhooks: self.alert_webhooks.clone(),
            resend_every: Duration::from_secs(60),
        };
        config.external_url = self.external_url.clone();
        config.rollout_peers = self.rollout_peers.clone();
        config.rollout_peer_interval = self.rollout_peer_interval;
        config.monitoring = !self.no_monitoring;
        config.request_metrics = !self.no_request_metrics;
        config.monitor_interval = self.monitor_interval;
        config.tracing = gateway::traces::TraceConfig {
            endpoint: self.otlp_endpoint.clone().filter(|e| !e.is_empty()),
            sample_rate: self.trace_sample_rate,
            queue_capacity: self.trace_queue_capacity,
        };
        config.poll_interval = Some(self.poll_interval.unwrap_or(config::DEFAULT_POLL_INTERVAL));
        config
    }
}

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in both mimalloc v2 and v3's mimalloc.h).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory may stay resident before mimalloc returns it to the OS, in milliseconds.
const PURGE_DELAY_MS: std::os::raw::c_long = 10;

/// Freed memory goes back to the OS after 10 ms instead of v3's default second, so resident memory follows the
/// in-flight budget: 32 concurrent 15 MiB gRPC calls under a 256 MiB budget peaked at 297 MiB over idle with the
/// default, and at 118-127 MiB with this (`cargo test -p gateway --test hostile -- --nocapture`). 0 (at once) cost
/// 9-12% of batch-1 throughput (`bash benches/edge_cost.sh`, page faults on reused pages); 10 ms cost nothing
/// measurable.
fn return_freed_memory_soon() {
    #[allow(unsafe_code)]
    // SAFETY: mi_option_set stores an integer into mimalloc's option table (no pointer is passed); the index is the
    // purge-delay option's, checked against the mimalloc.h this crate builds.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

fn main() -> ExitCode {
    return_freed_memory_soon();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The offline report needs no runtime and no ONNX Runtime.
    if let Command::Drift(args) = &cli.command {
        return match run_drift(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        };
    }
    if let Command::Rollout(args) = &cli.command {
        use gateway::rollout::client::{run, Action};
        let action = match args.action {
            RolloutAction::Status => Action::Status,
            RolloutAction::Promote => Action::Promote,
            RolloutAction::Abort => Action::Abort,
            RolloutAction::Pause => Action::Pause,
            RolloutAction::Resume => Action::Resume,
        };
        let token = std::env::var("VANE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
        return match run(
            &args.server,
            action,
            args.model.as_deref(),
            args.reason.as_deref(),
            token.as_deref(),
            args.json,
        ) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        };
    }
    // Before the runtime exists: libgit2's options are unsynchronised globals.
    if let Command::Serve(args) = &cli.command {
        if args.git.repo.is_some() {
            if let Err(error) = reconciler::source::set_global_options(&args.git.global_options()) {
                return fail(&error);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args.config()).await,
            Command::Demo(args) => run_demo(&args).await,
            Command::Drift(_) | Command::Rollout(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&*error),
    }
}

/// Prints the error on one line (ONNX Runtime messages may hold newlines) and returns failure.
fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    let line = error.to_string().replace('\n', " ");
    eprintln!("vane: error: {line}");
    ExitCode::FAILURE
}

type MainResult = Result<(), Box<dyn std::error::Error>>;

async fn serve(config: ServeConfig) -> MainResult {
    let server = gateway::start(config).await?;
    stop_on_signal(server.shutdown_token());
    server.run_until_stopped().await;
    Ok(())
}

async fn run_demo(demo_args: &DemoArgs) -> MainResult {
    let args = &demo_args.run;
    let dir = tempfile::Builder::new().prefix("vane-demo-").tempdir()?;
    let root = dir.path().to_path_buf();
    let remote = tokio::task::spawn_blocking({
        let root = root.clone();
        move || demo::seed_git_repository(&root)
    })
    .await??;
    let config = match &remote {
        Some(bare) => {
            let mut config = args.config(PathBuf::new());
            config.poll_interval = None;
            config.gitops = Some(GitOpsConfig {
                controller: ControllerConfig {
                    // A short poll so a push shows within seconds without a webhook.
                    poll_interval: args.poll_interval.unwrap_or(Duration::from_secs(2)),
                    max_backoff: Duration::from_secs(30),
                    ..ControllerConfig::new(
                        GitSpec::new(bare.display().to_string(), "main", "deploy"),
                        root.join("data"),
                    )
                },
                webhook_secret: None,
            });
            config
        }
        None => {
            tracing::warn!(
                "git is not installed: serving the example models from a folder instead of a Git repository"
            );
            let models = root.join("models");
            tokio::task::spawn_blocking({
                let models = models.clone();
                move || demo::write_repository(&models)
            })
            .await??;
            args.config(models)
        }
    };
    let server = gateway::start(config).await?;
    if let Some(controller) = server.controller() {
        let mut status = controller.status();
        let synced = status.wait_for(|s| s.last_applied.is_some() || s.last_error.is_some()).await?.clone();
        if let Some(error) = synced.last_error.filter(|_| synced.last_applied.is_none()) {
            return Err(format!("the demo repository did not sync: {error}").into());
        }
    }
    let table = server.registry().snapshot();
    let names: Vec<String> = table.names().map(str::to_owned).collect();
    let mut signatures = Vec::new();
    let mut versions = Vec::new();
    for name in names {
        signatures.push((name.clone(), table.get(&name, None)?.signature().clone()));
        versions.push((name.clone(), table.versions(&name)));
    }
    drop(table);
    let requests = tokio::task::spawn_blocking({
        let root = root.clone();
        move || demo::write_example_requests(&root, &signatures)
    })
    .await??;
    let base = format!("http://{}", server.local_addr());
    let mut text = demo::instructions(&base, &root, &requests, &versions);
    let rollouts = remote.is_some() && !demo_args.no_traffic;
    if remote.is_some() {
        let vane = std::env::current_exe().map_or_else(|_| "vane".to_owned(), |p| p.display().to_string());
        let watch = if rollouts { demo::rollout_instructions(&base, &vane) } else { String::new() };
        let watch = watch.replace("REQUEST", &root.join("requests/breast_cancer.json").display().to_string());
        text = text.replace(
            "Press Ctrl-C to stop.",
            &format!("{}{watch}Press Ctrl-C to stop.", demo::publish_instructions(&base, &root)),
        );
    }
    println!("{text}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if !demo_args.no_traffic {
        let (addr, stop) = (server.local_addr(), std::sync::Arc::clone(&stop));
        std::thread::Builder::new().name("vane-demo-traffic".into()).spawn(move || demo::send_traffic(addr, &stop))?;
    }
    if rollouts {
        tokio::spawn(demo_rollouts(std::sync::Arc::clone(server.registry()), root.clone(), server.shutdown_token()));
    }
    stop_on_signal(server.shutdown_token());
    server.run_until_stopped().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(dir);
    Ok(())
}

/// The demo's two rollouts: the healthy canary, and once it is decided, the worse one. Each push is picked up by the
/// demo's 2 s poll; what happens is in the log (one line per decision) and in `vane rollout status`.
async fn demo_rollouts(registry: std::sync::Arc<gateway::registry::Registry>, root: PathBuf, stop: CancellationToken) {
    use gateway::rollout::Phase;
    for (which, candidate) in [(demo::DemoRollout::Healthy, 3), (demo::DemoRollout::Worse, 4)] {
        let pause = if which == demo::DemoRollout::Healthy { demo::ROLLOUT_AFTER } else { Duration::from_secs(5) };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        let pushed = tokio::task::spawn_blocking({
            let root = root.clone();
            move || demo::push_rollout(&root, which)
        })
        .await;
        match pushed {
            Ok(Ok(commit)) => {
                println!("demo: pushed {commit}: breast_cancer v{candidate} as a canary (watch: vane rollout status)")
            }
            Ok(Err(error)) => return tracing::warn!(%error, "the demo could not push its rollout"),
            Err(_) => return,
        }
        // Until this candidate's rollout is decided (promoted, or rolled back).
        let mut generations = registry.generations();
        loop {
            let current =
                registry.snapshot().rollout(demo::DRIFT_MODEL).filter(|r| r.spec.candidate == candidate).cloned();
            let mut events = current.as_ref().map(|r| r.events());
            if current.is_some_and(|r| !matches!(r.plan().phase, Phase::Progressing | Phase::Paused)) {
                break;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                _ = generations.changed() => {}
                _ = async { match events.as_mut() { Some(e) => { let _ = e.changed().await; } None => std::future::pending().await } } => {}
            }
        }
    }
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once.
fn stop_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down (send the signal again to exit at once)");
        token.cancel();
        wait_for_signal().await;
        #[allow(clippy::exit)]
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
