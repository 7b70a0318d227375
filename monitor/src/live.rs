//! The live monitor: predictions are offered as observations into a bounded per-thread inbox (full → dropped and
//! counted; a prediction never waits), and one thread keeps, per model version, a window of the latest observed rows and
//! compares it with that version's reference profile, with the same statistics as `vane drift`.
//!
//! Windows are bounded by count (`window_size` rows, the oldest evicted first) and optionally by age
//! (`window_duration`); memory per model version is at most `window_size` × (8 bytes per numeric feature, 16 plus
//! the text per categorical one, 1 more per feature for the wrong-type flag, 16 for the row's time), plus as many
//! numeric rows staged raw between evaluations (8 bytes per feature and 24 per row), whatever the traffic. Nothing is approximated: each evaluation computes every statistic on the
//! window exactly. A verdict needs `min_samples` rows; below that the report says how many it has.
//!
//! A profile belongs to one loaded model version and is built with it, off the request path, so a new model is
//! never compared with a stale baseline: an observation carries its profile, and a window whose profile changed
//! starts again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::alerts::{Alert, Engine, Rule};
use crate::data_quality::{Domain, FeatureQuality};
use crate::drift::{self, ColumnKind, ColumnReport, DatasetDrift, Sides, Values};
use crate::notify::{Notifier, NotifyConfig};
use crate::shards::ShardedCounter;
use crate::stats::cbpe::{self, Calibration, Calibrator, EstimatedQuality};
use crate::stats::multivariate::{Bounds, Reconstruction};
use crate::table::Table;

/// How a model version is monitored (from its manifest's `monitoring` block).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSettings {
    /// Share of predictions observed, in (0, 1].
    pub sample_rate: f64,
    /// Rows kept per window.
    pub window_size: usize,
    /// Rows older than this leave the window, if set.
    pub window_duration: Option<Duration>,
    /// Rows needed before a verdict.
    pub min_samples: usize,
    /// The alert rules (from the manifest's thresholds).
    pub rules: Vec<Rule>,
    /// How long a condition must hold before its alert fires, and be clear before it resolves.
    pub hold: Duration,
    /// Consecutive windows (evaluations with new rows) a condition must hold in, as well as for `hold`.
    pub consecutive_windows: u32,
    /// How predictions wait for labels, when quality is monitored.
    pub feedback: Option<crate::feedback::FeedbackSettings>,
    /// The reference column holding the model's predictions on the reference rows (Evidently's `prediction` column
    /// mapping): not a feature; the live predictions are compared with it (prediction drift).
    pub prediction_column: Option<String>,
    /// Quality estimated from the window's scores (CBPE), when set.
    pub estimate: Option<EstimateSettings>,
    /// Whether multivariate drift (PCA reconstruction error) is computed.
    pub multivariate: bool,
}

/// How quality is estimated without labels.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateSettings {
    /// The reference column of true labels (positive: 1); not a feature.
    pub label_column: String,
    /// The reference column of the model's scores; not a feature.
    pub score_column: String,
    /// A reference column of predicted labels; not a feature.
    pub prediction_column: Option<String>,
    /// How scores are calibrated.
    pub calibration: Calibration,
    /// A live row is predicted positive when its score is at least this.
    pub threshold: f64,
}

/// Multivariate drift is computed only for at most this many features: each observed row's error then costs at
/// most 64 × 64 × 2 multiply-adds once (errors are kept per row), and the covariance is 64².
pub const MULTIVARIATE_MAX_FEATURES: usize = 64;
/// ... and fitted on at most this many reference rows (every k-th row of a larger reference): 100,000 × 64² to fit,
/// with two 50 MB matrices at most.
pub const MULTIVARIATE_MAX_ROWS: usize = 100_000;

impl Default for WindowSettings {
    fn default() -> Self {
        // 1,000 rows is where Evidently switches from p-values to distances; 100 keeps n=30-style noise out.
        // Without thresholds, the alert is Evidently's dataset verdict; ten minutes keeps one bad window quiet.
        Self {
            sample_rate: 1.0,
            window_size: 1000,
            window_duration: None,
            min_samples: 100,
            rules: Rule::from_thresholds(&BTreeMap::new()).unwrap_or_default(),
            hold: Duration::from_secs(600),
            consecutive_windows: 1,
            feedback: None,
            prediction_column: None,
            estimate: None,
            multivariate: true,
        }
    }
}

/// A feature the monitor watches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feature {
    /// Its name (the reference column's header).
    pub name: String,
    /// How it is compared.
    pub kind: ColumnKind,
}

/// The reference side of one model version: its features and typed reference columns.
#[derive(Debug)]
pub struct Profile {
    /// The model.
    pub model: String,
    /// The version.
    pub version: u64,
    /// The commit it was deployed from.
    pub commit: Option<String>,
    /// The reference data's sha256.
    pub data_sha256: Option<String>,
    /// The model's sha256 (set by whoever loads the model).
    pub model_sha256: Option<String>,
    /// The features, in input order.
    pub features: Vec<Feature>,
    reference: Vec<Values>,
    /// The reference predictions, when `settings.prediction_column` names them.
    prediction: Option<Values>,
    /// The calibration fitted on the reference's scores and labels, when quality is estimated.
    pub calibrator: Option<Calibrator>,
    /// The PCA fitted on the reference's features, when multivariate drift is on (and the reference fits).
    pub reconstruction: Option<Reconstruction>,
    /// What the reference allows per feature (range, categories), for the data-quality checks.
    domains: Vec<Domain>,
    /// The window settings.
    pub settings: WindowSettings,
    sampled: AtomicU64,
}

/// Why a profile could not be built.
#[derive(Debug, thiserror::Error)]
#[error("reference data {path}: {message}")]
pub struct ProfileError {
    /// The reference file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A feature value as observed.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A number.
    Number(f64),
    /// A category.
    Text(String),
    /// No value.
    Missing,
}

/// One prediction's inputs: `rows` rows of `profile.features.len()` cells each, row-major. It is served now: the
/// monitor stamps the time when it is offered.
#[derive(Debug)]
pub struct Observation<'a> {
    /// The profile of the model version that served it (borrowed: the monitor clones it only when the thread's
    /// previous observation came from another deployment).
    pub profile: &'a Arc<Profile>,
    /// The request id, if the client sent one.
    pub request_id: Option<&'a str>,
    /// The cells, row-major (numbers are copied into the inbox; a heap copy, if any, is freed on the offering
    /// thread).
    pub cells: Observed,
    /// The prediction per row (score or value), when quality is monitored and the request has an id.
    pub predictions: Option<Vec<f64>>,
    /// When the request arrived, on the monotonic clock the request path has already read for it (the monitor
    /// thread turns it into wall-clock time once per drain, so an offer reads no clock). It stands for the time the
    /// prediction was served, which is later by the request's latency.
    pub arrived: Instant,
}

/// An observation's cells, row-major: plain numbers for the common all-numeric input (an eighth of the size of
/// [`Cell`]s, copied straight from the request's tensor), general cells otherwise.
#[derive(Debug)]
pub enum Observed {
    /// FP32 values; NaN is missing. Up to 32 (a batch-1 row of most tabular models) are held inline: sampling such
    /// a request allocates nothing.
    F32(smallvec::SmallVec<[f32; 32]>),
    /// FP64 values; NaN is missing.
    F64(Vec<f64>),
    /// Anything else.
    Cells(Vec<Cell>),
}

impl Observed {
    /// The number of cells.
    pub fn len(&self) -> usize {
        match self {
            Observed::F32(v) => v.len(),
            Observed::F64(v) => v.len(),
            Observed::Cells(v) => v.len(),
        }
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An observation's cells as they wait in the inbox: numbers in the shard's flat arrays, general cells on their own.
#[derive(Debug)]
enum Stored {
    F32 { start: usize, len: usize },
    F64 { start: usize, len: usize },
    Cells(Vec<Cell>),
}

impl Stored {
    fn len(&self) -> usize {
        match self {
            Stored::F32 { len, .. } | Stored::F64 { len, .. } => *len,
            Stored::Cells(v) => v.len(),
        }
    }
}

/// One observation waiting in a shard of the inbox.
#[derive(Debug)]
struct Entry {
    /// Its deployment, an index into the shard's `profiles`.
    profile: usize,
    at: Instant,
    cells: Stored,
    request_id: Option<String>,
    predictions: Option<Vec<f64>>,
}

/// What one thread slot offered since the monitor thread last emptied it.
#[derive(Debug, Default)]
struct Pending {
    /// The deployments of its observations, each once (a thread's observations mostly come from one).
    profiles: Vec<Arc<Profile>>,
    entries: Vec<Entry>,
    f32s: Vec<f32>,
    f64s: Vec<f64>,
}

impl Pending {
    fn push(&mut self, observation: Observation<'_>) {
        let Observation { profile, request_id, cells, predictions, arrived: at } = observation;
        let index = match self.profiles.iter().rposition(|p| Arc::ptr_eq(p, profile)) {
            Some(index) => index,
            None => {
                self.profiles.push(Arc::clone(profile));
                self.profiles.len() - 1
            }
        };
        let cells = match cells {
            Observed::F32(v) => {
                self.f32s.extend_from_slice(&v);
                Stored::F32 { start: self.f32s.len() - v.len(), len: v.len() }
            }
            Observed::F64(v) => {
                self.f64s.extend_from_slice(&v);
                Stored::F64 { start: self.f64s.len() - v.len(), len: v.len() }
            }
            Observed::Cells(v) => Stored::Cells(v),
        };
        let request_id = request_id.map(str::to_owned);
        self.entries.push(Entry { profile: index, at, cells, request_id, predictions });
    }

    /// Empties it, keeping its capacity.
    fn clear(&mut self) {
        self.profiles.clear();
        self.entries.clear();
        self.f32s.clear();
        self.f64s.clear();
    }
}

/// One observation's cells, borrowed from a drained shard.
enum Row<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    Cells(&'a mut [Cell]),
}

impl Row<'_> {
    fn len(&self) -> usize {
        match self {
            Row::F32(v) => v.len(),
            Row::F64(v) => v.len(),
            Row::Cells(v) => v.len(),
        }
    }

    /// Cell `i` (numbers become [`Cell::Number`], NaN [`Cell::Missing`]).
    fn take(&mut self, i: usize) -> Cell {
        let number = |v: f64| if v.is_finite() { Cell::Number(v) } else { Cell::Missing };
        match self {
            Row::F32(v) => number(f64::from(v[i])),
            Row::F64(v) => number(v[i]),
            Row::Cells(v) => std::mem::replace(&mut v[i], Cell::Missing),
        }
    }
}

/// Where request threads leave observations for the monitor thread: one [`Pending`] per thread slot, each behind
/// its own mutex, which only its thread takes except when the monitor thread swaps it out (every 50 ms). An offer
/// is then an uncontended lock and a copy into arrays the slot reuses, where a shared queue cost a contended
/// compare-and-swap, a shared `Arc` increment and a vector freed on another thread per prediction.
struct Inbox {
    shards: crate::shards::Sharded<std::sync::Mutex<Pending>>,
    /// Observations one shard holds before it drops (the configured capacity over the number of cores).
    per_shard: usize,
}

// === impl Profile ===

impl Profile {
    /// Builds the profile from the reference CSV. `kinds` overrides inferred column kinds. Blocking.
    pub fn from_file(
        path: &std::path::Path,
        identity: (String, u64, Option<String>, Option<String>),
        kinds: &BTreeMap<String, ColumnKind>,
        settings: WindowSettings,
    ) -> Result<Self, ProfileError> {
        let error = |message: String| ProfileError { path: path.display().to_string(), message };
        // Reference data comes from the deploy repository: untrusted, so bounded.
        let table =
            Table::from_path_within(path, crate::table::TableLimits::REFERENCE).map_err(|e| error(e.to_string()))?;
        if table.rows == 0 {
            return Err(error("has no rows".to_owned()));
        }
        for name in kinds.keys() {
            if table.index_of(name).is_none() {
                return Err(error(format!("monitoring.columns names {name:?}, which is not a column")));
            }
        }
        let prediction_index =
            match &settings.prediction_column {
                None => None,
                Some(name) => Some(table.index_of(name).ok_or_else(|| {
                    error(format!("monitoring.prediction.column names {name:?}, which is not a column"))
                })?),
            };
        let mut prediction = None;
        let column = |name: &str, field: &str| {
            table.index_of(name).ok_or_else(|| error(format!("{field} names {name:?}, which is not a column")))
        };
        let numeric = |index: usize, what: &str| {
            drift::type_column(&[(&table, index)], Some(ColumnKind::Numeric))
                .map_err(|e| error(format!("{what}: {e}")))
                .map(|(_, mut typed)| typed.pop())
        };
        // Columns that describe the model rather than its inputs: not features.
        let mut not_features: Vec<usize> = prediction_index.into_iter().collect();
        let calibrator = match &settings.estimate {
            None => None,
            Some(estimate) => {
                let field = "monitoring.quality.estimate";
                let label = column(&estimate.label_column, &format!("{field}.label_column"))?;
                let score = column(&estimate.score_column, &format!("{field}.score_column"))?;
                not_features.extend([label, score]);
                if let Some(name) = &estimate.prediction_column {
                    not_features.push(column(name, &format!("{field}.prediction_column"))?);
                }
                let (Some(Values::Numeric(labels)), Some(Values::Numeric(scores))) =
                    (numeric(label, "label column")?, numeric(score, "score column")?)
                else {
                    return Err(error("the label and score columns must be numeric".to_owned()));
                };
                if let Some(bad) = labels.iter().flatten().find(|l| **l != 0.0 && **l != 1.0) {
                    return Err(error(format!("the label column holds {bad}; labels must be 0 or 1")));
                }
                // Uncalibrated scores are taken as probabilities: they must be ones.
                if estimate.calibration != Calibration::Isotonic {
                    if let Some(bad) = scores.iter().flatten().find(|s| !(0.0..=1.0).contains(*s)) {
                        return Err(error(format!(
                            "the score column holds {bad}, not a probability; use calibration: isotonic for scores \
                             that are not in [0, 1]"
                        )));
                    }
                }
                let pairs: Vec<(f64, bool)> =
                    scores.iter().zip(&labels).filter_map(|(s, l)| Some(((*s)?, (*l)? == 1.0))).collect();
                if pairs.is_empty() {
                    return Err(error("no reference row has both a label and a score to calibrate on".to_owned()));
                }
                Some(Calibrator::fit(&pairs, estimate.calibration))
            }
        };
        let (mut features, mut reference) = (Vec::new(), Vec::new());
        for (index, name) in table.names.iter().enumerate() {
            if Some(index) == prediction_index {
                prediction = numeric(index, "prediction column")?;
                continue;
            }
            if not_features.contains(&index) {
                continue;
            }
            let (kind, mut typed) =
                drift::type_column(&[(&table, index)], kinds.get(name).copied()).map_err(|e| error(e.to_string()))?;
            reference.push(typed.pop().ok_or_else(|| error(format!("column {name:?} could not be typed")))?);
            features.push(Feature { name: name.clone(), kind });
        }
        let reconstruction = if settings.multivariate && (2..=MULTIVARIATE_MAX_FEATURES).contains(&features.len()) {
            let every = table.rows.div_ceil(MULTIVARIATE_MAX_ROWS).max(1);
            // A reference within the bound is fitted as it is, not copied.
            let subsample: Vec<Values> =
                if every > 1 { reference.iter().map(|v| every_kth(v, every)).collect() } else { Vec::new() };
            let fitted = if every > 1 { &subsample } else { &reference };
            let columns: Vec<(String, &Values, bool)> =
                features.iter().zip(fitted).map(|(f, v)| (f.name.clone(), v, f.kind == ColumnKind::Binary)).collect();
            // A reference PCA cannot be fitted on (a single row) leaves multivariate drift off, not the model.
            Reconstruction::fit(&columns).ok()
        } else {
            None
        };
        let domains = features.iter().zip(&reference).map(|(f, values)| Domain::of(f.kind, values)).collect();
        let (model, version, commit, data_sha256) = identity;
        Ok(Self {
            domains,
            model_sha256: None,
            model,
            version,
            commit,
            data_sha256,
            features,
            reference,
            prediction,
            calibrator,
            reconstruction,
            settings,
            sampled: AtomicU64::new(0),
        })
    }

    /// Whether every sampled prediction's value is needed (prediction drift, estimated quality), not only those
    /// with an id for labels to join.
    pub fn keeps_predictions(&self) -> bool {
        self.prediction.is_some() || self.calibrator.is_some()
    }

    /// Whether the next prediction should be observed: every k-th one for a rate of 1/k (deterministic, no RNG on
    /// the request path).
    pub fn sample(&self) -> bool {
        let rate = self.settings.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        if rate <= 0.0 {
            return false;
        }
        let n = self.sampled.fetch_add(1, Ordering::Relaxed);
        let every = (1.0 / rate).round().max(1.0) as u64;
        n.is_multiple_of(every)
    }
}

fn every_kth(values: &Values, k: usize) -> Values {
    match values {
        Values::Numeric(v) => Values::Numeric(v.iter().step_by(k).copied().collect()),
        Values::Categorical(v) => Values::Categorical(v.every_kth(k)),
    }
}

/// Counters of the observation inbox (Prometheus counters, registered by the gateway; sharded per thread, as the
/// request path increments one per prediction).
#[derive(Debug, Default, Clone)]
pub struct QueueCounters {
    /// Observations accepted.
    pub accepted: ShardedCounter,
    /// Observations dropped because the thread's part of the inbox was full.
    pub dropped: ShardedCounter,
}

/// The handle the request path uses: offers observations, never waits.
#[derive(Clone)]
pub struct Monitor {
    inbox: Arc<Inbox>,
    /// Dropped with the last handle, which the monitor thread sees as its signal to stop.
    _alive: crossbeam_channel::Sender<()>,
    counters: Arc<QueueCounters>,
    reports: Arc<RwLock<Reports>>,
    alerts: Arc<RwLock<Vec<Alert>>>,
    notifier: Notifier,
    feedback: Arc<crate::feedback::FeedbackStore>,
}

/// The latest report of every monitored model version.
pub type Reports = BTreeMap<String, BTreeMap<u64, Arc<LiveReport>>>;

/// The statistics of one model version's current window.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    /// The model.
    pub model: String,
    /// The version.
    pub version: u64,
    /// The commit that deployed it.
    pub commit: Option<String>,
    /// The reference data's sha256.
    pub data_sha256: Option<String>,
    /// The model's sha256.
    pub model_sha256: Option<String>,
    /// Rows in the window.
    pub window_rows: usize,
    /// Rows observed since this window started (evicted ones included).
    pub rows_observed: u64,
    /// The window's capacity.
    pub window_size: usize,
    /// Rows needed before a verdict.
    pub min_samples: usize,
    /// When the oldest row in the window was observed (Unix milliseconds).
    pub window_start_unix_ms: Option<u64>,
    /// When this report was computed (Unix milliseconds).
    pub evaluated_unix_ms: u64,
    /// Whether there are enough rows for a verdict.
    pub enough_samples: bool,
    /// Per-feature statistics (present once `enough_samples`).
    pub columns: BTreeMap<String, ColumnReport>,
    /// The dataset-level verdict (present once `enough_samples`).
    pub dataset_drift: Option<DatasetDrift>,
    /// The live predictions against the reference predictions (present once `enough_samples`, when the manifest
    /// names the reference's prediction column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_drift: Option<PredictionDrift>,
    /// Quality estimated from the window's scores, labels not needed (present once `enough_samples`, when the
    /// manifest asks for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_quality: Option<EstimatedQuality>,
    /// Multivariate drift (present once `enough_samples`, when on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multivariate: Option<LiveMultivariate>,
    /// Data-quality checks per feature (present once `enough_samples`).
    pub data_quality: BTreeMap<String, FeatureQuality>,
    /// The drift share of past evaluations, oldest first (at most [`HISTORY`]).
    pub history: Vec<HistoryPoint>,
}

/// A window's PCA reconstruction error against the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LiveMultivariate {
    /// The window's mean reconstruction error.
    pub reconstruction_error: f64,
    /// The reference's.
    pub reference_error: f64,
    /// Standard errors of a window this size away from the reference: (error − reference) / (σ / √rows).
    pub z: f64,
    /// The window's bounds (reference ± 3 standard errors).
    pub bounds: Bounds,
    /// Components kept.
    pub pca_components: usize,
}

/// The drift of the model's output.
#[derive(Debug, Clone, Serialize)]
pub struct PredictionDrift {
    /// The reference column the live predictions are compared with.
    pub column: String,
    /// The statistics, as for a numeric feature.
    #[serde(flatten)]
    pub report: ColumnReport,
}

/// What the monitor thread tells its owner.
#[derive(Debug)]
pub enum Event<'a> {
    /// A model version's window was evaluated.
    Report(&'a LiveReport),
    /// Some alert changed state (or a version's alerts went with it): every alert now tracked.
    Alerts(&'a [Alert]),
    /// A model version is no longer served; its window and alerts are gone.
    Retired {
        /// The model.
        model: &'a str,
        /// The version.
        version: u64,
    },
}

/// How the monitor thread runs.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Observations that may wait for the monitor thread: each thread's part of the inbox holds this over the
    /// number of cores (the threads that serve requests), so the inbox holds at most twice it. More are dropped and
    /// counted.
    pub queue_capacity: usize,
    /// How often windows with new rows are evaluated.
    pub evaluate_every: Duration,
    /// Where alerts are delivered.
    pub notify: NotifyConfig,
    /// The URL alerts link to (this server as on-call staff reach it).
    pub base_url: String,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            // 16,384 observations (a few MB). With a drain every 10 ms, the thread's wake-ups on two busy cores came
            // late enough to fill 4,096 at 55,000 predictions a second (111 dropped of 500,000 in one bench run).
            queue_capacity: 16_384,
            evaluate_every: Duration::from_secs(5),
            notify: NotifyConfig::default(),
            base_url: String::new(),
        }
    }
}

// === impl Monitor ===

impl Monitor {
    /// Starts the monitor thread. It stops when every handle is dropped. `on_event` is called (on the monitor
    /// thread) with each new report and each change of alert states, for metrics and for whoever waits on them.
    pub fn start(config: MonitorConfig, on_event: impl FnMut(Event<'_>) + Send + 'static) -> std::io::Result<Self> {
        let shards = crate::shards::Sharded::new(Default::default);
        // The request path's threads (tokio's workers, one per core) hold the capacity between them; with two shards
        // per core, the inbox holds at most twice it.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let per_shard = config.queue_capacity.div_ceil(cores).max(1);
        let inbox = Arc::new(Inbox { shards, per_shard });
        let (alive, stopped) = crossbeam_channel::bounded(0);
        let reports: Arc<RwLock<Reports>> = Arc::default();
        let alerts: Arc<RwLock<Vec<Alert>>> = Arc::default();
        let notifier = Notifier::start(config.notify.clone())?;
        let feedback: Arc<crate::feedback::FeedbackStore> = Arc::default();
        let shared = Shared {
            reports: Arc::clone(&reports),
            alerts: Arc::clone(&alerts),
            notifier: notifier.clone(),
            feedback: Arc::clone(&feedback),
        };
        let engine = Engine::new(config.base_url.trim_end_matches('/'));
        std::thread::Builder::new().name("vane-monitor".into()).spawn({
            let inbox = Arc::clone(&inbox);
            move || run(&inbox, &stopped, config.evaluate_every, &shared, engine, on_event)
        })?;
        Ok(Self { inbox, _alive: alive, counters: Arc::default(), reports, alerts, notifier, feedback })
    }

    /// The store where predictions wait for their labels.
    pub fn feedback(&self) -> &crate::feedback::FeedbackStore {
        &self.feedback
    }

    /// Every alert the engine tracks (pending, firing, and resolved ones not yet forgotten), newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.alerts.read().map(|a| a.clone()).unwrap_or_default()
    }

    /// Sends alerts raised elsewhere (a rollout's rollback) to the same destinations, re-sent while firing.
    pub fn notify(&self, alerts: Vec<Alert>) {
        self.notifier.notify(alerts);
    }

    /// The delivery counters.
    pub fn notify_counters(&self) -> &crate::notify::NotifyCounters {
        self.notifier.counters()
    }

    /// Offers an observation: kept in this thread's part of the inbox if it has room, else dropped and counted.
    /// Never waits on the monitor thread (its lock is the thread's own, held by the monitor only to swap it out).
    pub fn offer(&self, observation: Observation<'_>) {
        let Ok(mut pending) = self.inbox.shards.mine().lock() else {
            // Poisoned by a panic while held (pushing cannot panic): counted like a full part.
            self.counters.dropped.inc();
            return;
        };
        if pending.entries.len() >= self.inbox.per_shard {
            drop(pending);
            self.counters.dropped.inc();
            return;
        }
        pending.push(observation);
        drop(pending);
        self.counters.accepted.inc();
    }

    /// The queue's counters.
    pub fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    /// The latest reports.
    pub fn reports(&self) -> Reports {
        self.reports.read().map(|r| r.clone()).unwrap_or_default()
    }
}

/// One model version's window.
struct Window {
    profile: Arc<Profile>,
    /// When each row was observed, oldest first.
    times: VecDeque<SystemTime>,
    /// The rows, column by column (no allocation per row).
    columns: Vec<WindowColumn>,
    /// Per column, whether each row's cell was of the wrong type (stored as missing). 1 byte a row.
    wrong: Vec<VecDeque<bool>>,
    /// Per column, the latest wrong-typed value (at most 64 bytes).
    wrong_examples: Vec<Option<Box<str>>>,
    /// Each row's PCA reconstruction error, computed once per row (at the first evaluation that sees it), aligned
    /// with the rows from the front: the rows past its end have none yet. 8 bytes a row.
    errors: VecDeque<f64>,
    /// The prediction of each row (NaN: none), when prediction drift is watched.
    predictions: Option<VecDeque<f64>>,
    /// Numeric rows not yet in the columns, newest last: at most `window_size` (older ones would be pushed out
    /// before anything reads the window). A busy model fills its window many times between two evaluations, and
    /// a raw copy per row is a fraction of a row's conversion into the columns, so rows are converted only when
    /// the window is read (an evaluation) or a row of general cells must follow them.
    staged: Staged,
    /// The latest report, which the alert rules are evaluated on at every tick.
    last: Option<Arc<LiveReport>>,
    observed: u64,
    changed: bool,
    history: VecDeque<HistoryPoint>,
}

/// A window's staged rows (see `Window::staged`).
#[derive(Default)]
struct Staged {
    times: VecDeque<SystemTime>,
    /// The prediction of each row (NaN: none).
    predictions: VecDeque<f64>,
    /// The rows' values, row-major; NaN is missing.
    values: VecDeque<f64>,
}

/// One feature's values in a window.
enum WindowColumn {
    /// Numbers; NaN is missing. 8 bytes a row.
    Numeric(VecDeque<f64>),
    /// Categories ("0"/"1" for binary features). 16 bytes a row plus the text.
    Categorical(VecDeque<Option<Box<str>>>),
}

impl Window {
    fn new(profile: &Arc<Profile>) -> Self {
        let columns = profile
            .features
            .iter()
            .map(|f| match f.kind {
                ColumnKind::Numeric => WindowColumn::Numeric(VecDeque::new()),
                _ => WindowColumn::Categorical(VecDeque::new()),
            })
            .collect();
        Self {
            profile: Arc::clone(profile),
            times: VecDeque::new(),
            wrong: vec![VecDeque::new(); profile.features.len()],
            errors: VecDeque::new(),
            wrong_examples: vec![None; profile.features.len()],
            columns,
            predictions: profile.keeps_predictions().then(VecDeque::new),
            staged: Staged::default(),
            last: None,
            observed: 0,
            changed: false,
            history: VecDeque::new(),
        }
    }

    fn len(&self) -> usize {
        self.times.len()
    }

    /// Keeps a numeric row for the next [`Window::flush`], in place of the oldest staged one when `window_size` are.
    fn stage(&mut self, at: SystemTime, row: impl Iterator<Item = f64>, prediction: f64) {
        let width = self.profile.features.len();
        let staged = &mut self.staged;
        if staged.times.len() == self.profile.settings.window_size.max(1) {
            staged.times.pop_front();
            staged.predictions.pop_front();
            staged.values.drain(..width);
        }
        staged.times.push_back(at);
        staged.predictions.push_back(prediction);
        staged.values.extend(row);
    }

    /// Moves the staged rows into the columns, oldest first, as if each had been added when it came.
    fn flush(&mut self) {
        let width = self.profile.features.len();
        let capacity = self.profile.settings.window_size.max(1);
        let mut staged = std::mem::take(&mut self.staged);
        let number = |v: f64| if v.is_finite() { Cell::Number(v) } else { Cell::Missing };
        for (row, (at, prediction)) in staged.times.drain(..).zip(staged.predictions.drain(..)).enumerate() {
            if self.len() == capacity {
                self.pop_front();
            }
            self.push(at, staged.values.range(row * width..(row + 1) * width).map(|v| number(*v)));
            if let Some(p) = &mut self.predictions {
                p.push_back(prediction);
            }
        }
        staged.values.clear();
        // Keep the capacity for the next rows.
        self.staged = staged;
    }

    fn pop_front(&mut self) {
        self.times.pop_front();
        for flags in &mut self.wrong {
            flags.pop_front();
        }
        self.errors.pop_front();
        if let Some(p) = &mut self.predictions {
            p.pop_front();
        }
        for column in &mut self.columns {
            match column {
                WindowColumn::Numeric(v) => {
                    v.pop_front();
                }
                WindowColumn::Categorical(v) => {
                    v.pop_front();
                }
            }
        }
    }

    fn push(&mut self, at: SystemTime, row: impl Iterator<Item = Cell>) {
        self.times.push_back(at);
        let columns = self.columns.iter_mut().zip(&mut self.wrong).zip(&mut self.wrong_examples);
        for (((column, wrong), example), (feature, cell)) in columns.zip(self.profile.features.iter().zip(row)) {
            // A cell of the wrong type is kept out of the statistics as missing, and flagged.
            let mut bad = |text: String| {
                *example = Some(crate::data_quality::example(&text).into_boxed_str());
                true
            };
            let flagged = match column {
                WindowColumn::Numeric(v) => {
                    let (value, flagged) = match cell {
                        Cell::Number(x) if x.is_finite() => (x, false),
                        // A non-finite number is missing (NaN is a float tensor's missing value), as text too.
                        Cell::Text(t) => match t.parse::<f64>() {
                            Ok(x) if x.is_finite() => (x, false),
                            Ok(_) => (f64::NAN, false),
                            Err(_) => (f64::NAN, bad(t)),
                        },
                        _ => (f64::NAN, false),
                    };
                    v.push_back(value);
                    flagged
                }
                WindowColumn::Categorical(v) if feature.kind == ColumnKind::Binary => {
                    let number = match &cell {
                        Cell::Number(x) => Some(*x),
                        Cell::Text(t) => t.parse::<f64>().ok(),
                        Cell::Missing => None,
                    };
                    let (value, flagged) = match (number, cell) {
                        (_, Cell::Missing) => (None, false),
                        (Some(x), _) if x == 0.0 || x == 1.0 => (Some(if x == 0.0 { "0" } else { "1" }.into()), false),
                        (_, Cell::Text(t)) => (None, bad(t)),
                        (_, Cell::Number(x)) => (None, bad(format!("{x}"))),
                    };
                    v.push_back(value);
                    flagged
                }
                WindowColumn::Categorical(v) => {
                    v.push_back(match cell {
                        Cell::Text(t) => Some(t.into_boxed_str()),
                        Cell::Number(x) => Some(format!("{x}").into_boxed_str()),
                        Cell::Missing => None,
                    });
                    false
                }
            };
            wrong.push_back(flagged);
        }
    }
}

/// Evaluations kept per window for the dashboard's charts over time (every 5 s: the last 50 minutes of activity;
/// 88 bytes each).
pub const HISTORY: usize = 600;

/// One past evaluation, for drift over time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
    /// The share of drifted features then.
    pub drift_share: f64,
    /// Rows in the window then.
    pub window_rows: usize,
    /// Accuracy estimated from the scores then (quality.estimate).
    pub estimated_accuracy: Option<f64>,
    /// Accuracy on the labelled predictions then (once `min_samples` are labelled).
    pub realized_accuracy: Option<f64>,
    /// The window's PCA reconstruction error then.
    pub reconstruction_error: Option<f64>,
    /// The PSI of the predictions against the reference's then.
    pub prediction_psi: Option<f64>,
}

/// What the monitor thread publishes to.
struct Shared {
    reports: Arc<RwLock<Reports>>,
    alerts: Arc<RwLock<Vec<Alert>>>,
    notifier: Notifier,
    feedback: Arc<crate::feedback::FeedbackStore>,
}

/// How often the monitor thread empties its queue. The queue must hold what arrives until the thread actually runs,
/// which on a loaded machine is later than this (see `MonitorConfig::queue_capacity`). Every drain pays a wake-up
/// and stores up to a window of rows per deployment however few of them an evaluation will see, so a drain every
/// 10 ms stored half of 40,000 predictions a second into 200-row windows; every 50 ms stores a tenth, and the
/// queue's default capacity still holds 300 ms of 55,000 a second.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

fn run(
    inbox: &Inbox,
    stopped: &crossbeam_channel::Receiver<()>,
    every: Duration,
    shared: &Shared,
    mut engine: Engine,
    mut on_event: impl FnMut(Event<'_>),
) {
    // By model then version, so an observation finds its window without allocating a key.
    let mut windows: HashMap<String, HashMap<u64, Window>> = HashMap::new();
    let mut next = Instant::now() + every;
    // Emptied shards, swapped back in at the next drain so the request threads reuse their capacity.
    let mut spares: Vec<Pending> = Vec::new();
    let mut scratch = DrainScratch::default();
    loop {
        // The thread polls the inbox instead of being woken: a parked receiver makes every offer a futex wake and a
        // context switch, which at tens of thousands of predictions a second cost the request path about 10% of
        // its throughput (benches/overhead.sh).
        std::thread::sleep(DRAIN_EVERY.min(next.saturating_duration_since(Instant::now())));
        if let Err(crossbeam_channel::TryRecvError::Disconnected) = stopped.try_recv() {
            return;
        }
        // Everything offered before an evaluation starts is in it. One drain takes at most what the inbox holds, so
        // a producer faster than this thread cannot keep it from evaluating.
        let mut drained: Vec<Pending> = inbox
            .shards
            .iter()
            .map(|shard| {
                let mut spare = spares.pop().unwrap_or_default();
                if let Ok(mut pending) = shard.lock() {
                    std::mem::swap(&mut *pending, &mut spare);
                }
                spare
            })
            .collect();
        let now = (Instant::now(), SystemTime::now());
        add_drained(&mut windows, &mut drained, now, &shared.feedback, &mut scratch);
        for mut pending in drained {
            pending.clear();
            spares.push(pending);
        }
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + every;
        // Versions no longer loaded: only this thread holds their profile.
        let mut retired = Vec::new();
        for (model, versions) in &mut windows {
            versions.retain(|version, w| {
                let loaded = Arc::strong_count(&w.profile) > 1;
                if !loaded {
                    retired.push((model.clone(), *version));
                }
                loaded
            });
        }
        windows.retain(|_, versions| !versions.is_empty());
        let mut fresh = Vec::new();
        let mut changed_alerts = Vec::new();
        let now = SystemTime::now();
        for window in windows.values_mut().flat_map(HashMap::values_mut) {
            window.flush();
            expire(window);
            let (model, version) = (&window.profile.model, window.profile.version);
            let quality = window
                .profile
                .settings
                .feedback
                .as_ref()
                .and_then(|_| shared.feedback.reports(Some(model)).into_iter().find(|q| q.version == version));
            if window.changed {
                window.changed = false;
                fill_errors(window);
                let mut report = evaluate(window);
                if let Some(dataset) = &report.dataset_drift {
                    if window.history.len() == HISTORY {
                        window.history.pop_front();
                    }
                    window.history.push_back(HistoryPoint {
                        at_unix_ms: report.evaluated_unix_ms,
                        drift_share: dataset.share_of_drifted_columns,
                        window_rows: report.window_rows,
                        estimated_accuracy: report.estimated_quality.as_ref().and_then(|q| q.accuracy),
                        realized_accuracy: quality
                            .as_ref()
                            .filter(|q| q.window_pairs >= report.min_samples.max(1))
                            .and_then(|q| q.classification.as_ref())
                            .map(|c| c.rates.accuracy),
                        reconstruction_error: report.multivariate.map(|m| m.reconstruction_error),
                        prediction_psi: report
                            .prediction_drift
                            .as_ref()
                            .and_then(|p| p.report.psi.as_ref())
                            .map(|p| p.value),
                    });
                }
                report.history = window.history.iter().copied().collect();
                let report = Arc::new(report);
                window.last = Some(Arc::clone(&report));
                fresh.push(report);
            }
            // Every tick, not only on new rows: a condition that holds keeps counting towards its `for`, and labels
            // arrive on their own schedule.
            let Some(report) = &window.last else { continue };
            let settings = &window.profile.settings;
            let hold = crate::alerts::Hold { duration: settings.hold, windows: settings.consecutive_windows };
            changed_alerts.extend(engine.evaluate(report, quality.as_ref(), &settings.rules, hold, now));
        }
        let served = |model: &str, version: u64| windows.get(model).is_some_and(|v| v.contains_key(&version));
        engine.retain_versions(served);
        shared.feedback.retain(served);
        let all = engine.alerts();
        if let Ok(mut alerts) = shared.alerts.write() {
            alerts.clone_from(&all);
        }
        let changed = !changed_alerts.is_empty();
        shared.notifier.notify(changed_alerts);
        if let Ok(mut published) = shared.reports.write() {
            published.retain(|model, versions| {
                versions.retain(|version, _| served(model, *version));
                !versions.is_empty()
            });
            for report in &fresh {
                published.entry(report.model.clone()).or_default().insert(report.version, Arc::clone(report));
            }
        }
        for report in &fresh {
            on_event(Event::Report(report));
        }
        if changed || !retired.is_empty() {
            on_event(Event::Alerts(&all));
        }
        for (model, version) in &retired {
            on_event(Event::Retired { model, version: *version });
        }
    }
}

/// Adds a drain's observations to their windows, oldest first (each thread's part is in its own order; sorting
/// by time merges them).
///
/// A window holds its last `window_size` rows, and no evaluation runs within a drain, so rows that later rows of
/// the same deployment push out before it ends are never seen by one. They are counted (and their predictions kept
/// for feedback) without being stored: at tens of thousands of predictions a second into a 1,000-row window,
/// storing and dropping every row was most of this thread's work (`cargo bench --bench telemetry_cost`).
fn add_drained(
    windows: &mut HashMap<String, HashMap<u64, Window>>,
    drained: &mut [Pending],
    now: (Instant, SystemTime),
    feedback: &crate::feedback::FeedbackStore,
    scratch: &mut DrainScratch,
) {
    let DrainScratch { order, store } = scratch;
    order.clear();
    order.extend(
        drained
            .iter()
            .enumerate()
            .flat_map(|(shard, pending)| pending.entries.iter().enumerate().map(move |(i, e)| (e.at, shard, i))),
    );
    order.sort_by_key(|&(at, shard, i)| (at, shard, i));
    // Rows each deployment's window still has room for, newest first (a drain holds a handful of deployments).
    let mut room: Vec<(*const Profile, usize)> = Vec::new();
    store.clear();
    store.extend(order.iter().rev().map(|&(_, shard, i)| {
        let pending = &drained[shard];
        let entry = &pending.entries[i];
        let profile = &pending.profiles[entry.profile];
        let left = match room.iter().position(|(p, _)| std::ptr::eq(*p, Arc::as_ptr(profile))) {
            Some(index) => &mut room[index].1,
            None => {
                room.push((Arc::as_ptr(profile), profile.settings.window_size.max(1)));
                &mut room.last_mut().expect("just pushed").1
            }
        };
        let stored = *left > 0;
        *left = left.saturating_sub(entry.cells.len() / profile.features.len().max(1));
        stored
    }));
    store.reverse();
    // Rows neither stored nor waiting for labels are only counted, a run of one deployment's at once (one window
    // lookup per run rather than per prediction).
    let mut skipped: Option<(Arc<Profile>, u64)> = None;
    for (&(at, shard, i), &store) in order.iter().zip(store.iter()) {
        let Pending { profiles, entries, f32s, f64s } = &mut drained[shard];
        let entry = &mut entries[i];
        let profile = &profiles[entry.profile];
        let width = profile.features.len();
        if !store && entry.request_id.is_none() && width > 0 && entry.cells.len().is_multiple_of(width) {
            let rows = (entry.cells.len() / width) as u64;
            match &mut skipped {
                Some((run, counted)) if Arc::ptr_eq(run, profile) => *counted += rows,
                _ => {
                    if let Some((run, counted)) = skipped.replace((Arc::clone(profile), rows)) {
                        count(windows, &run, counted);
                    }
                }
            }
            continue;
        }
        if let Some((run, counted)) = skipped.take() {
            count(windows, &run, counted);
        }
        let cells = match &mut entry.cells {
            Stored::F32 { start, len } => Row::F32(&f32s[*start..*start + *len]),
            Stored::F64 { start, len } => Row::F64(&f64s[*start..*start + *len]),
            Stored::Cells(v) => Row::Cells(v),
        };
        let (clock, wall) = now;
        let at = match clock.checked_duration_since(at) {
            Some(ago) => wall.checked_sub(ago).unwrap_or(wall),
            None => wall + at.duration_since(clock),
        };
        let observed =
            Served { at, request_id: entry.request_id.as_deref(), predictions: entry.predictions.as_deref() };
        add(windows, profile, observed, cells, feedback, store);
    }
    if let Some((run, counted)) = skipped {
        count(windows, &run, counted);
    }
}

/// The window of `profile`'s deployment: made when it has none, started again for a new deployment of the same
/// version (new commit or reference data).
fn window_of<'w>(windows: &'w mut HashMap<String, HashMap<u64, Window>>, profile: &Arc<Profile>) -> &'w mut Window {
    if !windows.contains_key(profile.model.as_str()) {
        windows.insert(profile.model.clone(), HashMap::new());
    }
    let versions = windows.get_mut(profile.model.as_str()).expect("inserted when missing");
    let window = versions.entry(profile.version).or_insert_with(|| Window::new(profile));
    if !Arc::ptr_eq(&window.profile, profile) {
        *window = Window::new(profile);
    }
    window
}

/// Counts `rows` rows the window will never hold.
fn count(windows: &mut HashMap<String, HashMap<u64, Window>>, profile: &Arc<Profile>, rows: u64) {
    let window = window_of(windows, profile);
    window.observed += rows;
    window.changed = true;
}

/// The drain's working arrays, kept from one drain to the next: collected afresh, the order of a drain's
/// observations grew by reallocation into pages the kernel had to zero, one of this thread's largest costs in a
/// profile of `cargo bench --bench telemetry_cost`.
#[derive(Default)]
struct DrainScratch {
    /// Each observation as (when, shard, index in the shard), oldest first.
    order: Vec<(Instant, usize, usize)>,
    /// Whether each observation (in `order`'s order) goes into its window.
    store: Vec<bool>,
}

/// When an observation was served, and what feedback needs of it.
#[derive(Clone, Copy)]
struct Served<'a> {
    at: SystemTime,
    request_id: Option<&'a str>,
    predictions: Option<&'a [f64]>,
}

fn add(
    windows: &mut HashMap<String, HashMap<u64, Window>>,
    profile: &Arc<Profile>,
    observation: Served<'_>,
    mut cells: Row<'_>,
    feedback: &crate::feedback::FeedbackStore,
    store: bool,
) {
    if let (Some(settings), Some(id), Some(values)) =
        (&profile.settings.feedback, observation.request_id, observation.predictions)
    {
        feedback.record((&profile.model, profile.version), settings, id, values, observation.at);
    }
    let width = profile.features.len();
    if width == 0 || !cells.len().is_multiple_of(width) {
        return;
    }
    let rows = cells.len() / width;
    if !store {
        count(windows, profile, rows as u64);
        return;
    }
    let window = window_of(windows, profile);
    let capacity = profile.settings.window_size.max(1);
    let prediction = |row: usize| observation.predictions.and_then(|v| v.get(row)).copied().unwrap_or(f64::NAN);
    for row in 0..rows {
        let start = row * width;
        match &mut cells {
            Row::F32(v) => {
                window.stage(observation.at, v[start..start + width].iter().map(|x| f64::from(*x)), prediction(row))
            }
            Row::F64(v) => window.stage(observation.at, v[start..start + width].iter().copied(), prediction(row)),
            Row::Cells(_) => {
                // General cells go straight into the columns, after the numeric rows that came before them.
                window.flush();
                if window.len() == capacity {
                    window.pop_front();
                }
                window.push(observation.at, (start..start + width).map(|i| cells.take(i)));
                if let Some(p) = &mut window.predictions {
                    p.push_back(prediction(row));
                }
            }
        }
        window.observed += 1;
    }
    window.changed = true;
}

fn expire(window: &mut Window) {
    let Some(limit) = window.profile.settings.window_duration else { return };
    let Some(oldest_allowed) = SystemTime::now().checked_sub(limit) else { return };
    while window.times.front().is_some_and(|at| *at < oldest_allowed) {
        window.pop_front();
        window.changed = true;
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn evaluate(window: &Window) -> LiveReport {
    let profile = &window.profile;
    let settings = &profile.settings;
    let enough = window.len() >= settings.min_samples.max(1);
    let mut columns = BTreeMap::new();
    let current: Vec<Values> = if enough { window.columns.iter().map(WindowColumn::values).collect() } else { vec![] };
    // Before the columns' statistics take the window's values.
    let multivariate = match &profile.reconstruction {
        Some(fit) if enough && window.errors.len() == window.len() && !window.errors.is_empty() => {
            let errors: Vec<f64> = window.errors.iter().copied().collect();
            let error = crate::stats::numeric::mean_std(&errors).0;
            Some(LiveMultivariate {
                reconstruction_error: error,
                reference_error: fit.reference_mean,
                z: fit.z(error, window.len()),
                bounds: fit.bounds(window.len()),
                pca_components: fit.n_components,
            })
        }
        _ => None,
    };
    let mut data_quality = BTreeMap::new();
    for ((index, feature), current) in profile.features.iter().enumerate().zip(current) {
        let wrong = window.wrong[index].iter().filter(|w| **w).count() as u64;
        let example = (wrong > 0).then(|| window.wrong_examples[index].as_deref().map(str::to_owned)).flatten();
        let checked = crate::data_quality::check(&profile.domains[index], &current, (wrong, example));
        data_quality.insert(feature.name.clone(), checked);
        let values = Sides { reference: profile.reference[index].clone(), current };
        columns.insert(feature.name.clone(), drift::column_report(feature.kind, &values));
    }
    let order: Vec<String> = profile.features.iter().map(|f| f.name.clone()).collect();
    LiveReport {
        model: profile.model.clone(),
        version: profile.version,
        commit: profile.commit.clone(),
        data_sha256: profile.data_sha256.clone(),
        model_sha256: profile.model_sha256.clone(),
        window_rows: window.len(),
        rows_observed: window.observed,
        window_size: settings.window_size,
        min_samples: settings.min_samples,
        window_start_unix_ms: window.times.front().map(|at| unix_ms(*at)),
        evaluated_unix_ms: unix_ms(SystemTime::now()),
        enough_samples: enough,
        dataset_drift: enough.then(|| drift::dataset_drift(&order, &columns)),
        prediction_drift: match (&profile.prediction, &window.predictions, &settings.prediction_column) {
            (Some(reference), Some(live), Some(column)) if enough => {
                let current = Values::Numeric(live.iter().map(|x| x.is_finite().then_some(*x)).collect());
                let values = Sides { reference: reference.clone(), current };
                Some(PredictionDrift {
                    column: column.clone(),
                    report: drift::column_report(ColumnKind::Numeric, &values),
                })
            }
            _ => None,
        },
        estimated_quality: match (&profile.calibrator, &window.predictions, &settings.estimate) {
            (Some(calibrator), Some(live), Some(estimate)) if enough => {
                let rows: Vec<(f64, bool)> =
                    live.iter().filter(|s| s.is_finite()).map(|&s| (s, s >= estimate.threshold)).collect();
                // As many scored rows as a verdict needs, not merely rows.
                (rows.len() >= settings.min_samples.max(1)).then(|| cbpe::estimate(calibrator, &rows))
            }
            _ => None,
        },
        multivariate,
        data_quality,
        columns,
        history: Vec::new(),
    }
}

impl WindowColumn {
    fn values(&self) -> Values {
        self.values_from(0)
    }

    /// The values of the rows from `start` on.
    fn values_from(&self, start: usize) -> Values {
        match self {
            WindowColumn::Numeric(v) => {
                Values::Numeric(v.range(start..).map(|x| (!x.is_nan()).then_some(*x)).collect())
            }
            WindowColumn::Categorical(v) => Values::Categorical(v.range(start..).map(|c| c.as_deref()).collect()),
        }
    }
}

/// Computes the reconstruction error of the rows that have none yet (the newest), once each.
fn fill_errors(window: &mut Window) {
    let Some(fit) = &window.profile.reconstruction else { return };
    let start = window.errors.len();
    if start >= window.len() {
        return;
    }
    let tail: Vec<Values> = window.columns.iter().map(|c| c.values_from(start)).collect();
    if let Ok(errors) = fit.row_errors(&tail.iter().collect::<Vec<_>>()) {
        window.errors.extend(errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (String, u64, Option<String>, Option<String>) {
        ("m".into(), 1, None, None)
    }

    /// A profile of one numeric column `x` (reference 1 to 4) with a window of three rows.
    fn one_column_in_three_rows() -> (tempfile::TempDir, Arc<Profile>) {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("ref");
        std::fs::write(&csv, "x\n1\n2\n3\n4\n").unwrap();
        let settings = WindowSettings { window_size: 3, ..WindowSettings::default() };
        let profile = Arc::new(Profile::from_file(&csv, identity(), &BTreeMap::new(), settings).unwrap());
        (dir, profile)
    }

    /// A drain merges the threads' parts of the inbox in time order and stores only the rows its window keeps: the
    /// window ends exactly as if every row had been stored, in the order the rows were served.
    #[test]
    fn a_drain_merges_the_threads_parts_in_time_and_stores_only_the_rows_the_window_keeps() {
        let (_dir, profile) = one_column_in_three_rows();
        let at = |i: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(i);
        // Arrived on the monotonic clock; the drain reads both clocks once (here: `base` is `at(0)`).
        let base = Instant::now();
        let observation = |values: Vec<f64>, i: u64| Observation {
            profile: &profile,
            request_id: None,
            cells: Observed::F64(values),
            predictions: None,
            arrived: base + Duration::from_millis(i),
        };
        // Seven rows in six observations, served alternately by two threads (the last observation holds two rows);
        // the later thread's part comes first in the drain.
        let drained = || -> Vec<Pending> {
            let (mut odd, mut even) = (Pending::default(), Pending::default());
            for i in 1..=5 {
                let part = if i % 2 == 1 { &mut odd } else { &mut even };
                part.push(observation(vec![i as f64], i));
            }
            even.push(observation(vec![6.0, 7.0], 6));
            vec![even, odd]
        };
        let feedback = crate::feedback::FeedbackStore::default();
        let mut drain = HashMap::new();
        add_drained(&mut drain, &mut drained(), (base, at(0)), &feedback, &mut DrainScratch::default());
        let mut every_row = HashMap::new();
        for (i, values) in (1..=5).map(|i| vec![i as f64]).chain([vec![6.0, 7.0]]).enumerate() {
            let served = Served { at: at(i as u64 + 1), request_id: None, predictions: None };
            add(&mut every_row, &profile, served, Row::F64(&values), &feedback, true);
        }
        // Read as an evaluation reads it: the staged rows moved into the columns first.
        let window = |windows: &mut HashMap<String, HashMap<u64, Window>>| {
            let w = windows.get_mut("m").and_then(|versions| versions.get_mut(&1)).expect("a window");
            w.flush();
            (w.observed, w.columns[0].values(), w.times.clone())
        };
        let (drained_window, every_row_window) = (window(&mut drain), window(&mut every_row));
        assert_eq!(drained_window, every_row_window);
        assert_eq!(drained_window.0, 7, "every row is counted");
        assert_eq!(
            drained_window.1,
            Values::Numeric(vec![Some(5.0), Some(6.0), Some(7.0)]),
            "the last three, in order"
        );
    }

    /// Numeric rows wait, raw, until the window is read; a row of general cells comes after them all the same.
    #[test]
    fn staged_rows_keep_their_order_with_rows_of_general_cells() {
        let (_dir, profile) = one_column_in_three_rows();
        let feedback = crate::feedback::FeedbackStore::default();
        let mut windows = HashMap::new();
        let served = Served { at: SystemTime::now(), request_id: None, predictions: None };
        let mut add_row = |row: Row<'_>| add(&mut windows, &profile, served, row, &feedback, true);
        add_row(Row::F64(&[1.0, 2.0]));
        add_row(Row::Cells(&mut [Cell::Text("3".into())]));
        add_row(Row::F32(&[f32::NAN, 5.0]));
        let window = windows.get_mut("m").and_then(|versions| versions.get_mut(&1)).expect("a window");
        assert_eq!(window.len(), 3, "the general row moved the two before it into the columns");
        window.flush();
        assert_eq!((window.len(), window.observed), (3, 5));
        assert_eq!(window.columns[0].values(), Values::Numeric(vec![Some(3.0), None, Some(5.0)]));
    }

    #[test]
    fn a_csv_reference_is_typed_and_a_parquet_one_gives_the_same_profile() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("ref");
        std::fs::write(&csv, "x,colour,flag\n1.5,red,0\n2.5,blue,1\n").unwrap();
        let profile = Profile::from_file(&csv, identity(), &BTreeMap::new(), WindowSettings::default()).unwrap();
        let kinds: Vec<ColumnKind> = profile.features.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [ColumnKind::Numeric, ColumnKind::Categorical, ColumnKind::Binary]);

        // The same data as Parquet (pandas/pyarrow, zstd; nulls for the empty cells), named by digest as in the
        // artifact cache: only the bytes say it is Parquet.
        let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let case = "p03_missing_and_constant";
        let cached = dir.path().join("9f86d081884c7d65");
        std::fs::copy(tests.join(format!("parquet/{case}.reference.parquet")), &cached).unwrap();
        let settings = WindowSettings::default;
        let from_csv = Profile::from_file(
            &tests.join(format!("drift-cases/{case}/reference.csv")),
            identity(),
            &BTreeMap::new(),
            settings(),
        )
        .unwrap();
        let from_parquet = Profile::from_file(&cached, identity(), &BTreeMap::new(), settings()).unwrap();
        assert_eq!(from_parquet.features, from_csv.features);
        assert_eq!(from_parquet.reference, from_csv.reference);

        // A file that starts like Parquet but is not is refused with the reader's reason.
        std::fs::write(&cached, b"PAR1\x15\x04binary").unwrap();
        let error = Profile::from_file(&cached, identity(), &BTreeMap::new(), settings()).unwrap_err().to_string();
        assert!(error.contains("not a readable Parquet file"), "{error}");
    }
}
