//! Worker threads that own ONNX Runtime sessions.
//!
//! `Session::run` takes `&mut self` in `ort` rc.15 (parts of ONNX Runtime's Run are not thread-safe), so each
//! session is moved into its own named OS thread. A model version's workers share one bounded queue; requests
//! `try_send` into it and wait on a oneshot, so inference never runs on a tokio thread and a full queue is refused at
//! once instead of growing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ort::session::Session;
use tokio::sync::oneshot;

use crate::errors::InferError;
use crate::infer::{onnx, Tensor};

/// One inference to run: checked inputs in graph order, the output positions wanted, and where to answer.
pub(super) struct Job {
    /// The inputs, already checked against the signature.
    pub(super) inputs: Vec<Tensor>,
    /// Output positions to return, in the order wanted.
    pub(super) outputs: Arc<[usize]>,
    /// Where the result goes; dropped unanswered only if the worker panics past `catch_unwind`.
    pub(super) reply: oneshot::Sender<Result<Vec<Tensor>, InferError>>,
}

/// The sending side of a model version's queue. Dropping it (with the model) closes the queue: the workers finish
/// the jobs already queued and exit.
pub(super) struct WorkerPool {
    jobs: Sender<Job>,
}

/// Why a job was not queued.
pub(super) enum SubmitError {
    /// The queue is at capacity.
    Full,
    /// The workers are gone.
    Closed,
}

/// Tracks every worker thread the process starts, so shutdown can wait for all of them to exit.
///
/// Each worker holds a clone of a sender that is never used; when the last worker exits, the receiver sees the
/// channel disconnect. No lock, no counter to keep in step.
#[derive(Clone)]
pub struct WorkerGroup {
    alive: Sender<Never>,
    done: Receiver<Never>,
}

enum Never {}

// === impl WorkerPool ===

impl WorkerPool {
    /// Starts one thread per session, all taking jobs from a queue of `queue_capacity`.
    pub(super) fn start(
        label: &str,
        sessions: Vec<Session>,
        queue_capacity: usize,
        group: &WorkerGroup,
    ) -> std::io::Result<Self> {
        // Bounded: when full, `try_submit` fails and the request gets 503 + Retry-After (see `ApiError::QueueFull`).
        let (jobs, queue) = crossbeam_channel::bounded(queue_capacity);
        for (index, session) in sessions.into_iter().enumerate() {
            let queue = queue.clone();
            let alive = group.alive.clone();
            thread::Builder::new().name(format!("infer-{label}-{index}")).spawn(move || {
                work(session, &queue);
                drop(alive);
            })?;
        }
        Ok(Self { jobs })
    }

    /// Queues a job without waiting.
    pub(super) fn try_submit(&self, job: Job) -> Result<(), SubmitError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }
}

fn work(mut session: Session, queue: &Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        // The caller went away (client disconnected, timeout): skip the run rather than compute for nobody.
        if job.reply.is_closed() {
            continue;
        }
        let result = catch_unwind(AssertUnwindSafe(|| onnx::run(&mut session, job.inputs, &job.outputs)))
            .unwrap_or_else(|panic| Err(InferError::Panicked(panic_message(&panic))));
        // A closed receiver means the caller gave up meanwhile; nothing else to do.
        let _ = job.reply.send(result);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

// === impl WorkerGroup ===

impl WorkerGroup {
    /// A new, empty group.
    pub fn new() -> Self {
        let (alive, done) = crossbeam_channel::bounded(0);
        Self { alive, done }
    }

    /// Waits until every worker started through this group (or a clone of it) has exited, or `timeout` passes.
    /// Returns whether they all exited. Blocking: call it off the async threads, after dropping every model and
    /// every other clone of the group.
    pub fn wait(self, timeout: Duration) -> bool {
        let Self { alive, done } = self;
        drop(alive);
        matches!(done.recv_timeout(timeout), Err(crossbeam_channel::RecvTimeoutError::Disconnected))
    }
}

impl Default for WorkerGroup {
    fn default() -> Self {
        Self::new()
    }
}
