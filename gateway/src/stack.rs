//! The one tower stack every HTTP request passes through, built in one place, and the edge's bounds.
//!
//! Outermost first:
//! 1. rescue: turns the errors of the layers below into protocol responses, so every call hyper makes succeeds;
//! 2. timeout: bounds the whole request, body read and queueing included, so no client waits forever;
//! 3. the router. It answers probes (`/v2/health/*`, `/metrics`, `/api/v1/status`) at once; every other request
//!    reads its body under the size cap (413), the body-read timeout (408) and the memory budget (503), and only
//!    then takes one of the in-flight permits shared with gRPC, or is shed with 503 at once. Load shedding sits after
//!    the body on purpose: a permit taken at the headers would let slow senders hold every slot while sending
//!    nothing (a shed before the body would also shed probes, and restart a pod that is merely busy).
//!
//! The connection-level bounds (header-read timeout, connection cap, HTTP/2 limits) are applied in [`crate::server`].

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use tower::timeout::error::Elapsed;
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder};

use crate::errors::ApiError;
use crate::metrics::request_series::{Protocol, RequestMetrics};
use crate::routes::{self, error_response, AppState, HttpResponse};

/// The edge's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bodies above this get 413.
    pub max_body_bytes: usize,
    /// A request not answered within this gets 504.
    pub request_timeout: Duration,
    /// Requests handled at once across all connections; beyond it, 503 at once.
    pub max_concurrent_requests: NonZeroUsize,
    /// Bytes that requests in progress may hold at once (bodies and decoded tensors); beyond it, 503 at once.
    pub max_inflight_bytes: usize,
    /// The longest a request body may take to arrive (408 after).
    pub body_timeout: Duration,
    /// The longest a client may take to send a request's headers, and the longest an HTTP/1 connection may sit idle
    /// between requests; the connection is closed after it.
    pub header_read_timeout: Duration,
    /// Connections open at once (REST and gRPC each); past it, new connections wait in the kernel's backlog.
    pub max_connections: NonZeroUsize,
    /// HTTP/2 streams a connection may have open at once.
    pub max_concurrent_streams: u32,
}

/// The service each connection runs. Its calls always succeed (errors are already responses); the error type is
/// only there because tower's readiness path keeps the inner layers' error type.
pub type HttpService = BoxCloneService<Request<Incoming>, HttpResponse, BoxError>;

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 16 MiB: a 4096-row batch of the 1024-feature dense model in JSON is about 40 MB, so large batches should
            // use several requests (or, later, the binary extension); small models' requests are kilobytes.
            max_body_bytes: 16 * 1024 * 1024,
            // Longer than any healthy inference here (milliseconds) by far; short enough that a stuck request frees
            // its slot before a client's own typical 60 s timeout.
            request_timeout: Duration::from_secs(30),
            // About 256 in-flight requests per core is far past where throughput stops growing on small models; more
            // would only add queueing delay.
            max_concurrent_requests: NonZeroUsize::new(512).unwrap_or(NonZeroUsize::MIN),
            max_inflight_bytes: crate::budget::DEFAULT_MAX_INFLIGHT_BYTES,
            // A 16 MiB body needs 1.6 MB/s; clients on a datacenter network send one in milliseconds.
            body_timeout: Duration::from_secs(10),
            // hyper's own default is 30 s; Envoy-style edges use 10-60 s. Headers are a few hundred bytes.
            header_read_timeout: Duration::from_secs(10),
            // Far above what one replica serves well (the in-flight limit is 512), far below the process's file
            // limit in the shipped manifests; each idle connection costs a few kilobytes.
            max_connections: NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
            // Above the in-flight limit per connection would only queue; gRPC clients open 100 by default.
            max_concurrent_streams: 128,
        }
    }
}

/// Builds the stack around the router.
pub fn build(state: Arc<AppState>, limits: &Limits) -> HttpService {
    let timeout = limits.request_timeout;
    // The stack is cloned for every request (hyper's connection calls a fresh copy): its closures hold one `Arc`
    // each, not the request series' dozens of handles (a profile under load found their reference counts, on cache
    // lines both cores write, at about 3% of the server's samples).
    let rescuer = Arc::clone(&state);
    let service = ServiceBuilder::new()
        .map_result(move |result: Result<HttpResponse, BoxError>| {
            Ok::<_, BoxError>(rescue(result, timeout, &rescuer.request_metrics))
        })
        .timeout(timeout)
        .service_fn(move |request: Request<Incoming>| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(routes::route(state, request).await) }
        });
    BoxCloneService::new(service)
}

fn rescue(result: Result<HttpResponse, BoxError>, timeout: Duration, metrics: &RequestMetrics) -> HttpResponse {
    let error = match result {
        Ok(response) => return response,
        Err(error) if error.is::<Elapsed>() => ApiError::Timeout { limit_ms: timeout.as_millis() },
        Err(error) => {
            // The router is infallible, so only a layer's own unknown error can land here.
            tracing::error!(%error, "request failed in the tower stack");
            ApiError::Overloaded
        }
    };
    // Dropped mid-flight by the edge's timeout: no model is known here, so it is counted under model="" (the router's
    // own count never ran for a request dropped here).
    let seconds = if matches!(error, ApiError::Timeout { .. }) { timeout.as_secs_f64() } else { 0.0 };
    metrics.unresolved().observe(Protocol::Http, Err(&error), seconds);
    error_response(&error)
}
