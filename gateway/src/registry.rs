//! The served model set, swapped as a whole.
//!
//! [`Registry`] holds an immutable [`ModelTable`] behind `ArcSwap`. A request does one lock-free `load`, clones the
//! one `Arc<LoadedModel>` it needs and drops the guard before any await; the loader builds and warms a complete new
//! table off the request path and stores it in one step. A replaced model version lives on until its last
//! in-flight request drops it, then its queue closes and its workers exit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use reconciler::DesiredState;
use tokio::sync::watch;

use crate::errors::{ApiError, LoadError};
use crate::infer::{check_io, LoadedModel, ModelLoader};
use crate::observe::Monitored;
use crate::rollout::memory::Memory;
use crate::rollout::Rollout;

/// Every served model version, keyed by name then version. Immutable once built.
#[derive(Default)]
pub struct ModelTable {
    models: BTreeMap<String, BTreeMap<u64, Arc<LoadedModel>>>,
    /// The monitored versions (those with reference data) and their profiles, swapped with the models.
    monitored: BTreeMap<String, BTreeMap<u64, Arc<Monitored>>>,
    /// The Git commit this set comes from, for the provenance headers.
    revision: Option<Arc<str>>,
    /// The models with a rollout in progress.
    rollouts: BTreeMap<String, Arc<Rollout>>,
}

/// What one request needs from the table: the version, the commit, and the monitor's profile if any.
#[derive(Clone)]
pub struct Resolved {
    /// The model version.
    pub loaded: Arc<LoadedModel>,
    /// The commit of the set.
    pub revision: Option<Arc<str>>,
    /// The version's monitoring profile.
    pub monitored: Option<Arc<Monitored>>,
}

/// Where a request goes: the version it named (or the default one), and, when it named none and the model has a
/// rollout, the rollout and both of its sides, from the same table.
pub struct Target {
    /// The version that answers unless the rollout assigns the request elsewhere.
    pub primary: Resolved,
    /// The rollout and its (stable, candidate), when the request named no version.
    pub split: Option<(Arc<Rollout>, [Resolved; 2])>,
    /// Whether the model has a rollout that this request bypassed by naming a version.
    pub bypassed: bool,
}

/// The handle the request path and the loader share.
pub struct Registry {
    table: ArcSwap<ModelTable>,
    /// False until the first table is stored.
    ready: AtomicBool,
    /// True once shutdown has begun, for good: a load that finishes while draining stores its table (requests in
    /// flight may still use it) but never makes the server ready again.
    draining: AtomicBool,
    /// Counts stores, so a caller can wait for the next one instead of polling.
    generation: watch::Sender<u64>,
    /// Serialises writers: the directory poller, the reconciler and manual repository calls each build a whole table
    /// from the current one, so two at once would lose one's change.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Model-set loads running, cancelled, and (a self-check that must stay 0) started while another ran.
    loads: Arc<LoadCounters>,
    /// Models unloaded through the repository API (model-directory mode): left out of every desired state until
    /// loaded again, so the poller does not bring them back.
    unloaded: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The rollouts' decisions, kept across restarts in GitOps mode.
    memory: std::sync::RwLock<Arc<Memory>>,
}

// === impl ModelTable ===

impl ModelTable {
    /// Builds the table for `desired`, keeping every version of `previous` that is still current (same artifact,
    /// same settings) and loading and warming the rest. Blocking; all or nothing: on the first failure the versions
    /// loaded so far are dropped and `previous` is untouched.
    /// `cancel` stops it before the next version is loaded.
    /// `memory` holds the rollouts' past decisions.
    pub fn load(
        loader: &ModelLoader,
        desired: &DesiredState,
        previous: &ModelTable,
        cancel: &AtomicBool,
        memory: &Arc<Memory>,
    ) -> Result<Self, LoadError> {
        let mut models = BTreeMap::new();
        let mut monitored: BTreeMap<String, BTreeMap<u64, Arc<Monitored>>> = BTreeMap::new();
        let mut rollouts = BTreeMap::new();
        for model in &desired.models {
            let mut versions = BTreeMap::new();
            for version in &model.versions {
                let kept = previous.models.get(&model.name).and_then(|v| v.get(&version.version));
                let loaded = match kept.filter(|loaded| loaded.is_current(model, version)) {
                    Some(loaded) => Arc::clone(loaded),
                    None => {
                        if cancel.load(Ordering::Acquire) {
                            return Err(LoadError::Cancelled);
                        }
                        let loaded = loader.load(model, version)?;
                        tracing::info!(model = %model.name, version = version.version, path = %version.path.display(), "model loaded");
                        Arc::new(loaded)
                    }
                };
                // Declared inputs and outputs are checked for kept versions too: a commit may change only them.
                if let Some(io) = &version.io {
                    check_io(loaded.signature(), io)
                        .map_err(|message| LoadError::IoMismatch { path: version.path.clone(), message })?;
                }
                let same_model = kept.is_some_and(|k| Arc::ptr_eq(k, &loaded));
                let before = previous.monitored.get(&model.name).and_then(|v| v.get(&version.version));
                let profile = match before.filter(|m| same_model && m.is_current(model)) {
                    Some(kept) => Some(Arc::clone(kept)),
                    None => Monitored::build(model, version.version, desired.revision.as_deref(), loaded.signature())
                        .map_err(|message| LoadError::Monitoring { path: version.path.clone(), message })?
                        .map(Arc::new),
                };
                if let Some(profile) = profile {
                    monitored.entry(model.name.clone()).or_default().insert(version.version, profile);
                }
                versions.insert(version.version, loaded);
            }
            if let Some(spec) = &model.rollout {
                let kept = previous.rollouts.get(&model.name);
                let rollout = build_rollout(model, spec, &versions, kept, desired.revision.as_deref(), memory)?;
                rollouts.insert(model.name.clone(), rollout);
            }
            models.insert(model.name.clone(), versions);
        }
        Ok(Self { models, monitored, revision: desired.revision.as_deref().map(Arc::from), rollouts })
    }

    /// The Git commit this set comes from.
    pub fn revision(&self) -> Option<&Arc<str>> {
        self.revision.as_ref()
    }

    /// Whether `other` serves exactly the same loaded versions (the same `Arc`s) from the same commit.
    pub fn same_as(&self, other: &ModelTable) -> bool {
        self.revision == other.revision
            && self.rollouts.len() == other.rollouts.len()
            && self.rollouts.iter().zip(&other.rollouts).all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
            && self.monitored.len() == other.monitored.len()
            && self.monitored.iter().all(|(name, versions)| {
                other.monitored.get(name).is_some_and(|o| {
                    o.len() == versions.len()
                        && versions.iter().all(|(v, m)| o.get(v).is_some_and(|om| Arc::ptr_eq(m, om)))
                })
            })
            && self.models.len() == other.models.len()
            && self.models.iter().zip(&other.models).all(|((a, va), (b, vb))| {
                a == b
                    && va.len() == vb.len()
                    && va.iter().zip(vb).all(|((x, mx), (y, my))| x == y && Arc::ptr_eq(mx, my))
            })
    }

    /// Whether `model` has a monitored version.
    pub fn is_monitored(&self, model: &str) -> bool {
        self.monitored.contains_key(model)
    }

    /// The model names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The rollouts in progress, by model.
    pub fn rollouts(&self) -> impl Iterator<Item = &Arc<Rollout>> {
        self.rollouts.values()
    }

    /// The rollout of `model`, if it has one.
    pub fn rollout(&self, model: &str) -> Option<&Arc<Rollout>> {
        self.rollouts.get(model)
    }

    /// Finds a model version; `None` as the version means the default one: the highest, or during a rollout the
    /// side that serves unsplit traffic (the stable, the candidate once promoted).
    pub fn get(&self, model: &str, version: Option<&str>) -> Result<&Arc<LoadedModel>, ApiError> {
        let versions = self
            .models
            .get(model)
            .ok_or_else(|| ApiError::ModelNotFound { model: model.to_owned(), available: join(self.models.keys()) })?;
        let found = match version {
            None if self.rollouts.contains_key(model) => {
                let rollout = &self.rollouts[model];
                versions.get(&rollout.version(rollout.default_variant()))
            }
            None => versions.values().next_back(),
            Some(v) => v.parse::<u64>().ok().and_then(|n| versions.get(&n)),
        };
        found.ok_or_else(|| ApiError::VersionNotFound {
            model: model.to_owned(),
            version: version.unwrap_or_default().to_owned(),
            available: join(versions.keys()),
        })
    }

    /// The served versions of `model`, ascending.
    pub fn versions(&self, model: &str) -> Vec<u64> {
        self.models.get(model).map(|v| v.keys().copied().collect()).unwrap_or_default()
    }

    /// Whether the table serves nothing.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    fn resolved(&self, model: &str, version: Option<&str>) -> Result<Resolved, ApiError> {
        let loaded = self.get(model, version)?;
        let monitored = self.monitored.get(model).and_then(|v| v.get(&loaded.version())).cloned();
        Ok(Resolved { loaded: Arc::clone(loaded), revision: self.revision.clone(), monitored })
    }

    /// [`ModelTable::resolved`] by version number (a rollout's sides, both in the table by construction).
    fn resolved_number(&self, model: &str, version: u64) -> Result<Resolved, ApiError> {
        let loaded = self.models.get(model).and_then(|v| v.get(&version)).ok_or_else(|| ApiError::VersionNotFound {
            model: model.to_owned(),
            version: version.to_string(),
            available: join(self.versions(model).iter()),
        })?;
        let monitored = self.monitored.get(model).and_then(|v| v.get(&version)).cloned();
        Ok(Resolved { loaded: Arc::clone(loaded), revision: self.revision.clone(), monitored })
    }
}

/// The rollout `spec` asks for between two loaded versions: `kept` when it is still that rollout (its analysis goes
/// on), else a new one. The two versions must take the same inputs (the same requests go to both), and both must have
/// the compared output.
fn build_rollout(
    model: &reconciler::DesiredModel,
    spec: &reconciler::manifest::RolloutSpec,
    versions: &BTreeMap<u64, Arc<LoadedModel>>,
    kept: Option<&Arc<Rollout>>,
    revision: Option<&str>,
    memory: &Arc<Memory>,
) -> Result<Arc<Rollout>, LoadError> {
    let error = |message: String| LoadError::Rollout { model: model.name.clone(), message };
    let side = |v: u64| versions.get(&v).ok_or_else(|| error(format!("version {v} is not served")));
    let (stable, candidate) = (side(spec.stable)?, side(spec.candidate)?);
    let identity = crate::rollout::memory::identity(&model.name, stable.fingerprint(), candidate.fingerprint(), spec);
    if let Some(kept) = kept.filter(|r| r.is_current(&identity)) {
        return Ok(Arc::clone(kept));
    }
    let (a, b) = (stable.signature(), candidate.signature());
    let key = |t: &crate::infer::TensorSpec| (t.name.clone(), t.datatype, t.shape.clone());
    if a.inputs.iter().map(key).collect::<Vec<_>>() != b.inputs.iter().map(key).collect::<Vec<_>>() {
        return Err(error(format!(
            "candidate version {} takes different inputs than stable version {}; a rollout sends the same requests to both",
            spec.candidate, spec.stable
        )));
    }
    // A request the stable answers must not be refused by the candidate for asking for an output it lacks.
    for output in &a.outputs {
        if !b.outputs.iter().any(|o| o.name == output.name && o.datatype == output.datatype) {
            return Err(error(format!(
                "candidate version {} has no {} output '{}' that stable version {} has; clients asking for it would \
                 be refused",
                spec.candidate,
                output.datatype.as_str(),
                output.name,
                spec.stable
            )));
        }
    }
    let quality = model.monitoring.as_ref().and_then(|m| m.quality.as_ref());
    let output = spec
        .analysis
        .output
        .clone()
        .or_else(|| quality.map(|q| q.output.clone()))
        .or_else(|| a.outputs.first().map(|o| o.name.to_string()))
        .ok_or_else(|| error("the stable version has no outputs".to_owned()))?;
    for (which, signature) in [("stable", a), ("candidate", b)] {
        if !signature.outputs.iter().any(|o| *o.name == *output) {
            return Err(error(format!("the {which} version has no output '{output}' to compare")));
        }
    }
    let is_quality_output = quality.is_some_and(|q| q.output == output);
    let index = spec.analysis.index.or_else(|| quality.filter(|_| is_quality_output).map(|q| q.index)).unwrap_or(0);
    // A column past a static width would compare nothing: refused, with the width.
    for signature in [a, b] {
        let width = signature.outputs.iter().find(|o| *o.name == *output).and_then(|o| o.shape.get(1)).copied();
        if let Some(width) = width.filter(|w| *w > 0 && i64::try_from(index).unwrap_or(i64::MAX) >= *w) {
            return Err(error(format!("analysis.index {index} is past output '{output}', which has {width} columns")));
        }
    }
    let threshold =
        quality.filter(|q| is_quality_output && q.task == "binary_classification").map(|q| q.threshold.unwrap_or(0.5));
    Ok(Arc::new(Rollout::new(
        &model.name,
        spec.clone(),
        identity,
        (output, index),
        threshold,
        revision.map(Arc::from),
        Arc::clone(memory),
    )))
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|item| item.to_string()).collect::<Vec<_>>().join(", ")
}

// === impl Registry ===

impl Registry {
    /// An empty registry that is not ready.
    pub fn new() -> Self {
        Self {
            table: ArcSwap::from_pointee(ModelTable::default()),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            generation: watch::Sender::new(0),
            writer: Arc::default(),
            loads: Arc::default(),
            unloaded: std::sync::Mutex::default(),
            memory: std::sync::RwLock::new(Arc::new(Memory::in_memory())),
        }
    }

    /// Keeps the rollouts' decisions in `memory` from the next load on (set before the first one).
    pub fn set_rollout_memory(&self, memory: Memory) {
        if let Ok(mut slot) = self.memory.write() {
            *slot = Arc::new(memory);
        }
    }

    /// Marks `model` as unloaded by hand (left out of desired states) or, with `false`, as wanted again.
    pub fn set_unloaded(&self, model: &str, unloaded: bool) {
        if let Ok(mut set) = self.unloaded.lock() {
            if unloaded {
                set.insert(model.to_owned());
            } else {
                set.remove(model);
            }
        }
    }

    /// The models unloaded by hand, in name order.
    pub fn unloaded(&self) -> Vec<String> {
        self.unloaded.lock().map(|set| set.iter().cloned().collect()).unwrap_or_default()
    }

    /// `desired` without the models unloaded by hand.
    pub fn without_unloaded(&self, mut desired: DesiredState) -> DesiredState {
        if let Ok(set) = self.unloaded.lock() {
            desired.models.retain(|m| !set.contains(&m.name));
        }
        desired
    }

    /// A receiver that sees the number of tables stored so far, and each new one.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Makes `desired` the served set: builds a new table off the async threads, keeping every loaded version that
    /// is still current and loading and warming the others, then stores it in one swap. Requests in flight finish on
    /// the versions they hold; replaced versions drain and stop when their last request completes. If any model fails
    /// to load, nothing changes and the error is returned. Returns whether the served set changed.
    ///
    /// Writers are serialised: a second `apply` waits for the first to store (or fail) and builds on its result.
    ///
    /// Dropping the returned future (a superseded sync) cancels the load before its next version and never leaves
    /// it running beside another: the blocking load holds the writer lock until it returns, so the next `apply`
    /// waits for it.
    pub async fn apply(&self, loader: &ModelLoader, desired: DesiredState) -> Result<bool, LoadError> {
        let writer = Arc::clone(&self.writer).lock_owned().await;
        let current = self.snapshot();
        let loader = loader.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancel));
        let loads = Arc::clone(&self.loads);
        let memory = self.memory.read().map(|m| Arc::clone(&m)).unwrap_or_else(|_| Arc::new(Memory::in_memory()));
        let built = tokio::task::spawn_blocking(move || {
            if loads.running.fetch_add(1, Ordering::AcqRel) > 0 {
                loads.overlapped.fetch_add(1, Ordering::Relaxed);
            }
            let built = ModelTable::load(&loader, &desired, &current, &cancel, &memory);
            if matches!(built, Err(LoadError::Cancelled)) {
                loads.cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(revision = ?desired.revision, "a superseded model-set load stopped before its next version");
            }
            loads.running.fetch_sub(1, Ordering::AcqRel);
            // The lock goes back with the table, so it is held until the swap below (or dropped with the output).
            built.map(|table| (table, current, writer))
        })
        .await
        .map_err(|e| LoadError::Task(e.to_string()))?;
        let (table, current, _writer) = built?;
        if table.same_as(&current) {
            return Ok(false);
        }
        drop(current);
        self.swap(table);
        Ok(true)
    }

    /// Model-set loads: (running now, cancelled since start, started while another was running). The last is a
    /// self-check of the one-load-at-a-time rule and stays 0.
    pub fn load_counts(&self) -> (usize, u64, u64) {
        let loads = &self.loads;
        (
            loads.running.load(Ordering::Acquire),
            loads.cancelled.load(Ordering::Relaxed),
            loads.overlapped.load(Ordering::Relaxed),
        )
    }

    /// Resolves the model version a request names, cloning its `Arc` out of the current table (the guard does not
    /// outlive this call).
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, ApiError> {
        self.table.load().get(model, version).cloned()
    }

    /// Like [`Registry::resolve`], with the commit of the set it came from (one load for both).
    pub fn resolve_with_revision(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<(Arc<LoadedModel>, Option<Arc<str>>), ApiError> {
        let table = self.table.load();
        Ok((table.get(model, version).cloned()?, table.revision.clone()))
    }

    /// Like [`Registry::resolve_with_revision`], with the version's monitoring profile.
    pub fn resolve_served(&self, model: &str, version: Option<&str>) -> Result<Resolved, ApiError> {
        self.table.load().resolved(model, version)
    }

    /// Where a request for `model` (and `version`, if named) goes: one load of the table for the version and, during
    /// a rollout, both of its sides.
    pub fn resolve_target(&self, model: &str, version: Option<&str>) -> Result<Target, ApiError> {
        let table = self.table.load();
        let rollout = table.rollouts.get(model);
        let Some(rollout) = rollout.filter(|_| version.is_none()) else {
            let primary = table.resolved(model, version)?;
            return Ok(Target { primary, split: None, bypassed: rollout.is_some() });
        };
        // The primary is the side that serves unsplit traffic: looked up once, with the other.
        let side = |v: crate::rollout::Variant| table.resolved_number(model, rollout.version(v));
        let sides = [side(crate::rollout::Variant::Stable)?, side(crate::rollout::Variant::Candidate)?];
        let primary = sides[rollout.default_variant() as usize].clone();
        Ok(Target { primary, split: Some((Arc::clone(rollout), sides)), bypassed: false })
    }

    /// The current table, for listings and metadata.
    pub fn snapshot(&self) -> Arc<ModelTable> {
        self.table.load_full()
    }

    /// Serves `table` from the next request on and returns the one it replaces. Marks the registry ready.
    pub fn swap(&self, table: ModelTable) -> Arc<ModelTable> {
        let old = self.table.swap(Arc::new(table));
        self.ready.store(true, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
        old
    }

    /// Whether the server should receive traffic: a table is loaded and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire) && !self.table.load().is_empty()
    }

    /// Marks the registry not ready for good (shutdown has begun); requests in flight still complete, and a later
    /// swap does not make it ready again.
    pub fn set_not_ready(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// See [`Registry::load_counts`].
#[derive(Debug, Default)]
struct LoadCounters {
    running: std::sync::atomic::AtomicUsize,
    cancelled: std::sync::atomic::AtomicU64,
    overlapped: std::sync::atomic::AtomicU64,
}

/// Sets its flag when dropped: how a dropped `apply` future tells its blocking load to stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}
