//! OpenTelemetry traces, received by an OTLP/gRPC collector running in the test (the collector's own generated
//! service, decoding what Vane sends): the span tree of a request, the caller's `traceparent` as its parent, the
//! batch links, sampling, gRPC requests, and export that never holds a request up when the collector stalls.

use std::collections::HashMap;
use std::time::Duration;

use hyper::{Method, Request, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::support::{breast_cancer_row, dense_zeros, model_repo, TestServer};

/// An OTLP trace receiver on loopback. Spans arrive on `spans`; a stalling one never answers an export.
struct Collector {
    endpoint: String,
    spans: mpsc::UnboundedReceiver<Span>,
    task: tokio::task::JoinHandle<()>,
}

struct Receiver {
    spans: mpsc::UnboundedSender<Span>,
    stall: bool,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.stall {
            std::future::pending::<()>().await;
        }
        for resource in request.into_inner().resource_spans {
            let service = resource.resource.iter().flat_map(|r| &r.attributes).find(|a| a.key == "service.name");
            assert_eq!(service.and_then(|a| string_value(a.value.as_ref()?)), Some("vane".to_owned()));
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                let _ = self.spans.send(span);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    async fn start(stall: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (tx, spans) = mpsc::unbounded_channel();
        let service = TraceServiceServer::new(Receiver { spans: tx, stall });
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Self { endpoint, spans, task }
    }

    /// Receives spans until `done` says the collected set is complete (at most 30 s: the exporter sends within a
    /// second).
    async fn collect_until(&mut self, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let mut spans = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&spans) {
            match tokio::time::timeout_at(deadline, self.spans.recv()).await {
                Ok(Some(span)) => spans.push(span),
                _ => panic!("spans did not arrive; got {:#?}", summary(&spans)),
            }
        }
        spans
    }
}

/// A W3C `traceparent` for a fresh trace with the given sampled flag; returns it with its trace and parent ids.
fn traceparent(seed: u8, sampled: bool) -> (String, Vec<u8>, Vec<u8>) {
    let trace_id: Vec<u8> = (0..16).map(|i| seed.wrapping_mul(31).wrapping_add(i * 7 + 1)).collect();
    let parent_id: Vec<u8> = (0..8).map(|i| seed.wrapping_add(i * 13 + 3)).collect();
    let header =
        format!("00-{}-{}-{}", hex::encode(&trace_id), hex::encode(&parent_id), if sampled { "01" } else { "00" });
    (header, trace_id, parent_id)
}

fn string_value(value: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| string_value(a.value.as_ref()?))
}

fn summary(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} trace={} span={}", s.name, hex::encode(&s.trace_id), hex::encode(&s.span_id)))
        .collect()
}

fn in_trace<'a>(spans: &'a [Span], trace_id: &[u8]) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// A trace is complete when it has the server span and its three children.
fn complete(spans: &[Span], trace_id: &[u8]) -> bool {
    in_trace(spans, trace_id).len() >= 4
}

async fn post_traced(server: &TestServer, path: &str, body: &Value, traceparent: &str) -> StatusCode {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", server.base()))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap();
    server.raw(request).await.status
}

/// Checks the tree of one request's trace and returns its spans by name.
fn check_tree<'a>(spans: &'a [Span], trace_id: &[u8], caller_span: &[u8]) -> HashMap<&'a str, &'a Span> {
    let trace = in_trace(spans, trace_id);
    let by_name: HashMap<&str, &Span> = trace.iter().map(|s| (s.name.as_str(), *s)).collect();
    assert_eq!(by_name.len(), trace.len(), "one span of each kind: {:?}", summary(spans));
    let server = by_name["POST /v2/models/{model_name}/infer"];
    let (queue, batch, inference) = (by_name["vane.queue"], by_name["vane.batch"], by_name["vane.inference"]);
    // The caller's span is the server span's parent; the rest hang below it.
    assert_eq!(server.parent_span_id, caller_span, "the server span's parent is the caller's traceparent");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(queue.parent_span_id, server.span_id);
    assert_eq!(batch.parent_span_id, server.span_id);
    assert_eq!(inference.parent_span_id, batch.span_id);
    // Each child lies inside its parent, and the queue wait ends where the batch begins.
    let within = |child: &Span, parent: &Span| {
        child.start_time_unix_nano >= parent.start_time_unix_nano
            && child.end_time_unix_nano <= parent.end_time_unix_nano
            && child.start_time_unix_nano <= child.end_time_unix_nano
    };
    assert!(within(queue, server) && within(batch, server) && within(inference, batch), "{trace:#?}");
    assert_eq!(queue.end_time_unix_nano, batch.start_time_unix_nano);
    by_name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_request_exports_its_span_tree_under_the_callers_traceparent() {
    let mut collector = Collector::start(false).await;
    let endpoint = collector.endpoint.clone();
    // Sample rate 0: only a caller's sampled traceparent makes a trace (parent-based sampling).
    let server = TestServer::start_with(|c| {
        c.tracing.endpoint = Some(endpoint);
        c.tracing.sample_rate = 0.0;
    })
    .await;

    let (unsampled, unsampled_trace, _) = traceparent(1, false);
    let path = "/v2/models/breast_cancer/infer";
    assert_eq!(post_traced(&server, path, &breast_cancer_row(), &unsampled).await, StatusCode::OK);
    assert_eq!(server.post_json(path, &breast_cancer_row()).await.status, StatusCode::OK, "no traceparent");
    // An invalid traceparent (all-zero trace id, sampled flag set) is a root like no header: it cannot force a trace.
    let invalid = format!("00-{}-{}-01", "0".repeat(32), "ab".repeat(8));
    assert_eq!(post_traced(&server, path, &breast_cancer_row(), &invalid).await, StatusCode::OK);
    let (header, trace_id, caller) = traceparent(2, true);
    assert_eq!(post_traced(&server, path, &breast_cancer_row(), &header).await, StatusCode::OK);
    let spans = collector.collect_until(|s| complete(s, &trace_id)).await;

    let tree = check_tree(&spans, &trace_id, &caller);
    let server_span = tree["POST /v2/models/{model_name}/infer"];
    assert_eq!(attribute(server_span, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(server_span, "http.route").as_deref(), Some("/v2/models/{model_name}/infer"));
    assert_eq!(attribute(server_span, "vane.model").as_deref(), Some("breast_cancer"));
    assert_eq!(attribute(server_span, "vane.model.version").as_deref(), Some("2"), "the latest version serves");
    assert_eq!(attribute(tree["vane.batch"], "vane.batch.requests").as_deref(), Some("1"));
    // Spans leave in the order they end: anything of the two unsampled requests would have come first.
    assert!(in_trace(&spans, &unsampled_trace).is_empty(), "an unsampled traceparent was traced");
    assert_eq!(spans.len(), 4, "only the sampled caller's request was traced: {:?}", summary(&spans));

    // A failed request is traced too, as the caller's 4xx (not a server error).
    let (header, trace_id, _) = traceparent(3, true);
    assert_eq!(
        post_traced(&server, "/v2/models/nope/infer", &breast_cancer_row(), &header).await,
        StatusCode::NOT_FOUND
    );
    let spans = collector.collect_until(|s| !in_trace(s, &trace_id).is_empty()).await;
    let failed = in_trace(&spans, &trace_id)[0];
    assert_eq!(attribute(failed, "http.response.status_code").as_deref(), Some("404"));
    assert_eq!(attribute(failed, "error.type").as_deref(), Some("404"));
    assert!(failed.status.as_ref().is_none_or(|s| s.code != 2), "a 404 is not a server error: {:?}", failed.status);
    server.stop().await;
    collector.task.abort();
}

/// Requests that ran in one batch each get their own tree, with their batch span linked to the other members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_batched_together_link_their_batch_spans() {
    let mut collector = Collector::start(false).await;
    let endpoint = collector.endpoint.clone();
    // One worker, batches of 4 rows, and a batcher that waits up to 30 s for a batch to fill while a request is on
    // its way: the test holds one "on its way" mark, so the four requests form one batch whatever their timing.
    let repo = model_repo(&[("dense", "max_batch_size: 4\nmax_queue_delay: 30s\nworkers: 1\n")]);
    let server = std::sync::Arc::new(
        TestServer::start_in(repo.path(), |c| {
            c.tracing.endpoint = Some(endpoint);
            c.tracing.sample_rate = 0.0;
        })
        .await,
    );
    let model = server.model("dense");
    let on_its_way = model.incoming();
    let parents: Vec<_> = (10..14).map(|seed| traceparent(seed, true)).collect();
    let tasks: Vec<_> = parents
        .iter()
        .map(|(header, _, _)| {
            let (server, header) = (std::sync::Arc::clone(&server), header.clone());
            tokio::spawn(async move { post_traced(&server, "/v2/models/dense/infer", &dense_zeros(1), &header).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let spans = collector.collect_until(|s| parents.iter().all(|(_, trace, _)| complete(s, trace))).await;

    let servers: Vec<&Span> = parents
        .iter()
        .map(|(_, trace, caller)| check_tree(&spans, trace, caller)["POST /v2/models/{model_name}/infer"])
        .collect();
    for (_, trace, caller) in &parents {
        let tree = check_tree(&spans, trace, caller);
        let batch = tree["vane.batch"];
        assert_eq!(attribute(batch, "vane.batch.requests").as_deref(), Some("4"), "the four ran as one batch");
        assert_eq!(attribute(batch, "vane.batch.rows").as_deref(), Some("4"));
        // Linked to the other three requests' server spans, in their own traces.
        let mut linked: Vec<(&[u8], &[u8])> = batch.links.iter().map(|l| (&l.trace_id[..], &l.span_id[..])).collect();
        let mut others: Vec<(&[u8], &[u8])> =
            servers.iter().filter(|s| s.trace_id != *trace).map(|s| (&s.trace_id[..], &s.span_id[..])).collect();
        linked.sort();
        others.sort();
        assert_eq!(linked, others, "batch links of trace {}", hex::encode(trace));
        // The inference ran once for all four: the same interval in every trace (each request maps the worker's
        // monotonic instants to wall-clock time from its own arrival, so they may differ by the clock reads).
        let first = check_tree(&spans, &parents[0].1, &parents[0].2)["vane.inference"];
        let mine = tree["vane.inference"];
        let close = |a: u64, b: u64| a.abs_diff(b) < 100_000;
        assert!(
            close(mine.start_time_unix_nano, first.start_time_unix_nano)
                && close(mine.end_time_unix_nano, first.end_time_unix_nano),
            "one run: {mine:?} vs {first:?}"
        );
    }
    drop(on_its_way);
    drop(model);
    std::sync::Arc::into_inner(server).expect("the tasks are done").stop().await;
    collector.task.abort();
}

/// gRPC requests carry `traceparent` in their metadata, as OpenTelemetry's gRPC instrumentations send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_request_is_traced_under_the_traceparent_in_its_metadata() {
    use gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use gateway::grpc::proto::model_infer_request::InferInputTensor;
    use gateway::grpc::proto::{InferTensorContents, ModelInferRequest};

    let mut collector = Collector::start(false).await;
    let endpoint = collector.endpoint.clone();
    let server = TestServer::start_with(|c| {
        c.grpc_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tracing.endpoint = Some(endpoint);
        c.tracing.sample_rate = 0.0;
    })
    .await;
    let addr = server.server.grpc_addr().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = GrpcInferenceServiceClient::new(channel);
    let row = breast_cancer_row();
    let data: Vec<f32> =
        row["inputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let mut request = tonic::Request::new(ModelInferRequest {
        model_name: "breast_cancer".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 30],
            contents: Some(InferTensorContents { fp32_contents: data, ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    });
    let (header, trace_id, caller) = traceparent(20, true);
    request.metadata_mut().insert("traceparent", header.parse().unwrap());
    client.model_infer(request).await.expect("gRPC inference succeeds");

    let spans = collector.collect_until(|s| complete(s, &trace_id)).await;
    let trace = in_trace(&spans, &trace_id);
    let server_span =
        trace.iter().find(|s| s.name == "inference.GRPCInferenceService/ModelInfer").expect("server span");
    assert_eq!(server_span.parent_span_id, caller);
    assert_eq!(attribute(server_span, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attribute(server_span, "rpc.grpc.status_code").as_deref(), Some("0"));
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    for child in ["vane.queue", "vane.batch", "vane.inference"] {
        assert!(names.contains(&child), "{child} in {names:?}");
    }
    server.stop().await;
    collector.task.abort();
}

/// A collector that takes exports and never answers: requests are served as fast as ever, and the spans that find
/// the export queue full are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_never_holds_a_request_up_and_drops_are_counted() {
    let collector = Collector::start(true).await;
    let endpoint = collector.endpoint.clone();
    let server = TestServer::start_with(|c| {
        c.tracing.endpoint = Some(endpoint);
        c.tracing.sample_rate = 1.0;
        c.tracing.queue_capacity = 8;
    })
    .await;
    for _ in 0..50 {
        let started = std::time::Instant::now();
        assert_eq!(
            server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await.status,
            StatusCode::OK
        );
        // An upper bound far below the exporter's 5 s timeout: a request never waits for export.
        assert!(started.elapsed() < Duration::from_secs(2), "a request waited {:?}", started.elapsed());
    }
    let metrics = server.get("/metrics").await.body.as_str().unwrap().to_owned();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    // 50 requests of 4 spans each; at most the queue's 8 can be waiting or in the stalled export.
    // Every span is dropped, failed (an export that timed out) or among the at most 8 still waiting.
    let (dropped, failed) = (value("vane_trace_spans_dropped_total"), value("vane_trace_spans_failed_total"));
    assert!(dropped + failed >= 200.0 - 8.0, "dropped {dropped} and failed {failed} of 200 spans");
    assert!(dropped > 0.0);
    assert_eq!(value("vane_trace_spans_exported_total"), 0.0);
    // Shutdown waits for the stalled export at most the exporter's 5 s timeout.
    let stopping = std::time::Instant::now();
    server.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(15), "shutdown took {:?}", stopping.elapsed());
    collector.task.abort();
}
