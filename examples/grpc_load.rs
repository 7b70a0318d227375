//! The gRPC load client of `bash benches/grpc.sh`, in a process of its own (so it can be pinned to its own core,
//! like wrk): ModelInfer calls with raw tensor contents (batch 1, FP32) at a fixed number of calls in flight, one
//! tokio task per call over one HTTP/2 connection per 16 calls, on a single-threaded runtime. Every latency goes into
//! one hdrhistogram. Usage: `grpc_load ADDR MODEL ROW_CSV CONCURRENCY SECONDS`, where ROW_CSV is one row of
//! comma-separated numbers; prints `requests_per_second p50_us p99_us p999_us errors`.

use std::time::{Duration, Instant};

use gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use gateway::grpc::proto::model_infer_request::InferInputTensor;
use gateway::grpc::proto::ModelInferRequest;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, model, row, concurrency, seconds] = args.as_slice() else {
        anyhow::bail!("usage: grpc_load ADDR MODEL ROW_CSV CONCURRENCY SECONDS");
    };
    let row: Vec<f32> = row.split(',').map(|v| v.trim().parse()).collect::<Result<_, _>>()?;
    let (concurrency, seconds): (usize, u64) = (concurrency.parse()?, seconds.parse()?);
    let request = ModelInferRequest {
        model_name: model.clone(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, i64::try_from(row.len())?],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![row.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()],
        ..ModelInferRequest::default()
    };
    let mut channels = Vec::new();
    for _ in 0..concurrency.div_ceil(16) {
        let endpoint = tonic::transport::Channel::from_shared(format!("http://{addr}"))?;
        channels.push(endpoint.tcp_nodelay(true).connect().await?);
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = GrpcInferenceServiceClient::new(channels[i / 16].clone());
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut errors = 0u64;
            while Instant::now() < until {
                let call = Instant::now();
                match client.model_infer(request.clone()).await {
                    Ok(_) => histogram.record(u64::try_from(call.elapsed().as_micros())?)?,
                    Err(_) => errors += 1,
                }
            }
            anyhow::Ok((histogram, errors))
        }));
    }
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await??;
        histogram.add(&h)?;
        errors += e;
    }
    let rate = histogram.len() as f64 / started.elapsed().as_secs_f64();
    let quantile = |q| histogram.value_at_quantile(q);
    println!("{rate:.0} {} {} {} {errors}", quantile(0.5), quantile(0.99), quantile(0.999));
    Ok(())
}
