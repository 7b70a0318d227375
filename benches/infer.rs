//! What the gateway adds on top of ONNX Runtime, measured in one run so the ratios hold on a noisy machine.
//!
//! For one breast_cancer row, a 6-row breast_cancer batch and a 64-row digits batch:
//! - `raw_ort`: `Session::run` on a prepared tensor, in this thread (the floor);
//! - `router`: the V2 router in-process (JSON decode, one registry load, signature check, queue to the model's
//!   worker thread and back on a oneshot, JSON encode), no socket;
//! - `http`: a real HTTP/1.1 request over loopback to a running gateway (one keep-alive connection).
//!
//! Run: `cargo bench --bench infer`. Criterion prints the time per iteration for each; the ratios to `raw_ort` are
//! what to compare across machines.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway::registry::Registry;
use gateway::routes::AppState;
use gateway::stack::Limits;
use gateway::ServeConfig;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ort::session::Session;
use ort::value::Tensor;
use serde_json::{json, Value};

#[path = "common/mod.rs"]
mod common;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// `rows` rows of the model's fixture inputs (repeated as needed) as a V2 JSON body and as a flat vector.
fn case(key: &str, rows: usize, features: usize) -> (Bytes, Vec<f32>) {
    let text = std::fs::read_to_string(models_dir().join("expected_outputs.json")).unwrap();
    let fixtures: Value = serde_json::from_str(&text).unwrap();
    let data: Vec<f32> =
        fixtures[key]["inputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let flat: Vec<f32> = data.iter().copied().cycle().take(rows * features).collect();
    let body = json!({"inputs": [{"name": "input", "shape": [rows, features], "datatype": "FP32", "data": flat}]});
    (Bytes::from(serde_json::to_vec(&body).unwrap()), flat)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server =
        runtime.block_on(gateway::start(ServeConfig::new("127.0.0.1:0".parse().unwrap(), models_dir()))).unwrap();
    let registry: Arc<Registry> = Arc::clone(server.registry());
    let state = Arc::new(AppState::new(registry, &Limits::default()));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let base = format!("http://{}", server.local_addr());
    let environment = gateway::runtime::environment().unwrap();

    // breast_cancer at 6 rows too: about the batch Vane's batcher forms for it under load (`bash benches/profile.sh`
    // reports the mean batch), so `raw_ort/6`'s time per row is ONNX Runtime's share of a request at that load.
    let cases = [
        ("breast_cancer", "breast_cancer/2", 1, 30),
        ("breast_cancer", "breast_cancer/2", 6, 30),
        ("digits", "digits/1", 64, 64),
    ];
    for (model, key, rows, features) in cases {
        let (body, flat) = case(key, rows, features);
        let uri: hyper::Uri = format!("/v2/models/{model}/infer").parse().unwrap();
        let mut group = c.benchmark_group(format!("{model}_batch{rows}"));
        group.throughput(Throughput::Elements(rows as u64));

        let mut session = Session::builder(environment)
            .unwrap()
            .with_intra_threads(1)
            .unwrap()
            .commit_from_file(models_dir().join(key).join("model.onnx"))
            .unwrap();
        group.bench_function(BenchmarkId::new("raw_ort", rows), |b| {
            b.iter(|| {
                let input = Tensor::from_array(([rows, features], flat.clone())).unwrap();
                let outputs = session.run(ort::inputs!["input" => input]).unwrap();
                outputs["probabilities"].try_extract_tensor::<f32>().unwrap().1.len()
            });
        });

        group.bench_function(BenchmarkId::new("router", rows), |b| {
            b.to_async(&runtime).iter(|| common::route_once(Arc::clone(&state), &uri, body.clone()));
        });

        let uri = format!("{base}{}", uri.path());
        group.bench_function(BenchmarkId::new("http", rows), |b| {
            b.to_async(&runtime).iter(|| {
                let request = Request::post(&uri).body(Full::new(body.clone())).unwrap();
                let client = client.clone();
                async move {
                    let response = client.request(request).await.unwrap();
                    assert!(response.status().is_success());
                    response.into_body().collect().await.unwrap().to_bytes().len()
                }
            });
        });
        group.finish();
    }
    runtime.block_on(server.stop());
}

criterion_group!(benches, bench);
criterion_main!(benches);
