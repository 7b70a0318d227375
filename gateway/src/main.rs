//! The `vane` binary: the composition root. Parses flags, sets up logging and signals, and starts the gateway.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gateway::infer::ModelSettings;
use gateway::stack::Limits;
use gateway::telemetry::{init_logging, LogFormat};
use gateway::{config, demo, ServeConfig};
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
    Serve(ServeArgs),
    /// Serve the built-in example models and print curl commands to try them.
    Demo(DemoArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The model repository.
    #[arg(long, env = "VANE_MODEL_DIR")]
    model_dir: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Address to listen on for HTTP.
    #[arg(long, env = "VANE_LISTEN", default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, env = "VANE_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Longest a request may take before it gets 504 (e.g. 30s, 500ms).
    #[arg(long, env = "VANE_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    request_timeout: Duration,
    /// Requests handled at once across all connections; more get 503 at once.
    #[arg(long, env = "VANE_MAX_CONCURRENT_REQUESTS", default_value_t = Limits::default().max_concurrent_requests)]
    max_concurrent_requests: NonZeroUsize,
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
    /// How often to look for new or removed version folders in the model directory (0 never; e.g. 5s, 500ms).
    #[arg(long, env = "VANE_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    poll_interval: Duration,
    /// How long shutdown waits for in-flight requests (e.g. 10s).
    #[arg(long, env = "VANE_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown_grace: Duration,
}

impl RunArgs {
    fn config(&self, model_dir: PathBuf) -> ServeConfig {
        let mut config = ServeConfig::new(self.listen, model_dir);
        config.limits = Limits {
            max_body_bytes: self.max_body_bytes,
            request_timeout: self.request_timeout,
            max_concurrent_requests: self.max_concurrent_requests,
        };
        config.models = ModelSettings {
            workers: self.workers_per_model.unwrap_or(ModelSettings::default().workers),
            queue_capacity: self.queue_capacity,
            intra_threads: self.intra_threads,
            max_batch_size: self.max_batch_size,
            max_queue_delay: self.max_queue_delay,
        };
        config.shutdown_grace = self.shutdown_grace;
        config.poll_interval = Some(self.poll_interval);
        config
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args.run.config(args.model_dir)).await,
            Command::Demo(args) => run_demo(&args.run).await,
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

async fn run_demo(args: &RunArgs) -> MainResult {
    let dir = tempfile::Builder::new().prefix("vane-demo-").tempdir()?;
    let root = dir.path().to_path_buf();
    tokio::task::spawn_blocking({
        let root = root.clone();
        move || demo::write_repository(&root)
    })
    .await??;
    let server = gateway::start(args.config(root.clone())).await?;
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
    println!("{}", demo::instructions(&base, &root, &requests, &versions));
    stop_on_signal(server.shutdown_token());
    server.run_until_stopped().await;
    drop(dir);
    Ok(())
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
