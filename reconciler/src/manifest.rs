//! The deployment manifest: one YAML file per served model in the repository's deploy folder.
//!
//! A manifest names the model, the versions to serve (each an ONNX artifact with its sha256), the reference data the
//! monitor compares live traffic against, the serving settings (the same block as a model folder's `config.yaml`)
//! and the monitoring thresholds. Parsing is strict (unknown fields and unknown `apiVersion`s are refused) and pure:
//! nothing is read from disk or network here. A commit is validated as a whole: every file valid, names unique, or
//! nothing from it is applied. `configs/deploy/breast-cancer.yaml` is the commented example.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::ModelConfig;

/// The one manifest version this build reads.
pub const API_VERSION: &str = "vane.dev/v1alpha1";
/// The one kind.
pub const KIND: &str = "ModelDeployment";
/// Manifests larger than this are refused (Git blobs are read whole into memory).
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// Versions one manifest may serve at once.
pub const MAX_VERSIONS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    versions: Vec<RawVersion>,
    #[serde(default)]
    reference_data: Option<RawArtifact>,
    #[serde(default)]
    serving: ModelConfig,
    #[serde(default)]
    monitoring: Option<Monitoring>,
    /// Allow this deployment to move to a commit that does not descend from the last applied one.
    #[serde(default)]
    allow_history_rewrite: bool,
    /// Move traffic from one listed version to another gradually, judged on the model's own signals.
    #[serde(default)]
    rollout: Option<RolloutSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    version: u64,
    model: RawArtifact,
    #[serde(default)]
    io: Option<IoSpec>,
    #[serde(default)]
    warmup: Option<RawWarmup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    dvc: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarmup {
    golden: String,
    #[serde(default = "default_tolerance")]
    tolerance: f64,
}

fn default_tolerance() -> f64 {
    1e-5
}

/// The inputs and outputs a version must have; checked against the ONNX graph before any traffic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoSpec {
    /// The inputs, any order.
    #[serde(default)]
    pub inputs: Vec<TensorDecl>,
    /// The outputs, any order.
    #[serde(default)]
    pub outputs: Vec<TensorDecl>,
}

/// One declared tensor: its name, V2 datatype and shape (-1 for a dynamic dimension).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDecl {
    /// The graph's name for it.
    pub name: String,
    /// The V2 datatype name (`FP32`, `INT64`, ...).
    pub datatype: String,
    /// The shape, -1 for a dynamic dimension.
    pub shape: Vec<i64>,
}

/// The largest `monitoring.window_size` a manifest may ask for (untrusted: the window is kept in memory).
pub const MAX_WINDOW_SIZE: usize = 1_000_000;

/// What the monitor watches and when it alerts. Every field is optional; the monitor supplies defaults.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Share of predictions observed, in (0, 1].
    #[serde(default)]
    pub sample_rate: Option<f64>,
    /// Observations per window.
    #[serde(default)]
    pub window_size: Option<usize>,
    /// Observations older than this leave the window.
    #[serde(default, with = "humantime_serde")]
    pub window_duration: Option<Duration>,
    /// Column kinds that override inference, by reference column: `numeric`, `categorical` or `binary`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Fewest observations before any drift verdict.
    #[serde(default)]
    pub min_samples: Option<usize>,
    /// Thresholds by statistic name (`psi`, `ks_p_value`, `js_distance`, `wasserstein_normed`, `chi2_p_value`,
    /// `missing_share`, `dataset_drift_share`, ...); the monitor validates the names it knows.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f64>,
    /// How long a condition must hold before an alert fires.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_duration: Option<Duration>,
    /// Consecutive windows (evaluations with new predictions) a condition must hold in, as well as for `for`.
    #[serde(default)]
    pub consecutive_windows: Option<u32>,
    /// Model quality from labels posted later to `/api/v1/feedback`.
    #[serde(default)]
    pub quality: Option<QualitySpec>,
    /// Prediction drift: the reference data's column of the model's predictions, compared with the live ones.
    #[serde(default)]
    pub prediction: Option<PredictionSpec>,
    /// Multivariate drift (the PCA reconstruction error of each window against the reference); on unless false.
    #[serde(default)]
    pub multivariate: Option<bool>,
}

/// Where the reference predictions are and which output they correspond to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionSpec {
    /// The reference column holding the model's prediction for each reference row (not a feature).
    pub column: String,
    /// The output tensor holding the prediction; defaults to `quality.output`.
    #[serde(default)]
    pub output: Option<String>,
    /// The column of that output; defaults to `quality.index` (or 0).
    #[serde(default)]
    pub index: Option<usize>,
}

/// Which output is the prediction, and how labels are joined to it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    /// `binary_classification` (the output is the positive class's score) or `regression`.
    pub task: String,
    /// The output tensor holding the prediction.
    pub output: String,
    /// The column of that output (e.g. 1 for the positive class of a `[-1, 2]` probabilities output).
    #[serde(default)]
    pub index: usize,
    /// Classification: predicted positive when score ≥ threshold.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// How long a prediction waits for its label.
    #[serde(default, with = "humantime_serde")]
    pub label_ttl: Option<Duration>,
    /// Joined pairs the metrics are computed over.
    #[serde(default)]
    pub window: Option<usize>,
    /// Quality estimated from each window's scores before labels arrive (CBPE; binary classification).
    #[serde(default)]
    pub estimate: Option<EstimateSpec>,
}

/// Where the reference's labels and scores are, for estimating quality without labels: a calibration of the scores
/// is fitted on them. These columns (and `prediction_column`) are not features.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateSpec {
    /// The reference column of true labels (positive: 1).
    pub label_column: String,
    /// The reference column of the model's scores for the positive class; defaults to `monitoring.prediction.column`.
    #[serde(default)]
    pub score_column: Option<String>,
    /// A reference column of predicted labels, if the reference has one: left out of the features.
    #[serde(default)]
    pub prediction_column: Option<String>,
    /// `isotonic`, `none`, or `auto` (the default: isotonic when it calibrates held-out reference rows better).
    #[serde(default)]
    pub calibration: Option<String>,
}

/// How traffic moves from the stable version to the candidate: steps of weights, each held for a duration and a
/// number of requests and judged by the analysis. The same shape serves the three strategies: a canary's weights
/// are the candidate's share of traffic and it ends promoted; a shadow's are the share of requests also run on the
/// candidate (the client always gets the stable's answer); an A/B test has one step, a fixed split.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The version that serves until the candidate is promoted (one of `versions`).
    pub stable: u64,
    /// The version being rolled out (one of `versions`).
    pub candidate: u64,
    /// `canary`, `shadow` or `ab`.
    pub strategy: Strategy,
    /// The request header (gRPC metadata key) whose value assigns a request to a variant, so a user stays on one;
    /// without it (or when a request lacks it) the request id is the key.
    #[serde(default)]
    pub key: Option<String>,
    /// The steps, in order.
    pub steps: Vec<RolloutStep>,
    /// Whether a shadow or A/B test that passes promotes the candidate (a canary always does).
    #[serde(default)]
    pub promote: bool,
    /// How long the old stable stays loaded and a rollback stays instant after a promotion.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace_period: Duration,
    /// How the candidate is judged.
    #[serde(default)]
    pub analysis: RolloutAnalysis,
}

/// The three ways a candidate meets traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// A growing share of traffic is served by the candidate.
    Canary,
    /// A share of requests also runs on the candidate; clients always get the stable's answer.
    Shadow,
    /// A fixed split, judged and reported.
    Ab,
}

/// One step of a rollout.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutStep {
    /// Percent of requests (0, 100]: served by the candidate (canary, A/B) or mirrored to it (shadow).
    pub weight: f64,
    /// How long the step lasts at least.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Requests the candidate must have seen in the step before it can end.
    #[serde(default)]
    pub min_requests: u64,
}

/// The analysis: checks evaluated every `interval` on the step's exact counters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutAnalysis {
    /// How often the checks run.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Samples each side of a check needs before it passes or fails; below it the check waits.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Failed evaluations that roll the candidate back.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: u32,
    /// The output compared for agreement and prediction drift; defaults to `monitoring.quality.output`, else the
    /// first output.
    #[serde(default)]
    pub output: Option<String>,
    /// Its column; defaults to `monitoring.quality.index`, else 0.
    #[serde(default)]
    pub index: Option<usize>,
    /// The checks; omitted, the error rate and the p99 latency are checked.
    #[serde(default)]
    pub checks: Option<RolloutChecks>,
}

/// Thresholds; each one given is checked.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutChecks {
    /// Largest allowed candidate error rate minus the stable's.
    #[serde(default)]
    pub error_rate_increase: Option<f64>,
    /// Largest allowed ratio of the candidate's p99 latency to the stable's.
    #[serde(default)]
    pub latency_p99_ratio: Option<f64>,
    /// Smallest allowed share of requests on which both answer the same (same class; for scores, within
    /// `agreement_tolerance`, or on the same side of `monitoring.quality.threshold`). Runs the other variant on
    /// candidate-served requests in the background (bounded, dropped first under load).
    #[serde(default)]
    pub agreement: Option<f64>,
    /// Absolute difference under which two scores agree (default 1e-6).
    #[serde(default)]
    pub agreement_tolerance: Option<f64>,
    /// Largest allowed PSI of the candidate's live predictions against the stable's.
    #[serde(default)]
    pub prediction_psi: Option<f64>,
    /// Largest allowed drop of the quality metric on posted labels (stable minus candidate; for error metrics such
    /// as mae, candidate minus stable). Needs `monitoring.quality` and reference data.
    #[serde(default)]
    pub quality_drop: Option<f64>,
    /// The quality metric: accuracy (default for classification), precision, recall, f1, roc_auc, mae (default
    /// for regression), rmse, r2.
    #[serde(default)]
    pub quality_metric: Option<String>,
}

/// Steps one rollout may have.
pub const MAX_ROLLOUT_STEPS: usize = 32;

fn default_grace() -> Duration {
    Duration::from_secs(300)
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_min_samples() -> u64 {
    100
}
fn default_failure_limit() -> u32 {
    2
}

impl Default for RolloutAnalysis {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            min_samples: default_min_samples(),
            failure_limit: default_failure_limit(),
            output: None,
            index: None,
            checks: None,
        }
    }
}

impl RolloutChecks {
    /// What is checked when a rollout names no checks: the error rate (+1 point) and the p99 latency (x1.5).
    pub fn standard() -> Self {
        Self { error_rate_increase: Some(0.01), latency_p99_ratio: Some(1.5), ..Self::default() }
    }
}

impl RolloutSpec {
    /// The checks in force.
    pub fn checks(&self) -> RolloutChecks {
        self.analysis.checks.clone().unwrap_or_else(RolloutChecks::standard)
    }

    fn validate(&self, versions: &[DeployedVersion], monitoring: Option<&Monitoring>) -> Result<(), String> {
        let listed = |v: u64| versions.iter().any(|d| d.version == v);
        for (what, v) in [("stable", self.stable), ("candidate", self.candidate)] {
            if !listed(v) {
                return Err(format!("{what} version {v} is not in spec.versions"));
            }
        }
        if self.stable == self.candidate {
            return Err("stable and candidate must be different versions".to_owned());
        }
        if let Some(key) = &self.key {
            let token = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
            if key.is_empty() || key.len() > 64 || !key.bytes().all(token) {
                return Err(format!("key {key:?} must be a lower-case header name (a-z, 0-9, '-', '_'; at most 64)"));
            }
        }
        if self.steps.is_empty() || self.steps.len() > MAX_ROLLOUT_STEPS {
            return Err(format!("steps must list 1 to {MAX_ROLLOUT_STEPS} steps, not {}", self.steps.len()));
        }
        for (i, step) in self.steps.iter().enumerate() {
            if !(step.weight > 0.0 && step.weight <= 100.0) {
                return Err(format!("steps[{i}].weight must be a percent in (0, 100], not {}", step.weight));
            }
            if step.duration > Duration::from_secs(7 * 24 * 3600) {
                return Err(format!("steps[{i}].duration is longer than 7 days"));
            }
            if i > 0 && self.strategy == Strategy::Canary && step.weight < self.steps[i - 1].weight {
                return Err(format!("steps[{i}].weight goes down; a canary's weights only grow"));
            }
        }
        if self.strategy == Strategy::Ab && (self.steps.len() != 1 || self.steps[0].weight >= 100.0) {
            return Err("an ab rollout has one step, a split below 100".to_owned());
        }
        let analysis = &self.analysis;
        if analysis.interval < Duration::from_millis(100) || analysis.interval > Duration::from_secs(3600) {
            return Err("analysis.interval must be between 100ms and 1h".to_owned());
        }
        if analysis.failure_limit == 0 {
            return Err("analysis.failure_limit must be at least 1".to_owned());
        }
        let checks = self.checks();
        let fraction = |name: &str, v: Option<f64>| match v {
            Some(v) if !(v.is_finite() && v >= 0.0) => Err(format!("analysis.checks.{name} must be a number >= 0")),
            _ => Ok(()),
        };
        fraction("error_rate_increase", checks.error_rate_increase)?;
        fraction("latency_p99_ratio", checks.latency_p99_ratio)?;
        fraction("agreement", checks.agreement)?;
        fraction("agreement_tolerance", checks.agreement_tolerance)?;
        fraction("prediction_psi", checks.prediction_psi)?;
        fraction("quality_drop", checks.quality_drop)?;
        if checks.agreement.is_some_and(|a| a > 1.0) {
            return Err("analysis.checks.agreement is a share in [0, 1]".to_owned());
        }
        let quality = monitoring.and_then(|m| m.quality.as_ref());
        if checks.quality_drop.is_some() && quality.is_none() {
            return Err("analysis.checks.quality_drop needs spec.monitoring.quality (labels to judge on)".to_owned());
        }
        if let Some(metric) = &checks.quality_metric {
            let known = ["accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2"];
            if !known.contains(&metric.as_str()) {
                return Err(format!("analysis.checks.quality_metric {metric:?} is not one of {}", known.join(", ")));
            }
        }
        Ok(())
    }
}

/// A validated deployment: what one manifest asks to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// The model name clients use.
    pub name: String,
    /// Free-form labels (owner, team).
    pub labels: BTreeMap<String, String>,
    /// The versions, ascending.
    pub versions: Vec<DeployedVersion>,
    /// The reference data for the monitor.
    pub reference_data: Option<ArtifactRef>,
    /// Serving settings.
    pub serving: ModelConfig,
    /// Monitoring thresholds.
    pub monitoring: Option<Monitoring>,
    /// Whether a non-fast-forward move is allowed for this deployment.
    pub allow_history_rewrite: bool,
    /// The rollout in progress, if any.
    pub rollout: Option<RolloutSpec>,
}

/// One version of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployedVersion {
    /// The version number.
    pub version: u64,
    /// The ONNX artifact.
    pub model: ArtifactRef,
    /// Declared inputs and outputs, if any.
    pub io: Option<IoSpec>,
    /// A golden set to check the warm-up against, if any.
    pub warmup: Option<Warmup>,
}

/// A golden set: a JSON file in the repository with inputs and expected outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    /// The file, relative to the repository root.
    pub golden: RepoPath,
    /// Largest absolute difference allowed per element.
    pub tolerance: f64,
}

/// Where an artifact comes from, and the digest it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    /// The source.
    pub source: ArtifactSource,
    /// Lower-case hex sha256 of the artifact's bytes.
    pub sha256: String,
}

/// The three places an artifact may live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSource {
    /// A file in the repository at the same commit, read from Git objects.
    Repo(RepoPath),
    /// A DVC pointer file (`.dvc`) in the repository, resolved against the configured DVC cache or remote.
    Dvc(RepoPath),
    /// A `file://` or `https://` URI.
    Uri(String),
}

/// A path inside the repository: relative, `/`-separated, with no `.`, `..` or empty components.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoPath(String);

/// Why a commit's manifests were refused: every problem, each naming its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

/// One problem in one manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file, relative to the repository root.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

// === impl RepoPath ===

impl RepoPath {
    /// Checks that `path` stays inside the repository.
    pub fn parse(path: &str) -> Result<Self, String> {
        if path.is_empty() {
            return Err("path is empty".to_owned());
        }
        if path.starts_with('/') || path.contains('\\') || path.contains('\0') || path.contains(':') {
            return Err(format!("path {path:?} must be relative to the repository root, with '/' separators"));
        }
        if let Some(bad) = path.split('/').find(|c| c.is_empty() || *c == "." || *c == "..") {
            return Err(format!("path {path:?} has a {bad:?} component; paths may not leave or wander the repository"));
        }
        Ok(Self(path.to_owned()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl ManifestErrors ===

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| format!("{}: {}", e.file, e.message)).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ManifestErrors {}

/// Parses and validates every manifest of one commit (`(path, bytes)` pairs). All or nothing: any problem in any file
/// refuses the whole commit, and every problem found is reported.
pub fn parse_commit(files: &[(String, Vec<u8>)]) -> Result<Vec<Deployment>, ManifestErrors> {
    let mut errors = Vec::new();
    let mut deployments: Vec<(String, Deployment)> = Vec::new();
    for (file, bytes) in files {
        match parse_one(bytes) {
            Ok(deployment) => {
                if let Some((other, _)) = deployments.iter().find(|(_, d)| d.name == deployment.name) {
                    errors.push(ManifestError {
                        file: file.clone(),
                        message: format!("model '{}' is already deployed by {other}", deployment.name),
                    });
                } else {
                    deployments.push((file.clone(), deployment));
                }
            }
            Err(message) => errors.push(ManifestError { file: file.clone(), message }),
        }
    }
    if !errors.is_empty() {
        return Err(ManifestErrors(errors));
    }
    let mut deployments: Vec<Deployment> = deployments.into_iter().map(|(_, d)| d).collect();
    deployments.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(deployments)
}

fn parse_one(bytes: &[u8]) -> Result<Deployment, String> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(format!("manifest is {} bytes; the limit is {MAX_MANIFEST_BYTES}", bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "manifest is not UTF-8".to_owned())?;
    let raw: RawManifest = crate::yaml::from_str(text).map_err(|e| format!("invalid manifest: {e}"))?;
    if raw.api_version != API_VERSION {
        return Err(format!("apiVersion {:?} is not supported; this build reads {API_VERSION:?}", raw.api_version));
    }
    if raw.kind != KIND {
        return Err(format!("kind {:?} is not supported; expected {KIND:?}", raw.kind));
    }
    let name = raw.metadata.name;
    if !crate::model_dir::is_valid_model_name(&name) || name.len() > 63 {
        return Err(format!(
            "metadata.name {name:?} is not a valid model name (letters, digits, '_', '-', '.'; at most 63)"
        ));
    }
    let spec = raw.spec;
    if spec.versions.is_empty() || spec.versions.len() > MAX_VERSIONS {
        return Err(format!("spec.versions must list 1 to {MAX_VERSIONS} versions, not {}", spec.versions.len()));
    }
    let mut versions = Vec::with_capacity(spec.versions.len());
    for raw_version in spec.versions {
        let at = format!("spec.versions[version {}]", raw_version.version);
        if versions.iter().any(|v: &DeployedVersion| v.version == raw_version.version) {
            return Err(format!("{at}: version {} is listed twice", raw_version.version));
        }
        let model = artifact(raw_version.model).map_err(|e| format!("{at}.model: {e}"))?;
        let warmup = match raw_version.warmup {
            None => None,
            Some(w) if !(w.tolerance >= 0.0 && w.tolerance.is_finite()) => {
                return Err(format!("{at}.warmup.tolerance must be a finite number >= 0"));
            }
            Some(w) => Some(Warmup {
                golden: RepoPath::parse(&w.golden).map_err(|e| format!("{at}.warmup.golden: {e}"))?,
                tolerance: w.tolerance,
            }),
        };
        versions.push(DeployedVersion { version: raw_version.version, model, io: raw_version.io, warmup });
    }
    versions.sort_by_key(|v| v.version);
    let reference_data =
        spec.reference_data.map(artifact).transpose().map_err(|e| format!("spec.reference_data: {e}"))?;
    if let Some(monitoring) = &spec.monitoring {
        if let Some(rate) = monitoring.sample_rate {
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(format!("spec.monitoring.sample_rate must be in (0, 1], not {rate}"));
            }
        }
        if matches!(monitoring.consecutive_windows, Some(n) if n == 0 || n > 1000) {
            return Err("spec.monitoring.consecutive_windows must be from 1 to 1000".to_owned());
        }
        // The window's rows are kept in memory: 1 million rows of 30 numeric features is about 300 MB, and up to
        // as many again staged raw between two evaluations (monitor::live).
        if matches!(monitoring.window_size, Some(n) if n == 0 || n > MAX_WINDOW_SIZE) {
            return Err(format!("spec.monitoring.window_size must be from 1 to {MAX_WINDOW_SIZE}"));
        }
        for (column, kind) in &monitoring.columns {
            if !matches!(kind.as_str(), "numeric" | "categorical" | "binary") {
                return Err(format!(
                    "spec.monitoring.columns.{column}: {kind:?} is not numeric, categorical or binary"
                ));
            }
        }
        if let Some(quality) = &monitoring.quality {
            if !matches!(quality.task.as_str(), "binary_classification" | "regression") {
                return Err(format!(
                    "spec.monitoring.quality.task: {:?} is not binary_classification or regression",
                    quality.task
                ));
            }
            if let Some(estimate) = &quality.estimate {
                if quality.task != "binary_classification" {
                    return Err("spec.monitoring.quality.estimate needs task binary_classification".to_owned());
                }
                if let Some(c) = &estimate.calibration {
                    if !matches!(c.as_str(), "isotonic" | "none" | "auto") {
                        return Err(format!(
                            "spec.monitoring.quality.estimate.calibration: {c:?} is not isotonic, none or auto"
                        ));
                    }
                }
                if estimate.score_column.is_none() && monitoring.prediction.is_none() {
                    return Err(
                        "spec.monitoring.quality.estimate.score_column is needed (or monitoring.prediction)".to_owned()
                    );
                }
                if reference_data.is_none() {
                    return Err("spec.monitoring.quality.estimate needs spec.reference_data".to_owned());
                }
            }
        }
        if !monitoring.columns.is_empty() && reference_data.is_none() {
            return Err("spec.monitoring.columns needs spec.reference_data".to_owned());
        }
    }
    if let Some(rollout) = &spec.rollout {
        rollout.validate(&versions, spec.monitoring.as_ref()).map_err(|e| format!("spec.rollout: {e}"))?;
    }
    Ok(Deployment {
        name,
        labels: raw.metadata.labels,
        versions,
        reference_data,
        serving: spec.serving.validated().map_err(|e| format!("spec.serving: {e}"))?,
        monitoring: spec.monitoring,
        allow_history_rewrite: spec.allow_history_rewrite,
        rollout: spec.rollout,
    })
}

fn artifact(raw: RawArtifact) -> Result<ArtifactRef, String> {
    let sha256 = raw.sha256.strip_prefix("sha256:").unwrap_or(&raw.sha256).to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("sha256 {:?} is not 64 hex digits", raw.sha256));
    }
    let source = match (raw.path, raw.dvc, raw.uri) {
        (Some(path), None, None) => ArtifactSource::Repo(RepoPath::parse(&path)?),
        (None, Some(dvc), None) => {
            if !dvc.ends_with(".dvc") {
                return Err(format!("dvc {dvc:?} must name a .dvc pointer file"));
            }
            ArtifactSource::Dvc(RepoPath::parse(&dvc)?)
        }
        (None, None, Some(uri)) => {
            if !(uri.starts_with("file:///") || uri.starts_with("https://")) {
                return Err(format!("uri {uri:?} must be file:///... or https://..."));
            }
            if uri.starts_with("https://")
                && uri["https://".len()..].split('/').next().is_some_and(|host| host.contains('@'))
            {
                return Err("uri must not carry credentials; configure them on the command line".to_owned());
            }
            ArtifactSource::Uri(uri)
        }
        _ => return Err("give exactly one of path, dvc or uri".to_owned()),
    };
    Ok(ArtifactRef { source, sha256 })
}

#[cfg(test)]
mod tests;
