//! Handlers of the V2 core endpoints: health, metadata and inference.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use serde::Serialize;

use http::header::CONTENT_TYPE;
use http::HeaderValue;

use super::{json_response, AppState, HttpResponse};
use crate::budget::{Charge, DECODE_FACTOR, DECODE_SLACK};
use crate::errors::ApiError;
use crate::infer::TensorSpec;
use crate::protocol::{decode_request, encode_response_bytes, InferResponse};
use crate::registry::Registry;
use crate::serving::{provenance, serve, Served, EXTENSIONS, PLATFORM};
use crate::traces::RequestTrace;

#[derive(Serialize)]
struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    /// Only extensions that are fully implemented are listed.
    extensions: &'static [&'static str],
}

pub(super) fn server_metadata() -> HttpResponse {
    json_response(
        StatusCode::OK,
        &ServerMetadata { name: "vane", version: env!("CARGO_PKG_VERSION"), extensions: EXTENSIONS },
    )
}

pub(super) fn live() -> HttpResponse {
    #[derive(Serialize)]
    struct Live {
        live: bool,
    }
    json_response(StatusCode::OK, &Live { live: true })
}

pub(super) fn ready(registry: &Registry) -> HttpResponse {
    #[derive(Serialize)]
    struct Ready {
        ready: bool,
    }
    let ready = registry.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &Ready { ready })
}

#[derive(Serialize)]
struct ModelMetadata<'a> {
    name: &'a str,
    versions: Vec<String>,
    platform: &'static str,
    inputs: Vec<TensorMetadata<'a>>,
    outputs: Vec<TensorMetadata<'a>>,
}

#[derive(Serialize)]
struct TensorMetadata<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
}

impl<'a> From<&'a TensorSpec> for TensorMetadata<'a> {
    fn from(spec: &'a TensorSpec) -> Self {
        Self { name: &spec.name, datatype: spec.datatype.as_str(), shape: &spec.shape }
    }
}

pub(super) fn model_metadata(
    registry: &Registry,
    model: &str,
    version: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let table = registry.snapshot();
    let loaded = table.get(model, version)?;
    let signature = loaded.signature();
    let metadata = ModelMetadata {
        name: loaded.name(),
        versions: table.versions(model).iter().map(u64::to_string).collect(),
        platform: PLATFORM,
        inputs: signature.inputs.iter().map(Into::into).collect(),
        outputs: signature.outputs.iter().map(Into::into).collect(),
    };
    Ok(json_response(StatusCode::OK, &metadata))
}

pub(super) fn model_ready(registry: &Registry, model: &str, version: Option<&str>) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    struct ModelReady<'a> {
        name: &'a str,
        ready: bool,
    }
    registry.resolve(model, version)?;
    Ok(json_response(StatusCode::OK, &ModelReady { name: model, ready: true }))
}

/// An inference request's body as it arrived, and its charge on the memory budget.
pub(super) struct Body<'a> {
    /// The bytes.
    pub(super) bytes: &'a [u8],
    /// The binary extension's JSON header length.
    pub(super) header_length: Option<usize>,
    /// What the request holds of the budget (its body so far).
    pub(super) charge: &'a mut Charge,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn infer(
    state: &Arc<AppState>,
    model: &str,
    version: Option<&str>,
    headers: &http::HeaderMap,
    body: Body<'_>,
    arrived: Instant,
    served: &mut Served,
    trace: &RequestTrace,
) -> Result<HttpResponse, ApiError> {
    // One load of the model set; the guard is gone before the await below, the Arcs keep the versions alive.
    let target = state.registry.resolve_target(model, version)?;
    served.loaded = Some(Arc::clone(&target.primary.loaded));
    // The in-flight permit shared with gRPC, taken once the body has arrived: beyond it, 503 at once.
    let _permit = Arc::clone(&state.concurrency).try_acquire_owned().map_err(|_| ApiError::Overloaded)?;
    // Counted as on its way to the batcher from before decoding, so a batch being formed can wait for it.
    let incoming = target.primary.loaded.incoming();
    // Decoding may take up to DECODE_FACTOR times the body: charged before, and what the tensors did not use is given
    // back after. (Both sides of a rollout take the same inputs, checked at load.)
    let Body { bytes, header_length, charge } = body;
    charge.add(bytes.len().saturating_mul(DECODE_FACTOR).saturating_add(DECODE_SLACK))?;
    let request = decode_request(bytes, header_length, Some(target.primary.loaded.signature()))?;
    charge.shrink_to(bytes.len() + request.heap_bytes());
    let key = target.split.as_ref().and_then(|(rollout, _)| {
        rollout.spec.key.as_deref().and_then(|name| headers.get(name)).map(http::HeaderValue::as_bytes)
    });
    let (request, outputs) = serve(state, &target, key, incoming, request, arrived, trace, served).await?;
    let loaded = served.loaded.as_ref().unwrap_or(&target.primary.loaded);
    let response =
        InferResponse { model_name: loaded.name(), model_version: loaded.version_text(), id: request.id.as_deref() };
    let (body, header_length) = encode_response_bytes(&response, &outputs, &request.binary);
    let mut reply = http::Response::new(http_body_util::Full::new(body));
    let headers = reply.headers_mut();
    match header_length {
        None => headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json")),
        Some(length) => {
            headers.insert(super::INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(length));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
        }
    };
    for (name, value) in provenance(loaded, served.revision.as_deref()) {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            reply.headers_mut().insert(name, value);
        }
    }
    Ok(reply)
}

/// Triton's statistics shape, with the counters Vane keeps: `inference_count` counts rows and `execution_count`
/// model runs, so their ratio is the mean batch size the dynamic batcher formed; `inline_count` (Vane's own) counts
/// the runs made on the request's thread rather than a worker's, and `run_estimate_us` the running estimate of one
/// request's run on its own that decides it. Without a version, every served version is listed.
pub(super) fn model_stats(registry: &Registry, model: &str, version: Option<&str>) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    struct Stats {
        model_stats: Vec<VersionStats>,
    }
    #[derive(Serialize)]
    struct VersionStats {
        name: String,
        version: String,
        inference_count: u64,
        execution_count: u64,
        request_count: u64,
        queue_depth: usize,
        queue_high_water: usize,
        largest_batch_rows: usize,
        inline_count: u64,
        run_estimate_us: f64,
    }
    let table = registry.snapshot();
    let versions: Vec<u64> = match version {
        Some(_) => vec![table.get(model, version)?.version()],
        None => {
            table.get(model, None)?;
            table.versions(model)
        }
    };
    let mut model_stats = Vec::with_capacity(versions.len());
    for v in versions {
        let loaded = table.get(model, Some(&v.to_string()))?;
        let s = loaded.stats().snapshot();
        model_stats.push(VersionStats {
            name: loaded.name().to_owned(),
            version: v.to_string(),
            inference_count: s.rows,
            execution_count: s.batches,
            request_count: s.batched_requests,
            queue_depth: s.queued,
            queue_high_water: s.queue_high_water,
            largest_batch_rows: s.largest_batch_rows,
            inline_count: s.inline_runs,
            run_estimate_us: loaded.stats().run_estimate().as_secs_f64() * 1e6,
        });
    }
    Ok(json_response(StatusCode::OK, &Stats { model_stats }))
}
