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
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::servers::{binary_body, raw_ort_rate, reference_row, BareHyper, VaneProcess};
use common::{build_vane, cores, ensure_wrk, is_bench_run, wrk, Run};
use serde_json::json;

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
        let ort_rate = raw_ort_rate(model, &row, 1, Duration::from_secs(seconds.min(3)))?.rows_per_second;
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
            let ort_batched = raw_ort_rate(model, &row, size, Duration::from_secs(seconds.min(3)))?.rows_per_second;
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
