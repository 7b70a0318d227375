//! The monitor's side of the request path: which features of a model version's inputs are watched, and the
//! observation taken from a request's checked inputs when the version's sampler picks it. The observation is
//! offered to the monitor's bounded queue after the answer is ready and never awaited.
//!
//! Features map to inputs in one of two layouts: one 2-D input `[-1, n]` whose n columns are the reference CSV's
//! columns in order (a typical tabular model), or one input per reference column, named as the column, of shape
//! `[-1]` or `[-1, 1]`. Anything else is refused at load, naming the mismatch.

use std::sync::Arc;

use std::time::Duration;

use monitor::alerts::Rule;
use monitor::drift::ColumnKind;
use monitor::feedback::{FeedbackSettings, Task};
use monitor::live::{Cell, EstimateSettings, Observed, Profile, WindowSettings};
use reconciler::DesiredModel;

use crate::infer::{Signature, Tensor, TensorData};

/// Where each feature's values are in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// Input `input`, a matrix of `width` columns.
    Matrix { input: usize, width: usize },
    /// One input per feature, by position in the request's inputs (graph order after checking).
    Columns(Vec<usize>),
}

/// A monitored model version: its profile and input layout.
#[derive(Debug)]
pub struct Monitored {
    /// The reference profile, shared with the monitor thread.
    pub profile: Arc<Profile>,
    layout: Layout,
    /// The output (name, column) that is the prediction, when quality or prediction drift is monitored.
    prediction: Option<(String, usize)>,
    /// Whether every sampled prediction's value is kept (prediction drift, estimated quality), not only those with
    /// an id (quality).
    prediction_drift: bool,
    /// What the profile was built from, to keep it across commits that do not change it.
    key: (String, Option<reconciler::manifest::Monitoring>),
}

impl Monitored {
    /// The profile of `model` version `version` from its reference data, or `None` when it declares none. Blocking
    /// (reads the reference CSV). An error says why the reference cannot be matched to the inputs.
    pub fn build(
        model: &DesiredModel,
        version: u64,
        revision: Option<&str>,
        signature: &Signature,
    ) -> Result<Option<Self>, String> {
        let Some(reference) = &model.reference_data else { return Ok(None) };
        let monitoring = model.monitoring.clone().unwrap_or_default();
        let defaults = WindowSettings::default();
        let settings = WindowSettings {
            sample_rate: monitoring.sample_rate.unwrap_or(defaults.sample_rate),
            window_size: monitoring.window_size.unwrap_or(defaults.window_size),
            window_duration: monitoring.window_duration,
            min_samples: monitoring.min_samples.unwrap_or(defaults.min_samples),
            rules: Rule::from_thresholds(&monitoring.thresholds).map_err(|e| format!("thresholds: {e}"))?,
            hold: monitoring.for_duration.unwrap_or(defaults.hold),
            consecutive_windows: monitoring.consecutive_windows.unwrap_or(defaults.consecutive_windows),
            feedback: monitoring.quality.as_ref().map(|q| FeedbackSettings {
                task: match q.task.as_str() {
                    "regression" => Task::Regression,
                    _ => Task::BinaryClassification { threshold: q.threshold.unwrap_or(0.5) },
                },
                // A day of predictions at a few per second; ids are the client's, so the bound matters.
                capacity: 100_000,
                ttl: q.label_ttl.unwrap_or(Duration::from_secs(3600)),
                window: q.window.unwrap_or(1000),
            }),
            prediction_column: monitoring.prediction.as_ref().map(|p| p.column.clone()),
            estimate: match monitoring.quality.as_ref().and_then(|q| Some((q, q.estimate.as_ref()?))) {
                None => None,
                Some((quality, estimate)) => Some(EstimateSettings {
                    label_column: estimate.label_column.clone(),
                    score_column: match (&estimate.score_column, &monitoring.prediction) {
                        (Some(column), _) => column.clone(),
                        (None, Some(prediction)) => prediction.column.clone(),
                        (None, None) => return Err("quality.estimate needs a score_column".to_owned()),
                    },
                    prediction_column: estimate.prediction_column.clone(),
                    calibration: estimate.calibration.as_deref().unwrap_or("auto").parse()?,
                    threshold: quality.threshold.unwrap_or(0.5),
                }),
            },
            multivariate: monitoring.multivariate.unwrap_or(defaults.multivariate),
        };
        // The prediction output: the prediction block's, else quality's.
        let named = match (&monitoring.prediction, &monitoring.quality) {
            (Some(p), q) => match (&p.output, q) {
                (Some(output), _) => Some(("prediction.output", output.clone(), p.index.unwrap_or(0))),
                (None, Some(q)) => Some(("quality.output", q.output.clone(), p.index.unwrap_or(q.index))),
                (None, None) => return Err("prediction needs an output (or a quality block naming one)".to_owned()),
            },
            (None, Some(q)) => Some(("quality.output", q.output.clone(), q.index)),
            (None, None) => None,
        };
        let prediction = match named {
            None => None,
            Some((field, name, index)) => {
                let Some(output) = signature.outputs.iter().find(|o| *o.name == *name) else {
                    return Err(format!("{field} '{name}' is not an output of the model"));
                };
                let columns = output.shape.get(1).copied().unwrap_or(1).max(1);
                if output.shape.len() > 2 || usize::try_from(columns).is_ok_and(|c| index >= c) {
                    return Err(format!("index {index} does not fit output '{name}' of shape {:?}", output.shape));
                }
                Some((name, index))
            }
        };
        let kinds = monitoring
            .columns
            .iter()
            .map(|(name, kind)| Ok((name.clone(), kind.parse::<ColumnKind>()?)))
            .collect::<Result<_, String>>()?;
        let identity = (model.name.clone(), version, revision.map(str::to_owned), Some(reference.sha256.clone()));
        let mut profile = Profile::from_file(&reference.path, identity, &kinds, settings).map_err(|e| e.to_string())?;
        // A Git source fingerprints a version as `sha256:<digest>` (a model directory by size and time: no digest).
        profile.model_sha256 = model
            .versions
            .iter()
            .find(|v| v.version == version)
            .and_then(|v| v.fingerprint.strip_prefix("sha256:"))
            .map(str::to_owned);
        let layout = layout(&profile, signature)?;
        let key = (reference.sha256.clone(), model.monitoring.clone());
        let prediction_drift = profile.keeps_predictions();
        Ok(Some(Self { profile: Arc::new(profile), layout, prediction, prediction_drift, key }))
    }

    /// Whether this profile was built from the same reference data and settings as `model` asks for now.
    pub fn is_current(&self, model: &DesiredModel) -> bool {
        model.reference_data.as_ref().is_some_and(|r| r.sha256 == self.key.0) && model.monitoring == self.key.1
    }

    /// The cells of a request's checked inputs, row-major, if the sampler picks this prediction.
    pub fn sample(&self, inputs: &[Tensor]) -> Option<Observed> {
        if !self.profile.sample() {
            return None;
        }
        match &self.layout {
            // Row-major [rows, width] data is already the observation's layout; floats are copied as they are.
            Layout::Matrix { input, .. } => inputs.get(*input).map(|t| match &t.data {
                TensorData::Fp32(v) => Observed::F32(v.as_slice().into()),
                TensorData::Fp64(v) => Observed::F64(v.clone()),
                other => Observed::Cells(cells(other)),
            }),
            Layout::Columns(positions) => {
                let width = positions.len();
                let rows = inputs.get(*positions.first()?)?.shape.first().copied().unwrap_or(1);
                let mut out = vec![Cell::Missing; rows * width];
                for (feature, &position) in positions.iter().enumerate() {
                    let column = cells(&inputs.get(position)?.data);
                    for (row, cell) in column.into_iter().enumerate().take(rows) {
                        out[row * width + feature] = cell;
                    }
                }
                Some(Observed::Cells(out))
            }
        }
    }
}

impl Monitored {
    /// The prediction of each row (the score or value the manifest's quality or prediction block names), if that
    /// output was returned and is needed: for prediction drift always, for quality when the request has an id
    /// (labels posted to `/api/v1/feedback` are joined to these).
    pub fn predictions(&self, outputs: &[Tensor], has_id: bool) -> Option<Vec<f64>> {
        if !(has_id || self.prediction_drift) {
            return None;
        }
        let (name, index) = self.prediction.as_ref()?;
        outputs.iter().find(|t| *t.name == **name)?.column(*index)
    }
}

fn layout(profile: &Profile, signature: &Signature) -> Result<Layout, String> {
    let names: Vec<&str> = profile.features.iter().map(|f| f.name.as_str()).collect();
    if let [only] = signature.inputs.as_slice() {
        if let [-1, width] = only.shape.as_slice() {
            if usize::try_from(*width).ok() == Some(names.len()) {
                return Ok(Layout::Matrix { input: 0, width: names.len() });
            }
            return Err(format!(
                "the reference data has {} columns but input '{}' has {width} features",
                names.len(),
                only.name
            ));
        }
    }
    let mut positions = Vec::with_capacity(names.len());
    for name in &names {
        let Some(position) = signature.inputs.iter().position(|i| &*i.name == *name) else {
            return Err(format!(
                "reference column '{name}' is not an input; the inputs are {} (use one [-1, n] input, or one input \
                 per reference column)",
                signature.inputs.iter().map(|i| &*i.name).collect::<Vec<_>>().join(", ")
            ));
        };
        if !matches!(signature.inputs[position].shape.as_slice(), [-1] | [-1, 1]) {
            return Err(format!("input '{name}' must have shape [-1] or [-1, 1] to be monitored as a column"));
        }
        positions.push(position);
    }
    Ok(Layout::Columns(positions))
}

/// Every element of `data` as a cell, in order; non-finite numbers and empty strings are missing.
fn cells(data: &TensorData) -> Vec<Cell> {
    let number = |v: f64| if v.is_finite() { Cell::Number(v) } else { Cell::Missing };
    match data {
        TensorData::Bool(v) => v.iter().map(|&b| Cell::Number(if b { 1.0 } else { 0.0 })).collect(),
        TensorData::Uint8(v) => v.iter().map(|&x| number(f64::from(x))).collect(),
        TensorData::Uint16(v) => v.iter().map(|&x| number(f64::from(x))).collect(),
        TensorData::Uint32(v) => v.iter().map(|&x| number(f64::from(x))).collect(),
        TensorData::Uint64(v) => v.iter().map(|&x| number(x as f64)).collect(),
        TensorData::Int8(v) => v.iter().map(|&x| number(f64::from(x))).collect(),
        TensorData::Int16(v) => v.iter().map(|&x| number(f64::from(x))).collect(),
        TensorData::Int32(v) => v.iter().map(|&x| number(f64::from(x))).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| number(x as f64)).collect(),
        TensorData::Fp32(v) => v.iter().map(|&x| number(f64::from(x))).collect(),
        TensorData::Fp64(v) => v.iter().map(|&x| number(x)).collect(),
        TensorData::Bytes(v) => v
            .iter()
            .map(|s| if s.is_empty() { Cell::Missing } else { Cell::Text(truncated(s, MAX_CELL_BYTES).to_owned()) })
            .collect(),
    }
}

/// The most bytes of a BYTES element the monitor keeps: categories are short, and the monitor's window holds
/// `window_size` rows of every column, so a client's long strings must not become the monitor's memory. Longer
/// values are cut at a character boundary (they still count as their prefix's category).
pub const MAX_CELL_BYTES: usize = 256;

fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
