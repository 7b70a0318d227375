//! Batching at ONNX Runtime's rate: `cargo bench --bench batching`.
//!
//! The `dense` model (a 1024-1024-1024-10 MLP: ONNX Runtime's time, not HTTP's, is most of a row's cost), batch-1
//! requests with the binary tensor extension at 64 in flight (wrk, one thread), to the release `vane serve` with its default
//! settings. Rounds (`VANE_BENCH_ROUNDS`, default 3) of `VANE_BENCH_SECONDS` (default 5) each alternate:
//! - Vane: rows/s, the server's CPU per row (`/proc/PID/stat`), and the mean batch its batcher formed (the stats
//!   endpoint, before and after);
//! - raw ONNX Runtime in this process at that batch size (rounded), one session per core: rows/s and CPU per row;
//! - a bare hyper server (`examples/bare_hyper.rs`) reading the same bodies and answering Vane's bytes: its CPU per
//!   request, what the socket work alone costs on this machine.
//!
//! It prints each round and the medians of:
//! - throughput: Vane's rows/s over raw ONNX Runtime's at the batch formed (the figure; wrk shares the two
//!   cores with Vane, not with raw ONNX Runtime);
//! - efficiency: raw ONNX Runtime's CPU per row over Vane's (the same figure, the client's share taken out);
//! - Vane's CPU per row split into ONNX Runtime's (as measured raw), the bare server's socket work, and the rest:
//!   Vane's own cost per row (decode, queue, batch, split, encode, telemetry).
//!
//! `VANE_BENCH_ARGS` adds flags to `vane serve` (e.g. `--workers-per-model 2`).

use std::time::Duration;

use anyhow::{bail, Result};
use common::servers::{binary_body, child_cpu, raw_ort_rate, reference_row, BareHyper, VaneProcess};
use common::{build_examples, build_vane, cores, ensure_wrk, http, is_bench_run, wrk_threads, Run};

#[path = "common/mod.rs"]
mod common;

const MODEL: &str = "dense";
const CONCURRENCY: usize = 64;

/// One round's figures.
struct Round {
    vane_rows: f64,
    vane_cpu_per_row: f64,
    batch: f64,
    ort_rows: f64,
    ort_cpu_per_row: f64,
    socket_cpu_per_request: f64,
}

fn main() -> Result<()> {
    if !is_bench_run() {
        return Ok(());
    }
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let (seconds, rounds) = (env("VANE_BENCH_SECONDS", 5), env("VANE_BENCH_ROUNDS", 3));
    let extra = std::env::var("VANE_BENCH_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    ensure_wrk()?;
    let vane = build_vane()?;
    let examples = build_examples(&["bare_hyper"])?;
    let work = tempfile::tempdir()?;

    let row = reference_row(MODEL)?;
    let (body, header) = binary_body(&row)?;
    let body_file = work.path().join("dense.bin");
    std::fs::write(&body_file, &body)?;
    let path = format!("/v2/models/{MODEL}/infer");
    let server = VaneProcess::start(&vane, &extra)?;
    let pid = server.child.id();
    let headers = [
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Inference-Header-Content-Length", header.to_string()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, answer) = http(&server.addr.to_string(), "POST", &path, &headers, &body)?;
    if status != 200 {
        bail!("vane answered {status}: {}", String::from_utf8_lossy(&answer));
    }
    let answer_file = work.path().join("dense.answer");
    std::fs::write(&answer_file, answer)?;
    let bare = BareHyper::start(&examples, &answer_file)?;
    let bare_pid = bare.child.id();
    // One wrk thread: the client's CPU is taken from the same two cores, and a second thread took more of it (11k
    // rows/s against 19k with one, and more CPU per row on every server thread).
    let load =
        |addr, seconds| -> Result<Run> { wrk_threads(addr, &path, &body_file, Some(header), CONCURRENCY, seconds, 1) };
    // Warm both servers' connections and Vane's allocator before the first measured round.
    load(server.addr, 1)?;

    let mut all = Vec::new();
    for number in 1..=rounds {
        let (before, cpu) = (server.stats(MODEL)?, child_cpu(pid)?);
        let run = load(server.addr, seconds)?;
        let (after, cpu) = (server.stats(MODEL)?, child_cpu(pid)? - cpu);
        if run.errors > 0 {
            bail!("{} errors from vane", run.errors);
        }
        let rows = (after.0 - before.0) as f64;
        let batch = (rows / (after.1 - before.1).max(1) as f64).max(1.0);
        let ort = raw_ort_rate(MODEL, &row, batch.round() as usize, Duration::from_secs(seconds))?;
        let bare_cpu = child_cpu(bare_pid)?;
        let bare_run = load(bare.addr, seconds)?;
        let bare_cpu = child_cpu(bare_pid)? - bare_cpu;
        let round = Round {
            vane_rows: run.rate,
            vane_cpu_per_row: cpu / rows.max(1.0),
            batch,
            ort_rows: ort.rows_per_second,
            ort_cpu_per_row: ort.cpu_per_row,
            socket_cpu_per_request: bare_cpu / (bare_run.rate * seconds as f64).max(1.0),
        };
        println!(
            "round {number}: vane {:.0} rows/s at {:.0} us CPU/row, mean batch {:.1}; ort at batch {}: {:.0} rows/s at \
             {:.0} us CPU/row; bare hyper {:.1} us CPU/request; throughput vane/ort {:.2}, efficiency ort/vane {:.2}",
            round.vane_rows,
            round.vane_cpu_per_row * 1e6,
            round.batch,
            round.batch.round(),
            round.ort_rows,
            round.ort_cpu_per_row * 1e6,
            round.socket_cpu_per_request * 1e6,
            round.vane_rows / round.ort_rows,
            round.ort_cpu_per_row / round.vane_cpu_per_row,
        );
        all.push(round);
    }
    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (vane_cpu, ort_cpu, socket) =
        (median(&|r| r.vane_cpu_per_row), median(&|r| r.ort_cpu_per_row), median(&|r| r.socket_cpu_per_request));
    println!(
        "\n== batching: dense, binary REST, c={CONCURRENCY}, {rounds} rounds of {seconds} s, {} cores{}",
        cores(),
        if extra.is_empty() { String::new() } else { format!(", vane serve {}", extra.join(" ")) }
    );
    println!(
        "medians: throughput vane/ort at the batch formed {:.2} (vane {:.0} rows/s, mean batch {:.1}); efficiency \
         ort/vane CPU per row {:.2}",
        median(&|r| r.vane_rows / r.ort_rows),
        median(&|r| r.vane_rows),
        median(&|r| r.batch),
        median(&|r| r.ort_cpu_per_row / r.vane_cpu_per_row),
    );
    println!(
        "vane's CPU per row {:.1} us = ONNX Runtime {:.1} + socket work (bare hyper) {:.1} + Vane's own {:.1}",
        vane_cpu * 1e6,
        ort_cpu * 1e6,
        socket * 1e6,
        (vane_cpu - ort_cpu - socket) * 1e6
    );
    Ok(())
}
