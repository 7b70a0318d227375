//! OpenTelemetry traces of inference requests, exported over OTLP/gRPC; off unless an endpoint is configured.
//!
//! One trace per sampled request (W3C `traceparent` from the caller is its parent, and its sampled flag is
//! followed):
//!
//! ```text
//! POST /v2/models/{model}/infer            server span, REST (gRPC: inference.GRPCInferenceService/ModelInfer)
//! ├── vane.queue                           queued in the model version's batcher until a worker took it
//! └── vane.batch                           the batch it ran in, from forming to its rows split back;
//!     │                                    linked to the other traced requests of the same batch
//!     └── vane.inference                   ONNX Runtime's run of the whole batch
//! ```
//!
//! The child spans are made on the request's task after the answer, from instants the worker recorded: the worker
//! thread pays for reading the clock and one `Arc` per batch with a traced request, nothing per untraced request.
//!
//! Export never blocks a request: a finished span is offered to a bounded queue drained by one exporter thread (the
//! SDK's `BatchSpanProcessor`); a span that finds the queue full is dropped and counted
//! (`vane_trace_spans_dropped_total`), as are spans the collector did not take (`vane_trace_spans_failed_total`).

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// How traces are sampled and where they go.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The OTLP/gRPC endpoint of a collector, e.g. `http://otel-collector:4317`; `None`: tracing is off.
    pub endpoint: Option<String>,
    /// The share of requests without a sampled parent that are traced (0 to 1). A caller's `traceparent` decides
    /// for its own requests (parent-based sampling), as every OpenTelemetry SDK does.
    pub sample_rate: f64,
    /// Finished spans that may wait for export; more are dropped and counted.
    pub queue_capacity: usize,
}

/// The default share of requests traced: one in a hundred is enough to see where time goes under load, and costs
/// little (see benches/README.md).
pub const DEFAULT_SAMPLE_RATE: f64 = 0.01;

/// The default export queue: the SDK's default, about a second of spans at 500 traced requests a second.
pub const DEFAULT_QUEUE_CAPACITY: usize = 2048;

/// The request path's tracer; cheap to clone. Disabled (no endpoint), every call is a branch on `None`.
#[derive(Clone, Default)]
pub struct Tracing {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    gate: Arc<Gate>,
    /// The share of requests without a caller's trace that start one (the SDK samples every such root it is asked
    /// to start; this decides which it is asked for).
    sample_rate: f64,
}

/// Counts spans between being finished and the end of their export, and refuses them past the capacity.
#[derive(Debug)]
struct Gate {
    in_flight: AtomicUsize,
    capacity: usize,
    dropped: Counter,
    exported: Counter,
    failed: Counter,
    /// When the last export failure was logged (seconds since the Unix epoch), so a collector that is down logs
    /// once a minute, not once a batch.
    last_failure_log: AtomicU64,
}

/// The spans of one request. Holds the server span while it is open; `finish` ends it.
pub struct RequestTrace {
    /// The context holding the request's server span, when it is sampled.
    cx: Option<Context>,
    /// The trace the request belongs to, for log lines: its own when sampled, else the caller's if it sent one.
    ids: Option<TraceIds>,
    tracer: Option<SdkTracer>,
    /// The request's arrival on both clocks: spans carry wall-clock times, the path measures with `Instant`.
    anchor: (Instant, SystemTime),
}

/// A trace and span id pair, shown as W3C hex in log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    /// 32 hex digits.
    pub trace_id: opentelemetry::trace::TraceId,
    /// 16 hex digits.
    pub span_id: opentelemetry::trace::SpanId,
}

/// What a worker recorded about the batch a traced request ran in. Shared by the batch's traced requests.
#[derive(Debug)]
pub struct BatchTrace {
    /// ONNX Runtime's run of the batch.
    pub run: (Instant, Instant),
    /// When the answers were ready to send back (rows split per request).
    pub finished: Instant,
    /// Requests in the batch.
    pub requests: usize,
    /// Rows in the batch.
    pub rows: usize,
    /// The server spans of the batch's traced requests (at most [`MAX_BATCH_LINKS`]).
    pub members: Vec<SpanContext>,
}

/// One traced request's part of a batch: when a worker took it off the queue, and the batch.
#[derive(Debug)]
pub struct JobTrace {
    /// When the worker took the request off the queue (the end of its queue wait).
    pub dequeued: Instant,
    /// The batch it joined.
    pub batch: Arc<BatchTrace>,
}

/// Links from a request's batch span to its batch-mates: enough to find them, bounded so a batch of 128 traced
/// requests does not carry 128 x 127 links.
pub const MAX_BATCH_LINKS: usize = 16;

/// How a request ended, for its server span.
pub struct Outcome<'a> {
    /// The HTTP status (REST) or its gRPC equivalent's HTTP status.
    pub status: u16,
    /// The gRPC status code, for gRPC requests.
    pub grpc_code: Option<i32>,
    /// The model and version that served it, when it got that far.
    pub model: Option<(&'a str, u64)>,
    /// The error shown to the caller, for failures (formatted only for a sampled request).
    pub error: Option<&'a dyn fmt::Display>,
}

// === impl Tracing ===

impl Tracing {
    /// Tracing off: no spans, no exporter.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Starts the exporter when `config` has an endpoint. Must run inside the tokio runtime (the gRPC channel lives
    /// there); the export itself runs on the SDK's own thread.
    pub fn start(config: &TraceConfig) -> Result<Self, TraceError> {
        if !(0.0..=1.0).contains(&config.sample_rate) {
            return Err(TraceError(format!(
                "the trace sample rate must be between 0 and 1, got {}",
                config.sample_rate
            )));
        }
        let Some(endpoint) = &config.endpoint else { return Ok(Self::disabled()) };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TraceError(format!("OTLP exporter for {endpoint}: {e}")))?;
        let capacity = config.queue_capacity.max(1);
        let gate = Arc::new(Gate {
            in_flight: AtomicUsize::new(0),
            capacity,
            dropped: Counter::default(),
            exported: Counter::default(),
            failed: Counter::default(),
            last_failure_log: AtomicU64::new(0),
        });
        let batch = BatchSpanProcessor::builder(CountingExporter { inner: exporter, gate: Arc::clone(&gate) })
            .with_batch_config(
                BatchConfigBuilder::default()
                    // The gate refuses spans before this queue could fill, so every drop is counted there.
                    .with_max_queue_size(capacity)
                    .with_max_export_batch_size(512.min(capacity))
                    // Spans reach the collector within a second; a busy server fills batches sooner.
                    .with_scheduled_delay(Duration::from_secs(1))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(GatedProcessor { inner: batch, gate: Arc::clone(&gate) })
            // Roots are sampled in `start_request`, before the SDK is asked for anything: an unsampled request then
            // costs one random number instead of a span builder, two trace ids, a sampler and a dropped span.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                Resource::builder()
                    .with_service_name("vane")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("vane");
        tracing::info!(%endpoint, sample_rate = config.sample_rate, "exporting traces over OTLP");
        Ok(Self { inner: Some(Arc::new(Inner { tracer, provider, gate, sample_rate: config.sample_rate })) })
    }

    /// Whether spans are made at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Registers the export counters (with tracing off they stay at zero, so dashboards need no special case).
    pub fn register(&self, registry: &mut Registry) {
        let (dropped, exported, failed) = match &self.inner {
            Some(inner) => (inner.gate.dropped.clone(), inner.gate.exported.clone(), inner.gate.failed.clone()),
            None => Default::default(),
        };
        registry.register(
            "vane_trace_spans_dropped",
            "Finished spans dropped because the export queue was full",
            dropped,
        );
        registry.register("vane_trace_spans_exported", "Spans the OTLP collector accepted", exported);
        registry.register("vane_trace_spans_failed", "Spans whose export to the OTLP collector failed", failed);
    }

    /// Opens the server span of a request that arrived at `arrived`, child of the caller's `traceparent` in
    /// `headers` when it has one. `attributes` are made only for a sampled request.
    pub fn start_request(
        &self,
        headers: &dyn Extractor,
        name: impl Into<Cow<'static, str>>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
        arrived: Instant,
    ) -> RequestTrace {
        let Some(inner) = &self.inner else {
            // Off: a caller's trace id still goes into the log lines (one header lookup when there is none).
            let ids =
                headers.get(TRACEPARENT).and_then(|_| caller_ids(&TraceContextPropagator::new().extract(headers)));
            return RequestTrace { cx: None, ids, tracer: None, anchor: (arrived, SystemTime::UNIX_EPOCH) };
        };
        // A caller's valid trace context decides for itself (its sampled flag); anything else is a root, sampled here
        // at the configured rate. An invalid `traceparent` is a root too, so a client cannot force sampling with one.
        let parent = headers.get(TRACEPARENT).map(|_| TraceContextPropagator::new().extract(headers));
        let caller = parent.as_ref().filter(|p| p.span().span_context().is_valid());
        if caller.is_none() && root_dice() >= inner.sample_rate {
            return RequestTrace { cx: None, ids: None, tracer: None, anchor: (arrived, SystemTime::UNIX_EPOCH) };
        }
        let parent = parent.unwrap_or_default();
        let now = (Instant::now(), SystemTime::now());
        let anchor = (arrived, now.1.checked_sub(now.0.saturating_duration_since(arrived)).unwrap_or(now.1));
        let mut span = inner
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(anchor.1)
            .start_with_context(&inner.tracer, &parent);
        if span.is_recording() {
            span.set_attributes(attributes());
            let ids = TraceIds::of(span.span_context());
            RequestTrace {
                cx: Some(parent.with_span(span)),
                ids: Some(ids),
                tracer: Some(inner.tracer.clone()),
                anchor,
            }
        } else {
            // Not sampled: only the caller's trace id is worth logging (ours exists nowhere).
            RequestTrace { cx: None, ids: caller_ids(&parent), tracer: None, anchor }
        }
    }

    /// Exports what is queued and stops the exporter; blocks up to a few seconds (call off the async threads).
    pub fn shutdown(&self) {
        if let Some(inner) = &self.inner {
            if let Err(error) = inner.provider.shutdown_with_timeout(Duration::from_secs(5)) {
                tracing::warn!(%error, "trace export did not finish at shutdown");
            }
        }
    }
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing").field("enabled", &self.enabled()).finish()
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TraceError(String);

// === impl RequestTrace ===

impl RequestTrace {
    /// A trace that records nothing: for work no client asked for (a rollout's mirrored runs).
    pub fn untraced() -> Self {
        RequestTrace { cx: None, ids: None, tracer: None, anchor: (Instant::now(), SystemTime::UNIX_EPOCH) }
    }

    /// The server span's context, for the batcher, when the request is sampled.
    pub fn sampled(&self) -> Option<SpanContext> {
        self.cx.as_ref().map(|cx| cx.span().span_context().clone())
    }

    /// The ids for log lines: the request's own trace when sampled, else the caller's trace if it sent one.
    pub fn ids(&self) -> Option<TraceIds> {
        self.ids
    }

    /// Records the queue wait (from `enqueued`) and the batch the request ran in as child spans.
    pub fn record_batch(&self, enqueued: Instant, job: &JobTrace) {
        let (Some(cx), Some(tracer)) = (&self.cx, &self.tracer) else { return };
        let batch = &job.batch;
        let own = cx.span().span_context().span_id();
        let at = |instant: Instant| self.wall(instant);
        tracer
            .span_builder("vane.queue")
            .with_kind(SpanKind::Internal)
            .with_start_time(at(enqueued))
            .start_with_context(tracer, cx)
            .end_with_timestamp(at(job.dequeued));
        let links = batch.members.iter().filter(|m| m.span_id() != own).cloned().map(Link::with_context).collect();
        let batch_span = tracer
            .span_builder("vane.batch")
            .with_kind(SpanKind::Internal)
            .with_start_time(at(job.dequeued))
            .with_attributes([
                KeyValue::new("vane.batch.requests", batch.requests as i64),
                KeyValue::new("vane.batch.rows", batch.rows as i64),
            ])
            .with_links(links)
            .start_with_context(tracer, cx);
        let batch_cx = cx.with_span(batch_span);
        tracer
            .span_builder("vane.inference")
            .with_kind(SpanKind::Internal)
            .with_start_time(at(batch.run.0))
            .with_attributes([KeyValue::new("vane.inference.rows", batch.rows as i64)])
            .start_with_context(tracer, &batch_cx)
            .end_with_timestamp(at(batch.run.1));
        batch_cx.span().end_with_timestamp(at(batch.finished));
    }

    /// Ends the server span with the request's outcome (OpenTelemetry's conventions: a server span is an error on
    /// 5xx, not on the caller's 4xx).
    pub fn finish(self, outcome: Outcome<'_>) {
        // An unsampled request (99 in 100 at the default rate) reads no clock here.
        let Some(cx) = &self.cx else { return };
        // On the same clock as the children, so they lie inside it whatever the wall clock does meanwhile.
        let end = self.wall(Instant::now());
        let span = cx.span();
        let mut attributes = Vec::with_capacity(4);
        match outcome.grpc_code {
            Some(code) => attributes.push(KeyValue::new("rpc.grpc.status_code", i64::from(code))),
            None => attributes.push(KeyValue::new("http.response.status_code", i64::from(outcome.status))),
        }
        if let Some((model, version)) = outcome.model {
            attributes.push(KeyValue::new("vane.model", model.to_owned()));
            attributes.push(KeyValue::new("vane.model.version", version as i64));
        }
        if let Some(error) = outcome.error {
            attributes.push(KeyValue::new("error.type", outcome.status.to_string()));
            if outcome.status >= 500 {
                span.set_status(Status::error(error.to_string()));
            }
        }
        span.set_attributes(attributes);
        span.end_with_timestamp(end);
    }

    fn wall(&self, instant: Instant) -> SystemTime {
        let (arrived, wall) = self.anchor;
        match instant.checked_duration_since(arrived) {
            Some(after) => wall + after,
            None => wall.checked_sub(arrived.saturating_duration_since(instant)).unwrap_or(wall),
        }
    }
}

/// The W3C header that carries the caller's trace.
const TRACEPARENT: &str = "traceparent";

/// The caller's trace and span, when `parent` came from a valid `traceparent`.
/// A uniform number in [0, 1) from this thread's own generator (xorshift64, seeded from the process's random hash
/// keys): whether a root request is traced needs no shared state and no system call.
fn root_dice() -> f64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn caller_ids(parent: &Context) -> Option<TraceIds> {
    let span = parent.span();
    let context = span.span_context();
    context.is_valid().then(|| TraceIds::of(context))
}

// === impl TraceIds ===

impl TraceIds {
    fn of(context: &SpanContext) -> Self {
        Self { trace_id: context.trace_id(), span_id: context.span_id() }
    }
}

// === impl BatchTrace ===

impl BatchTrace {
    /// The links a batch's spans carry: the first [`MAX_BATCH_LINKS`] traced members.
    pub fn members<'a>(traced: impl Iterator<Item = &'a SpanContext>) -> Vec<SpanContext> {
        traced.take(MAX_BATCH_LINKS).cloned().collect()
    }
}

/// Reads `traceparent` and `tracestate` from HTTP headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Reads `traceparent` and `tracestate` from gRPC metadata (OpenTelemetry's gRPC instrumentations send them there).
pub struct MetadataExtractor<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

// === the export path ===

/// Refuses a finished span when the export queue is full, counting it, before the SDK's processor sees it.
#[derive(Debug)]
struct GatedProcessor {
    inner: BatchSpanProcessor,
    gate: Arc<Gate>,
}

impl SpanProcessor for GatedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.gate.in_flight.fetch_add(1, Ordering::AcqRel) >= self.gate.capacity {
            self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.gate.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it exported or failed to and releasing the spans from the gate.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    gate: Arc<Gate>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.gate.in_flight.fetch_sub(spans, Ordering::AcqRel);
        match &result {
            Ok(()) => {
                self.gate.exported.inc_by(spans as u64);
            }
            Err(error) => {
                self.gate.failed.inc_by(spans as u64);
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let last = self.gate.last_failure_log.load(Ordering::Relaxed);
                if now >= last + 60
                    && self
                        .gate
                        .last_failure_log
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(%error, spans, "trace export failed (logged once a minute; see vane_trace_spans_failed_total)");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
