//! The request path's own work, without ONNX Runtime or sockets: decoding a V2 JSON body (and the same row with the
//! binary tensor extension) into checked tensors,
//! concatenating requests into a batch and splitting the outputs back, encoding the response, and the telemetry
//! each request pays (its request series; its server span at a 1% sample rate).
//!
//! Run: `cargo bench --bench hot_path`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway::infer::{batch, DataType, Signature, Tensor, TensorData, TensorSpec, Tensors};
use gateway::routes::{decode_request, encode_response, BinaryOutputs, InferResponse};
use serde_json::json;

fn signature(features: i64, outputs: &[(&str, DataType, i64)]) -> Signature {
    let spec = |name: &str, datatype, width: i64| TensorSpec {
        name: name.into(),
        datatype,
        shape: if width > 0 { vec![-1, width] } else { vec![-1] },
    };
    Signature {
        inputs: vec![spec("input", DataType::Fp32, features)],
        outputs: outputs.iter().map(|(name, datatype, width)| spec(name, *datatype, *width)).collect(),
    }
}

fn body(features: usize) -> Vec<u8> {
    // Values with the digits the reference data has (four decimals).
    let data: Vec<f64> = (0..features).map(|i| (((i * 7919) % 20000) as f64 - 10000.0) / 10000.0).collect();
    serde_json::to_vec(
        &json!({"id": "r-1", "inputs": [{"name": "input", "shape": [1, features], "datatype": "FP32", "data": data}]}),
    )
    .unwrap()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (model, features) in [("breast_cancer", 30usize), ("dense", 1024)] {
        let signature = signature(features as i64, &[("output", DataType::Fp32, 10)]);
        let body = body(features);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(BenchmarkId::new(model, body.len()), |b| {
            b.iter(|| {
                let mut request = decode_request(&body, None, Some(&signature)).unwrap();
                signature.check_inputs(&mut request.inputs).unwrap();
                request
            });
        });
        // The same row with the binary tensor extension: a JSON header, then the row as little-endian f32 bytes.
        let (binary, header_length) = binary_body(features);
        group.throughput(Throughput::Bytes(binary.len() as u64));
        group.bench_function(BenchmarkId::new(format!("{model}_binary"), binary.len()), |b| {
            b.iter(|| {
                let mut request = decode_request(&binary, Some(header_length), Some(&signature)).unwrap();
                signature.check_inputs(&mut request.inputs).unwrap();
                request
            });
        });
    }
    group.finish();
}

fn binary_body(features: usize) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [1, features], "datatype": "FP32",
        "parameters": {"binary_data_size": 4 * features}}]}))
    .unwrap();
    let header_length = body.len();
    for i in 0..features {
        body.extend_from_slice(&((i as f32 - 500.0) / 1000.0).to_le_bytes());
    }
    (body, header_length)
}

fn batching(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    let requests: Vec<Tensors> = (0..64)
        .map(|i| {
            let input = Tensor {
                name: "input".into(),
                shape: [1, 1024][..].into(),
                data: TensorData::Fp32(vec![i as f32; 1024]),
            };
            Tensors::from_elem(input, 1)
        })
        .collect();
    let output = Tensor { name: "output".into(), shape: vec![64, 10].into(), data: TensorData::Fp32(vec![0.5; 640]) };
    group.throughput(Throughput::Elements(64));
    group.bench_function("dense_concat_64x1", |b| b.iter(|| batch::concat(requests.clone())));
    group.bench_function("dense_split_64x1", |b| {
        b.iter(|| (0..64).map(|i| batch::slice_rows(&output, i..i + 1, 64).unwrap()).collect::<Vec<_>>());
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let breast_cancer = vec![
        Tensor { name: "label".into(), shape: vec![1].into(), data: TensorData::Int64(vec![1]) },
        Tensor {
            name: "probabilities".into(),
            shape: vec![1, 2].into(),
            data: TensorData::Fp32(vec![0.013_570_726, 0.986_429_3]),
        },
    ];
    let dense = vec![Tensor {
        name: "output".into(),
        shape: vec![1, 10].into(),
        data: TensorData::Fp32((0..10).map(|i| i as f32 * 0.731 - 2.2).collect()),
    }];
    for (model, outputs) in [("breast_cancer", breast_cancer), ("dense", dense)] {
        group.bench_function(model, |b| {
            b.iter(|| {
                let response = InferResponse { model_name: model, model_version: "1", id: Some("r-1") };
                encode_response(&response, &outputs, &BinaryOutputs::default()).0
            });
        });
    }
    group.finish();
}

/// What one batch-of-one request pays for telemetry: the request series (a counter and a duration histogram on the
/// request path, the queue, inference and batch-rows histograms in the worker) and, with tracing on at 1%, opening and
/// finishing its server span (99 of 100 are an unsampled decision; the sampled one is exported to a collector that is
/// not there, which costs the exporter thread, not the request).
fn telemetry(c: &mut Criterion) {
    use gateway::metrics::request_series::{Protocol, RequestMetrics};
    use gateway::traces::{HeaderExtractor, Outcome, TraceConfig, Tracing};
    let mut group = c.benchmark_group("telemetry_per_request");
    let series = RequestMetrics::default().for_version("breast_cancer", "2");
    group.bench_function("request_series", |b| {
        b.iter(|| {
            series.observe_queued(std::hint::black_box(0.000_2));
            series.observe_run(1, std::hint::black_box(0.000_05));
            series.observe(Protocol::Http, Ok(()), std::hint::black_box(0.000_4));
        });
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = TraceConfig { endpoint: Some("http://127.0.0.1:9".into()), sample_rate: 0.01, queue_capacity: 2048 };
    let tracing = runtime.block_on(async { Tracing::start(&config) }).unwrap();
    let headers = http::HeaderMap::new();
    group.bench_function("server_span_at_1_percent", |b| {
        b.iter(|| {
            let trace = tracing.start_request(
                &HeaderExtractor(&headers),
                "POST /v2/models/{model_name}/infer",
                Vec::new,
                std::time::Instant::now(),
            );
            trace.finish(Outcome { status: 200, grpc_code: None, model: Some(("breast_cancer", 2)), error: None });
        });
    });
    group.finish();
}

criterion_group!(benches, decode, batching, encode, telemetry);
criterion_main!(benches);
