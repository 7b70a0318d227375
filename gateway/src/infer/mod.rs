//! Models as the gateway serves them: loading and warming a version, its signature, and running requests on its
//! worker threads.

mod onnx;
mod signature;
mod tensor;
mod worker;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::errors::{ApiError, InferError, LoadError};

pub use signature::{Signature, TensorSpec};
pub(crate) use tensor::with_vec;
pub use tensor::{DataType, Tensor, TensorData};
pub use worker::WorkerGroup;
use worker::{Job, SubmitError, WorkerPool};

/// How each model version is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSettings {
    /// Worker threads (each with its own session) per model version.
    pub workers: NonZeroUsize,
    /// Requests that may wait in a model version's queue before new ones get 503.
    pub queue_capacity: NonZeroUsize,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: NonZeroUsize,
}

/// One loaded, warmed model version, ready for requests. Cheap to share (`Arc`); when the last holder drops it,
/// its queue closes and its workers exit.
pub struct LoadedModel {
    name: String,
    version: u64,
    path: PathBuf,
    signature: Signature,
    pool: WorkerPool,
}

/// Loads model versions: builds their sessions, checks and warms them, and starts their workers.
#[derive(Clone)]
pub struct ModelLoader {
    settings: ModelSettings,
    group: WorkerGroup,
}

// === impl ModelSettings ===

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            workers: NonZeroUsize::MIN,
            // Enough to absorb a burst from a few dozen clients on a 2-core machine; beyond that a fast 503 is
            // kinder than a queue whose wait exceeds any client's timeout.
            queue_capacity: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            intra_threads: NonZeroUsize::MIN,
        }
    }
}

// === impl ModelLoader ===

impl ModelLoader {
    /// A loader whose workers are tracked by `group`.
    pub fn new(settings: ModelSettings, group: WorkerGroup) -> Self {
        Self { settings, group }
    }

    /// Loads, checks and warms one version. Blocking (file reads, graph optimisation, a warm-up run): call it off
    /// the async threads. The model is only returned once every session has answered a warm-up run.
    pub fn load(&self, name: &str, version: u64, path: &Path) -> Result<LoadedModel, LoadError> {
        let mut sessions = Vec::with_capacity(self.settings.workers.get());
        for _ in 0..self.settings.workers.get() {
            sessions.push(onnx::build_session(path, self.settings.intra_threads.get())?);
        }
        let signature = Signature::from_session(&sessions[0], path)?;
        let all_outputs: Vec<usize> = (0..signature.outputs.len()).collect();
        for session in &mut sessions {
            onnx::run(session, warmup_inputs(&signature), &all_outputs)
                .map_err(|source| LoadError::Warmup { path: path.into(), source })?;
        }
        let label = format!("{name}-{version}");
        let pool = WorkerPool::start(&label, sessions, self.settings.queue_capacity.get(), &self.group)
            .map_err(|source| LoadError::SpawnWorker { path: path.into(), source })?;
        Ok(LoadedModel { name: name.to_owned(), version, path: path.to_owned(), signature, pool })
    }
}

/// One row of zeros (empty strings, `false`) per input, every dynamic dimension set to 1.
fn warmup_inputs(signature: &Signature) -> Vec<Tensor> {
    signature
        .inputs
        .iter()
        .filter_map(|spec| {
            let shape = spec.unit_shape();
            let data = TensorData::zeros(spec.datatype, shape.iter().product())?;
            Some(Tensor { name: spec.name.clone(), shape, data })
        })
        .collect()
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

    /// What the model takes and gives.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Runs checked inputs (see [`Signature::check_inputs`]) on a worker and returns the selected outputs.
    /// Never blocks the calling thread: a full queue is refused at once with [`ApiError::QueueFull`].
    pub async fn infer(&self, inputs: Vec<Tensor>, outputs: Arc<[usize]>) -> Result<Vec<Tensor>, ApiError> {
        let (reply, answer) = oneshot::channel();
        match self.pool.try_submit(Job { inputs, outputs, reply }) {
            Ok(()) => {}
            Err(SubmitError::Full) => {
                return Err(ApiError::QueueFull { model: self.name.clone(), version: self.version })
            }
            Err(SubmitError::Closed) => return Err(self.failed(&InferError::WorkerGone)),
        }
        match answer.await {
            Ok(Ok(outputs)) => Ok(outputs),
            Ok(Err(error)) => Err(self.failed(&error)),
            Err(_) => Err(self.failed(&InferError::WorkerGone)),
        }
    }

    /// Logs an inference failure with its details (once, here) and returns the client-safe error.
    fn failed(&self, error: &InferError) -> ApiError {
        tracing::error!(model = %self.name, version = self.version, path = %self.path.display(), %error, "inference failed");
        ApiError::Inference { model: self.name.clone(), version: self.version }
    }
}
