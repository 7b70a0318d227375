//! The V2 protocol over gRPC: `inference.GRPCInferenceService` (tonic), on its own port. It is a second front door
//! to the same house: the same registry (one `ArcSwap` load per request), the same batcher and bounded queues, the
//! same global in-flight limit as REST, the same monitor, and the same errors, mapped to gRPC status codes by
//! [`status`]. Tensors arrive typed (`contents`) or raw (`raw_input_contents`, the binary extension's layout);
//! answers always go back raw (`raw_output_contents`), as Triton's do, which every V2 gRPC client reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::budget::Charge;
use crate::errors::ApiError;
use crate::infer::{DataType, Tensor, TensorData};
use crate::metrics::request_series::Protocol;
use crate::protocol::{BinaryOutputs, InferRequest};
use crate::serving::{provenance, Served, VARIANT_HEADER};
use crate::state::AppState;
use crate::tls::{MaybeTls, Tls};
use crate::traces::{MetadataExtractor, Outcome, RequestTrace};

/// The server span's name, OpenTelemetry's `{package.service}/{method}` for gRPC.
const INFER_SPAN: &str = "inference.GRPCInferenceService/ModelInfer";

/// The code generated from `proto/grpc_service.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_request::InferInputTensor;
use proto::model_infer_response::InferOutputTensor;
use proto::{infer_parameter::ParameterChoice, InferTensorContents, ModelInferRequest, ModelInferResponse};

/// Requests of one `ModelStreamInfer` stream that may be in flight at once; the stream is not read further until one
/// finishes, so a fast sender is slowed down (HTTP/2 flow control) rather than buffered without bound.
const STREAM_IN_FLIGHT: usize = 64;

/// The service: the routes' shared state.
pub struct Grpc {
    state: Arc<AppState>,
}

/// Serves gRPC on `listener` until `shutdown`, then lets calls in flight finish for up to `grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    grace: Duration,
    tls: Option<Tls>,
) {
    let max_message = state.max_body_bytes;
    let timeout = state.request_timeout;
    let limits = state.limits;
    let state_budget = state.budget.clone();
    let state_for_direct = Arc::clone(&state);
    let service = GrpcInferenceServiceServer::new(Grpc { state })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    // Our own accept loop feeds tonic: each connection gets TCP_NODELAY (tonic sets it only on listeners it binds;
    // without it small answers waited for the client's delayed ACK, 40 ms at p99 in the load bench), and an accept
    // error (EMFILE under a connection flood) backs off and goes on, as the REST listener does, where tonic would
    // stop serving.
    // At most `max_connections` open at once: each stream carries its slot and gives it back when tonic drops it.
    let (accepted, incoming) = mpsc::channel::<std::io::Result<Slotted>>(16);
    let accepting = shutdown.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.get()));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
            let next = tokio::select! {
                () = accepting.cancelled() => return,
                next = listener.accept() => next,
            };
            match next {
                Ok((stream, peer)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "could not set TCP_NODELAY");
                    }
                    // The TLS handshake in its own task, bounded by the header timeout, so a silent client never
                    // stalls the accept loop.
                    let (accepted, tls) = (accepted.clone(), tls.clone());
                    tokio::spawn(async move {
                        let acceptor = tls.as_ref().map(Tls::grpc);
                        match MaybeTls::accept(stream, acceptor, limits.header_read_timeout).await {
                            Ok(stream) => {
                                let _ = accepted.send(Ok(Slotted { stream, _slot: slot })).await;
                            }
                            Err(error) => tracing::debug!(%error, %peer, "gRPC TLS handshake failed"),
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let incoming = ReceiverStream::new(incoming);
    let signal = shutdown.clone();
    let budget = state_budget;
    let meter = tower::util::MapRequestLayer::new(move |request: http::Request<tonic::body::Body>| {
        let (mut parts, body) = request.into_parts();
        let charge = (parts.uri.path() == MODEL_INFER_PATH).then(|| {
            let shared = SharedCharge(Arc::new(std::sync::Mutex::new(Some(budget.charge()))));
            parts.extensions.insert(shared.clone());
            shared
        });
        http::Request::from_parts(parts, tonic::body::Body::new(Metered::new(body, max_message, charge)))
    });
    let direct_state = Arc::clone(&state_for_direct);
    let direct = tower::layer::layer_fn(move |inner| DirectInfer { inner, state: Arc::clone(&direct_state) });
    let server = tonic::transport::Server::builder()
        .layer(meter)
        .layer(direct)
        .timeout(timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(crate::server::MAX_HEADER_BYTES as u32)
        .http2_keepalive_interval(Some(limits.header_read_timeout))
        .http2_keepalive_timeout(Some(limits.header_read_timeout))
        // A stream (ModelStreamInfer) or connection lives at most this long, then is asked to reconnect: no client
        // holds a connection's resources forever, and load rebalances across replicas.
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(limits.request_timeout)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move { signal.cancelled().await });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            if let Err(error) = result {
                tracing::error!(%error, "the gRPC server failed");
            }
            return;
        }
        () = shutdown.cancelled() => {}
    }
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!(grace_ms = grace.as_millis(), "gRPC grace period over; closing the remaining streams");
    }
}

/// The unary inference method's path: its body is metered against the memory budget as it arrives.
const MODEL_INFER_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// What a gRPC message's bytes cost before its handler runs, as a multiple of its size: tonic's receive buffer
/// (which may grow to twice the message while it arrives) and the copy prost decodes into. Measured: charging the
/// bytes once let 32 concurrent 15 MiB calls take 488 MiB over idle with a 256 MiB budget
/// (`cargo test -p gateway --test hostile grpc -- --nocapture`).
const ARRIVAL_FACTOR: usize = 3;

/// A unary call's charge on the memory budget, shared by its metered body (which adds each chunk as it arrives) and
/// its handler (which takes it over once the message is decoded).
#[derive(Clone)]
struct SharedCharge(Arc<std::sync::Mutex<Option<Charge>>>);

impl SharedCharge {
    fn take(&self) -> Option<Charge> {
        self.0.lock().ok().and_then(|mut charge| charge.take())
    }
}

/// A request body that checks each gRPC message's declared length against the size limit as its 5-byte prefix
/// arrives (RESOURCE_EXHAUSTED with REST's 413 message, before any of it is buffered; tonic's own check would answer
/// OUT_OF_RANGE) and, for unary calls, charges every byte to the memory budget before tonic keeps it (UNAVAILABLE
/// with REST's 503 message once the budget cannot take it).
struct Metered {
    inner: tonic::body::Body,
    limit: usize,
    charge: Option<SharedCharge>,
    /// The message prefix read so far, and the bytes of the current message still to come.
    prefix: [u8; 5],
    prefix_len: usize,
    remaining: usize,
}

impl Metered {
    fn new(inner: tonic::body::Body, limit: usize, charge: Option<SharedCharge>) -> Self {
        Self { inner, limit, charge, prefix: [0; 5], prefix_len: 0, remaining: 0 }
    }

    /// Walks the messages' framing through `data`.
    fn check(&mut self, mut data: &[u8]) -> Result<(), ApiError> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let length = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                self.remaining = length as usize;
                if self.remaining > self.limit {
                    return Err(ApiError::PayloadTooLarge { limit_bytes: self.limit });
                }
            }
        }
        Ok(())
    }
}

impl http_body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return std::task::Poll::Ready(other),
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len();
            let checked = this.check(data).and_then(|()| match &this.charge {
                Some(shared) => match shared.0.lock() {
                    Ok(mut charge) => charge.as_mut().map_or(Ok(()), |c| c.add(len * ARRIVAL_FACTOR)),
                    Err(_) => Err(ApiError::Overloaded),
                },
                None => Ok(()),
            });
            if let Err(error) = checked {
                return std::task::Poll::Ready(Some(Err(status(&error))));
            }
        }
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How long a gRPC connection is served before it is asked (GOAWAY) to reconnect; calls in flight get the request
/// timeout to finish.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);

/// An accepted connection with its slot under `max_connections`, given back when tonic drops the connection.
struct Slotted {
    stream: MaybeTls,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Slotted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.tcp().connect_info()
    }
}

/// Binds the gRPC listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// The gRPC status of an error: the HTTP status REST would answer, in gRPC's terms, with the same message.
pub fn status(error: &ApiError) -> Status {
    use http::StatusCode as S;
    let message = error.to_string();
    match error.status() {
        S::BAD_REQUEST => Status::invalid_argument(message),
        S::NOT_FOUND => Status::not_found(message),
        S::PAYLOAD_TOO_LARGE => Status::resource_exhausted(message),
        S::SERVICE_UNAVAILABLE => Status::unavailable(message),
        S::GATEWAY_TIMEOUT => Status::deadline_exceeded(message),
        S::FORBIDDEN => Status::permission_denied(message),
        S::UNAUTHORIZED => Status::unauthenticated(message),
        S::CONFLICT => Status::failed_precondition(message),
        S::METHOD_NOT_ALLOWED => Status::unimplemented(message),
        _ => Status::internal(message),
    }
}

impl Grpc {
    /// An admin call's token, from the `authorization` metadata (`Bearer <token>`), as REST reads the header.
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let given = metadata.get("authorization").and_then(|v| v.to_str().ok());
        self.state.tokens.check(crate::auth::Gate::Admin, crate::auth::bearer(given)).map_err(|e| status(&e))
    }

    /// One inference, from the wire message to the wire message.
    /// `metadata` is the call's (for a stream, the stream's): a `traceparent` there is the request span's parent.
    async fn infer(
        &self,
        request: ModelInferRequest,
        metadata: &MetadataMap,
        charge: Option<SharedCharge>,
        served: &mut Served,
    ) -> Result<ModelInferResponse, ApiError> {
        let arrived = Instant::now();
        let request_id = request.id.clone();
        let trace = self.state.tracing.start_request(
            &MetadataExtractor(metadata),
            INFER_SPAN,
            || {
                vec![
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", "inference.GRPCInferenceService"),
                    KeyValue::new("rpc.method", "ModelInfer"),
                ]
            },
            arrived,
        );
        let result = self.infer_counted(request, metadata, charge, arrived, served, &trace).await;
        let served = &served.loaded;
        let series = served.as_ref().map_or(self.state.request_metrics.unresolved(), |m| m.series());
        series.observe(Protocol::Grpc, result.as_ref().map(|_| ()), arrived.elapsed().as_secs_f64());
        let ids = trace.ids();
        trace.finish(Outcome {
            status: result.as_ref().map_or_else(|e| e.status().as_u16(), |_| 200),
            grpc_code: Some(result.as_ref().map_or_else(|e| status(e).code() as i32, |_| 0)),
            model: served.as_ref().map(|m| (m.name(), m.version())),
            error: result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
        });
        if let Err(error) = &result {
            crate::routes::log_edge_error(error, "grpc", "ModelInfer", &request_id, ids);
        }
        result
    }

    async fn infer_counted(
        &self,
        request: ModelInferRequest,
        metadata: &MetadataMap,
        charge: Option<SharedCharge>,
        arrived: Instant,
        served: &mut Served,
        trace: &RequestTrace,
    ) -> Result<ModelInferResponse, ApiError> {
        // The same memory budget as REST. A unary call's bytes were charged as they arrived (the metered body, before
        // tonic decoded them); a stream's message is charged here. Then up to DECODE_FACTOR times the message for its
        // tensors, given back to what they hold once converted.
        let wire = prost::Message::encoded_len(&request);
        let (mut charge, arrived_charged) = match charge.and_then(|shared| shared.take()) {
            Some(charge) => (charge, true),
            None => (self.state.budget.charge(), false),
        };
        let decoding = wire.saturating_mul(crate::budget::DECODE_FACTOR).saturating_add(crate::budget::DECODE_SLACK);
        charge.add(if arrived_charged { decoding } else { decoding.saturating_add(wire * ARRIVAL_FACTOR) })?;
        // The same global in-flight limit as REST: beyond it, refuse at once rather than queue.
        let _permit = self.state.concurrency.clone().try_acquire_owned().map_err(|_| ApiError::Overloaded)?;
        let version = (!request.model_version.is_empty()).then_some(request.model_version.as_str());
        let target = self.state.registry.resolve_target(&request.model_name, version)?;
        served.loaded = Some(Arc::clone(&target.primary.loaded));
        let incoming = target.primary.loaded.incoming();
        let decoded = decode(request, target.primary.loaded.signature())?;
        charge.shrink_to(decoded.heap_bytes());
        // The rollout key from the call's metadata, as REST reads it from a header.
        let key = target.split.as_ref().and_then(|(rollout, _)| {
            rollout.spec.key.as_deref().and_then(|name| metadata.get(name)).map(|v| v.as_bytes())
        });
        let (decoded, outputs) =
            crate::serving::serve(&self.state, &target, key, incoming, decoded, arrived, trace, served).await?;
        let loaded = served.loaded.as_ref().unwrap_or(&target.primary.loaded);
        let mut raw_output_contents = Vec::with_capacity(outputs.len());
        let mut tensors = Vec::with_capacity(outputs.len());
        for output in outputs {
            let mut raw = Vec::with_capacity(output.data.raw_len());
            output.data.write_raw(&mut raw);
            raw_output_contents.push(raw.into());
            tensors.push(InferOutputTensor {
                datatype: output.data.datatype().as_str().to_owned(),
                shape: output.shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect(),
                name: output.name.to_string(),
                parameters: HashMap::new(),
                contents: None,
            });
        }
        Ok(ModelInferResponse {
            model_name: loaded.name().to_owned(),
            model_version: loaded.version().to_string(),
            id: decoded.id.unwrap_or_default(),
            parameters: HashMap::new(),
            outputs: tensors,
            raw_output_contents,
        })
    }
}

impl Grpc {
    /// A unary inference's answer and the metadata it carries: what REST says in headers, the rollout variant and
    /// the provenance. An error keeps the variant in its status's metadata.
    async fn answer_infer(
        &self,
        request: ModelInferRequest,
        metadata: &MetadataMap,
        charge: Option<SharedCharge>,
    ) -> Result<(ModelInferResponse, MetadataMap), Status> {
        let mut served = Served::default();
        let result = self.infer(request, metadata, charge, &mut served).await;
        let mut answer = MetadataMap::new();
        if let Some(variant) = served.variant {
            answer.insert(VARIANT_HEADER, tonic::metadata::MetadataValue::from_static(variant));
        }
        if let (Some(loaded), Ok(_)) = (&served.loaded, &result) {
            for (name, value) in provenance(loaded, served.revision.as_deref()) {
                if let Some(value) = value.and_then(|v| v.parse().ok()) {
                    answer.insert(name, value);
                }
            }
        }
        match result {
            Ok(response) => Ok((response, answer)),
            Err(error) => {
                let mut status = status(&error);
                if let Some(variant) = answer.get(VARIANT_HEADER) {
                    status.metadata_mut().insert(VARIANT_HEADER, variant.clone());
                }
                Err(status)
            }
        }
    }
}

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

/// Unary ModelInfer answered on hyper's HTTP/2 below tonic's router and codec: the message read from its 5-byte
/// frame, prost on it, the same handler as [`GrpcInferenceService::model_infer`], the answer framed here with
/// `grpc-status` in its trailers (an error is a trailers-only answer, as tonic sends it). `bash
/// benches/grpc_floor.sh` measured what the router and codec cost a bare tonic server per call: about a fifth of
/// its CPU. Under tonic's own layers (the timeout, `grpc-timeout`) and inside the metered body's layer, so the
/// limits are the same; a compressed call, or one without a gRPC content type, goes on to tonic.
#[derive(Clone)]
struct DirectInfer<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> DirectInfer<S> {
    /// Whether this layer answers the call itself.
    fn takes(request: &HttpRequest) -> bool {
        let header = |name: &str| request.headers().get(name).map(http::HeaderValue::as_bytes);
        request.uri().path() == MODEL_INFER_PATH
            && request.method() == http::Method::POST
            && matches!(header("content-type"), Some(b"application/grpc" | b"application/grpc+proto"))
            && matches!(header("grpc-encoding"), None | Some(b"identity"))
    }
}

impl<S> tower::Service<HttpRequest> for DirectInfer<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        if !Self::takes(&request) {
            return Box::pin(self.inner.call(request));
        }
        let grpc = Grpc { state: Arc::clone(&self.state) };
        Box::pin(async move { Ok(grpc.direct_infer(request).await.unwrap_or_else(Status::into_http)) })
    }
}

impl Grpc {
    async fn direct_infer(&self, request: HttpRequest) -> Result<HttpResponse, Status> {
        use http_body_util::BodyExt;
        use prost::Message;
        let (parts, body) = request.into_parts();
        let charge = parts.extensions.get::<SharedCharge>().cloned();
        let message = unary_message(body, self.state.max_body_bytes).await?;
        let request = ModelInferRequest::decode(message)
            .map_err(|e| Status::internal(format!("the ModelInferRequest message could not be decoded: {e}")))?;
        let metadata = MetadataMap::from_headers(parts.headers);
        let (response, answer) = self.answer_infer(request, &metadata, charge).await?;
        let length = response.encoded_len();
        let mut framed = bytes::BytesMut::with_capacity(5 + length);
        framed.extend_from_slice(&[0]);
        framed.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes());
        response.encode(&mut framed).map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
        let mut trailers = http::HeaderMap::new();
        trailers.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("0"));
        let body = http_body_util::Full::new(framed.freeze())
            .map_err(|never: std::convert::Infallible| -> Status { match never {} })
            .with_trailers(async move { Some(Ok(trailers)) });
        let mut response = http::Response::new(tonic::body::Body::new(body));
        *response.headers_mut() = answer.into_headers();
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        Ok(response)
    }
}

/// The one message of a unary call's body, without its 5-byte frame: one data frame is used as it is, more are
/// joined. At most `limit` bytes of message (the metered body refuses a longer declared length as it arrives).
async fn unary_message(mut body: tonic::body::Body, limit: usize) -> Result<bytes::Bytes, Status> {
    use http_body_util::BodyExt;
    let too_large = || status(&ApiError::PayloadTooLarge { limit_bytes: limit });
    let mut first: Option<bytes::Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        let held = first.as_ref().map_or(0, bytes::Bytes::len) + joined.len();
        if held.saturating_add(data.len()) > limit.saturating_add(5) {
            return Err(too_large());
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    let all = first.unwrap_or_else(|| joined.freeze());
    let Some((prefix, message)) = all.split_first_chunk::<5>() else {
        return Err(Status::internal("a unary call's body must hold one gRPC message; it held none"));
    };
    if prefix[0] != 0 {
        return Err(Status::internal("the message is marked compressed but the call names no grpc-encoding"));
    }
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length != message.len() {
        return Err(Status::internal(format!(
            "a unary call's body must hold exactly one gRPC message: the frame declares {length} bytes, the body \
             holds {}",
            message.len()
        )));
    }
    Ok(all.slice(5..))
}

/// A `ModelInferRequest` as the protocol-neutral request, checked as REST checks JSON: a datatype that differs from
/// the model's is refused before the data, and the data must fill the shape exactly.
fn decode(request: ModelInferRequest, signature: &crate::infer::Signature) -> Result<InferRequest, ApiError> {
    let ModelInferRequest { id, parameters, inputs, outputs, raw_input_contents, .. } = request;
    if !raw_input_contents.is_empty() && raw_input_contents.len() != inputs.len() {
        return Err(ApiError::InvalidBinary {
            message: format!(
                "{} raw_input_contents for {} inputs; send one per input, in order, or none",
                raw_input_contents.len(),
                inputs.len()
            ),
        });
    }
    let mut raw = raw_input_contents.into_iter();
    let tensors =
        inputs.into_iter().map(|input| decode_input(input, raw.next(), signature)).collect::<Result<Vec<_>, _>>()?;
    let timeout = match parameters.get("timeout").and_then(|p| p.parameter_choice.as_ref()) {
        None => None,
        Some(ParameterChoice::Int64Param(us)) if *us >= 0 => Some(Duration::from_micros(us.unsigned_abs())),
        Some(ParameterChoice::Uint64Param(us)) => Some(Duration::from_micros(*us)),
        Some(_) => {
            return Err(ApiError::InvalidParameter {
                name: "timeout",
                message: "must be a whole number of microseconds",
            })
        }
    };
    Ok(InferRequest {
        id: (!id.is_empty()).then_some(id),
        inputs: tensors.into(),
        outputs: outputs.into_iter().map(|o| o.name).collect(),
        timeout,
        binary: BinaryOutputs::default(),
    })
}

fn decode_input(
    input: InferInputTensor,
    raw: Option<bytes::Bytes>,
    signature: &crate::infer::Signature,
) -> Result<Tensor, ApiError> {
    let InferInputTensor { name, datatype, shape, contents, .. } = input;
    let invalid = |message: String| ApiError::InvalidData { input: name.clone(), message };
    let Some(dtype) = DataType::parse(&datatype) else {
        let known: Vec<&str> = DataType::ALL.iter().map(|t| t.as_str()).collect();
        return Err(invalid(format!("unknown datatype '{datatype}'; V2 datatypes are {}", known.join(", "))));
    };
    let spec = signature.inputs.iter().find(|s| *s.name == *name);
    if let Some(spec) = spec.filter(|s| s.datatype != dtype) {
        return Err(ApiError::DatatypeMismatch { input: name, expected: spec.datatype, got: datatype });
    }
    let shape: crate::infer::Shape = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| invalid(format!("shape {shape:?} has a negative dimension"))))
        .collect::<Result<_, _>>()?;
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| invalid(format!("shape {shape:?} is too large")))?;
    let data = match (raw, contents) {
        (Some(_), Some(contents)) if contents != InferTensorContents::default() => {
            return Err(invalid("has both contents and raw_input_contents; send one".to_owned()));
        }
        (Some(bytes), _) => TensorData::from_raw(dtype, &bytes, expected).map_err(&invalid)?,
        (None, Some(contents)) => typed(dtype, contents).map_err(&invalid)?,
        (None, None) => return Err(invalid("has no contents and no raw_input_contents".to_owned())),
    };
    if data.len() != expected {
        return Err(ApiError::ElementCount { input: name, shape: shape.to_vec(), expected, got: data.len() });
    }
    // The signature's name where the input is known (shared, not copied); an unknown one is refused later.
    let name = spec.map_or_else(|| name.into(), |s| s.name.clone());
    Ok(Tensor { name, shape, data })
}

/// Typed contents as tensor data: the field the protocol assigns to the datatype, with values checked to fit.
fn typed(datatype: DataType, c: InferTensorContents) -> Result<TensorData, String> {
    fn narrow<T: TryFrom<W>, W: Copy + std::fmt::Display>(values: Vec<W>, name: &str) -> Result<Vec<T>, String> {
        values.into_iter().map(|v| T::try_from(v).map_err(|_| format!("{v} does not fit {name}"))).collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(c.int_contents, "INT8")?),
        DataType::Int16 => TensorData::Int16(narrow(c.int_contents, "INT16")?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(c.uint_contents, "UINT8")?),
        DataType::Uint16 => TensorData::Uint16(narrow(c.uint_contents, "UINT16")?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(
            c.bytes_contents
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|_| format!("BYTES element {i} is not UTF-8; ONNX strings are UTF-8"))
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Fp16 => return Err("FP16 has no typed contents; send it in raw_input_contents".to_owned()),
    })
}

type InferStream = Pin<Box<dyn Stream<Item = Result<proto::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: Request<proto::ServerLiveRequest>,
    ) -> Result<Response<proto::ServerLiveResponse>, Status> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<proto::ServerReadyRequest>,
    ) -> Result<Response<proto::ServerReadyResponse>, Status> {
        Ok(Response::new(proto::ServerReadyResponse { ready: self.state.registry.is_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<proto::ModelReadyRequest>,
    ) -> Result<Response<proto::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let version = (!request.version.is_empty()).then_some(request.version.as_str());
        // Triton answers `ready: false` for a model it does not serve, rather than an error.
        let ready = self.state.registry.resolve(&request.name, version).is_ok();
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<proto::ServerMetadataRequest>,
    ) -> Result<Response<proto::ServerMetadataResponse>, Status> {
        Ok(Response::new(proto::ServerMetadataResponse {
            name: "vane".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: crate::serving::EXTENSIONS.iter().map(|&e| e.to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<proto::ModelMetadataRequest>,
    ) -> Result<Response<proto::ModelMetadataResponse>, Status> {
        use proto::model_metadata_response::TensorMetadata;
        let request = request.into_inner();
        let version = (!request.version.is_empty()).then_some(request.version.as_str());
        let table = self.state.registry.snapshot();
        let loaded = table.get(&request.name, version).map_err(|e| status(&e))?;
        let signature = loaded.signature();
        let tensors = |specs: &[crate::infer::TensorSpec]| {
            specs
                .iter()
                .map(|s| TensorMetadata {
                    name: s.name.to_string(),
                    datatype: s.datatype.as_str().to_owned(),
                    shape: s.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(proto::ModelMetadataResponse {
            name: loaded.name().to_owned(),
            versions: table.versions(&request.name).iter().map(u64::to_string).collect(),
            platform: crate::serving::PLATFORM.to_owned(),
            inputs: tensors(&signature.inputs),
            outputs: tensors(&signature.outputs),
        }))
    }

    /// Served by [`DirectInfer`] below tonic's router whenever the call allows it (identity encoding, a gRPC content
    /// type); this is the path of the rest (compressed calls, clients that reach the service another way).
    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let (metadata, extensions, request) = request.into_parts();
        let charge = extensions.get::<SharedCharge>().cloned();
        let (response, answer) = self.answer_infer(request, &metadata, charge).await?;
        let mut response = Response::new(response);
        *response.metadata_mut() = answer;
        Ok(response)
    }

    type ModelStreamInferStream = InferStream;

    /// Each request of the stream is answered on it, in completion order (clients match answers by `id`), up to
    /// [`STREAM_IN_FLIGHT`] at once. An error is an answer with `error_message`, as Triton sends it; the stream
    /// goes on.
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let (metadata, _, mut requests) = request.into_parts();
        let metadata = Arc::new(metadata);
        let (answers, stream) = mpsc::channel(STREAM_IN_FLIGHT);
        let service = Grpc { state: Arc::clone(&self.state) };
        tokio::spawn(async move {
            let service = Arc::new(service);
            let slots = Arc::new(tokio::sync::Semaphore::new(STREAM_IN_FLIGHT));
            while let Some(next) = requests.next().await {
                let request = match next {
                    Ok(request) => request,
                    Err(error) => {
                        let _ = answers.send(Err(error)).await;
                        break;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
                let (service, answers, metadata) = (Arc::clone(&service), answers.clone(), Arc::clone(&metadata));
                tokio::spawn(async move {
                    let id = request.id.clone();
                    let mut served = Served::default();
                    let answer = match service.infer(request, &metadata, None, &mut served).await {
                        Ok(mut response) => {
                            // A stream's answers carry no metadata of their own: the variant and the provenance go
                            // in the answer's parameters.
                            if let Some(loaded) = &served.loaded {
                                let variant = served.variant.map(|v| (VARIANT_HEADER, Some(v)));
                                for (name, value) in
                                    provenance(loaded, served.revision.as_deref()).into_iter().chain(variant)
                                {
                                    if let Some(value) = value {
                                        let choice = ParameterChoice::StringParam(value.to_owned());
                                        response.parameters.insert(
                                            name.to_owned(),
                                            proto::InferParameter { parameter_choice: Some(choice) },
                                        );
                                    }
                                }
                            }
                            proto::ModelStreamInferResponse {
                                error_message: String::new(),
                                infer_response: Some(response),
                            }
                        }
                        Err(error) => proto::ModelStreamInferResponse {
                            error_message: error.to_string(),
                            infer_response: Some(ModelInferResponse { id, ..ModelInferResponse::default() }),
                        },
                    };
                    // The client may have gone; then nobody needs the answer.
                    let _ = answers.send(Ok(answer)).await;
                    drop(slot);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn repository_index(
        &self,
        request: Request<proto::RepositoryIndexRequest>,
    ) -> Result<Response<proto::RepositoryIndexResponse>, Status> {
        use proto::repository_index_response::ModelIndex;
        let ready_only = request.into_inner().ready;
        let models = crate::routes::repository_index(&self.state, ready_only)
            .into_iter()
            .map(|e| ModelIndex { name: e.name, version: e.version, state: e.state.to_owned(), reason: e.reason })
            .collect();
        Ok(Response::new(proto::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<proto::RepositoryModelLoadRequest>,
    ) -> Result<Response<proto::RepositoryModelLoadResponse>, Status> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        crate::routes::check_repository_parameter_names(request.parameters.keys().map(String::as_str), &[], |name| {
            if name == "config" || name.starts_with("file:") {
                "is not supported: Vane loads models from the model directory only"
            } else {
                "is not a load parameter Vane knows"
            }
        })
        .map_err(|e| status(&e))?;
        crate::routes::repository_load(&self.state, &request.model_name).await.map_err(|e| status(&e))?;
        Ok(Response::new(proto::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<proto::RepositoryModelUnloadRequest>,
    ) -> Result<Response<proto::RepositoryModelUnloadResponse>, Status> {
        self.authorize(request.metadata())?;
        let request = request.into_inner();
        crate::routes::check_repository_parameter_names(
            request.parameters.keys().map(String::as_str),
            &["unload_dependents"],
            |_| "is not an unload parameter Vane knows",
        )
        .map_err(|e| status(&e))?;
        crate::routes::repository_unload(&self.state, &request.model_name).await.map_err(|e| status(&e))?;
        Ok(Response::new(proto::RepositoryModelUnloadResponse {}))
    }
}
