//! Models as the gateway serves them: loading and warming a version, its signature, and running requests on its
//! worker threads through the dynamic batcher.

pub mod batch;
mod onnx;
mod signature;
mod stats;
mod tensor;
mod worker;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reconciler::manifest::IoSpec;
use reconciler::{DesiredModel, DesiredVersion, GoldenSet, ModelConfig};
use tokio::sync::oneshot;

use crate::errors::{ApiError, InferError, LoadError};
use crate::metrics::request_series::{RequestMetrics, VersionSeries};
use crate::traces::RequestTrace;

pub use signature::{names as describe_tensors, Signature, TensorSpec};
pub use stats::{ModelStats, StatsSnapshot};
pub(crate) use tensor::with_vec;
pub use tensor::{string_heap_bytes, DataType, Shape, Tensor, TensorData, Tensors};
pub use worker::{BatchPolicy, WorkerGroup};
use worker::{InlineJob, Job, SubmitError, WorkerPool};

/// How model versions are run: the server-wide defaults, which a model's own [`ModelConfig`] overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSettings {
    /// Worker threads (each with its own session) per model version.
    pub workers: NonZeroUsize,
    /// Requests that may wait in a model version's queue before new ones get 503.
    pub queue_capacity: NonZeroUsize,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: NonZeroUsize,
    /// Most rows per formed batch and per request, for models whose first dimension is dynamic; 0 or 1: off.
    pub max_batch_size: usize,
    /// Longest the batcher waits for more rows, from the oldest queued request.
    pub max_queue_delay: Duration,
    /// A version whose single-request runs take at most this long runs a request on the thread that decoded it
    /// when it is the version's only request (see `worker`); zero: always on worker threads.
    pub inline_max_run: Duration,
}

/// One loaded, warmed model version, ready for requests. Cheap to share (`Arc`); when the last holder drops it,
/// its queue closes and its workers exit.
pub struct LoadedModel {
    name: String,
    version: u64,
    /// `version` as text, for answers (formatted once, not per request).
    version_text: String,
    /// Every output's position: the selection of a request that names none (shared, not built per request).
    all_outputs: Arc<[usize]>,
    path: PathBuf,
    fingerprint: String,
    config: ModelConfig,
    reference_sha256: Option<String>,
    golden: Option<GoldenSet>,
    signature: Signature,
    policy: BatchPolicy,
    stats: Arc<ModelStats>,
    pool: WorkerPool,
    queue_capacity: usize,
    series: VersionSeries,
}

/// Counts a request as on its way to a model version's queue (the batcher waits for such requests) until it is
/// queued or refused.
pub struct Incoming<'a> {
    _guard: stats::IncomingGuard<'a>,
}

/// Loads model versions: builds their sessions, checks and warms them, and starts their workers.
#[derive(Clone)]
pub struct ModelLoader {
    defaults: ModelSettings,
    group: WorkerGroup,
    metrics: RequestMetrics,
}

/// The default [`ModelSettings::inline_max_run`].
pub const DEFAULT_INLINE_MAX_RUN: Duration = Duration::from_micros(20);

/// At load, the single-request run is timed this many times at most (and for at most [`MAX_ESTIMATE_TIME`]).
const ESTIMATE_RUNS: usize = 15;
const MAX_ESTIMATE_TIME: Duration = Duration::from_millis(50);

// === impl ModelSettings ===

impl Default for ModelSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Self {
            // Half the cores, 1 to 4: the other half parse and write HTTP/JSON. Parallelism across requests beats ORT's
            // intra-op pool on small machines; each extra session of an 8 MB model costs 12-14 MB. Measured on 2
            // cores: one worker served the small models 10-20% faster than two (benches/README.md).
            workers: NonZeroUsize::new((cores / 2).clamp(1, 4)).unwrap_or(NonZeroUsize::MIN),
            // Absorbs a burst from a few dozen clients; a longer queue would only make clients wait longer than a
            // retry takes.
            queue_capacity: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            intra_threads: NonZeroUsize::MIN,
            // Big enough for client-side batches and for what 64 concurrent clients form; small enough to bound a
            // batch's memory (the 1024-feature model: 512 KiB of input).
            max_batch_size: 128,
            // "A few hundred microseconds": invisible next to network latency, enough for batches to form under
            // load. The batcher waits only while requests are on their way, so a lone request is never delayed.
            max_queue_delay: Duration::from_micros(300),
            // Runs of a few microseconds, where the hop to a worker thread and back (two wake-ups) is most of a lone
            // request's latency (benches/README.md); well under what a tokio thread may spend between awaits.
            inline_max_run: DEFAULT_INLINE_MAX_RUN,
        }
    }
}

impl ModelSettings {
    /// These settings with a model's own config applied over them.
    pub fn with_config(&self, config: &ModelConfig) -> Self {
        let nonzero =
            |value: Option<usize>, default: NonZeroUsize| value.and_then(NonZeroUsize::new).unwrap_or(default);
        Self {
            workers: nonzero(config.workers, self.workers),
            queue_capacity: nonzero(config.queue_capacity, self.queue_capacity),
            intra_threads: nonzero(config.intra_threads, self.intra_threads),
            max_batch_size: config.max_batch_size.unwrap_or(self.max_batch_size),
            max_queue_delay: config.max_queue_delay.unwrap_or(self.max_queue_delay),
            inline_max_run: config.inline_max_run.unwrap_or(self.inline_max_run),
        }
    }
}

// === impl ModelLoader ===

impl ModelLoader {
    /// A loader with server-wide `defaults`, whose workers are tracked by `group`.
    pub fn new(defaults: ModelSettings, group: WorkerGroup) -> Self {
        Self { defaults, group, metrics: RequestMetrics::default() }
    }

    /// This loader, giving each version it loads its handles in `metrics`.
    pub fn with_metrics(mut self, metrics: RequestMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The worker threads this loader's models run.
    pub fn workers(&self) -> &WorkerGroup {
        &self.group
    }

    /// Loads, checks and warms one version. Blocking (file reads, graph optimisation, warm-up runs): call it off
    /// the async threads. The model is only returned once every session has answered a warm-up run.
    pub fn load(&self, model: &DesiredModel, desired: &DesiredVersion) -> Result<LoadedModel, LoadError> {
        let (name, config) = (model.name.as_str(), &model.config);
        let settings = self.defaults.with_config(config);
        let path = desired.path.as_path();
        let mut sessions = Vec::with_capacity(settings.workers.get());
        for _ in 0..settings.workers.get() {
            sessions.push(onnx::build_session(path, settings.intra_threads.get())?);
        }
        let signature = Signature::from_session(&sessions[0], path)?;
        let mut policy = BatchPolicy { max_rows: settings.max_batch_size, max_delay: settings.max_queue_delay };
        if policy.enabled() && !signature.batches_on_first_dimension() {
            policy = BatchPolicy::OFF;
        }
        for session in &mut sessions {
            warm_up(session, &signature, path, 1)?;
        }
        if let Some(golden) = &desired.golden {
            check_golden(&mut sessions[0], &signature, golden)
                .map_err(|message| LoadError::Golden { path: path.into(), message })?;
        }
        if policy.enabled() && !warm_up(&mut sessions[0], &signature, path, 2)? {
            tracing::info!(
                model = name,
                version = desired.version,
                "outputs do not follow the batch dimension; batching off"
            );
            policy = BatchPolicy::OFF;
        }
        let stats = Arc::new(ModelStats::default());
        let estimate = if settings.inline_max_run.is_zero() {
            Duration::MAX
        } else {
            estimate_run(&mut sessions[0], &signature, path, settings.inline_max_run)?
        };
        stats.set_run_estimate(estimate);
        let label = format!("{name}-{}", desired.version);
        let series = self.metrics.for_version(name, &desired.version.to_string());
        let queue_capacity = settings.queue_capacity.get();
        let pool = WorkerPool::start(
            &label,
            sessions,
            signature.output_names(),
            queue_capacity,
            policy,
            settings.inline_max_run,
            Arc::clone(&stats),
            series.clone(),
            &self.group,
        )
        .map_err(|source| LoadError::SpawnWorker { path: path.into(), source })?;
        Ok(LoadedModel {
            name: name.to_owned(),
            version: desired.version,
            version_text: desired.version.to_string(),
            all_outputs: (0..signature.outputs.len()).collect(),
            path: path.to_owned(),
            fingerprint: desired.fingerprint.clone(),
            config: *config,
            reference_sha256: model.reference_data.as_ref().map(|r| r.sha256.clone()),
            golden: desired.golden.clone(),
            signature,
            policy,
            stats,
            pool,
            queue_capacity,
            series,
        })
    }
}

/// Checks the graph against the inputs and outputs a manifest declares: each declared tensor must exist with the
/// same datatype and shape (-1 matching only -1), and every graph input must be declared when any input is.
pub fn check_io(signature: &Signature, io: &IoSpec) -> Result<(), String> {
    let sides = [("input", &io.inputs, &signature.inputs), ("output", &io.outputs, &signature.outputs)];
    for (what, declared, actual) in sides {
        for decl in declared {
            let Some(spec) = actual.iter().find(|s| *s.name == *decl.name) else {
                let names: Vec<&str> = actual.iter().map(|s| &*s.name).collect();
                return Err(format!(
                    "declared {what} '{}' is not in the graph (its {what}s: {})",
                    decl.name,
                    names.join(", ")
                ));
            };
            if spec.datatype.as_str() != decl.datatype || spec.shape != decl.shape {
                return Err(format!(
                    "{what} '{}' is declared {} {:?} but the graph has {} {:?}",
                    decl.name, decl.datatype, decl.shape, spec.datatype, spec.shape
                ));
            }
        }
        if !declared.is_empty() {
            if let Some(missing) = actual.iter().find(|s| !declared.iter().any(|d| *d.name == *s.name)) {
                return Err(format!("the graph's {what} '{}' is not declared", missing.name));
            }
        }
    }
    Ok(())
}

/// Runs a golden set's inputs and compares every expected output: same shape and datatype, floats within the
/// tolerance, everything else exactly.
fn check_golden(session: &mut ort::session::Session, signature: &Signature, golden: &GoldenSet) -> Result<(), String> {
    let body: serde_json::Value =
        serde_json::from_slice(&golden.json).map_err(|e| format!("golden set is not JSON: {e}"))?;
    let inputs = crate::protocol::decode_request(&golden.json, None, Some(signature))
        .map_err(|e| format!("golden inputs: {e}"))?;
    let mut inputs = inputs.inputs;
    signature.check_inputs(&mut inputs).map_err(|e| format!("golden inputs: {e}"))?;
    let expected = serde_json::json!({"inputs": body.get("outputs").cloned().unwrap_or_default()});
    let expected = crate::protocol::decode_request(expected.to_string().as_bytes(), None, None)
        .map_err(|e| format!("golden outputs: {}", e.to_string().replace("input '", "output '")))?
        .inputs;
    let all: Vec<usize> = (0..signature.outputs.len()).collect();
    let actual =
        onnx::run(session, inputs, &all, &signature.output_names()).map_err(|e| format!("golden run failed: {e}"))?;
    for want in &expected {
        let got = actual
            .iter()
            .find(|t| t.name == want.name)
            .ok_or_else(|| format!("golden output '{}' is not a model output", want.name))?;
        if got.shape != want.shape || got.data.datatype() != want.data.datatype() {
            return Err(format!(
                "output '{}': expected {} {:?}, got {} {:?}",
                want.name,
                want.data.datatype(),
                want.shape,
                got.data.datatype(),
                got.shape
            ));
        }
        if let Some(i) = first_difference(&got.data, &want.data, golden.tolerance) {
            return Err(format!(
                "output '{}' differs from the golden set at element {i} (tolerance {})",
                want.name, golden.tolerance
            ));
        }
    }
    Ok(())
}

fn first_difference(got: &TensorData, want: &TensorData, tolerance: f64) -> Option<usize> {
    match (got, want) {
        (TensorData::Fp32(a), TensorData::Fp32(b)) => {
            a.iter().zip(b).position(|(x, y)| f64::from((x - y).abs()) > tolerance)
        }
        (TensorData::Fp64(a), TensorData::Fp64(b)) => a.iter().zip(b).position(|(x, y)| (x - y).abs() > tolerance),
        _ if got == want => None,
        _ => Some(0),
    }
}

/// The most elements a warm-up allocates, all inputs together (128 MiB of FP32; a BYTES element costs about 24 bytes).
const MAX_WARMUP_ELEMENTS: usize = 32 << 20;

fn elements_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// How long one request of one row takes to run on its own, in CPU time: the median of up to [`ESTIMATE_RUNS`]
/// timed runs of zeros, stopped early after [`MAX_ESTIMATE_TIME`] or once a run takes over 4x `limit`: a slow model
/// costs one more run at load (the warm-up's own run is not used: a first run pays ONNX Runtime's lazy setup).
fn estimate_run(
    session: &mut ort::session::Session,
    signature: &Signature,
    path: &Path,
    limit: Duration,
) -> Result<Duration, LoadError> {
    let begun = Instant::now();
    let mut runs = Vec::with_capacity(ESTIMATE_RUNS);
    while runs.len() < ESTIMATE_RUNS && begun.elapsed() < MAX_ESTIMATE_TIME {
        let (_, run) = warm_up_timed(session, signature, path, 1)?;
        runs.push(run);
        if run > limit.saturating_mul(4) {
            return Ok(run);
        }
    }
    runs.sort_unstable();
    Ok(runs[runs.len() / 2])
}

/// Runs zeros (empty strings, `false`) through `session` with `rows` rows; returns whether every output's first
/// dimension came back as `rows` (so batched outputs can be split per request).
fn warm_up(
    session: &mut ort::session::Session,
    signature: &Signature,
    path: &Path,
    rows: usize,
) -> Result<bool, LoadError> {
    warm_up_timed(session, signature, path, rows).map(|(batches, _)| batches)
}

/// [`warm_up`], and how long ONNX Runtime's run took (of the thread's CPU time).
fn warm_up_timed(
    session: &mut ort::session::Session,
    signature: &Signature,
    path: &Path,
    rows: usize,
) -> Result<(bool, Duration), LoadError> {
    // The graph's static dimensions come from an untrusted file: their product is checked before anything is
    // allocated (a declared [100000, 100000] input would otherwise be 40 GB of zeros).
    let mut elements = 0usize;
    let mut inputs = Tensors::with_capacity(signature.inputs.len());
    for spec in &signature.inputs {
        let mut shape = spec.unit_shape();
        if let Some(first) = shape.first_mut().filter(|_| spec.has_dynamic_batch()) {
            *first = rows;
        }
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        elements = count.and_then(|c| elements.checked_add(c)).unwrap_or(usize::MAX);
        if elements > MAX_WARMUP_ELEMENTS {
            return Err(LoadError::IoMismatch {
                path: path.into(),
                message: format!(
                    "input '{}' has the static shape {shape:?}: warming it up needs more than {MAX_WARMUP_ELEMENTS} \
                     elements (inputs together), the most a warm-up allocates",
                    spec.name
                ),
            });
        }
        if let Some(data) = TensorData::zeros(spec.datatype, elements_of(&shape)) {
            inputs.push(Tensor { name: spec.name.clone(), shape: shape.into(), data });
        }
    }
    let all: Vec<usize> = (0..signature.outputs.len()).collect();
    let started = worker::thread_cpu_time();
    let outputs = onnx::run(session, inputs, &all, &signature.output_names())
        .map_err(|source| LoadError::Warmup { path: path.into(), source })?;
    let run = worker::thread_cpu_time().saturating_sub(started);
    Ok((outputs.iter().all(|o| o.shape.first() == Some(&rows)), run))
}

// === impl LoadedModel ===

impl LoadedModel {
    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version number.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version number as text.
    pub fn version_text(&self) -> &str {
        &self.version_text
    }

    /// Every output's position, in graph order.
    pub fn all_outputs(&self) -> Arc<[usize]> {
        Arc::clone(&self.all_outputs)
    }

    /// The artifact's fingerprint when it was loaded.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether this is exactly what `desired` of `model` would load: same artifact, settings and reference data.
    pub fn is_current(&self, model: &DesiredModel, desired: &DesiredVersion) -> bool {
        self.fingerprint == desired.fingerprint
            && self.path == desired.path
            && self.config == model.config
            && self.reference_sha256.as_deref() == model.reference_data.as_ref().map(|r| r.sha256.as_str())
            && self.golden == desired.golden
    }

    /// The sha256 of the reference data served with this version, if any.
    pub fn reference_sha256(&self) -> Option<&str> {
        self.reference_sha256.as_deref()
    }

    /// What the model takes and gives.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// How this version batches (off when the model cannot).
    pub fn batch_policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Its Prometheus handles (requests, durations, queue, inference, batch sizes).
    pub fn series(&self) -> &VersionSeries {
        &self.series
    }

    /// Requests this version's queue holds before refusing.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// The live counters of its queue and workers.
    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Marks a request as on its way to this version's queue; pass the guard to [`LoadedModel::infer`].
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { _guard: stats::IncomingGuard::new(self.stats.incoming()) }
    }

    /// Runs checked inputs (see [`Signature::check_inputs`]) on a worker and returns the selected outputs.
    /// Never blocks the calling thread: a full queue is refused at once with [`ApiError::QueueFull`], and a request
    /// still queued at `deadline` is answered [`ApiError::DeadlineExceeded`] and never runs. `client_deadline` says
    /// the deadline is the client's (shorter than the server's timeout, which the edge enforces by itself).
    pub async fn infer(
        &self,
        incoming: Incoming<'_>,
        inputs: Tensors,
        outputs: Arc<[usize]>,
        deadline: Instant,
        client_deadline: bool,
        trace: &RequestTrace,
    ) -> Result<Tensors, ApiError> {
        let rows = batch::rows(&inputs);
        if self.policy.enabled() && rows > self.policy.max_rows {
            let input = inputs.first().map(|t| t.name.to_string()).unwrap_or_default();
            return Err(ApiError::TooManyRows {
                model: self.name.clone(),
                input,
                rows,
                max_rows: self.policy.max_rows,
            });
        }
        let inline = InlineJob { rows, outputs: &outputs, deadline, trace: trace.sampled() };
        let inputs = match self.pool.run_inline(inputs, inline) {
            Ok((result, job_trace)) => {
                drop(incoming);
                if let Some(job_trace) = job_trace {
                    trace.record_batch(job_trace.dequeued, &job_trace);
                }
                return self.answer(result);
            }
            Err(inputs) => inputs,
        };
        let batchable = self.policy.enabled() && batch::same_rows(&inputs);
        let (reply, answer) = oneshot::channel();
        let enqueued = Instant::now();
        let job =
            Job { inputs, rows, batchable, outputs, enqueued, deadline, trace: trace.sampled(), dequeued: None, reply };
        let submitted = self.pool.try_submit(job);
        drop(incoming);
        match submitted {
            Ok(()) => {}
            Err(SubmitError::Full) => {
                return Err(ApiError::QueueFull { model: self.name.clone(), version: self.version })
            }
            Err(SubmitError::Closed) => return Err(self.failed(&InferError::WorkerGone)),
        }
        // With the server's own deadline, the edge timeout already ends the wait (one timer per request, not two);
        // a client's shorter deadline gets a timer here. Either way an expired job is skipped by the worker.
        let answer = if client_deadline {
            match tokio::time::timeout_at(deadline.into(), answer).await {
                Ok(answer) => answer,
                Err(_) => Ok((Err(InferError::DeadlineExceeded), None)),
            }
        } else {
            answer.await
        };
        let result = match answer {
            Ok((result, job_trace)) => {
                if let Some(job_trace) = job_trace {
                    trace.record_batch(enqueued, &job_trace);
                }
                result
            }
            Err(_) => Err(InferError::WorkerGone),
        };
        self.answer(result)
    }

    /// A run's result as the request's answer.
    fn answer(&self, result: Result<Tensors, InferError>) -> Result<Tensors, ApiError> {
        match result {
            Ok(outputs) => Ok(outputs),
            Err(InferError::DeadlineExceeded) => {
                Err(ApiError::DeadlineExceeded { model: self.name.clone(), version: self.version })
            }
            Err(error) => Err(self.failed(&error)),
        }
    }

    /// Logs an inference failure with its details (once, here) and returns the client-safe error.
    fn failed(&self, error: &InferError) -> ApiError {
        tracing::error!(model = %self.name, version = self.version, path = %self.path.display(), %error, "inference failed");
        ApiError::Inference { model: self.name.clone(), version: self.version }
    }
}
