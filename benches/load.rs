//! The load bench: Vane under a real HTTP load generator, beside the two physical limits measured in the same run.
//!
//! `cargo bench --bench load` (takes about two minutes). It installs Debian's `wrk` if missing, builds the release
//! `vane`, and for batch-1 JSON requests to `breast_cancer` and `dense` prints requests/s and p50/p99/p99.9 at
//! concurrency 1, 16 and 64 for:
//! - `vane`: `vane serve` on loopback (dynamic batching on, the default);
//! - `hyper`: a bare hyper server (`examples/bare_hyper.rs`, in its own process) that reads the body and returns
//!   Vane's own response bytes (the physical limit for HTTP on this machine);
//! - `ort`: the same rows straight through ONNX Runtime in this process, one session per core (the physical limit
//!   for the model).
//!
//! For `dense` at concurrency 64 it adds Vane with batching off, and raw ONNX Runtime at the mean batch size Vane's
//! batcher formed. Then the ratios Vane/limit. `VANE_BENCH_SECONDS` sets each run's length (default 5).
//!
//! Beside each JSON run, the same row through the other protocols: REST with the binary tensor extension (wrk with a
//! prepared body), and gRPC ModelInfer with raw tensors from a tonic client in its own process
//! (`examples/grpc_load.rs`: one thread, one task per concurrent call, multiplexed as HTTP/2 streams over one
//! connection per 16 of them, latencies in an hdrhistogram), with the ratios binary/JSON, gRPC/JSON and gRPC p99 /
//! binary p99.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{build_vane, ensure_wrk, http, is_bench_run, root, serving_addrs, wrk, Run};
use monitor::ReferenceData;
use ort::session::Session;
use ort::value::Tensor;
use serde_json::{json, Value};

#[path = "common/mod.rs"]
mod common;

const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` run only checks that this builds and starts.
    if !is_bench_run() {
        return Ok(());
    }
    let seconds: u64 = std::env::var("VANE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    ensure_wrk()?;
    let vane = build_vane()?;
    let work = tempfile::tempdir()?;
    let examples = common::build_examples(&["bare_hyper", "grpc_load"])?;
    let mut lines = Vec::new();

    for (model, features) in [("breast_cancer", 30), ("dense", 1024)] {
        let row = reference_row(model)?;
        assert_eq!(row.len(), features);
        let body = json!({"inputs": [{"name": "input", "shape": [1, features], "datatype": "FP32", "data": row}]});
        let body_file = work.path().join(format!("{model}.json"));
        std::fs::write(&body_file, serde_json::to_vec(&body)?)?;
        let (binary, header) = binary_body(&row)?;
        let binary_file = work.path().join(format!("{model}.bin"));
        std::fs::write(&binary_file, binary)?;
        let path = format!("/v2/models/{model}/infer");

        let server = VaneProcess::start(&vane, &[])?;
        let response = server.post(&path, &body)?;
        let ort_rate = raw_ort_rate(model, &row, 1, Duration::from_secs(seconds.min(3)))?;
        let response_file = work.path().join(format!("{model}.response"));
        std::fs::write(&response_file, response)?;
        let bare_hyper = BareHyper::start(&examples, &response_file)?;
        let bare = bare_hyper.addr;
        for concurrency in CONCURRENCY {
            let vane_run = wrk(server.addr, &path, &body_file, None, concurrency, seconds)?;
            let hyper_run = wrk(bare, &path, &body_file, None, concurrency, seconds)?;
            lines.push(format!(
                "{model:<14} c={concurrency:<3} vane {}   hyper {}   vane/hyper {:.2}   vane/ort {:.2}",
                vane_run.summary(),
                hyper_run.summary(),
                vane_run.rate / hyper_run.rate,
                vane_run.rate / ort_rate
            ));
            let binary_run = wrk(server.addr, &path, &binary_file, Some(header), concurrency, seconds)?;
            let grpc = server.grpc.context("gRPC is served")?;
            let grpc_run = grpc_load(&examples, grpc, model, &row, concurrency, seconds)?;
            lines.push(format!(
                "{model:<14} c={concurrency:<3} binary {}   grpc {}   binary/json {:.2}   grpc/json {:.2}   grpc p99/binary p99 {:.2}",
                binary_run.summary(),
                grpc_run.summary(),
                binary_run.rate / vane_run.rate,
                grpc_run.rate / vane_run.rate,
                grpc_run.p99_us as f64 / binary_run.p99_us.max(1) as f64
            ));
        }
        lines.push(format!("{model:<14} ort batch 1, one session per core: {ort_rate:.0} rows/s"));
        if model == "dense" {
            let unbatched_server = VaneProcess::start(&vane, &["--max-batch-size", "0"])?;
            let off = wrk(unbatched_server.addr, &path, &body_file, None, 64, seconds)?;
            drop(unbatched_server);
            let before = server.stats(model)?;
            let on = wrk(server.addr, &path, &body_file, None, 64, seconds)?;
            let after = server.stats(model)?;
            // The mean rows per model run during this run alone.
            let mean_batch = ((after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64).max(1.0);
            let size = mean_batch.round() as usize;
            let ort_batched = raw_ort_rate(model, &row, size, Duration::from_secs(seconds.min(3)))?;
            lines.push(format!(
                "dense c=64 batching on {:.0} rows/s, off {:.0} rows/s (on/off {:.2}); mean batch {mean_batch:.1} rows; \
                 ort at batch {size}: {ort_batched:.0} rows/s (vane/ort {:.2})",
                on.rate,
                off.rate,
                on.rate / off.rate,
                on.rate / ort_batched
            ));
        }
    }
    println!("\n== load bench ({seconds}s per run, wrk on loopback, {} cores)", cores());
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn reference_row(model: &str) -> Result<Vec<f64>> {
    let data = ReferenceData::from_csv_path(&root().join("models").join(model).join("reference.csv"))?;
    data.numeric_row(0).context("row 0 is numeric")
}

/// A `vane serve` child process over the committed models, stopped with SIGTERM on drop.
struct VaneProcess {
    child: Child,
    addr: SocketAddr,
    grpc: Option<SocketAddr>,
}

impl VaneProcess {
    fn start(binary: &Path, extra: &[&str]) -> Result<Self> {
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--poll-interval",
                "0",
                "--model-dir",
            ])
            .arg(root().join("models"))
            .args(extra)
            .env("RUST_LOG", "warn,gateway=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let (addr, grpc) = serving_addrs(&mut child)?;
        Ok(Self { child, addr: addr.parse()?, grpc: grpc.map(|g| g.parse()).transpose()? })
    }

    fn post(&self, path: &str, body: &Value) -> Result<Vec<u8>> {
        ok(http(&self.addr.to_string(), "POST", path, &[], &serde_json::to_vec(body)?)?)
    }

    /// (rows, runs) of the model's default version, from the statistics endpoint.
    fn stats(&self, model: &str) -> Result<(u64, u64)> {
        let stats: Value = serde_json::from_slice(&ok(http(
            &self.addr.to_string(),
            "GET",
            &format!("/v2/models/{model}/stats"),
            &[],
            b"",
        )?)?)?;
        let last = stats["model_stats"].as_array().and_then(|a| a.last()).context("stats")?;
        Ok((last["inference_count"].as_u64().unwrap_or(0), last["execution_count"].as_u64().unwrap_or(0)))
    }
}

/// The body of a 200, or an error.
fn ok((status, body): (u16, Vec<u8>)) -> Result<Vec<u8>> {
    if status != 200 {
        bail!("status {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

impl Drop for VaneProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// `examples/bare_hyper.rs` in its own process (the ceiling `bash benches/ceiling.sh` measures against), answering
/// `response_file`'s bytes; stopped on drop.
struct BareHyper {
    child: Child,
    addr: SocketAddr,
}

impl BareHyper {
    fn start(examples: &Path, response_file: &Path) -> Result<Self> {
        let mut child = Command::new(examples.join("bare_hyper")).arg(response_file).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().context("stdout")?), &mut line)?;
        let addr = line.trim().strip_prefix("listening on ").context("bare_hyper did not start")?.parse()?;
        Ok(Self { child, addr })
    }
}

impl Drop for BareHyper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rows per second through raw ONNX Runtime at `batch` rows per run, one session per core, for `duration`.
fn raw_ort_rate(model: &str, row: &[f64], batch: usize, duration: Duration) -> Result<f64> {
    let environment = gateway::runtime::environment()?;
    let path = root().join("models").join(model).join("1/model.onnx");
    let features = row.len();
    let data: Vec<f32> = row.iter().map(|&v| v as f32).cycle().take(batch * features).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let rows = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..cores() {
        let mut session = Session::builder(environment)?
            .with_intra_threads(1)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .commit_from_file(&path)?;
        let (data, stop, rows) = (data.clone(), Arc::clone(&stop), Arc::clone(&rows));
        threads.push(std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let input = Tensor::from_array(([batch, features], data.clone()))?;
                let outputs = session.run(ort::inputs!["input" => input])?;
                std::hint::black_box(outputs.len());
                rows.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let started = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("ort thread panicked"))??;
    }
    Ok(rows.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// A batch-1 request for the binary extension: the JSON header (outputs asked binary too) and the row as f32 bytes.
fn binary_body(row: &[f64]) -> Result<(Vec<u8>, usize)> {
    let header = json!({
        "inputs": [{"name": "input", "shape": [1, row.len()], "datatype": "FP32",
                    "parameters": {"binary_data_size": row.len() * 4}}],
        "parameters": {"binary_data_output": true}
    });
    let mut body = serde_json::to_vec(&header)?;
    let length = body.len();
    body.extend(row.iter().flat_map(|&v| (v as f32).to_le_bytes()));
    Ok((body, length))
}

/// gRPC ModelInfer with raw tensors at `concurrency` calls in flight for `seconds`, from `examples/grpc_load.rs` in
/// its own process (one thread; one HTTP/2 connection per 16 calls; every latency in one histogram).
fn grpc_load(
    examples: &Path,
    addr: SocketAddr,
    model: &str,
    row: &[f64],
    concurrency: usize,
    seconds: u64,
) -> Result<Run> {
    let row: Vec<String> = row.iter().map(|v| (*v as f32).to_string()).collect();
    let output = Command::new(examples.join("grpc_load"))
        .args([addr.to_string(), model.to_owned(), row.join(","), concurrency.to_string(), seconds.to_string()])
        .output()?;
    if !output.status.success() {
        bail!("grpc_load failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let fields: Vec<f64> =
        String::from_utf8(output.stdout)?.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    let [rate, p50, p99, p999, errors] = fields.as_slice() else { bail!("grpc_load printed {fields:?}") };
    Ok(Run { rate: *rate, errors: *errors as u64, p50_us: *p50 as u64, p99_us: *p99 as u64, p999_us: *p999 as u64 })
}
