//! Worker threads that own ONNX Runtime sessions, and the dynamic batcher they run.
//!
//! `Session::run` takes `&mut self` in `ort` rc.15 (parts of ONNX Runtime's Run are not thread-safe), so each
//! session is moved into its own named OS thread. A model version's workers share one bounded queue; requests
//! `try_send` into it and wait on a oneshot, so inference never runs on a tokio thread and a full queue is refused at
//! once instead of growing.
//!
//! Batching, as Triton's dynamic batcher: a worker takes the oldest job, then keeps taking queued jobs while their
//! rows fit in `max_rows`; if the batch is not full and more requests are on their way to the queue, it waits for
//! them until `max_delay` after the oldest job was queued. A job that does not fit (too many rows, other trailing
//! dimensions) starts the next batch. Expired jobs and jobs whose caller left are dropped without running.
//!
//! Running on the caller's thread: a request to a model version whose single-request runs take at most
//! `inline_max_run` (a few microseconds: a logistic regression, a small tree) is run by the thread that decoded it
//! when it is the version's only request (nothing else on its way, queued or running) and a session is free. The
//! batcher would run it alone anyway, so batching cannot help it, and the hop to a worker thread and back (two
//! wake-ups) is most of its latency; the run is shorter than what a tokio thread may spend between awaits. Under
//! load requests are queued as above: there batching amortises ONNX Runtime's cost per run, which is most of a
//! small model's (a batch-1 run of the logistic regression on the request's thread cost more CPU than the hop).
//! Each session sits behind a mutex that its worker holds only while running it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use ort::session::Session;
use tokio::sync::oneshot;

use crate::errors::InferError;
use crate::infer::stats::ModelStats;
use crate::infer::{batch, onnx, Tensors};
use crate::metrics::request_series::VersionSeries;
use crate::traces::{BatchTrace, JobTrace};

/// One inference to run.
pub(super) struct Job {
    /// The inputs, already checked against the signature, in graph order.
    pub(super) inputs: Tensors,
    /// Rows in this request (first dimension).
    pub(super) rows: usize,
    /// Whether the request may join a batch (batching on, all inputs agree on their first dimension).
    pub(super) batchable: bool,
    /// Output positions to return, in the order wanted.
    pub(super) outputs: Arc<[usize]>,
    /// When it was queued; the batcher's delay counts from the oldest job's.
    pub(super) enqueued: Instant,
    /// After this the job is answered `DeadlineExceeded` without running.
    pub(super) deadline: Instant,
    /// The request's server span, when it is traced.
    pub(super) trace: Option<opentelemetry::trace::SpanContext>,
    /// When a worker took a traced job off the queue (untraced jobs do not read the clock for it).
    pub(super) dequeued: Option<Instant>,
    /// Where the result goes.
    pub(super) reply: oneshot::Sender<Answer>,
}

/// A job's result, and for a traced job what its batch looked like.
pub(super) type Answer = (Result<Tensors, InferError>, Option<JobTrace>);

/// How a model version's workers batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows per batch (and per request); 0 means batching is off.
    pub max_rows: usize,
    /// Longest wait for more rows, from the oldest job in the batch.
    pub max_delay: Duration,
}

/// The sending side of a model version's queue. Dropping it (with the model) closes the queue: the workers finish
/// the jobs already queued and exit.
pub(super) struct WorkerPool {
    jobs: Sender<Job>,
    stats: Arc<ModelStats>,
    series: VersionSeries,
    sessions: Arc<[Mutex<Session>]>,
    /// The outputs' names in graph order (the signature's, shared by every answer).
    output_names: Arc<[Arc<str>]>,
    /// Single-request runs measured at most this long may run on the caller's thread (zero: never).
    inline_max_run: Duration,
}

/// A request to run on the caller's thread, if [`WorkerPool::run_inline`] finds a session free.
pub(super) struct InlineJob<'a> {
    pub(super) rows: usize,
    pub(super) outputs: &'a [usize],
    pub(super) deadline: Instant,
    pub(super) trace: Option<opentelemetry::trace::SpanContext>,
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
/// channel disconnect. The counter is only for observation.
#[derive(Clone)]
pub struct WorkerGroup {
    alive: Sender<Never>,
    done: Receiver<Never>,
    live: Arc<AtomicUsize>,
}

enum Never {}

/// The calling thread's CPU time.
pub(super) fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

/// How long one wait for more rows lasts before the worker checks again whether anything is still on its way.
const WAIT_SLICE: Duration = Duration::from_micros(50);

// === impl BatchPolicy ===

impl BatchPolicy {
    /// No batching.
    pub const OFF: Self = Self { max_rows: 0, max_delay: Duration::ZERO };

    /// Whether batching is on.
    pub fn enabled(&self) -> bool {
        self.max_rows > 1
    }
}

// === impl WorkerPool ===

impl WorkerPool {
    /// Starts one thread per session, all taking jobs from a queue of `queue_capacity`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        label: &str,
        sessions: Vec<Session>,
        output_names: Arc<[Arc<str>]>,
        queue_capacity: usize,
        policy: BatchPolicy,
        inline_max_run: Duration,
        stats: Arc<ModelStats>,
        series: VersionSeries,
        group: &WorkerGroup,
    ) -> std::io::Result<Self> {
        // Bounded: when full, `try_submit` fails and the request gets 503 + Retry-After (see `ApiError::QueueFull`).
        let (jobs, queue) = crossbeam_channel::bounded(queue_capacity);
        let sessions: Arc<[Mutex<Session>]> = sessions.into_iter().map(Mutex::new).collect();
        for index in 0..sessions.len() {
            let worker = Worker {
                sessions: Arc::clone(&sessions),
                output_names: Arc::clone(&output_names),
                all_outputs: (0..output_names.len()).collect(),
                index,
                queue: queue.clone(),
                policy,
                stats: Arc::clone(&stats),
                series: series.clone(),
                carry: None,
            };
            let alive = group.alive.clone();
            let live = Arc::clone(&group.live);
            live.fetch_add(1, Ordering::SeqCst);
            let spawned = thread::Builder::new().name(format!("infer-{label}-{index}")).spawn(move || {
                worker.run();
                live.fetch_sub(1, Ordering::SeqCst);
                drop(alive);
            });
            if let Err(error) = spawned {
                group.live.fetch_sub(1, Ordering::SeqCst);
                return Err(error);
            }
        }
        Ok(Self { jobs, stats, series, sessions, output_names, inline_max_run })
    }

    /// Runs a request on the calling thread if it is the version's only request, its runs are short enough (the
    /// load's estimate of a single-request run, times the request's rows, at most `inline_max_run`) and a session
    /// is free; else gives the inputs back to be queued. Blocks the caller for one run: only ever a few
    /// microseconds, by that estimate.
    ///
    /// The estimate is fixed at load, in the thread's CPU time (the wall clock would count the time the scheduler
    /// gave other threads). A live estimate was tried and dropped: runs on a request thread after a stretch on the
    /// worker's core read 2-6x the load's time (cold caches, the hypervisor's stolen time counted too), so after
    /// any burst it rose past the limit and stayed there.
    // The inputs come back by value when no session is free; boxing them would cost the allocation inline lists save.
    #[allow(clippy::result_large_err)]
    pub(super) fn run_inline(&self, inputs: Tensors, job: InlineJob<'_>) -> Result<Answer, Tensors> {
        if !self.stats.is_alone() {
            return Err(inputs);
        }
        let estimate = self.stats.run_estimate().saturating_mul(u32::try_from(job.rows).unwrap_or(u32::MAX));
        if estimate > self.inline_max_run {
            return Err(inputs);
        }
        let Some(mut session) = self.sessions.iter().find_map(|slot| slot.try_lock().ok()) else {
            return Err(inputs);
        };
        let began = Instant::now();
        if job.deadline <= began {
            return Ok((Err(InferError::DeadlineExceeded), None));
        }
        self.stats.started(1, job.rows);
        // Its wait for a worker was nothing: counted, so the queue histogram still counts every request run.
        self.series.observe_queued(0.0);
        let members = BatchTrace::members(job.trace.iter());
        self.stats.ran_inline();
        let result = guarded(|| onnx::run(&mut session, inputs, job.outputs, &self.output_names));
        drop(session);
        let ended = Instant::now();
        let batch = record_run(&self.stats, &self.series, began, (began, ended), (1, job.rows), members);
        Ok((result, trace_of(job.trace.is_some().then_some(began), batch.as_ref())))
    }

    /// Queues a job without waiting.
    pub(super) fn try_submit(&self, job: Job) -> Result<(), SubmitError> {
        // Counted before the send so a worker's decrement can never run first.
        self.stats.enqueued();
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.stats.observe_depth(self.jobs.len());
                Ok(())
            }
            Err(e) => {
                self.stats.unqueued();
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Closed,
                })
            }
        }
    }
}

/// One worker thread's state.
struct Worker {
    /// The version's sessions; this worker runs the one at `index` (and only it).
    sessions: Arc<[Mutex<Session>]>,
    /// The outputs' names in graph order, and all their positions (what a merged batch runs for).
    output_names: Arc<[Arc<str>]>,
    all_outputs: Vec<usize>,
    index: usize,
    queue: Receiver<Job>,
    policy: BatchPolicy,
    stats: Arc<ModelStats>,
    series: VersionSeries,
    /// A job taken off the queue that did not fit the last batch; it starts the next one.
    carry: Option<Job>,
}

// === impl Worker ===

impl Worker {
    /// Its session, while it runs a batch. A panic inside a run is caught before the guard drops, so the lock is
    /// never poisoned by one; if it were, the session is still whole (ONNX Runtime's state is not Rust's).
    fn session(&self) -> MutexGuard<'_, Session> {
        self.sessions[self.index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(mut self) {
        // Reused from batch to batch (at most `max_rows` jobs each): a batch costs no list of its own.
        let (mut batch, mut live) = (Vec::new(), Vec::new());
        loop {
            let first = match self.carry.take() {
                Some(job) => job,
                None => match self.queue.recv() {
                    Ok(mut job) => {
                        self.stats.dequeued(1);
                        job.took();
                        job
                    }
                    Err(_) => return,
                },
            };
            self.gather(first, &mut batch);
            self.run_batch(&mut batch, &mut live);
        }
    }

    /// Takes more jobs to join `first` into `batch` (emptied first), per the policy. A job that does not fit goes to
    /// `carry`.
    fn gather(&mut self, first: Job, batch: &mut Vec<Job>) {
        batch.clear();
        if !self.policy.enabled() || !first.batchable {
            batch.push(first);
            return;
        }
        let until = first.enqueued + self.policy.max_delay;
        let mut rows = first.rows;
        batch.push(first);
        while rows < self.policy.max_rows {
            let mut next = match self.queue.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    // Wait only while something is on its way: a lone request is never delayed.
                    if now >= until || !self.stats.is_incoming() {
                        break;
                    }
                    match self.queue.recv_timeout((until - now).min(WAIT_SLICE)) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            self.stats.dequeued(1);
            next.took();
            if !next.batchable
                || rows + next.rows > self.policy.max_rows
                || !batch::compatible(&batch[0].inputs, &next.inputs)
            {
                self.carry = Some(next);
                break;
            }
            rows += next.rows;
            batch.push(next);
        }
    }

    /// Runs the jobs in `batch` that are still wanted and in time (moved through `live`; both are left empty).
    fn run_batch(&mut self, batch: &mut Vec<Job>, live: &mut Vec<Job>) {
        let now = Instant::now();
        live.clear();
        for job in batch.drain(..) {
            if job.reply.is_closed() {
                // The caller went away (client disconnected, timed out): do not compute for nobody.
                continue;
            }
            if job.deadline <= now {
                let _ = job.reply.send((Err(InferError::DeadlineExceeded), None));
                continue;
            }
            self.series.observe_queued(now.saturating_duration_since(job.enqueued).as_secs_f64());
            live.push(job);
        }
        if live.is_empty() {
            return;
        }
        let (jobs, rows) = (live.len(), live.iter().map(|j| j.rows).sum::<usize>());
        self.stats.started(jobs, rows);
        // Empty (no allocation) unless a request in the batch is traced.
        let members = BatchTrace::members(live.iter().filter_map(|j| j.trace.as_ref()));
        let started = Instant::now();
        if jobs == 1 {
            let Some(job) = live.pop() else { return };
            let result = guarded(|| onnx::run(&mut self.session(), job.inputs, &job.outputs, &self.output_names));
            let ended = Instant::now();
            let batch = self.ran(now, (started, ended), (jobs, rows), members);
            // A closed receiver means the caller gave up meanwhile; nothing else to do.
            let _ = job.reply.send((result, trace_of(job.dequeued, batch.as_ref())));
        } else {
            let (answers, ended) = self.run_merged(live.drain(..), rows);
            let batch = self.ran(now, (started, ended), (jobs, rows), members);
            for (reply, dequeued, answer) in answers {
                let _ = reply.send((answer, trace_of(dequeued, batch.as_ref())));
            }
        }
    }

    /// Records a finished run (begun at `began`, ONNX Runtime's part in `run`) before anyone is answered, so a caller
    /// that has its answer finds its run in /metrics and the stats; returns the batch's trace if a member is traced.
    fn ran(
        &self,
        began: Instant,
        run: (Instant, Instant),
        (requests, rows): (usize, usize),
        members: Vec<opentelemetry::trace::SpanContext>,
    ) -> Option<Arc<BatchTrace>> {
        record_run(&self.stats, &self.series, began, run, (requests, rows), members)
    }

    /// Runs several jobs as one batch and splits each one's rows out of the outputs; returns the answers and when
    /// the run ended.
    fn run_merged(&mut self, jobs: std::vec::Drain<'_, Job>, total_rows: usize) -> (Vec<Reply>, Instant) {
        let mut parts = Vec::with_capacity(jobs.len());
        let mut inputs = Vec::with_capacity(jobs.len());
        for job in jobs {
            parts.push((job.rows, job.outputs, job.reply, job.dequeued));
            inputs.push(job.inputs);
        }
        let mut session = self.session();
        let merged = batch::concat(inputs);
        let result = guarded(|| onnx::run(&mut session, merged, &self.all_outputs, &self.output_names));
        drop(session);
        let ended = Instant::now();
        let answers = match result {
            Ok(outputs) => {
                let mut offset = 0;
                parts
                    .into_iter()
                    .map(|(rows, wanted, reply, dequeued)| {
                        let range = offset..offset + rows;
                        offset += rows;
                        let mine = wanted
                            .iter()
                            .map(|&i| batch::slice_rows(&outputs[i], range.clone(), total_rows))
                            .collect::<Option<Tensors>>()
                            .ok_or(InferError::BatchSplit);
                        (reply, dequeued, mine)
                    })
                    .collect()
            }
            Err(error) => {
                let message = error.to_string();
                parts
                    .into_iter()
                    .map(|(_, _, reply, dequeued)| (reply, dequeued, Err(InferError::Batch(message.clone()))))
                    .collect()
            }
        };
        (answers, ended)
    }
}

/// Records a finished run (begun at `began`, ONNX Runtime's part in `run`) in the stats and series; returns the
/// batch's trace if a member is traced.
fn record_run(
    stats: &ModelStats,
    series: &VersionSeries,
    began: Instant,
    run: (Instant, Instant),
    (requests, rows): (usize, usize),
    members: Vec<opentelemetry::trace::SpanContext>,
) -> Option<Arc<BatchTrace>> {
    let finished = Instant::now();
    series.observe_run(rows, finished.saturating_duration_since(began).as_secs_f64());
    stats.finished(requests);
    (!members.is_empty()).then(|| Arc::new(BatchTrace { run, finished, requests, rows, members }))
}

/// Where a job's answer goes, when a traced job left the queue, and the answer.
type Reply = (oneshot::Sender<Answer>, Option<Instant>, Result<Tensors, InferError>);

// === impl Job ===

impl Job {
    /// Marks a traced job as taken off the queue now.
    fn took(&mut self) {
        if self.trace.is_some() {
            self.dequeued = Some(Instant::now());
        }
    }
}

/// A traced job's share of its batch's trace.
fn trace_of(dequeued: Option<Instant>, batch: Option<&Arc<BatchTrace>>) -> Option<JobTrace> {
    Some(JobTrace { dequeued: dequeued?, batch: Arc::clone(batch?) })
}

/// Runs `f`, turning a panic into an error so the worker survives it.
fn guarded(f: impl FnOnce() -> Result<Tensors, InferError>) -> Result<Tensors, InferError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| Err(InferError::Panicked(panic_message(&panic))))
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
        Self { alive, done, live: Arc::new(AtomicUsize::new(0)) }
    }

    /// Worker threads started through this group that have not exited yet.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Waits until every worker started through this group (or a clone of it) has exited, or `timeout` passes.
    /// Returns whether they all exited. Blocking: call it off the async threads, after dropping every model and
    /// every other clone of the group.
    pub fn wait(self, timeout: Duration) -> bool {
        let Self { alive, done, .. } = self;
        drop(alive);
        matches!(done.recv_timeout(timeout), Err(crossbeam_channel::RecvTimeoutError::Disconnected))
    }
}

impl Default for WorkerGroup {
    fn default() -> Self {
        Self::new()
    }
}
