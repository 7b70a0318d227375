//! The protocol-neutral core of an inference, below both edges: REST (`routes`) and gRPC (`grpc`) decode their
//! wire format into an [`InferRequest`], ask [`Registry::resolve_target`] where it goes, and hand both here. This is
//! the one place that decides which version serves a request: the version it names, or its model's default, or,
//! during a rollout, the variant the rollout assigns it to (and whether the other variant runs it too, in the
//! background, for comparison). It runs the request through the version's batcher, counts it for the rollout,
//! offers the observation to the monitor (never awaited) and says what served it.

use std::sync::Arc;
use std::time::Instant;

use crate::budget::Charge;
use crate::errors::ApiError;
use crate::infer::{Incoming, LoadedModel, Tensors};
use crate::protocol::InferRequest;
use crate::registry::{Resolved, Target};
use crate::rollout::{Assignment, Rollout, ServerFault, StepCounters, Variant};
use crate::state::AppState;
use crate::traces::RequestTrace;

/// The platform name for ONNX models, as Triton reports it.
pub(crate) const PLATFORM: &str = "onnxruntime_onnx";

/// The protocol extensions Vane implements, as Triton names them.
pub(crate) const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository"];

/// The header (and gRPC metadata key) that says which rollout variant answered: `stable`, `candidate`, or
/// `explicit` when the request named a version of a model under rollout (it bypasses the split).
pub const VARIANT_HEADER: &str = "vane-variant";

/// What served a request, for the edge's answer, series and logs; filled in as soon as it is known, so an error
/// answer says it too.
#[derive(Default)]
pub struct Served {
    /// The version that ran it.
    pub loaded: Option<Arc<LoadedModel>>,
    /// The commit of the set it came from.
    pub revision: Option<Arc<str>>,
    /// The rollout variant, when the model has a rollout.
    pub variant: Option<&'static str>,
}

/// Runs a decoded request where `target` sends it. `key` is the rollout key's value (the header the rollout names),
/// if the request carried it; without it, the request id is the key. `early` is the primary version's in-flight
/// mark, taken before decoding. Returns the request (its inputs taken) and the selected outputs.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    state: &Arc<AppState>,
    target: &Target,
    key: Option<&[u8]>,
    early: Incoming<'_>,
    mut request: InferRequest,
    arrived: Instant,
    trace: &RequestTrace,
    served: &mut Served,
) -> Result<(InferRequest, Tensors), ApiError> {
    served.revision = target.primary.revision.clone();
    let Some((rollout, sides)) = &target.split else {
        served.loaded = Some(Arc::clone(&target.primary.loaded));
        served.variant = target.bypassed.then_some("explicit");
        return run_inference(state, &target.primary, early, request, arrived, trace).await;
    };
    let key = key.or(request.id.as_deref().map(str::as_bytes));
    let Assignment { variant, mirror, counters } = rollout.assign(key);
    let chosen = &sides[variant as usize];
    served.loaded = Some(Arc::clone(&chosen.loaded));
    served.variant = Some(variant.as_str());
    let incoming = if Arc::ptr_eq(&chosen.loaded, &target.primary.loaded) {
        early
    } else {
        drop(early);
        chosen.loaded.incoming()
    };
    // The client's own deadline, when shorter than the server's: its expiry is the client's choice, not a fault.
    let client_deadline = request.timeout.is_some_and(|t| t < state.request_timeout);
    // The compared output is run even when the client asked only for others (else a client could starve the
    // checks that read it), and left out of the answer.
    let (compared, _) = &rollout.output;
    let added = counters.is_some()
        && rollout.reads_output()
        && !request.outputs.is_empty()
        && !request.outputs.iter().any(|o| o == compared);
    if added {
        request.outputs.push(compared.clone());
    }
    // A mirror copies the inputs before the run takes them, and only if it has room: shadow work is the first
    // thing dropped under load.
    let mirror = match (&counters, mirror) {
        (Some(counters), true) => {
            Mirror::prepare(state, rollout, counters, variant.other(), &sides[variant.other() as usize], &request)
        }
        _ => None,
    };
    // Both variants are timed from here, a mirrored run from its start: the same span of work on each side.
    let started = Instant::now();
    let result = run_inference(state, chosen, incoming, request, arrived, trace).await;
    if let Some(counters) = &counters {
        let outcome = result.as_ref().map(|(_, outputs)| outputs.as_slice()).map_err(|e| fault(e, client_deadline));
        // In a shadow the candidate's counts come from its mirrored runs; a comparison run of the stable (canary,
        // A/B) is not the stable's traffic and is not counted as such.
        rollout.record(counters, variant, outcome, started.elapsed().as_secs_f64());
    }
    result.map(|(request, mut outputs)| {
        if let Some(mirror) = mirror {
            mirror.spawn(Arc::clone(state), outputs.clone());
        }
        if added {
            outputs.retain(|t| *t.name != **compared);
        }
        (request, outputs)
    })
}

/// Whether an error is held against the variant: a 5xx of the model's making (it failed, or ran out the server's
/// time). Load (a full queue, the in-flight limit, the memory budget) and the client's own short deadline are not,
/// nor are the client's mistakes.
fn fault(error: &ApiError, client_deadline: bool) -> ServerFault {
    match error {
        ApiError::QueueFull { .. } | ApiError::Overloaded | ApiError::MemoryBudget { .. } | ApiError::NotReady => {
            ServerFault::No
        }
        ApiError::DeadlineExceeded { .. } | ApiError::Timeout { .. } if client_deadline => ServerFault::No,
        error if error.status().is_server_error() => ServerFault::Yes,
        _ => ServerFault::No,
    }
}

/// Mirrored runs in flight across every rollout; beyond it, a mirror is dropped and counted.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 64;

/// A background run of the other variant on the same inputs.
struct Mirror {
    rollout: Arc<Rollout>,
    counters: Arc<StepCounters>,
    /// The variant the mirror runs.
    variant: Variant,
    side: Resolved,
    request: InferRequest,
    client_deadline: bool,
    /// Its copies of the inputs and (once spawned) of the answer, on the memory budget every request is charged to.
    charge: Charge,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Mirror {
    /// A mirror of `request` on `side`, if there is room: a free slot of the server's [`MAX_MIRRORS_IN_FLIGHT`], the
    /// server less than half busy, the other version's queue less than half full, and its copy of the inputs within
    /// the memory budget. Otherwise the mirror is dropped and counted.
    fn prepare(
        state: &AppState,
        rollout: &Arc<Rollout>,
        counters: &Arc<StepCounters>,
        variant: Variant,
        side: &Resolved,
        request: &InferRequest,
    ) -> Option<Self> {
        use std::sync::atomic::Ordering;
        let busy = state.concurrency.available_permits() < state.limits.max_concurrent_requests.get() / 2
            || side.loaded.stats().snapshot().queued * 2 >= side.loaded.queue_capacity();
        let slot = if busy { None } else { Arc::clone(&state.mirrors).try_acquire_owned().ok() };
        let mut charge = state.budget.charge();
        let Some(slot) = slot.filter(|_| charge.add(request.heap_bytes()).is_ok()) else {
            rollout.mirrors_dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        Some(Self {
            rollout: Arc::clone(rollout),
            counters: Arc::clone(counters),
            variant,
            side: side.clone(),
            request: InferRequest {
                id: request.id.clone(),
                inputs: request.inputs.clone(),
                outputs: request.outputs.clone(),
                timeout: request.timeout,
                binary: request.binary.clone(),
            },
            client_deadline: request.timeout.is_some_and(|t| t < state.request_timeout),
            charge,
            _slot: slot,
        })
    }

    /// Runs the mirror on its own task, after the client's answer is ready: the client never waits for it.
    fn spawn(mut self, state: Arc<AppState>, primary: Tensors) {
        let answer: usize = primary.iter().map(|t| t.data.raw_len() + t.name.len()).sum();
        if self.charge.add(answer).is_err() {
            self.rollout.mirrors_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        tokio::spawn(async move {
            let Mirror { rollout, counters, variant, side, request, client_deadline, charge: _charge, _slot } = self;
            let started = Instant::now();
            let incoming = side.loaded.incoming();
            let trace = RequestTrace::untraced();
            let result = run_inference(&state, &side, incoming, request, started, &trace).await;
            if let Err(error) = &result {
                if fault(error, client_deadline) == ServerFault::No && error.status().is_server_error() {
                    // The other variant's queue was full, or the server's budget: load, not a fault of the model.
                    rollout.mirrors_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
            if variant == Variant::Candidate {
                let outcome =
                    result.as_ref().map(|(_, outputs)| outputs.as_slice()).map_err(|e| fault(e, client_deadline));
                rollout.record(&counters, variant, outcome, started.elapsed().as_secs_f64());
            }
            match &result {
                Ok((_, outputs)) if variant == Variant::Candidate => rollout.compare(&counters, &primary, outputs),
                Ok((_, outputs)) => rollout.compare(&counters, outputs, &primary),
                Err(_) => {
                    counters.compared.lock().map(|mut c| c.incomparable += 1).ok();
                }
            }
        });
    }
}

/// The protocol-neutral part of an inference, shared by REST and gRPC: checks the decoded request against the
/// model, samples it for the monitor, runs it through the version's batcher and offers the observation (never
/// awaited). Returns the request (its inputs taken) and the selected outputs.
async fn run_inference(
    state: &AppState,
    resolved: &Resolved,
    incoming: Incoming<'_>,
    mut request: InferRequest,
    arrived: Instant,
    trace: &RequestTrace,
) -> Result<(InferRequest, Tensors), ApiError> {
    let loaded = &resolved.loaded;
    let signature = loaded.signature();
    // The client's own `timeout` (Triton's parameter, in microseconds) can only shorten the server's.
    let client_deadline = request.timeout.is_some_and(|t| t < state.request_timeout);
    let budget = request.timeout.map_or(state.request_timeout, |t| t.min(state.request_timeout));
    let mut inputs = std::mem::take(&mut request.inputs);
    signature.check_inputs(&mut inputs)?;
    let selected = match request.outputs.is_empty() {
        true => loaded.all_outputs(),
        false => signature.select_outputs(request.outputs.iter().map(String::as_str))?.into(),
    };
    // Only a valid request is sampled; a sampled one copies its inputs for the monitor, the rest pay one counter.
    let observed = match (&state.monitor, &resolved.monitored) {
        (Some(_), Some(monitored)) => monitored.sample(&inputs),
        _ => None,
    };
    let outputs = loaded.infer(incoming, inputs, selected, arrived + budget, client_deadline, trace).await?;
    if let (Some(monitor), Some(monitored), Some(cells)) = (&state.monitor, &resolved.monitored, observed) {
        let predictions = monitored.predictions(&outputs, request.id.is_some());
        monitor.offer(monitor::live::Observation {
            profile: &monitored.profile,
            request_id: request.id.as_deref(),
            cells,
            predictions,
            arrived,
        });
    }
    Ok((request, outputs))
}

/// What served the prediction, when it came from Git: the commit, the model's sha256 and the reference data's, as
/// (header or metadata name, value). REST sends them as headers, gRPC as response metadata.
pub fn provenance<'a>(loaded: &'a LoadedModel, revision: Option<&'a str>) -> [(&'static str, Option<&'a str>); 3] {
    [
        ("vane-commit", revision),
        ("vane-model-sha256", loaded.fingerprint().strip_prefix("sha256:")),
        ("vane-data-sha256", loaded.reference_sha256()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_models_own_failures_are_held_against_a_variant() {
        let (model, version) = (|| "m".to_owned(), 1);
        assert_eq!(fault(&ApiError::Inference { model: model(), version }, false), ServerFault::Yes);
        assert_eq!(fault(&ApiError::Timeout { limit_ms: 30_000 }, false), ServerFault::Yes);
        assert_eq!(fault(&ApiError::DeadlineExceeded { model: model(), version }, false), ServerFault::Yes);
        // The client's own short deadline, load, and the client's mistakes are not the model's.
        assert_eq!(fault(&ApiError::DeadlineExceeded { model: model(), version }, true), ServerFault::No);
        assert_eq!(fault(&ApiError::QueueFull { model: model(), version }, false), ServerFault::No);
        assert_eq!(fault(&ApiError::Overloaded, false), ServerFault::No);
        assert_eq!(fault(&ApiError::RouteNotFound { path: "/".into() }, false), ServerFault::No);
    }
}
