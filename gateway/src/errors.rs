//! The gateway's errors: [`ApiError`] is what a client sees (status, stable code, safe message), [`LoadError`] is
//! why a model could not be loaded, [`InferError`] why a run failed. `ApiError::status` is the one place where an
//! outcome becomes an HTTP status.

use std::path::PathBuf;

use http::StatusCode;

use crate::infer::DataType;

/// An error answered to a client. The message is safe to show: it never carries ONNX Runtime's own text.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON, or not the protocol's shape of it.
    #[error("invalid JSON body: {message}")]
    InvalidJson {
        /// What the parser said, with line and column.
        message: String,
    },
    /// The binary tensor extension's framing does not add up.
    #[error("invalid binary tensor request: {message}")]
    InvalidBinary {
        /// How the header length, the sizes and the body disagree.
        message: String,
    },
    /// A model input is absent from the request.
    #[error("missing input '{input}': the model's inputs are {expected}")]
    MissingInput {
        /// The input the model needs.
        input: String,
        /// Every input the model takes.
        expected: String,
    },
    /// The request names an input the model does not have.
    #[error("unknown input '{input}': the model's inputs are {expected}")]
    UnknownInput {
        /// The input the request named.
        input: String,
        /// Every input the model takes.
        expected: String,
    },
    /// The request gives the same input twice.
    #[error("input '{input}' is given more than once")]
    DuplicateInput {
        /// The input.
        input: String,
    },
    /// The request's datatype for an input differs from the model's.
    #[error("input '{input}' has datatype {got} but the model expects {expected}")]
    DatatypeMismatch {
        /// The input.
        input: String,
        /// The model's datatype.
        expected: DataType,
        /// The request's datatype, as sent.
        got: String,
    },
    /// The request's shape for an input does not fit the model's.
    #[error("input '{input}' has shape {got:?} but the model expects {expected:?} (-1 means any size)")]
    ShapeMismatch {
        /// The input.
        input: String,
        /// The model's shape, -1 for dynamic dimensions.
        expected: Vec<i64>,
        /// The request's shape.
        got: Vec<usize>,
    },
    /// An input's `data` holds a different number of elements than its shape says.
    #[error("input '{input}' has shape {shape:?}, which needs {expected} elements, but its data holds {got}")]
    ElementCount {
        /// The input.
        input: String,
        /// The request's shape.
        shape: Vec<usize>,
        /// The product of the shape.
        expected: usize,
        /// The number of elements sent.
        got: usize,
    },
    /// An input's batch (first) dimension is zero.
    #[error("input '{input}' has an empty batch (shape {shape:?}): send at least one row")]
    EmptyBatch {
        /// The input.
        input: String,
        /// The request's shape.
        shape: Vec<usize>,
    },
    /// An element of `data` is not of the input's datatype.
    #[error("input '{input}': {message}")]
    InvalidData {
        /// The input.
        input: String,
        /// What was wrong, naming the expected datatype.
        message: String,
    },
    /// A request has more rows than the model version's `max_batch_size`.
    #[error("input '{input}' has {rows} rows but model '{model}' takes at most {max_rows} per request (its max_batch_size); split the request")]
    TooManyRows {
        /// The model.
        model: String,
        /// The first input.
        input: String,
        /// The rows sent.
        rows: usize,
        /// The limit.
        max_rows: usize,
    },
    /// A request parameter has a value of the wrong kind.
    #[error("parameter '{name}': {message}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What was wrong.
        message: &'static str,
    },
    /// A repository load or unload parameter that Vane does not implement.
    #[error("repository parameter '{name}' {message}")]
    InvalidRepositoryParameter {
        /// The parameter.
        name: String,
        /// Why it is refused.
        message: &'static str,
    },
    /// The request asks for an output the model does not have.
    #[error("unknown output '{output}': the model's outputs are {expected}")]
    UnknownOutput {
        /// The output the request named.
        output: String,
        /// Every output the model has.
        expected: String,
    },
    /// No model of that name is served.
    #[error("model '{model}' is not served; served models: {available}")]
    ModelNotFound {
        /// The requested model.
        model: String,
        /// The models that are served.
        available: String,
    },
    /// The model is served, but not in that version.
    #[error("model '{model}' has no version '{version}'; served versions: {available}")]
    VersionNotFound {
        /// The model.
        model: String,
        /// The requested version.
        version: String,
        /// The versions that are served.
        available: String,
    },
    /// No route matches the path.
    #[error("no such endpoint: {path}")]
    RouteNotFound {
        /// The request path.
        path: String,
    },
    /// The route exists but not for this method.
    #[error("method {method} is not allowed here; use {allowed}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The method the route takes.
        allowed: &'static str,
    },
    /// The body is larger than the configured limit.
    #[error("request body is larger than the {limit_bytes}-byte limit")]
    PayloadTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// The body could not be read from the connection.
    #[error("could not read the request body")]
    BodyRead,
    /// The body did not arrive within the body-read timeout.
    #[error("the request body did not arrive within {limit_ms} ms")]
    BodyTimeout {
        /// The limit.
        limit_ms: u128,
    },
    /// The requests in flight already hold the server's memory budget (`--max-inflight-bytes`).
    #[error(
        "server is at its in-flight memory budget ({limit_bytes} bytes held by requests in progress); retry shortly"
    )]
    MemoryBudget {
        /// The budget.
        limit_bytes: usize,
    },
    /// The request's tensors would take more memory than the decoder allows for its size.
    #[error("the request's tensors would need more than {limit_bytes} bytes of memory ({factor}x its {body_bytes}-byte body plus {slack} bytes); BYTES cost 24 bytes per element besides their text: send fewer, longer strings or split the request")]
    DecodeTooLarge {
        /// The body's size.
        body_bytes: usize,
        /// The limit that was reached.
        limit_bytes: usize,
        /// The multiple of the body allowed.
        factor: usize,
        /// The fixed allowance.
        slack: usize,
    },
    /// The request has more of something (inputs, outputs, dimensions) than is accepted.
    #[error("the request has more than {limit} {what}; {detail}")]
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// The most accepted.
        limit: usize,
        /// Why the limit is what it is (the model's inputs, say).
        detail: String,
    },
    /// The request's `id` is longer than the limit.
    #[error("the request id is {got} bytes long; at most {limit} are accepted")]
    RequestIdTooLong {
        /// The id's length.
        got: usize,
        /// The limit.
        limit: usize,
    },
    /// A state-changing call on a server with no token for it, reached over a non-loopback address.
    #[error("{what} needs a token and none is configured: set {variable} (send it as Authorization: Bearer <token>); without one these calls are taken only on a loopback listener")]
    TokenNotConfigured {
        /// The call.
        what: &'static str,
        /// The variables that configure a token for it.
        variable: &'static str,
    },
    /// The model version's queue is full: the request is refused at once rather than waiting.
    #[error("model '{model}' version {version} is at capacity (queue full); retry shortly")]
    QueueFull {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// The server's concurrency limit is reached (load shedding).
    #[error("server is at capacity; retry shortly")]
    Overloaded,
    /// The request took longer than the server's request timeout.
    #[error("request did not finish within the server's {limit_ms} ms limit")]
    Timeout {
        /// The limit.
        limit_ms: u128,
    },
    /// The request's deadline passed before it ran; it was not run.
    #[error("the request's deadline passed before model '{model}' version {version} could run it; it was not run")]
    DeadlineExceeded {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// A feature that is not configured on this server.
    #[error("{what} is disabled: {how}")]
    Disabled {
        /// The feature.
        what: &'static str,
        /// How to turn it on.
        how: &'static str,
    },
    /// Authentication failed.
    #[error("unauthorized: {what}")]
    Unauthorized {
        /// What was wrong.
        what: &'static str,
    },
    /// The request conflicts with the current state (for example a rollback to an unknown commit).
    #[error("{reason}")]
    Conflict {
        /// Why.
        reason: String,
    },
    /// The server is shutting down or its model set is not loaded.
    #[error("server is not ready")]
    NotReady,
    /// ONNX Runtime failed on a valid request; details are in the server log only.
    #[error("inference failed for model '{model}' version {version}; the server log has details")]
    Inference {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
}

/// Why a model version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// ONNX Runtime itself could not be loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// ONNX Runtime refused the file.
    #[error("cannot load {path}: {source}")]
    Session {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// An input or output is of a kind the protocol cannot carry (a map, a sequence, an unsupported element type).
    #[error("cannot serve {path}: {what} '{name}' is {kind}; only tensors of V2 datatypes can be served (export classifiers with zipmap off)")]
    UnsupportedIo {
        /// The model file.
        path: PathBuf,
        /// "input" or "output".
        what: &'static str,
        /// Its name.
        name: String,
        /// What it is.
        kind: String,
    },
    /// The graph's inputs or outputs differ from what the manifest declares.
    #[error("{path}: {message}")]
    IoMismatch {
        /// The model file.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// A rollout cannot run between the versions it names.
    #[error("model '{model}': rollout: {message}")]
    Rollout {
        /// The model.
        model: String,
        /// What does not fit.
        message: String,
    },
    /// The reference data cannot be monitored against the model's inputs.
    #[error("{path}: monitoring: {message}")]
    Monitoring {
        /// The model file.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
    /// The warm-up did not reproduce the golden set.
    #[error("{path}: {message}")]
    Golden {
        /// The model file.
        path: PathBuf,
        /// What differed.
        message: String,
    },
    /// The warm-up run failed.
    #[error("warm-up run of {path} failed: {source}")]
    Warmup {
        /// The model file.
        path: PathBuf,
        /// The run's error.
        #[source]
        source: InferError,
    },
    /// The load was cancelled (a newer commit superseded it) before it finished.
    #[error("cancelled: a newer commit superseded this one")]
    Cancelled,
    /// The blocking task that loads models failed.
    #[error("model loading task failed: {0}")]
    Task(String),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread for {path}: {source}")]
    SpawnWorker {
        /// The model file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why ONNX Runtime could not be loaded into the process.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// No library path is known: not baked in at build time and `ORT_DYLIB_PATH` unset.
    #[error("ONNX Runtime library not configured: set ORT_DYLIB_PATH to libonnxruntime.so.1.31.1 (pip install onnxruntime==1.31.1 ships it in onnxruntime/capi/)")]
    NotConfigured,
    /// The library file does not exist.
    #[error("ONNX Runtime library not found at {path} (from {origin}): set ORT_DYLIB_PATH to an existing libonnxruntime.so.1.31.1, or rebuild to fetch it")]
    NotFound {
        /// The path looked at.
        path: PathBuf,
        /// Where the path came from.
        origin: &'static str,
    },
    /// The file exists but could not be loaded or initialised.
    #[error("ONNX Runtime library at {path} (from {origin}) could not be loaded: {message}; ORT_DYLIB_PATH must name libonnxruntime.so.1.31.1")]
    Load {
        /// The path.
        path: PathBuf,
        /// Where the path came from.
        origin: &'static str,
        /// The loader's message.
        message: String,
    },
}

/// Why a queued inference did not produce outputs.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// ONNX Runtime returned an error.
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    /// An output came back of a type the protocol cannot carry.
    #[error("output '{name}' is not a tensor of a V2 datatype")]
    UnsupportedOutput {
        /// The output.
        name: String,
    },
    /// The run panicked inside the worker; the worker survived.
    #[error("the run panicked: {0}")]
    Panicked(String),
    /// The job's deadline passed while it was queued; it was not run.
    #[error("deadline passed while queued")]
    DeadlineExceeded,
    /// A batched output's first dimension was not the batch's row count, so it could not be split per request.
    #[error("a batched output could not be split back into requests")]
    BatchSplit,
    /// The batch this request was part of failed.
    #[error("the batch failed: {0}")]
    Batch(String),
    /// The worker went away before answering (the model is shutting down).
    #[error("the model's worker stopped before answering")]
    WorkerGone,
}

// === impl ApiError ===

impl ApiError {
    /// The HTTP status for this error: 4xx for anything the client can fix, 5xx for ours.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson { .. }
            | Self::InvalidBinary { .. }
            | Self::MissingInput { .. }
            | Self::UnknownInput { .. }
            | Self::DuplicateInput { .. }
            | Self::DatatypeMismatch { .. }
            | Self::ShapeMismatch { .. }
            | Self::ElementCount { .. }
            | Self::EmptyBatch { .. }
            | Self::InvalidData { .. }
            | Self::UnknownOutput { .. }
            | Self::TooManyRows { .. }
            | Self::InvalidParameter { .. }
            | Self::DecodeTooLarge { .. }
            | Self::InvalidRepositoryParameter { .. }
            | Self::TooMany { .. }
            | Self::RequestIdTooLong { .. }
            | Self::BodyRead => StatusCode::BAD_REQUEST,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::TokenNotConfigured { .. } => StatusCode::FORBIDDEN,
            Self::ModelNotFound { .. } | Self::VersionNotFound { .. } | Self::RouteNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Disabled { .. } => StatusCode::FORBIDDEN,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QueueFull { .. } | Self::Overloaded | Self::NotReady | Self::MemoryBudget { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout { .. } | Self::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Inference { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds a client should wait before retrying, for the errors where a retry can succeed.
    pub fn retry_after_seconds(&self) -> Option<u32> {
        match self {
            Self::QueueFull { .. } | Self::Overloaded | Self::NotReady | Self::MemoryBudget { .. } => Some(1),
            _ => None,
        }
    }
}
