//! What telemetry costs per request, measured so that 1% shows: `cargo bench --bench telemetry_cost`.
//!
//! Two real servers run in this one process, each following the demo's deploy repository (`vane demo`'s: made
//! here with `gateway::demo::seed_git_repository`, breast_cancer with its reference data and a 200-row monitoring
//! window): one with every kind of telemetry on (the monitor observing every prediction, the request series,
//! OpenTelemetry traces sampled at 1% and exported over OTLP to a counting sink in a process of its own,
//! `examples/otlp_sink.rs`), one with all of it off. Requests go through
//! each server's own router in-process (`gateway::routes::route` on the server's state: decode, registry load,
//! the batcher and its worker threads, encode, and every telemetry call of the request path), 64 in flight, batch-1
//! JSON to breast_cancer.
//!
//! The measure is the process's CPU time (the kernel's per-process clock: every thread, so the monitor thread's
//! window updates and evaluations and the exporter thread's encoding count too; what those two threads spend during
//! an off block, such as the evaluation that follows an on block, is moved to the on block of its pair) per
//! request, over blocks of
//! `VANE_BENCH_BLOCK` requests (default 20,000). Blocks come in pairs, on then off (the order alternating from pair
//! to pair), `VANE_BENCH_PAIRS` pairs (default 40); what is reported is the mean of the pairs' on/off ratios with
//! its 95% confidence interval. Adjacent blocks see the same machine, so the pair's ratio cancels most of what
//! makes one run differ from the next on these shared cores; the interval says how finely the run resolved.
//!
//! In-process (the default), the denominator leaves out hyper and the sockets, so the share printed is larger than
//! the share of a real server's CPU; both sides pay the bench's own client work (building each request, reading
//! each answer). `VANE_BENCH_TRANSPORT=tcp` measures the real thing instead: both servers listen on 127.0.0.1 and a
//! client in its own process (this binary again, a hyper client on one thread holding 64 keep-alive connections to
//! each server) sends every block, so this process's CPU clock counts the servers' work and only theirs: hyper,
//! the sockets, the router and the telemetry.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use gateway::auth::Secret;
use gateway::gitops::GitOpsConfig;
use gateway::routes::AppState;
use gateway::ServeConfig;
use reconciler::controller::{ControllerConfig, SyncStatus};
use reconciler::source::GitSpec;
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

/// The allocator the `vane` binary runs with, so the costs are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IN_FLIGHT: usize = 64;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The process's CPU time so far (user + system, every thread), in seconds.
fn process_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// CPU seconds so far of this process's threads whose name starts with `prefix` (the scheduler's own count,
/// `/proc/self/task/*/schedstat`, in nanoseconds).
fn threads_cpu(prefixes: &[&str]) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| prefixes.iter().any(|p| comm.starts_with(p)))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        * 1e-9
}

/// The threads that work only for the "on" server: the monitor's and the trace exporter's.
const TELEMETRY_THREADS: [&str; 2] = ["vane-monitor", "OpenTelemetry"];

/// Sends `n` requests through `state`'s router, `IN_FLIGHT` at a time.
async fn block(state: &Arc<AppState>, body: &Bytes, n: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (state, body, next) = (Arc::clone(state), body.clone(), Arc::clone(&next));
            let uri = hyper::Uri::from_static("/v2/models/breast_cancer/infer");
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    common::route_once(Arc::clone(&state), &uri, body.clone()).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("a client task panicked");
    }
}

/// The load client in its own process: this binary, told by `VANE_BENCH_CLIENT` to read `<addr> <n>` lines from
/// stdin, send `n` requests to `addr` with `IN_FLIGHT` in flight, and answer `done` (or the first failure).
struct TcpClient {
    child: Child,
    commands: std::process::ChildStdin,
    answers: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl TcpClient {
    fn start() -> Result<Self> {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe()?)
            .env("VANE_BENCH_CLIENT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let commands = child.stdin.take().context("stdin is piped")?;
        let answers = std::io::BufReader::new(child.stdout.take().context("stdout is piped")?).lines();
        Ok(Self { child, commands, answers })
    }

    /// Sends `n` requests to `addr` and waits for their answers.
    fn block(&mut self, addr: std::net::SocketAddr, n: usize) -> Result<()> {
        use std::io::Write;
        writeln!(self.commands, "{addr} {n}")?;
        self.commands.flush()?;
        let answer = self.answers.next().context("the load client ended")??;
        anyhow::ensure!(answer == "done", "the load client: {answer}");
        Ok(())
    }
}

impl Drop for TcpClient {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The client process's loop (see [`TcpClient`]).
fn run_client(body: Bytes) -> Result<()> {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use std::io::BufRead;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client: Client<_, http_body_util::Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let (addr, n) = line.split_once(' ').context("<addr> <n>")?;
        let (uri, n): (hyper::Uri, usize) =
            (format!("http://{addr}/v2/models/breast_cancer/infer").parse()?, n.parse()?);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let outcome = runtime.block_on(async {
            let senders: Vec<_> = (0..IN_FLIGHT)
                .map(|_| {
                    let (client, uri, body, next) = (client.clone(), uri.clone(), body.clone(), Arc::clone(&next));
                    tokio::spawn(async move {
                        while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                            let request = hyper::Request::post(uri.clone())
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(body.clone()))?;
                            let response = client.request(request).await?;
                            anyhow::ensure!(response.status().is_success(), "status {}", response.status());
                            response.into_body().collect().await?;
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            for sender in senders {
                sender.await??;
            }
            anyhow::Ok(())
        });
        match outcome {
            Ok(()) => println!("done"),
            Err(error) => println!("{error:#}"),
        }
    }
    Ok(())
}

/// The OTLP sink in its own process, and the endpoint it listens on.
fn start_sink() -> Result<(Child, String)> {
    use std::io::BufRead;
    let examples = common::build_examples(&["otlp_sink"])?;
    let mut sink = Command::new(examples.join("otlp_sink")).stdout(Stdio::piped()).spawn()?;
    let mut lines = std::io::BufReader::new(sink.stdout.take().context("stdout is piped")?).lines();
    let endpoint = loop {
        let line = lines.next().context("the OTLP sink ended before it listened")??;
        if let Some(endpoint) = line.strip_prefix("listening on ") {
            break endpoint.to_owned();
        }
    };
    // Keep reading what the sink prints, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((sink, endpoint))
}

/// The request every block sends: batch-1 JSON to breast_cancer.
fn request_body() -> Result<Bytes> {
    let data: Vec<f64> = (0..30).map(|i| f64::from(i) / 7.0).collect();
    Ok(Bytes::from(serde_json::to_vec(
        &json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": data}]}),
    )?))
}

fn main() -> Result<()> {
    if std::env::var_os("VANE_BENCH_CLIENT").is_some() {
        return run_client(request_body()?);
    }
    // `cargo test --benches` runs this without `--bench`: build and start only.
    if !common::is_bench_run() {
        return Ok(());
    }
    let tcp = match std::env::var("VANE_BENCH_TRANSPORT").as_deref() {
        Ok("tcp") => true,
        Ok("in-process") | Err(_) => false,
        Ok(other) => anyhow::bail!("VANE_BENCH_TRANSPORT is tcp or in-process, not {other:?}"),
    };
    let (pairs, per_block) = (env_or("VANE_BENCH_PAIRS", 40), env_or("VANE_BENCH_BLOCK", 20_000));
    let (mut sink, endpoint) = start_sink()?;
    let scratch = tempfile::tempdir()?;
    let bare = gateway::demo::seed_git_repository(scratch.path())?.context("git is not installed")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // `VANE_BENCH_ON=monitoring,metrics,tracing` (the default: all three) picks what the "on" server runs with.
    let features = std::env::var("VANE_BENCH_ON").unwrap_or_else(|_| "monitoring,metrics,tracing".to_owned());
    let wants = |feature: &str| features.split(',').any(|f| f.trim() == feature);
    let config = |on: bool| {
        let data = scratch.path().join(if on { "data-on" } else { "data-off" });
        let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), scratch.path().join("unused"));
        config.gitops = Some(GitOpsConfig {
            controller: ControllerConfig {
                poll_interval: Duration::from_secs(3600),
                ..ControllerConfig::new(GitSpec::new(bare.display().to_string(), "main", "deploy"), data)
            },
            webhook_secret: Secret::new("unused"),
        });
        config.monitoring = on && wants("monitoring");
        config.request_metrics = on && wants("metrics");
        config.tracing.endpoint = (on && wants("tracing")).then(|| endpoint.clone());
        config.tracing.sample_rate = 0.01;
        config
    };
    let start = |config: ServeConfig| {
        runtime.block_on(async {
            let server = gateway::start(config).await?;
            let mut status = server.controller().context("gitops mode")?.status();
            // The first sync loads and warms the demo's models; bounded, as a sync is.
            tokio::time::timeout(Duration::from_secs(120), status.wait_for(|s: &SyncStatus| s.syncs >= 1))
                .await
                .context("the first sync took over 120 s")??;
            anyhow::Ok(server)
        })
    };
    let (on, off) = (start(config(true))?, start(config(false))?);
    let (on_state, off_state) = (on.state().context("serving")?, off.state().context("serving")?);
    anyhow::ensure!(off_state.monitor.is_none(), "the off side is monitored");
    let body = request_body()?;
    let mut client = if tcp { Some(TcpClient::start()?) } else { None };
    let (on_addr, off_addr) = (on.local_addr(), off.local_addr());
    // One block on one side: the process's CPU seconds per request, and those of the telemetry threads among them.
    let mut run = |on_side: bool| -> Result<(f64, f64)> {
        let (threads_before, before) = (threads_cpu(&TELEMETRY_THREADS), process_cpu());
        match &mut client {
            Some(client) => client.block(if on_side { on_addr } else { off_addr }, per_block)?,
            None => runtime.block_on(block(if on_side { &on_state } else { &off_state }, &body, per_block)),
        }
        let cpu = process_cpu() - before;
        let threads = threads_cpu(&TELEMETRY_THREADS) - threads_before;
        Ok((cpu / per_block as f64, threads / per_block as f64))
    };
    // Warm both (sessions, caches, connections, the monitor's first window) before anything is counted.
    run(true)?;
    run(false)?;
    // The monitor's thread and the trace exporter's work only for the "on" server.
    let (monitor_before, exporter_before) = (threads_cpu(&["vane-monitor"]), threads_cpu(&["OpenTelemetry"]));
    let mut ratios = Vec::with_capacity(pairs);
    let (mut on_us, mut off_us) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let (a, b) = if pair % 2 == 0 {
            let a = run(true)?;
            (a, run(false)?)
        } else {
            let b = run(false)?;
            (run(true)?, b)
        };
        // The telemetry threads work for the on server whenever they run: what they did in the off block (the last
        // drain and the evaluation after an on block, an export) is the on block's, not the off server's.
        let ((on_cpu, _), (off_cpu, moved)) = (a, b);
        let (on_cpu, off_cpu) = (on_cpu + moved, off_cpu - moved);
        on_us.push(on_cpu * 1e6);
        off_us.push(off_cpu * 1e6);
        ratios.push(on_cpu / off_cpu);
    }
    let on_requests = (pairs * per_block) as f64;
    let monitor_us = (threads_cpu(&["vane-monitor"]) - monitor_before) / on_requests * 1e6;
    let exporter_us = (threads_cpu(&["OpenTelemetry"]) - exporter_before) / on_requests * 1e6;
    let evaluations = *on.monitor_evaluations().borrow();
    let counters = on_state.monitor.as_ref().map(|m| m.counters());
    let observed = counters.map_or((0, 0), |c| (c.accepted.get(), c.dropped.get()));
    anyhow::ensure!(
        !wants("monitoring") || observed.0 + observed.1 >= on_requests as u64,
        "the monitor was offered {} of {on_requests} predictions: the on side was not monitored",
        observed.0 + observed.1
    );
    drop((on_state, off_state));
    runtime.block_on(async {
        on.stop().await;
        off.stop().await;
    });
    // The sink prints its count on SIGTERM; stopping it at once is enough here (the count is not the measure).
    sink.kill().ok();
    sink.wait().ok();

    let n = ratios.len() as f64;
    let mean = ratios.iter().sum::<f64>() / n;
    let sd = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // Student's t at 97.5% for n - 1 degrees of freedom, taken at the smallest n of each range (so never too small).
    let t = match pairs {
        0..=10 => 2.26,
        11..=20 => 2.09,
        21..=40 => 2.02,
        _ => 1.98,
    };
    let half = t * sd / n.sqrt();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let totals = on_us.iter().sum::<f64>() / off_us.iter().sum::<f64>();
    let (on_median, off_median) = (median(&mut on_us), median(&mut off_us));
    println!(
        "{pairs} pairs of {per_block} requests (batch-1 JSON, breast_cancer, {IN_FLIGHT} in flight, {}); on = {features}",
        if tcp { "over TCP from a client in its own process" } else { "in-process router" }
    );
    println!(
        "CPU per request, median of blocks: on {on_median:.2} us, off {off_median:.2} us; all blocks together: on/off \
         {totals:.4}"
    );
    println!(
        "on/off per pair: mean {mean:.4}, 95% CI [{:.4}, {:.4}] (+-{:.2}%); telemetry = {:+.2}% of the request's CPU",
        mean - half,
        mean + half,
        half * 100.0,
        (mean - 1.0) * 100.0
    );
    let added_us = on_median - off_median;
    println!(
        "of which off the request path, per request: the monitor's thread {monitor_us:.3} us, the trace exporter's \
         {exporter_us:.3} us; on the request path (the rest of the difference of medians) {:.3} us",
        added_us - monitor_us - exporter_us
    );
    println!(
        "the monitor: {} predictions observed, {} dropped (queue full), {evaluations} events (window evaluations and \
         alert changes)",
        observed.0, observed.1
    );
    Ok(())
}
