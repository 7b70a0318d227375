//! The V2 REST routes: path matching, the capped body read, and turning results into responses.

mod admin;
mod repository;
mod v2;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::auth::Gate;
use crate::budget::Charge;
use crate::errors::ApiError;
use crate::metrics::request_series::Protocol;
use crate::traces::{HeaderExtractor, Outcome};
use opentelemetry::KeyValue;

pub use crate::protocol::{
    decode_request, encode_response, BinaryOutputs, InferRequest, InferResponse, MAX_DIMENSIONS, MAX_INPUTS,
    MAX_REQUEST_ID_BYTES,
};
pub use crate::state::AppState;
pub use repository::{
    check_parameter_names as check_repository_parameter_names, repository_index, repository_load, repository_unload,
    IndexEntry,
};

/// The response type of every route.
pub type HttpResponse = Response<Full<Bytes>>;

/// Matches a request to its route and runs it. Never fails: every error becomes a response.
pub async fn route<B>(state: Arc<AppState>, request: Request<B>) -> HttpResponse
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The caller's `x-request-id` is echoed; on an error, one is made when the caller sent none, so the log line
    // and the answer carry the same id. The success path pays only the header lookup.
    let given = request.headers().get(REQUEST_ID).cloned();
    // A clone of the URI shares hyper's buffer (no copy of the path) and is kept for the error log line.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let mut trace_ids = None;
    let mut variant = None;
    let mut response = match dispatch(&state, request, &mut trace_ids, &mut variant).await {
        Ok(mut response) => {
            if let Some(id) = given {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            response
        }
        Err(error) => {
            let id = given.unwrap_or_else(new_request_id);
            log_edge_error(&error, method.as_str(), uri.path(), id.to_str().unwrap_or_default(), trace_ids);
            let mut response = error_response(&error);
            response.headers_mut().insert(REQUEST_ID, id);
            response
        }
    };
    // Which side of a rollout answered, on errors too.
    if let Some(variant) = variant {
        response.headers_mut().insert(crate::serving::VARIANT_HEADER, HeaderValue::from_static(variant));
    }
    response
}

/// The inference routes as OpenTelemetry's HTTP conventions name server spans: method and route template.
const INFER_SPAN: &str = "POST /v2/models/{model_name}/infer";
const INFER_VERSION_SPAN: &str = "POST /v2/models/{model_name}/versions/{model_version}/infer";
const INFER_ROUTE: &str = "/v2/models/{model_name}/infer";
const INFER_VERSION_ROUTE: &str = "/v2/models/{model_name}/versions/{model_version}/infer";

/// The header that carries a request's id, as most proxies and tracing setups name it.
pub const REQUEST_ID: &str = "x-request-id";

/// A process-unique id: the process start (seconds, hex) and a counter.
fn new_request_id() -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static STARTED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let started = *STARTED
        .get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("vane-{started:x}-{n}")).unwrap_or_else(|_| HeaderValue::from_static("vane"))
}

/// One log line per failed request, with its id, and its trace's ids when it has a trace (sampled here, or sent by
/// the caller), so the line and the trace find each other. Client errors and refusals under load (503) at debug:
/// they are the caller's or the load's, counted in `vane_requests_total`, and a noisy client or an overload must not
/// flood the log; timeouts (504) at warn; server failures (500) at error.
pub(crate) fn log_edge_error(
    error: &ApiError,
    method: &str,
    path: &str,
    request_id: &str,
    trace: Option<crate::traces::TraceIds>,
) {
    let status = error.status().as_u16();
    let trace_id = trace.map(|t| tracing::field::display(t.trace_id));
    let span_id = trace.map(|t| tracing::field::display(t.span_id));
    match status {
        400..=499 | 503 => {
            tracing::debug!(status, method, path, request_id, trace_id, span_id, %error, "request refused");
        }
        504 => {
            tracing::warn!(status, method, path, request_id, trace_id, span_id, %error, "request not served in time")
        }
        _ => tracing::error!(status, method, path, request_id, trace_id, span_id, %error, "request failed"),
    }
}

async fn dispatch<B>(
    state: &Arc<AppState>,
    request: Request<B>,
    trace_ids: &mut Option<crate::traces::TraceIds>,
    variant: &mut Option<&'static str>,
) -> Result<HttpResponse, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    // The longest route has 6 segments; a path with more matches none (no list to allocate per request).
    let mut buffer = [""; 7];
    let mut count = 0;
    for segment in path.trim_start_matches('/').split('/') {
        if count == buffer.len() {
            return Err(ApiError::RouteNotFound { path: path.to_owned() });
        }
        buffer[count] = segment;
        count += 1;
    }
    let segments = &buffer[..count];
    let method = &parts.method;
    let route = match segments {
        ["v2"] => Route::ServerMetadata,
        ["v2", "health", "live"] => Route::Live,
        ["v2", "health", "ready"] => Route::Ready,
        ["v2", "models", model] => Route::ModelMetadata(model, None),
        ["v2", "models", model, "versions", version] => Route::ModelMetadata(model, Some(version)),
        ["v2", "models", model, "ready"] => Route::ModelReady(model, None),
        ["v2", "models", model, "versions", version, "ready"] => Route::ModelReady(model, Some(version)),
        ["v2", "models", model, "stats"] => Route::ModelStats(model, None),
        ["v2", "models", model, "versions", version, "stats"] => Route::ModelStats(model, Some(version)),
        ["v2", "models", model, "infer"] => Route::Infer(model, None),
        ["v2", "repository", "index"] => Route::RepositoryIndex,
        ["v2", "repository", "models", model, "load"] => Route::RepositoryLoad(model),
        ["v2", "repository", "models", model, "unload"] => Route::RepositoryUnload(model),
        ["api", "v1", "status"] => Route::Status,
        ["metrics"] => Route::Metrics,
        ["api", "v1", "monitor", model] => Route::Monitor(model),
        ["api", "v1", "alerts"] => Route::Alerts,
        ["dashboard"] => Route::Dashboard,
        ["api", "v1", "feedback"] => Route::Feedback,
        ["api", "v1", "hooks", "git"] => Route::Webhook,
        ["api", "v1", "sync"] => Route::Sync,
        ["api", "v1", "rollback"] => Route::Rollback,
        ["api", "v1", "rollouts"] => Route::Rollouts(None),
        ["api", "v1", "rollouts", model] => Route::Rollouts(Some(model)),
        ["api", "v1", "rollouts", model, action] => Route::RolloutAction(model, action),
        ["v2", "models", model, "versions", version, "infer"] => Route::Infer(model, Some(version)),
        _ => return Err(ApiError::RouteNotFound { path: path.to_owned() }),
    };
    let wanted = if route.is_post() { Method::POST } else { Method::GET };
    if *method != wanted {
        let allowed = if wanted == Method::POST { "POST" } else { "GET" };
        return Err(ApiError::MethodNotAllowed { method: method.to_string(), allowed });
    }
    let registry = &state.registry;
    // Probes and the status page are answered at once: never shed, never counted as inference, never waiting for a
    // permit, so a saturated server still answers its liveness probe and its scrape.
    match route {
        Route::Live => return Ok(v2::live()),
        Route::Ready => return Ok(v2::ready(registry)),
        Route::Status => return Ok(admin::status(state)),
        // Read by peers every second, when a rollback matters most: answered at once, like the status.
        Route::Rollouts(model) => {
            return admin::rollouts(
                state,
                model,
                parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == "view=stops")),
            )
        }
        Route::Metrics => {
            state.request_metrics.refresh(registry);
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(crate::metrics::Metrics::CONTENT_TYPE));
            state.scrapes.send_modify(|n| *n += 1);
            return Ok(response);
        }
        _ => {}
    }
    // Everything else holds a charge on the memory budget (its body and tensors) and, once its body has arrived, one
    // of the in-flight permits shared with gRPC: a slow sender holds neither a permit nor memory it has not sent.
    // (Inference reads its body and takes its permit in its own arm, so every outcome is counted under its model.)
    let mut charge = state.budget.charge();
    let (mut incoming, mut body) = (Some(body), Bytes::new());
    let _permit = match route {
        Route::Infer(..) => None,
        _ => {
            if let Some(incoming) = incoming.take().filter(|_| route.is_post()) {
                body = read_body(incoming, state.max_body_bytes, &mut charge, state.body_timeout).await?;
            }
            Some(Arc::clone(&state.concurrency).try_acquire_owned().map_err(|_| ApiError::Overloaded)?)
        }
    };
    let headers = &parts.headers;
    match route {
        Route::ServerMetadata => Ok(v2::server_metadata()),
        Route::Live | Route::Ready | Route::Status | Route::Metrics | Route::Rollouts(_) => {
            unreachable!("answered above")
        }
        Route::ModelMetadata(model, version) => v2::model_metadata(registry, model, version),
        Route::ModelReady(model, version) => v2::model_ready(registry, model, version),
        Route::ModelStats(model, version) => v2::model_stats(registry, model, version),
        Route::Monitor(model) => admin::monitor(state, model),
        Route::Alerts => Ok(admin::alerts(state)),
        Route::Dashboard => Ok(admin::dashboard(state)),
        Route::Feedback => {
            state.tokens.check_headers(Gate::Feedback, headers)?;
            admin::feedback(state, &body)
        }
        Route::Sync => admin::sync(state, headers),
        Route::Webhook => admin::webhook(state, headers, &body),
        Route::Rollback => admin::rollback(state, headers, &body).await,
        Route::RolloutAction(model, action) => {
            state.tokens.check_headers(Gate::Admin, headers)?;
            admin::rollout_action(state, model, action, &body).await
        }
        Route::RepositoryIndex => {
            // Triton's client sends an empty body; `{}` and `{"ready": true}` are accepted too.
            let asked: repository::IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
                repository::IndexRequest::default()
            } else {
                serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson { message: e.to_string() })?
            };
            Ok(json_response(StatusCode::OK, &repository_index(state, asked.ready)))
        }
        Route::RepositoryLoad(model) => {
            state.tokens.check_headers(Gate::Admin, headers)?;
            repository::check_load_body(&body)?;
            let model = model.to_owned();
            repository_load(state, &model).await.map(|()| empty_ok())
        }
        Route::RepositoryUnload(model) => {
            state.tokens.check_headers(Gate::Admin, headers)?;
            repository::check_unload_body(&body)?;
            let model = model.to_owned();
            repository_unload(state, &model).await.map(|()| empty_ok())
        }
        Route::Infer(model, version) => {
            let trace = state.tracing.start_request(
                &HeaderExtractor(headers),
                if version.is_some() { INFER_VERSION_SPAN } else { INFER_SPAN },
                || {
                    vec![
                        KeyValue::new("http.request.method", "POST"),
                        KeyValue::new("http.route", if version.is_some() { INFER_VERSION_ROUTE } else { INFER_ROUTE }),
                        KeyValue::new("url.path", path.to_owned()),
                    ]
                },
                arrived,
            );
            let mut served = crate::serving::Served::default();
            let result = async {
                let header_length = binary_header_length(headers)?;
                let incoming = incoming.take().ok_or(ApiError::BodyRead)?;
                let body = read_body(incoming, state.max_body_bytes, &mut charge, state.body_timeout).await?;
                let input = v2::Body { bytes: &body, header_length, charge: &mut charge };
                v2::infer(state, model, version, headers, input, arrived, &mut served, &trace).await
            }
            .await;
            *variant = served.variant;
            let served = served.loaded;
            let series = served.as_ref().map_or(state.request_metrics.unresolved(), |m| m.series());
            series.observe(Protocol::Http, result.as_ref().map(|_| ()), arrived.elapsed().as_secs_f64());
            *trace_ids = trace.ids();
            trace.finish(Outcome {
                status: result.as_ref().map_or_else(|e| e.status().as_u16(), |r| r.status().as_u16()),
                grpc_code: None,
                model: served.as_ref().map(|m| (m.name(), m.version())),
                error: result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
            });
            result
        }
    }
}

enum Route<'a> {
    ServerMetadata,
    Live,
    Ready,
    ModelMetadata(&'a str, Option<&'a str>),
    ModelReady(&'a str, Option<&'a str>),
    ModelStats(&'a str, Option<&'a str>),
    Infer(&'a str, Option<&'a str>),
    RepositoryIndex,
    RepositoryLoad(&'a str),
    RepositoryUnload(&'a str),
    Status,
    Monitor(&'a str),
    Alerts,
    Dashboard,
    Feedback,
    Metrics,
    Webhook,
    Sync,
    Rollback,
    Rollouts(Option<&'a str>),
    RolloutAction(&'a str, &'a str),
}

impl Route<'_> {
    /// Whether the route takes POST, and so a body (read under the limits; a GET's body is dropped unread).
    fn is_post(&self) -> bool {
        matches!(
            self,
            Route::Infer(..)
                | Route::Webhook
                | Route::Sync
                | Route::Rollback
                | Route::RolloutAction(..)
                | Route::Feedback
                | Route::RepositoryIndex
                | Route::RepositoryLoad(_)
                | Route::RepositoryUnload(_)
        )
    }
}

/// The one place a request body is read: refused early by `Content-Length` (413), charged to the memory budget chunk
/// by chunk as it arrives (503 once the budget cannot take the next chunk, before it is kept), capped while streaming
/// for bodies that do not declare a length, and bounded in time (408 when it has not all arrived within `timeout`).
async fn read_body<B>(body: B, limit_bytes: usize, charge: &mut Charge, timeout: Duration) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > limit_bytes as u64 {
        return Err(ApiError::PayloadTooLarge { limit_bytes });
    }
    let declared = body.size_hint().exact().and_then(|n| usize::try_from(n).ok());
    let read = async {
        let mut body = std::pin::pin!(body);
        // A body in one frame is kept as hyper read it (no copy). A large declared body is copied as it arrives into
        // an anonymous mapping of its length; a longer one of unknown length into one heap buffer that grows by
        // doubling. Either is charged by what it holds in memory: the mapping's written pages, the buffer's capacity.
        let mut first: Option<Bytes> = None;
        let mut buffer = match declared {
            Some(length) if length >= LARGE_BODY_BYTES => BodyBuffer::mapped(length)?,
            _ => BodyBuffer::Heap(Vec::new()),
        };
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|_| ApiError::BodyRead)?.into_data() else { continue };
            let total = buffer.len() + first.as_ref().map_or(0, Bytes::len) + data.len();
            if total > limit_bytes {
                return Err(ApiError::PayloadTooLarge { limit_bytes });
            }
            if first.is_none() && buffer.len() == 0 {
                charge.add(data.len())?;
                first = Some(data);
                continue;
            }
            if let Some(first) = first.take() {
                buffer.append(&first, declared, limit_bytes, charge)?;
                charge.shrink_to(charge.held() - first.len());
            }
            buffer.append(&data, declared, limit_bytes, charge)?;
        }
        Ok(match first {
            Some(only) => only,
            None => buffer.into_bytes(),
        })
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(ApiError::BodyTimeout { limit_ms: timeout.as_millis() }))
}

/// Bodies declaring at least this many bytes are read into an anonymous mapping (see [`read_body`]).
const LARGE_BODY_BYTES: usize = 1 << 20;

/// Where a body of several frames is gathered.
enum BodyBuffer {
    /// A heap buffer grown by doubling (up to the declared length); charged by its capacity.
    Heap(Vec<u8>),
    /// An anonymous mapping of the declared length; charged by the pages written.
    Mapped { map: memmap2::MmapMut, len: usize },
}

impl BodyBuffer {
    fn mapped(length: usize) -> Result<Self, ApiError> {
        // Mapping reserves address space only; a failure is the machine being out of it, a retryable refusal.
        let map = memmap2::MmapMut::map_anon(length).map_err(|_| ApiError::Overloaded)?;
        Ok(Self::Mapped { map, len: 0 })
    }

    fn len(&self) -> usize {
        match self {
            Self::Heap(v) => v.len(),
            Self::Mapped { len, .. } => *len,
        }
    }

    /// Appends `data`, charging what it adds to memory first.
    fn append(
        &mut self,
        data: &[u8],
        declared: Option<usize>,
        limit: usize,
        charge: &mut Charge,
    ) -> Result<(), ApiError> {
        match self {
            Self::Heap(buffer) => {
                let total = buffer.len() + data.len();
                if total > buffer.capacity() {
                    let doubled = (buffer.capacity() * 2).max(64 * 1024);
                    let wanted = declared.map_or(doubled, |d| doubled.min(d)).clamp(total, limit);
                    let (old, held) = (buffer.capacity(), charge.held());
                    charge.add(wanted)?;
                    buffer.reserve_exact(wanted - buffer.len());
                    // The old buffer is gone once reserve_exact has moved the bytes.
                    charge.shrink_to(held + wanted - old);
                }
                buffer.extend_from_slice(data);
            }
            Self::Mapped { map, len } => {
                let end = *len + data.len();
                // A body longer than it declared is cut off by hyper; this only guards the slice.
                let target = map.get_mut(*len..end).ok_or(ApiError::BodyRead)?;
                const PAGE: usize = 4096;
                charge.add(end.div_ceil(PAGE) * PAGE - len.div_ceil(PAGE) * PAGE)?;
                target.copy_from_slice(data);
                *len = end;
            }
        }
        Ok(())
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Self::Heap(buffer) => Bytes::from(buffer),
            Self::Mapped { map, len } => Bytes::from_owner(map).slice(..len),
        }
    }
}

/// The binary tensor extension's header, the length of the JSON part of the body.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

fn binary_header_length(headers: &http::HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(INFERENCE_HEADER_CONTENT_LENGTH) else { return Ok(None) };
    value.to_str().ok().and_then(|v| v.trim().parse().ok()).map(Some).ok_or_else(|| ApiError::InvalidBinary {
        message: format!("Inference-Header-Content-Length must be a byte count, got {value:?}"),
    })
}

/// A 200 with an empty body (Triton's answer to load and unload).
fn empty_ok() -> HttpResponse {
    Response::new(Full::new(Bytes::new()))
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    // Serialising our own response types cannot fail (string keys, no non-string map keys).
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The protocol's error body, `{"error": "..."}`, with the error's status and, where a retry can help, `Retry-After`.
pub fn error_response(error: &ApiError) -> HttpResponse {
    let status = error.status();
    #[derive(Serialize)]
    struct ErrorBody {
        error: String,
    }
    let mut response = json_response(status, &ErrorBody { error: error.to_string() });
    if let Some(seconds) = error.retry_after_seconds() {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
