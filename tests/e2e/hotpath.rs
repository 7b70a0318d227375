//! The hot path under pressure: dynamic batching, deadlines, full queues and load shedding.

use std::sync::Arc;

use hyper::StatusCode;
use monitor::ReferenceData;
use serde_json::{json, Value};

use crate::support::{dense_zeros, model_repo, models_dir, occupy_dense_worker, TestServer};

/// `rows` rows of breast_cancer's reference data, starting at `first`.
fn breast_cancer_rows(reference: &ReferenceData, first: usize, rows: usize) -> Value {
    let data: Vec<f64> = (first..first + rows).flat_map(|r| reference.numeric_row(r).unwrap()).collect();
    json!({"inputs": [{"name": "input", "shape": [rows, 30], "datatype": "FP32", "data": data}]})
}

/// Concurrent requests of 1 to 5 rows are batched together, and each gets back exactly its own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_requests_get_back_exactly_their_own_rows() {
    // A long delay and one worker make batches form; 16 rows is the most per batch and per request.
    let repo = model_repo(&[("breast_cancer", "max_batch_size: 16\nmax_queue_delay: 20ms\nworkers: 1\n")]);
    let server = Arc::new(TestServer::start_in(repo.path(), |_| {}).await);
    let reference = ReferenceData::from_csv_path(&models_dir().join("breast_cancer/reference.csv")).unwrap();
    let requests: Vec<Value> = (0..48).map(|i| breast_cancer_rows(&reference, i * 7, 1 + i % 5)).collect();

    // Alone, each request runs as a batch of one: these answers are the reference.
    let mut alone = Vec::new();
    for request in &requests {
        let reply = server.post_json("/v2/models/breast_cancer/infer", request).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        alone.push(reply.body["outputs"].clone());
    }
    let before = server.model("breast_cancer").stats().snapshot();
    assert_eq!(before.batches, before.batched_requests, "sequential requests were not batched");

    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|request| {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.post_json("/v2/models/breast_cancer/infer", &request).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let (got, want) = (&reply.body["outputs"], &alone[i]);
        assert_eq!(got[0], want[0], "request {i}: labels");
        assert_eq!(got[1]["shape"], want[1]["shape"], "request {i}");
        for (a, b) in got[1]["data"].as_array().unwrap().iter().zip(want[1]["data"].as_array().unwrap()) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-6, "request {i}: {a} vs {b}");
        }
    }
    let after = server.model("breast_cancer").stats().snapshot();
    let (batches, requests_run) = (after.batches - before.batches, after.batched_requests - before.batched_requests);
    assert_eq!(requests_run, 48);
    assert!(batches < requests_run, "some requests shared a batch: {batches} batches for {requests_run} requests");
    assert!(after.largest_batch_rows <= 16, "a batch exceeded max_batch_size: {}", after.largest_batch_rows);
}

/// A lone request to a model that runs in microseconds runs on the thread that decoded it (no hop to a worker
/// thread), with exactly a worker's answer; `inline_max_run: 0s` keeps every run on the workers, and a model whose
/// runs take longer than the limit never runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_to_a_tiny_model_runs_on_its_own_thread_with_a_workers_answer() {
    // A generous limit, so an unoptimised build on a busy machine stays under it; dense's runs take over 100 us.
    let inline_repo = model_repo(&[
        ("breast_cancer", "inline_max_run: 1ms\n"),
        ("dense", "max_batch_size: 0\ninline_max_run: 20us\n"),
    ]);
    let worker_repo = model_repo(&[("breast_cancer", "inline_max_run: 0s\n")]);
    let (inline, workers) = (
        TestServer::start_in(inline_repo.path(), |_| {}).await,
        TestServer::start_in(worker_repo.path(), |_| {}).await,
    );
    let reference = ReferenceData::from_csv_path(&models_dir().join("breast_cancer/reference.csv")).unwrap();
    for i in 0..20 {
        let request = breast_cancer_rows(&reference, i, 1 + i % 3);
        let (a, b) = (
            inline.post_json("/v2/models/breast_cancer/infer", &request).await,
            workers.post_json("/v2/models/breast_cancer/infer", &request).await,
        );
        assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK), "{} / {}", a.body, b.body);
        assert_eq!(a.body["outputs"], b.body["outputs"], "request {i}: on the request's thread vs on a worker");
    }
    let (on_own, on_workers) =
        (inline.model("breast_cancer").stats().snapshot(), workers.model("breast_cancer").stats().snapshot());
    assert_eq!((on_own.inline_runs, on_own.batches), (20, 20), "every lone request ran on its own thread");
    assert_eq!((on_workers.inline_runs, on_workers.batches), (0, 20), "inline_max_run: 0s keeps runs on the workers");

    let dense = inline.model("dense");
    assert!(dense.stats().run_estimate() > std::time::Duration::from_micros(20), "dense takes longer than its limit");
    for _ in 0..3 {
        assert_eq!(inline.post_json("/v2/models/dense/infer", &dense_zeros(1)).await.status, StatusCode::OK);
    }
    let stats = dense.stats().snapshot();
    assert_eq!((stats.inline_runs, stats.batches), (0, 3));
    inline.stop().await;
    workers.stop().await;
}

/// On its own thread too, a request whose deadline passed before it could run gets 504 and never runs.
#[tokio::test]
async fn a_lone_request_whose_deadline_passed_gets_504_and_never_runs_on_its_own_thread() {
    let repo = model_repo(&[("breast_cancer", "inline_max_run: 1ms\n")]);
    let server = TestServer::start_in(repo.path(), |_| {}).await;
    let model = server.model("breast_cancer");
    let mut request = crate::support::breast_cancer_row();
    // One microsecond from arrival: gone before decoding ends.
    request["parameters"] = json!({"timeout": 1});
    let reply = server.post_json("/v2/models/breast_cancer/infer", &request).await;
    reply.assert_error(StatusCode::GATEWAY_TIMEOUT, &["deadline passed before model 'breast_cancer'", "not run"]);
    let stats = model.stats().snapshot();
    assert_eq!((stats.batches, stats.inline_runs), (0, 0), "the expired request did not run");
    request["parameters"] = json!({"timeout": 10_000_000});
    assert_eq!(server.post_json("/v2/models/breast_cancer/infer", &request).await.status, StatusCode::OK);
    assert_eq!(model.stats().snapshot().inline_runs, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_request_over_max_batch_size_is_400() {
    let repo = model_repo(&[("breast_cancer", "max_batch_size: 4\n")]);
    let server = TestServer::start_in(repo.path(), |_| {}).await;
    let reference = ReferenceData::from_csv_path(&models_dir().join("breast_cancer/reference.csv")).unwrap();
    let reply = server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_rows(&reference, 0, 5)).await;
    reply.assert_error(
        StatusCode::BAD_REQUEST,
        &["input 'input' has 5 rows", "at most 4 per request (its max_batch_size)"],
    );
    let reply = server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_rows(&reference, 0, 4)).await;
    assert_eq!(reply.status, StatusCode::OK);
    server.stop().await;
}

/// One worker, no batching: a slow request holds the worker while others queue behind it.
fn one_slow_worker(queue_capacity: usize) -> tempfile::TempDir {
    model_repo(&[("dense", &format!("max_batch_size: 0\nworkers: 1\nqueue_capacity: {queue_capacity}\n"))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_deadline_passes_in_the_queue_gets_504_and_never_runs() {
    let repo = one_slow_worker(8);
    let server = TestServer::start_in(repo.path(), |_| {}).await;
    let model = server.model("dense");
    let slow = occupy_dense_worker(&server).await;

    let mut hurried = dense_zeros(1);
    hurried["parameters"] = json!({"timeout": 1000});
    let reply = server.post_json("/v2/models/dense/infer", &hurried).await;
    reply.assert_error(
        StatusCode::GATEWAY_TIMEOUT,
        &["deadline passed before model 'dense' version 1 could run it", "not run"],
    );

    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    // The queue is FIFO: once this later request has run, the expired one has been taken off the queue.
    assert_eq!(server.post_json("/v2/models/dense/infer", &dense_zeros(1)).await.status, StatusCode::OK);
    let stats = model.stats().snapshot();
    assert_eq!((stats.batches, stats.rows), (2, 1001), "the expired request did not run");
}

#[tokio::test]
async fn a_timeout_parameter_that_is_not_a_number_is_400() {
    let server = TestServer::start().await;
    let mut request = crate::support::breast_cancer_row();
    request["parameters"] = json!({"timeout": "soon"});
    let reply = server.post_json("/v2/models/breast_cancer/infer", &request).await;
    reply.assert_error(StatusCode::BAD_REQUEST, &["parameter 'timeout': must be a whole number of microseconds"]);
    server.stop().await;
}

/// A full queue answers 503 with Retry-After at once, accepted requests succeed, the queue never grows past its
/// capacity, and the server serves normally once the load is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_at_once_and_the_server_recovers() {
    let repo = one_slow_worker(2);
    let server = TestServer::start_in(repo.path(), |_| {}).await;
    let model = server.model("dense");
    let slow = occupy_dense_worker(&server).await;

    let burst: Vec<_> = (0..12)
        .map(|_| {
            let client = server.client_only();
            tokio::spawn(async move { client.post_json("/v2/models/dense/infer", &dense_zeros(1)).await })
        })
        .collect();
    let mut refused = 0;
    for task in burst {
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::OK => assert_eq!(reply.body["outputs"][0]["shape"], json!([1, 10])),
            StatusCode::SERVICE_UNAVAILABLE => {
                reply.assert_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &["model 'dense' version 1 is at capacity (queue full)"],
                );
                assert_eq!(reply.headers["retry-after"], "1");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    // At most 2 wait behind the slow one; the others were refused while it still ran.
    assert!(refused >= 12 - 2 - 1, "{refused} of 12 refused");
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert!(model.stats().snapshot().queue_high_water <= 2, "queue stayed within its capacity");
    for _ in 0..3 {
        assert_eq!(server.post_json("/v2/models/dense/infer", &dense_zeros(1)).await.status, StatusCode::OK);
    }
}

/// Past the global concurrency limit, requests are shed with 503 instead of waiting; probes are never shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_requests_are_shed_with_503() {
    let repo = one_slow_worker(8);
    let server = TestServer::start_in(repo.path(), |config| {
        config.limits.max_concurrent_requests = std::num::NonZeroUsize::MIN;
    })
    .await;
    let slow = occupy_dense_worker(&server).await;
    let reply = server.get("/v2/models/dense").await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, &["server is at capacity"]);
    assert_eq!(reply.headers["retry-after"], "1");
    for probe in ["/v2/health/live", "/v2/health/ready", "/metrics", "/api/v1/status"] {
        assert_eq!(server.get(probe).await.status, StatusCode::OK, "{probe} is never shed");
    }
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert_eq!(server.get("/v2/models/dense").await.status, StatusCode::OK);
}
