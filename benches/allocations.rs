//! Heap allocations per request on the hot path, counted with dhat.
//!
//! `cargo bench --bench allocations` sends 1,000 batch-1 requests through the V2 router in-process (JSON decode,
//! one registry load, signature check, the run on the request's own thread or the queue to the model's worker
//! thread and back, JSON encode) and prints the
//! allocations and bytes per request (`VANE_DHAT_FILE=path` writes the sites too). Counted: every allocation through Rust's allocator, on every thread; not
//! counted: ONNX Runtime's own C++ allocations inside `Session::run`. A separate binary from the timing benches,
//! because dhat's bookkeeping would distort their times.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway::routes::AppState;
use gateway::stack::Limits;
use gateway::ServeConfig;
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn main() {
    // `cargo test --benches` runs this without `--bench`: build and start only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // `VANE_DHAT_FILE=path` also writes dhat's profile there (every allocation site with its backtrace and count,
    // for dh_view.html or a script): what the counts below are made of.
    let _profiler = match std::env::var_os("VANE_DHAT_FILE") {
        Some(path) => dhat::Profiler::builder().file_name(path).trim_backtraces(Some(40)).build(),
        None => dhat::Profiler::builder().testing().build(),
    };
    // The two paths a batch-1 request can take: run on the thread that decoded it (a lone request to a model of a
    // few microseconds, breast_cancer; forced here, as dhat's bookkeeping slows the runs past the default limit),
    // and queued to a worker thread (every other case).
    let paths = [
        ("on its own thread", Duration::from_secs(1), &[("breast_cancer", 30usize)][..]),
        ("through a worker", Duration::ZERO, &[("breast_cancer", 30), ("dense", 1024)][..]),
    ];
    for (label, inline_max_run, cases) in paths {
        let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), models.clone());
        config.poll_interval = None;
        config.models.inline_max_run = inline_max_run;
        let server = runtime.block_on(gateway::start(config)).unwrap();
        let state = Arc::new(AppState::new(Arc::clone(server.registry()), &Limits::default()));
        for &(model, features) in cases {
            let data: Vec<f64> = (0..features).map(|i| i as f64 / 7.0).collect();
            let body = Bytes::from(
                serde_json::to_vec(
                    &json!({"inputs": [{"name": "input", "shape": [1, features], "datatype": "FP32", "data": data}]}),
                )
                .unwrap(),
            );
            let uri: hyper::Uri = format!("/v2/models/{model}/infer").parse().unwrap();
            let call = || common::route_once(Arc::clone(&state), &uri, body.clone());
            runtime.block_on(call());
            let before = dhat::HeapStats::get();
            let n = 1000u64;
            runtime.block_on(async {
                for _ in 0..n {
                    call().await;
                }
            });
            let after = dhat::HeapStats::get();
            println!(
                "{model:<14} batch 1, {label:<17}: {:.1} allocations and {:.0} bytes per request (Rust heap, all threads)",
                (after.total_blocks - before.total_blocks) as f64 / n as f64,
                (after.total_bytes - before.total_bytes) as f64 / n as f64
            );
        }
        runtime.block_on(server.stop());
    }
}
