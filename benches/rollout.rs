//! `cargo bench --bench rollout`: progressive delivery on the release `vane`, in one run.
//!
//! Time. A client paced at 1,000 requests/s (keep-alive, one request a millisecond, keyed by `x-user-id`) runs
//! throughout while three cycles push, each with a signed webhook: a healthy candidate as a canary of the stable
//! (promoted), then a candidate that fails on a third of its rows as a canary of that (rolled back). The canary is
//! the shortest sensible one: 10%, 50%, 100%, each held 1 s and 100 requests, analysis every 1 s, `min_samples` 100,
//! `failure_limit` 2, the standard checks (error rate, and p99 once each side has 200 answers). Reported: push to
//! promotion, and the bad candidate's first failed answer (as the client saw it) to its rollback (the decision's
//! time), beside Flagger's documented minimum for the same steps (interval x steps to promote, interval x threshold
//! to roll back, with its usual 1 m interval). Every client answer is counted: failures other than the bad
//! candidate's own are reported.
//!
//! Cost. Throughput under wrk (c=64, batch-1 JSON) of breast_cancer versions 2 and 3 (the same model) served with no
//! rollout, against the same with a canary in progress that never decides: at 100% (the router and the counters on
//! every request) and at 50% (the traffic also split over two batchers), and the server's CPU time per request (from
//! /proc, steadier than throughput on a shared machine). Seven alternating runs each, medians, ratios.
//! `VANE_BENCH_SECONDS` sets each wrk run (default 5).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use common::{build_vane, ensure_wrk, git, http, is_bench_run, root, serving_addr, sha256, wrk};
use hmac::Mac;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

#[path = "common/mod.rs"]
mod common;

const MODEL: &str = "breast_cancer";
const SECRET: &str = "bench";

fn main() -> Result<()> {
    if !is_bench_run() {
        return Ok(());
    }
    let vane = build_vane()?;
    ensure_wrk()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let timing = runtime.block_on(timing(&vane))?;
    let cost = cost(&vane)?;
    println!(
        "\n== rollout bench (release vane, {} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for line in timing.into_iter().chain(cost) {
        println!("{line}");
    }
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A deploy repository and a `vane serve --repo` on it.
struct Deploy {
    _dir: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
    data: PathBuf,
}

impl Deploy {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (work, bare, data) = (dir.path().join("work"), dir.path().join("deploy.git"), dir.path().join("data"));
        std::fs::create_dir_all(&work)?;
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", "deploy.git"])?;
        git(&work, &["init", "-q", "-b", "main"])?;
        Ok(Self { _dir: dir, work, bare, data })
    }

    /// Commits breast_cancer with `versions` (number, model file) and `rollout` (YAML under `spec`), and pushes.
    fn push(&self, versions: &[(u64, &Path)], rollout: &str) -> Result<()> {
        let mut manifest = format!(
            "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {MODEL}}}\nspec:\n  serving: {{max_queue_delay: 300us}}\n{rollout}  versions:\n"
        );
        for (version, file) in versions {
            let bytes = std::fs::read(file)?;
            let path = format!("models/{version}.onnx");
            std::fs::create_dir_all(self.work.join("models"))?;
            std::fs::write(self.work.join(&path), &bytes)?;
            manifest += &format!("    - {{version: {version}, model: {{path: {path}, sha256: {}}}}}\n", sha256(&bytes));
        }
        std::fs::create_dir_all(self.work.join("deploy"))?;
        std::fs::write(self.work.join("deploy/m.yaml"), manifest)?;
        git(&self.work, &["add", "-A"])?;
        git(&self.work, &["commit", "-q", "-m", "bench"])?;
        git(&self.work, &["push", "-q", "--force", self.bare.to_str().context("path")?, "main"])
    }

    fn serve(&self, vane: &Path) -> Result<(Child, String)> {
        let mut child = Command::new(vane)
            .args(["serve", "--listen", "127.0.0.1:0", "--grpc-listen", "off", "--log-format", "json"])
            .args(["--poll-interval", "1h", "--repo"])
            .arg(&self.bare)
            .arg("--data-dir")
            .arg(&self.data)
            .env("VANE_WEBHOOK_SECRET", SECRET)
            // "vane is serving" is an info line, and serving_addr waits for it.
            .env("RUST_LOG", "warn,gateway=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let addr = serving_addr(&mut child)?;
        Ok((child, addr))
    }
}

/// Waits until the server is ready: its first sync has loaded the set (GitOps mode serves before that, not ready).
fn ready(addr: &str) -> Result<()> {
    let started = std::time::Instant::now();
    while !matches!(http(addr, "GET", "/v2/health/ready", &[], b""), Ok((200, _))) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("not ready in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A process's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) start after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn webhook(addr: &str) -> Result<()> {
    let payload = br#"{"ref":"refs/heads/main"}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(payload);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    http(addr, "POST", "/api/v1/hooks/git", &[("x-hub-signature-256", &signature)], payload)?;
    Ok(())
}

fn rollouts(addr: &str) -> Result<Value> {
    let (_, body) = http(addr, "GET", "/api/v1/rollouts", &[], b"")?;
    Ok(serde_json::from_slice(&body)?)
}

/// Reads the rollouts until `candidate`'s has taken `action`; returns that decision's time (Unix ms). Each read is
/// answered at once; this is the measurement loop.
fn decided(addr: &str, candidate: u64, action: &str, limit: Duration) -> Result<u64> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        let listing = rollouts(addr)?;
        let found = listing["rollouts"].as_array().into_iter().flatten().find(|r| r["candidate"] == candidate);
        if let Some(decision) =
            found.and_then(|r| r["decisions"].as_array()).and_then(|d| d.iter().find(|d| d["action"] == action))
        {
            return decision["at_unix_ms"].as_u64().context("at_unix_ms");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("candidate {candidate} was not '{action}' within {limit:?}: {}", rollouts(addr)?)
}

const CANARY: &str = "    strategy: canary\n    key: x-user-id\n    grace_period: 1s\n    steps:\n      - {weight: 10, duration: 1s, min_requests: 100}\n      - {weight: 50, duration: 1s, min_requests: 100}\n      - {weight: 100, duration: 1s, min_requests: 100}\n    analysis: {interval: 1s, min_samples: 100, failure_limit: 2}\n";

/// What the paced client saw: (time received in Unix ms, status, variant) of every answer.
type Answers = Arc<Mutex<Vec<(u64, u16, String)>>>;

async fn timing(vane: &Path) -> Result<Vec<String>> {
    let models = root().join("models/breast_cancer");
    let (v1, v2) = (models.join("1/model.onnx"), models.join("2/model.onnx"));
    let failing = root().join("tests/e2e/rollout-models/failing.onnx");
    let deploy = Deploy::new()?;
    deploy.push(&[(1, &v1)], "")?;
    let (mut child, addr) = deploy.serve(vane)?;
    ready(&addr)?;
    let answers: Answers = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(paced(addr.clone(), Arc::clone(&answers), Arc::clone(&stop)));
    let (mut promotions, mut rollbacks) = (Vec::new(), Vec::new());
    let mut extra_failures = std::collections::BTreeMap::new();
    let mut stable = 1;
    for cycle in 0..3 {
        let good = stable + 1;
        let good_file = if cycle % 2 == 0 { &v2 } else { &v1 };
        let stable_file = if cycle % 2 == 0 { &v1 } else { &v2 };
        let pushed = unix_ms();
        let rollout = format!("  rollout:\n    stable: {stable}\n    candidate: {good}\n{CANARY}");
        deploy.push(&[(stable, stable_file), (good, good_file)], &rollout)?;
        webhook(&addr)?;
        let addr2 = addr.clone();
        let promoted =
            tokio::task::spawn_blocking(move || decided(&addr2, good, "promote", Duration::from_secs(120))).await??;
        promotions.push((promoted - pushed) as f64 / 1e3);
        let bad = good + 1;
        let rollout = format!("  rollout:\n    stable: {good}\n    candidate: {bad}\n{CANARY}");
        let from = unix_ms();
        deploy.push(&[(good, good_file), (bad, &failing)], &rollout)?;
        webhook(&addr)?;
        let addr2 = addr.clone();
        let rolled_back =
            tokio::task::spawn_blocking(move || decided(&addr2, bad, "rollback", Duration::from_secs(120))).await??;
        let seen = answers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        let first_bad = seen
            .iter()
            .filter(|(at, status, variant)| *at >= from && *status >= 500 && variant == "candidate")
            .map(|(at, ..)| *at)
            .min()
            .context("the bad candidate never failed an answer")?;
        rollbacks.push(rolled_back.saturating_sub(first_bad) as f64 / 1e3);
        // Failures that are not the bad candidate's own answers (there should be none), by status and variant.
        for (_, status, variant) in seen.iter().filter(|(_, status, variant)| *status != 200 && variant != "candidate")
        {
            *extra_failures.entry((*status, variant.clone())).or_insert(0usize) += 1;
        }
        answers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.retain(|_| false);
        stable = good;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, rate) = load.await??;
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let show = |v: &[f64]| v.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", ");
    Ok(vec![
        format!("paced client: {sent} requests at {rate:.0} req/s; failed answers other than the bad candidate's (status, variant: count): {extra_failures:?}"),
        format!("push to promotion of a healthy canary (3 steps of 1 s): {} s   [Flagger minimum at interval 1m: 3 steps x 1m = 180 s]", show(&promotions)),
        format!("first failed answer to rollback (analysis every 1 s, failure_limit 2): {} s   [Flagger minimum: interval x threshold = 1m x 2 = 120 s]", show(&rollbacks)),
    ])
}

/// Sends one request a millisecond (keyed by a rotating user id) until `stop`; returns (sent, rate).
async fn paced(addr: String, answers: Answers, stop: Arc<std::sync::atomic::AtomicBool>) -> Result<(u64, f64)> {
    use hyper_util::client::legacy::Client;
    let client: Client<_, Full<Bytes>> = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let row = reference_rows()?;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        ticks.tick().await;
        let body = serde_json::to_vec(
            &json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row[sent as usize % row.len()]}]}),
        )?;
        let request = hyper::Request::post(format!("http://{addr}/v2/models/{MODEL}/infer"))
            .header("content-type", "application/json")
            .header("x-user-id", format!("user-{}", sent % 10_000))
            .body(Full::new(Bytes::from(body)))?;
        let (client, answers) = (client.clone(), Arc::clone(&answers));
        tokio::spawn(async move {
            let (status, variant) = match client.request(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let variant =
                        response.headers().get("vane-variant").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    let _ = response.into_body().collect().await;
                    (status, variant)
                }
                Err(_) => (0, String::new()),
            };
            if let Ok(mut answers) = answers.lock() {
                answers.push((unix_ms(), status, variant));
            }
        });
        sent += 1;
    }
    Ok((sent, sent as f64 / started.elapsed().as_secs_f64()))
}

fn reference_rows() -> Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(root().join("models/breast_cancer/reference.csv"))?;
    text.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().context("number")).collect()).collect()
}

fn cost(vane: &Path) -> Result<Vec<String>> {
    let seconds: u64 = std::env::var("VANE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let v2 = root().join("models/breast_cancer/2/model.onnx");
    let never = "    analysis: {interval: 1s, min_samples: 1000000000}\n";
    let configs = [
        ("no rollout", String::new()),
        ("canary at 100%", format!("  rollout:\n    stable: 2\n    candidate: 3\n    strategy: canary\n    steps: [{{weight: 100, duration: 1h}}]\n{never}")),
        ("canary at 50%", format!("  rollout:\n    stable: 2\n    candidate: 3\n    strategy: canary\n    steps: [{{weight: 50, duration: 1h}}]\n{never}")),
    ];
    let mut servers = Vec::new();
    for (name, rollout) in &configs {
        let deploy = Deploy::new()?;
        deploy.push(&[(2, &v2), (3, &v2)], rollout)?;
        let (child, addr) = deploy.serve(vane)?;
        ready(&addr).with_context(|| name.to_string())?;
        servers.push((name, deploy, child, addr));
    }
    let dir = tempfile::tempdir()?;
    let body = dir.path().join("body.json");
    let row = &reference_rows()?[0];
    std::fs::write(
        &body,
        serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}]}))?,
    )?;
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    // The server's CPU time per request, in microseconds: what the hot path costs, less noisy than throughput.
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let hz = 100.0; // USER_HZ on Linux
    for _ in 0..7 {
        for (i, (_, _, child, addr)) in servers.iter().enumerate() {
            let before = cpu_ticks(child.id())?;
            let run = wrk(addr.parse()?, &format!("/v2/models/{MODEL}/infer"), &body, None, 64, seconds)?;
            let ticks = cpu_ticks(child.id())? - before;
            if run.errors > 0 {
                bail!("wrk saw {} errors", run.errors);
            }
            rates[i].push(run.rate);
            cpu[i].push(ticks as f64 / hz * 1e6 / (run.rate * seconds as f64));
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (base, base_cpu) = (median(&rates[0]), median(&cpu[0]));
    let mut lines = vec![format!("wrk c=64 batch-1 JSON, {seconds} s runs, seven alternating; medians:")];
    for (i, (name, _, _, addr)) in servers.iter().enumerate() {
        let counted = rollouts(addr)?["rollouts"][0]["totals"].clone();
        let runs = rates[i].iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" ");
        lines.push(format!(
            "  {name:<15} {:>7.0} req/s ({:.3} of no rollout), server CPU {:.1} us/request ({:.3})  runs: {runs}{}",
            median(&rates[i]),
            median(&rates[i]) / base,
            median(&cpu[i]),
            median(&cpu[i]) / base_cpu,
            if counted.is_null() {
                String::new()
            } else {
                format!(
                    "  counted: stable {} candidate {}",
                    counted["stable"]["requests"], counted["candidate"]["requests"]
                )
            }
        ));
    }
    for (_, _, mut child, _) in servers {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
    }
    Ok(lines)
}
