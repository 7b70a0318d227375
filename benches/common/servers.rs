//! The process-level benches' servers and limits: a `vane serve` child, the bare hyper ceiling, raw ONNX Runtime.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use monitor::ReferenceData;
use ort::session::Session;
use ort::value::Tensor;
use serde_json::{json, Value};

use super::{cores, http, root, serving_addrs};

pub(crate) fn reference_row(model: &str) -> Result<Vec<f64>> {
    let data = ReferenceData::from_csv_path(&root().join("models").join(model).join("reference.csv"))?;
    data.numeric_row(0).context("row 0 is numeric")
}

/// A `vane serve` child process over the committed models, stopped with SIGTERM on drop.
pub(crate) struct VaneProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) grpc: Option<SocketAddr>,
}

impl VaneProcess {
    pub(crate) fn start(binary: &Path, extra: &[&str]) -> Result<Self> {
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

    pub(crate) fn post(&self, path: &str, body: &Value) -> Result<Vec<u8>> {
        ok(http(&self.addr.to_string(), "POST", path, &[], &serde_json::to_vec(body)?)?)
    }

    /// (rows, runs) of the model's default version, from the statistics endpoint.
    pub(crate) fn stats(&self, model: &str) -> Result<(u64, u64)> {
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
pub(crate) fn ok((status, body): (u16, Vec<u8>)) -> Result<Vec<u8>> {
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
pub(crate) struct BareHyper {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl BareHyper {
    pub(crate) fn start(examples: &Path, response_file: &Path) -> Result<Self> {
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

/// Raw ONNX Runtime's figures: rows per second, and CPU seconds per row (this process's CPU clock, which counts the
/// sessions' threads and nothing else while they run).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrtRate {
    pub(crate) rows_per_second: f64,
    pub(crate) cpu_per_row: f64,
}

/// Raw ONNX Runtime at `batch` rows per run, one session per core (one intra-op thread each), for `duration`.
pub(crate) fn raw_ort_rate(model: &str, row: &[f64], batch: usize, duration: Duration) -> Result<OrtRate> {
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
    let cpu = process_cpu();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("ort thread panicked"))??;
    }
    let (cpu, rows) = (process_cpu() - cpu, rows.load(Ordering::Relaxed) as f64);
    Ok(OrtRate { rows_per_second: rows / started.elapsed().as_secs_f64(), cpu_per_row: cpu / rows.max(1.0) })
}

/// This process's CPU time (every thread), in seconds.
pub(crate) fn process_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Another process's CPU time (user and system, every thread), in seconds, from `/proc/PID/stat`.
pub(crate) fn child_cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11).context("utime")?.parse::<f64>()? + fields.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / CLOCK_TICKS_PER_SECOND)
}

/// `sysconf(_SC_CLK_TCK)` on Linux, where the kernel's user-visible tick is 100 Hz on every architecture.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// A batch-1 request for the binary extension: the JSON header (outputs asked binary too) and the row as f32 bytes.
pub(crate) fn binary_body(row: &[f64]) -> Result<(Vec<u8>, usize)> {
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
