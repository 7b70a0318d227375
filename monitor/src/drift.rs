//! The drift report of a current table against a reference table: per column, the statistics of
//! `shared/drift-cases` (same field names and nesting as their `expected.json`), a drift verdict by Evidently's
//! default test choice, the dataset-level share of drifted columns, and optional quality blocks. The live monitor
//! and `vane drift` both build their reports here.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::data_quality::{self as checks, Domain, FeatureQuality};
use crate::stats::categorical::{self, Chi2, ZTest};
use crate::stats::cbpe::{self, Calibration, Calibrator, EstimatedQuality};
use crate::stats::ks::{self, KsTest};
use crate::stats::multivariate::{Bounds, Reconstruction};
use crate::stats::numeric::{self, Bins, Summary, PSI_EPSILON, WASSERSTEIN_STD_FLOOR};
use crate::stats::quality::{self, Classification, Regression};
use crate::table::Table;

/// How a column is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Numbers: K-S, PSI and JS on reference-quantile bins, Wasserstein.
    Numeric,
    /// Text categories: chi-squared, PSI and JS on the category union, L-infinity.
    Categorical,
    /// A categorical with levels "0" and "1": as categorical, plus the Z-test for proportions.
    Binary,
}

impl std::str::FromStr for ColumnKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "numeric" => Ok(Self::Numeric),
            "categorical" => Ok(Self::Categorical),
            "binary" => Ok(Self::Binary),
            other => Err(format!("unknown column kind {other:?} (numeric, categorical or binary)")),
        }
    }
}

/// Binary classification columns.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationSpec {
    /// The ground-truth column.
    pub label: String,
    /// The score column (probability of the positive class).
    pub score: String,
    /// The label value that is positive.
    pub positive: String,
    /// Predicted positive when score ≥ threshold.
    pub threshold: f64,
    /// The column of predicted labels (positive when equal to `positive`); else score ≥ threshold.
    pub prediction: Option<String>,
    /// A multiclass classifier's classes with their score columns (`score=A:B:C,classes=a:b:c`); empty for binary.
    /// Its quality is estimated one-vs-rest; realized multiclass quality is not computed.
    pub classes: Vec<(String, String)>,
}

/// Regression columns.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionSpec {
    /// The ground-truth column.
    pub target: String,
    /// The prediction column.
    pub prediction: String,
}

/// What to compute besides drift.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Column kinds set by hand; the others are inferred.
    pub kinds: BTreeMap<String, ColumnKind>,
    /// Classification quality, if any.
    pub classification: Option<ClassificationSpec>,
    /// Regression quality, if any.
    pub regression: Option<RegressionSpec>,
    /// Estimate the current side's classification quality from its scores alone (needs `classification`).
    pub estimated_quality: Option<Calibration>,
    /// The PCA reconstruction error of the current side (every column but the quality blocks' ones).
    pub multivariate: bool,
}

/// A value for each side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sides<T> {
    /// The reference (baseline) side.
    pub reference: T,
    /// The current (live) side.
    pub current: T,
}

/// Missing cells of one side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Missing {
    /// Empty cells.
    pub count: u64,
    /// count / rows of the side.
    pub share: f64,
}

/// PSI with its bins (numeric) or only its value (categorical, whose bins are the categories).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Psi {
    /// Σ (c − r)·ln(c/r).
    pub value: f64,
    /// Bins (numeric only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_bins: Option<usize>,
    /// Cut points (numeric only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_edges: Option<Vec<f64>>,
    /// Reference counts per bin (numeric only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_counts: Option<Vec<u64>>,
    /// Current counts per bin (numeric only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_counts: Option<Vec<u64>>,
    /// The smoothing of empty proportions.
    pub epsilon: f64,
}

/// Wasserstein distance and its normed form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Wasserstein {
    /// W1.
    pub distance: f64,
    /// Population std of the reference.
    pub reference_std: f64,
    /// W1 / max(reference_std, 0.001).
    pub normed: f64,
}

/// The drift verdict of one column, by Evidently's default test choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// `ks`, `chisquare`, `z`, `wasserstein` or `jensenshannon`.
    pub stattest: &'static str,
    /// The test's score: a p-value (ks, chisquare, z) or a distance (wasserstein normed, jensenshannon in nats).
    pub drift_score: f64,
    /// The threshold it is held against.
    pub threshold: f64,
    /// Whether the column drifted.
    pub drifted: bool,
}

/// One column's statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnReport {
    /// How it was treated.
    pub kind: ColumnKind,
    /// Missing cells per side.
    pub missing: Sides<Missing>,
    /// Non-missing values per side.
    pub n_valid: Sides<u64>,
    /// Numeric: summaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Sides<Option<Summary>>>,
    /// Numeric: Kolmogorov-Smirnov.
    #[serde(skip_serializing_if = "is_numeric_none")]
    pub ks: NumericStat<KsTest>,
    /// Categorical: the category union, sorted by code point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Categorical: counts per category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_counts: Option<BTreeMap<String, u64>>,
    /// Categorical: counts per category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_counts: Option<BTreeMap<String, u64>>,
    /// Categorical: chi-squared test of homogeneity.
    #[serde(skip_serializing_if = "is_numeric_none")]
    pub chi2: NumericStat<Chi2>,
    /// PSI.
    pub psi: Option<Psi>,
    /// Jensen-Shannon distance, base 2.
    pub js_distance: Option<f64>,
    /// Numeric: Wasserstein.
    #[serde(skip_serializing_if = "is_numeric_none")]
    pub wasserstein: NumericStat<Wasserstein>,
    /// Categorical: L-infinity.
    #[serde(skip_serializing_if = "is_numeric_none")]
    pub l_infinity: NumericStat<f64>,
    /// Binary: the Z-test.
    #[serde(skip_serializing_if = "is_numeric_none")]
    pub z_test: NumericStat<ZTest>,
    /// The verdict; `None` when a side has no values (the column is skipped, as Evidently skips it).
    pub drift: Option<Verdict>,
}

/// A statistic that applies to some kinds only: `NotApplicable` is left out of the JSON, `Undefined` is `null`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumericStat<T> {
    /// Not computed for this kind of column.
    NotApplicable,
    /// Applies, but a side has no values.
    Undefined,
    /// The value.
    Value(T),
}

fn is_numeric_none<T>(stat: &NumericStat<T>) -> bool {
    matches!(stat, NumericStat::NotApplicable)
}

impl<T: Serialize> Serialize for NumericStat<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            NumericStat::Value(value) => value.serialize(serializer),
            _ => serializer.serialize_none(),
        }
    }
}

impl<T> From<Option<T>> for NumericStat<T> {
    fn from(value: Option<T>) -> Self {
        value.map_or(NumericStat::Undefined, NumericStat::Value)
    }
}

/// The share of drifted columns, as Evidently's dataset drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetDrift {
    /// Columns with a verdict.
    pub number_of_columns: usize,
    /// Columns that drifted.
    pub number_of_drifted_columns: usize,
    /// drifted / columns.
    pub share_of_drifted_columns: f64,
    /// The share at which the dataset counts as drifted.
    pub drift_share: f64,
    /// share ≥ drift_share.
    pub dataset_drift: bool,
    /// The drifted columns, in column order.
    pub drifted_columns: Vec<String>,
}

/// Evidently's default: the dataset drifts when half the columns do.
pub const DRIFT_SHARE: f64 = 0.5;

/// Quality blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    /// Binary classification, if asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_classification: Option<Sides<Classification>>,
    /// Regression, if asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<Sides<Regression>>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// Rows per side.
    pub n_rows: Sides<u64>,
    /// Columns in file order.
    pub column_order: Vec<String>,
    /// Per-column statistics.
    pub columns: BTreeMap<String, ColumnReport>,
    /// The dataset-level verdict.
    pub dataset_drift: DatasetDrift,
    /// Quality, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// Quality estimated without the current side's labels, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_quality: Option<EstimatedReport>,
    /// Multivariate drift, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multivariate: Option<Multivariate>,
    /// Data-quality checks of the current side against the reference, per column.
    pub data_quality: BTreeMap<String, FeatureQuality>,
    /// How a `--stream` report was made (which figures are estimates); absent when every figure is exact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streamed: Option<crate::stream::Streamed>,
}

/// The current side's estimated quality, and how its calibration was chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimatedReport {
    /// The estimate (its `calibration` is the one used).
    #[serde(flatten)]
    pub quality: EstimatedQuality,
    /// What was asked for: isotonic, none or auto.
    pub calibration_requested: Calibration,
    /// For `auto`: the expected calibration error of the raw scores and of cross-fitted isotonic probabilities on
    /// the reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_errors: Option<CalibrationErrors>,
}

/// The errors behind an `auto` calibration choice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationErrors {
    /// The raw scores'.
    pub raw: f64,
    /// Cross-fitted isotonic probabilities'.
    pub isotonic: f64,
}

impl EstimatedReport {
    /// The report of an estimate by `calibrator`.
    pub fn new(quality: EstimatedQuality, calibrator: &Calibrator) -> Self {
        Self {
            quality,
            calibration_requested: calibrator.requested,
            calibration_errors: calibrator.auto_errors.map(|(raw, isotonic)| CalibrationErrors { raw, isotonic }),
        }
    }
}

/// Multivariate drift: the mean PCA reconstruction error of each side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Multivariate {
    /// The features, in column order.
    pub features: Vec<String>,
    /// Components kept.
    pub pca_components: usize,
    /// The explained-variance ratio they hold.
    pub explained_variance: f64,
    /// The mean error per side (the current one is `None` without rows).
    pub reconstruction_error: Sides<Option<f64>>,
    /// The population standard deviation of the reference rows' errors.
    pub reference_row_std: f64,
    /// The bounds for a window of the current side's size.
    pub bounds: Bounds,
    /// Whether the current error is outside the bounds.
    pub drifted: bool,
}

/// Why a report could not be built: a one-line message naming the file, row and column.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReportError(pub String);

/// A column's values, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Numbers (`None` = missing).
    Numeric(Vec<Option<f64>>),
    /// Categories, each distinct value stored once.
    Categorical(Categories),
}

/// A categorical column, dictionary-coded: each distinct value is stored once (in the order first seen) and each
/// row is a 4-byte code, so 200,000 rows of a few categories cost 800 KB and no allocation per row. Equality is of
/// the rows' values, whatever the codes.
#[derive(Debug, Clone, Default)]
pub struct Categories {
    names: Vec<Box<str>>,
    codes: Vec<u32>,
}

impl Categories {
    /// The code of a missing row.
    const MISSING: u32 = u32::MAX;

    /// Codes `cells` (`None` = missing). A column has fewer distinct values than 2^32 - 1: a table column holds at
    /// most 4 GiB of text and a live window far fewer rows.
    pub fn from_cells<'a>(cells: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        // A few values are found faster by comparing them all than by hashing; past SCAN, a hash map takes over.
        const SCAN: usize = 16;
        let cells = cells.into_iter();
        let mut seen: Vec<&'a str> = Vec::new();
        let mut index: std::collections::HashMap<&'a str, u32> = std::collections::HashMap::new();
        let mut codes = Vec::with_capacity(cells.size_hint().0);
        let code = |i: usize| u32::try_from(i).unwrap_or(Self::MISSING - 1);
        for cell in cells {
            let Some(cell) = cell else {
                codes.push(Self::MISSING);
                continue;
            };
            let found = if seen.len() <= SCAN {
                seen.iter().position(|&name| name == cell).map(code)
            } else {
                index.get(cell).copied()
            };
            codes.push(found.unwrap_or_else(|| {
                seen.push(cell);
                if seen.len() > SCAN {
                    if index.is_empty() {
                        index.extend(seen.iter().enumerate().map(|(i, &name)| (name, code(i))));
                    } else {
                        index.insert(cell, code(seen.len() - 1));
                    }
                }
                code(seen.len() - 1)
            }));
        }
        Self { names: seen.into_iter().map(Box::from).collect(), codes }
    }

    /// The rows' values (`None` = missing).
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + Clone + '_ {
        self.codes.iter().map(|&code| self.name(code))
    }

    fn name(&self, code: u32) -> Option<&str> {
        self.names.get(code as usize).map(|name| &**name)
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Rows without a value.
    pub fn missing(&self) -> usize {
        self.codes.iter().filter(|&&code| code == Self::MISSING).count()
    }

    /// Each value present with its count of rows, in no particular order.
    pub fn counts(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        let mut counts = vec![0u64; self.names.len()];
        for &code in &self.codes {
            if let Some(count) = counts.get_mut(code as usize) {
                *count += 1;
            }
        }
        self.names.iter().map(|name| &**name).zip(counts).filter(|&(_, count)| count > 0)
    }

    /// Every `k`-th row from the first.
    pub fn every_kth(&self, k: usize) -> Self {
        Self { names: self.names.clone(), codes: self.codes.iter().step_by(k).copied().collect() }
    }
}

impl PartialEq for Categories {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a> FromIterator<Option<&'a str>> for Categories {
    fn from_iter<I: IntoIterator<Item = Option<&'a str>>>(cells: I) -> Self {
        Self::from_cells(cells)
    }
}

impl Values {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            Values::Numeric(v) => v.len(),
            Values::Categorical(v) => v.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows without a value.
    pub fn missing(&self) -> usize {
        match self {
            Values::Numeric(v) => v.iter().filter(|x| x.is_none()).count(),
            Values::Categorical(v) => v.missing(),
        }
    }
}

/// Builds the report of `current` against `reference` (the same columns in any order).
pub fn report(reference: &Table, current: &Table, options: &Options) -> Result<DriftReport, ReportError> {
    for (one, other) in [(reference, current), (current, reference)] {
        if let Some(name) = one.names.iter().find(|name| other.index_of(name).is_none()) {
            return Err(ReportError(format!(
                "column {name:?} is in {} but not in {}",
                one.path.display(),
                other.path.display()
            )));
        }
    }
    for name in options.kinds.keys() {
        if reference.index_of(name).is_none() {
            return Err(ReportError(format!("--column {name}: no such column in {}", reference.path.display())));
        }
    }
    // The columns the quality, estimate and multivariate blocks read after the per-column statistics; every other
    // column's typed values are dropped on the thread that made them, as soon as its statistics are done, so the
    // next column reuses that memory.
    let quality_columns: BTreeSet<&str> = options
        .classification
        .iter()
        .flat_map(|c| {
            [Some(c.label.as_str()), Some(c.score.as_str()), c.prediction.as_deref()]
                .into_iter()
                .chain(c.classes.iter().map(|(_, column)| Some(column.as_str())))
        })
        .chain(options.regression.iter().flat_map(|r| [Some(r.target.as_str()), Some(r.prediction.as_str())]))
        .flatten()
        .collect();
    let keep = |name: &str| options.multivariate || quality_columns.contains(name);
    type Computed = (ColumnReport, FeatureQuality, Option<Sides<Values>>);
    let one = |name: &String| -> Result<Computed, ReportError> {
        let (ri, ci) = (reference.index_of(name).unwrap_or(0), current.index_of(name).unwrap_or(0));
        let forced = options.kinds.get(name).copied();
        let (kind, typed) = type_column(&[(reference, ri), (current, ci)], forced)?;
        let mut typed = typed.into_iter();
        let (Some(r), Some(c)) = (typed.next(), typed.next()) else {
            return Err(ReportError(format!("column {name:?} could not be typed")));
        };
        let values = Sides { reference: r, current: c };
        let column = column_report(kind, &values);
        let quality = data_quality_of(reference, current, name, kind, &values, forced)?;
        Ok((column, quality, keep(name).then_some(values)))
    };
    // Columns are independent: the cores take them one at a time, the next free core the next column.
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(reference.names.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Vec<(usize, Result<Computed, ReportError>)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (one, next) = (&one, &next);
                scope.spawn(move || {
                    std::iter::from_fn(|| {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        reference.names.get(i).map(|name| (i, one(name)))
                    })
                    .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_default()).collect()
    });
    let mut columns = BTreeMap::new();
    let mut typed = BTreeMap::new();
    let mut data_quality = BTreeMap::new();
    let mut results: Vec<_> = results.into_iter().flatten().collect();
    // The first error in column order is the one reported, whichever core met it.
    results.sort_unstable_by_key(|(i, _)| *i);
    for (i, result) in results {
        let (column, quality, values) = result?;
        let name = reference.names[i].clone();
        columns.insert(name.clone(), column);
        data_quality.insert(name.clone(), quality);
        if let Some(values) = values {
            typed.insert(name, values);
        }
    }
    if columns.len() != reference.names.len() {
        return Err(ReportError("a column's statistics failed".to_owned()));
    }
    let dataset_drift = dataset_drift(&reference.names, &columns);
    let quality = quality_blocks(options, &typed, reference, current)?;
    let estimated_quality = match (options.estimated_quality, &options.classification) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ReportError("--estimated-quality needs --classification (label, score, prediction)".into()));
        }
        (Some(calibration), Some(spec)) => Some(estimated_block(spec, calibration, &typed)?),
    };
    let multivariate = if options.multivariate {
        let features: Vec<&String> = reference.names.iter().filter(|n| !quality_columns.contains(n.as_str())).collect();
        Some(multivariate_block(&features, &columns, &typed)?)
    } else {
        None
    };
    Ok(DriftReport {
        n_rows: Sides { reference: reference.rows as u64, current: current.rows as u64 },
        column_order: reference.names.clone(),
        columns,
        dataset_drift,
        quality,
        estimated_quality,
        multivariate,
        data_quality,
        streamed: None,
    })
}

/// The data-quality checks of one column. The reference alone says what the column is: when the current side's
/// cells made the report type a numeric or binary reference column as categorical, the cells that do not fit are of
/// the wrong type (and the rest are checked as numbers).
fn data_quality_of(
    reference: &Table,
    current: &Table,
    name: &str,
    kind: ColumnKind,
    values: &Sides<Values>,
    forced: Option<ColumnKind>,
) -> Result<FeatureQuality, ReportError> {
    let plain = || Ok(checks::check(&Domain::of(kind, &values.reference), &values.current, (0, None)));
    let (Some(ri), Some(ci)) = (reference.index_of(name), current.index_of(name)) else {
        return Err(ReportError(format!("column {name:?} is missing")));
    };
    // What the reference alone makes of the column: a 0/1 reference typed numeric because of the current side's
    // 0.5, or a numeric one typed categorical because of its words.
    let (reference_kind, reference_values) = match (forced, kind, &values.reference) {
        (None, ColumnKind::Numeric, Values::Numeric(v))
            if v.iter().flatten().next().is_some() && v.iter().flatten().all(|x| *x == 0.0 || *x == 1.0) =>
        {
            (ColumnKind::Binary, values.reference.clone())
        }
        (None, ColumnKind::Categorical, _) => match numeric_kind(&[(reference, ri)]) {
            Some((reference_kind, mut typed)) => match typed.pop() {
                Some(typed) => (reference_kind, typed),
                None => return plain(),
            },
            None => return plain(),
        },
        _ => return plain(),
    };
    let mut wrong_cells = Vec::new();
    let fits = |v: f64| reference_kind == ColumnKind::Numeric || v == 0.0 || v == 1.0;
    let cells: Vec<Option<f64>> = current
        .cells(ci)
        .map(|cell| {
            let cell = cell?;
            let number = parse_number(cell).filter(|v| fits(*v));
            if number.is_none() {
                wrong_cells.push(cell);
            }
            number
        })
        .collect();
    // The most frequent wrong value is the example (the smallest on a tie), whatever the row order.
    let (example, wrong) = checks::most_frequent(wrong_cells.into_iter());
    let example = example.map(checks::example);
    let current_values = match reference_kind {
        ColumnKind::Binary => {
            Values::Categorical(cells.into_iter().map(|v| v.map(|v| if v == 0.0 { "0" } else { "1" })).collect())
        }
        _ => Values::Numeric(cells),
    };
    Ok(checks::check(&Domain::of(reference_kind, &reference_values), &current_values, (wrong, example)))
}

/// Whether row values of a typed column are the positive class (`None`: missing).
fn positives<'a>(values: &'a Values, positive: &'a str) -> Box<dyn Iterator<Item = Option<bool>> + 'a> {
    match values {
        Values::Categorical(v) => Box::new(v.iter().map(move |l| l.map(|l| l == positive))),
        Values::Numeric(v) => {
            let positive = positive.parse::<f64>().ok();
            Box::new(v.iter().map(move |l| l.map(|l| Some(l) == positive)))
        }
    }
}

fn estimated_block(
    spec: &ClassificationSpec,
    calibration: Calibration,
    typed: &BTreeMap<String, Sides<Values>>,
) -> Result<EstimatedReport, ReportError> {
    if !spec.classes.is_empty() {
        return estimated_multiclass(spec, calibration, typed);
    }
    let column =
        |name: &str| typed.get(name).ok_or_else(|| ReportError(format!("--classification: no column {name:?}")));
    let Values::Numeric(_) = &column(&spec.score)?.reference else {
        return Err(ReportError(format!("--classification: the score column {:?} is not numeric", spec.score)));
    };
    let scores = |side: &Values| match side {
        Values::Numeric(v) => v.clone(),
        Values::Categorical(_) => Vec::new(),
    };
    let (label, score) = (column(&spec.label)?, column(&spec.score)?);
    // The reference: scores with their labels. Rows missing either are left out.
    let fitted: Vec<(f64, bool)> = scores(&score.reference)
        .into_iter()
        .zip(positives(&label.reference, &spec.positive))
        .filter_map(|(s, l)| Some((s?, l?)))
        .collect();
    let calibrator = Calibrator::fit(&fitted, calibration);
    // The current side: scores with the predicted class; its labels are never read.
    let current_scores = scores(&score.current);
    let predicted: Vec<Option<bool>> = match &spec.prediction {
        Some(name) => positives(&column(name)?.current, &spec.positive).collect(),
        None => current_scores.iter().map(|s| s.map(|s| s >= spec.threshold)).collect(),
    };
    let rows: Vec<(f64, bool)> = current_scores.iter().zip(predicted).filter_map(|(s, p)| Some(((*s)?, p?))).collect();
    Ok(EstimatedReport::new(cbpe::estimate(&calibrator, &rows), &calibrator))
}

fn text_of(values: &Values) -> Vec<Option<String>> {
    match values {
        Values::Categorical(v) => v.iter().map(|c| c.map(str::to_owned)).collect(),
        Values::Numeric(v) => v.iter().map(|x| x.map(|x| format!("{x}"))).collect(),
    }
}

/// One-vs-rest: a calibrator per class on "the label is this class" against its score; the current side's rows are
/// their scores and predicted class (the prediction column, else the highest score). Rows missing any are left out.
fn estimated_multiclass(
    spec: &ClassificationSpec,
    calibration: Calibration,
    typed: &BTreeMap<String, Sides<Values>>,
) -> Result<EstimatedReport, ReportError> {
    let column =
        |name: &str| typed.get(name).ok_or_else(|| ReportError(format!("--classification: no column {name:?}")));
    let scores = |side: fn(&Sides<Values>) -> &Values| -> Result<Vec<Vec<Option<f64>>>, ReportError> {
        spec.classes
            .iter()
            .map(|(_, name)| match side(column(name)?) {
                Values::Numeric(v) => Ok(v.clone()),
                Values::Categorical(_) => {
                    Err(ReportError(format!("--classification: score column {name:?} is not numeric")))
                }
            })
            .collect()
    };
    let (reference_scores, current_scores) = (scores(|s| &s.reference)?, scores(|s| &s.current)?);
    let labels = text_of(&column(&spec.label)?.reference);
    // The label is compared as text, as the classes are given; a numeric label column reads 1 as "1".
    let calibrators: Vec<Calibrator> = spec
        .classes
        .iter()
        .enumerate()
        .map(|(k, (class, _))| {
            let pairs: Vec<(f64, bool)> = reference_scores[k]
                .iter()
                .zip(&labels)
                .filter_map(|(s, l)| Some(((*s)?, l.as_deref()? == class)))
                .collect();
            Calibrator::fit(&pairs, calibration)
        })
        .collect();
    let predicted: Vec<Option<usize>> = match &spec.prediction {
        Some(name) => text_of(&column(name)?.current)
            .into_iter()
            .map(|p| spec.classes.iter().position(|(class, _)| Some(class.as_str()) == p.as_deref()))
            .collect(),
        None => (0..current_scores.first().map_or(0, Vec::len))
            .map(|row| {
                let mut best: Option<(usize, f64)> = None;
                for (k, column) in current_scores.iter().enumerate() {
                    let s = column[row]?;
                    if best.is_none_or(|(_, b)| s > b) {
                        best = Some((k, s));
                    }
                }
                best.map(|(k, _)| k)
            })
            .collect(),
    };
    let rows: Vec<(Vec<f64>, usize)> = predicted
        .iter()
        .enumerate()
        .filter_map(|(row, p)| {
            let scores: Option<Vec<f64>> = current_scores.iter().map(|c| c[row]).collect();
            Some((scores?, (*p)?))
        })
        .collect();
    // `auto` decides per class; the report names what was asked.
    Ok(EstimatedReport {
        quality: cbpe::estimate_multiclass(&calibrators, &rows),
        calibration_requested: calibration,
        calibration_errors: None,
    })
}

fn multivariate_block(
    features: &[&String],
    columns: &BTreeMap<String, ColumnReport>,
    typed: &BTreeMap<String, Sides<Values>>,
) -> Result<Multivariate, ReportError> {
    let mut fit_columns = Vec::with_capacity(features.len());
    for name in features {
        let (Some(values), Some(column)) = (typed.get(*name), columns.get(*name)) else {
            return Err(ReportError(format!("--multivariate: no column {name:?}")));
        };
        fit_columns.push(((*name).clone(), &values.reference, column.kind == ColumnKind::Binary));
    }
    let fit = Reconstruction::fit(&fit_columns).map_err(|e| ReportError(e.to_string()))?;
    let current: Vec<&Values> = features.iter().filter_map(|n| typed.get(*n).map(|v| &v.current)).collect();
    let current_error = fit.window_error(&current).map_err(|e| ReportError(e.to_string()))?;
    let rows = current.first().map_or(0, |v| v.len());
    let bounds = fit.bounds(rows);
    Ok(Multivariate {
        features: fit.features.clone(),
        pca_components: fit.n_components,
        explained_variance: fit.explained_variance,
        reconstruction_error: Sides { reference: Some(fit.reference_mean), current: current_error },
        reference_row_std: fit.reference_std,
        bounds,
        drifted: current_error.is_some_and(|e| e < bounds.lower || e > bounds.upper),
    })
}

pub(crate) fn parse_number(cell: &str) -> Option<f64> {
    plain_decimal(cell).or_else(|| cell.parse::<f64>().ok().filter(|v| v.is_finite()))
}

/// The value of a plain decimal (`-`, digits, one `.` with digits after it) of at most 15 digits, the form nearly
/// every numeric cell has; `None` for anything else, which `str::parse` then reads. Exact: the digits as an integer
/// are below 2^53 and 10^k (k ≤ 15) is exact as an `f64`, so the one division rounds correctly, to the value
/// `str::parse` gives (Clinger's fast path, which std takes too, after more general scanning: a cell is parsed
/// 14 times per row in `vane drift`).
fn plain_decimal(cell: &str) -> Option<f64> {
    const POWERS: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let bytes = cell.as_bytes();
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let (mut mantissa, mut count, mut fraction) = (0u64, 0usize, None::<usize>);
    for (i, &b) in digits.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                count += 1;
            }
            b'.' if fraction.is_none() && i > 0 => fraction = Some(i + 1),
            _ => return None,
        }
        if count > 15 {
            return None;
        }
    }
    let scale = match fraction {
        // "1." has no digit after the point: leave it to str::parse.
        Some(start) if start == digits.len() => return None,
        Some(start) => digits.len() - start,
        None if count == 0 => return None,
        None => 0,
    };
    let magnitude = mantissa as f64 / POWERS[scale];
    Some(if negative { -magnitude } else { magnitude })
}

/// Types column `index` of each table in `sides` as `kind`, or, when `None`, as the kind all sides together infer:
/// text → categorical; numbers that are all 0 or 1 → binary; other numbers → numeric. Each cell is parsed once.
/// The one place the inference rule lives, for `vane drift` (two sides) and the live profile (the reference only).
pub fn type_column(
    sides: &[(&Table, usize)],
    kind: Option<ColumnKind>,
) -> Result<(ColumnKind, Vec<Values>), ReportError> {
    if let Some(kind) = kind {
        let values = sides.iter().map(|(table, index)| typed_values(table, *index, kind)).collect::<Result<_, _>>()?;
        return Ok((kind, values));
    }
    match numeric_kind(sides) {
        Some(typed) => Ok(typed),
        None => type_column(sides, Some(ColumnKind::Categorical)),
    }
}

/// The kind and values of a column whose every cell on every side is a number or empty (binary when all are 0 or
/// 1); `None` at the first cell that is not.
fn numeric_kind(sides: &[(&Table, usize)]) -> Option<(ColumnKind, Vec<Values>)> {
    let numbers = |table: &Table, index: usize| -> Option<Vec<Option<f64>>> {
        let mut numbers = Vec::with_capacity(table.rows);
        for cell in table.cells(index) {
            numbers.push(match cell {
                None => None,
                Some(cell) => Some(parse_number(cell)?),
            });
        }
        Some(numbers)
    };
    let parsed = sides.iter().map(|(table, index)| numbers(table, *index)).collect::<Option<Vec<_>>>()?;
    let mut present = parsed.iter().flatten().flatten().peekable();
    let any = present.peek().is_some();
    if any && present.all(|&v| v == 0.0 || v == 1.0) {
        let binary = |values: Vec<Option<f64>>| {
            Values::Categorical(values.into_iter().map(|v| v.map(|v| if v == 0.0 { "0" } else { "1" })).collect())
        };
        return Some((ColumnKind::Binary, parsed.into_iter().map(binary).collect()));
    }
    Some((ColumnKind::Numeric, parsed.into_iter().map(Values::Numeric).collect()))
}

/// Column `index` of `table`, typed as `kind`; a cell that does not fit is an error naming file, row and column.
pub fn typed_values(table: &Table, index: usize, kind: ColumnKind) -> Result<Values, ReportError> {
    let name = &table.names[index];
    let bad = |row: usize, cell: &str, what: &str| {
        ReportError(format!(
            "{}: row {}, column {name:?}: {cell:?} is not {what} (the column is {})",
            table.path.display(),
            table.file_row(row),
            match kind {
                ColumnKind::Numeric => "numeric",
                ColumnKind::Categorical => "categorical",
                ColumnKind::Binary => "binary",
            }
        ))
    };
    Ok(match kind {
        ColumnKind::Numeric => {
            let mut numbers = Vec::with_capacity(table.rows);
            for (row, cell) in table.cells(index).enumerate() {
                numbers.push(match cell {
                    None => None,
                    Some(cell) => Some(parse_number(cell).ok_or_else(|| bad(row, cell, "a number"))?),
                });
            }
            Values::Numeric(numbers)
        }
        ColumnKind::Categorical => Values::Categorical(table.cells(index).collect()),
        ColumnKind::Binary => Values::Categorical(
            table
                .cells(index)
                .enumerate()
                .map(|(row, cell)| match cell {
                    None => Ok(None),
                    Some(cell) => match parse_number(cell) {
                        Some(0.0) => Ok(Some("0")),
                        Some(1.0) => Ok(Some("1")),
                        _ => Err(bad(row, cell, "0 or 1")),
                    },
                })
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .collect(),
        ),
    })
}

pub(crate) fn missing(rows: usize, valid: usize) -> Missing {
    let count = (rows - valid) as u64;
    Missing { count, share: if rows == 0 { 0.0 } else { count as f64 / rows as f64 } }
}

/// The statistics of one column.
pub fn column_report(kind: ColumnKind, values: &Sides<Values>) -> ColumnReport {
    match (&values.reference, &values.current) {
        (Values::Numeric(r), Values::Numeric(c)) => numeric_report(r, c),
        (Values::Categorical(r), Values::Categorical(c)) => categorical_report(kind, r, c),
        // Both sides are typed by the same kind.
        _ => unreachable!("a column is typed the same on both sides"),
    }
}

fn sorted_valid(values: &[Option<f64>]) -> Vec<f64> {
    // Sized once: collecting through `flatten` (or a `Result`) would grow the vector by doubling, and each growth
    // of a large vector is a fresh mapping the kernel zeroes and the old one copied into it.
    let mut valid = Vec::with_capacity(values.len());
    valid.extend(values.iter().flatten());
    radsort::sort(&mut valid);
    valid
}

fn numeric_report(reference: &[Option<f64>], current: &[Option<f64>]) -> ColumnReport {
    let rows = Sides { reference: reference.len() as u64, current: current.len() as u64 };
    numeric_report_sorted(&sorted_valid(reference), &sorted_valid(current), rows)
}

/// A numeric column's report from each side's sorted valid values and its rows (missing cells are the rest).
pub(crate) fn numeric_report_sorted(r: &[f64], c: &[f64], rows: Sides<u64>) -> ColumnReport {
    let sides = NumericSides {
        points: Sides { reference: r, current: c },
        n: Sides { reference: r.len() as u64, current: c.len() as u64 },
        rows,
        summary: Sides { reference: numeric::summary(r), current: numeric::summary(c) },
        ks: ks::ks_2samp(r, c),
    };
    numeric_report_of(sides, |bins| Sides { reference: bins.counts_sorted(r), current: bins.counts_sorted(c) })
}

/// What a numeric column's report is computed from: each side's sorted values, or quantiles standing for them
/// (`vane drift --stream`), with what the points alone do not tell.
pub(crate) struct NumericSides<'a> {
    /// Sorted values, or sorted quantiles of them.
    pub(crate) points: Sides<&'a [f64]>,
    /// Valid values per side (the points' lengths when the points are the values).
    pub(crate) n: Sides<u64>,
    /// Rows per side (missing cells are the rows without a value).
    pub(crate) rows: Sides<u64>,
    pub(crate) summary: Sides<Option<Summary>>,
    pub(crate) ks: Option<KsTest>,
}

/// A numeric column's report; `bin_counts` counts each side's values in the reference's bins (the bins come from
/// the reference's points).
pub(crate) fn numeric_report_of(
    sides: NumericSides<'_>,
    bin_counts: impl Fn(&Bins) -> Sides<Vec<u64>>,
) -> ColumnReport {
    let NumericSides { points: Sides { reference: r, current: c }, n, rows, summary, ks } = sides;
    let both = n.reference > 0 && n.current > 0;
    let (psi, js) = match (Bins::from_sorted_reference(r), both) {
        (Some(bins), true) => {
            let Sides { reference: rc, current: cc } = bin_counts(&bins);
            let js = numeric::js_distance(&rc, &cc);
            let psi = numeric::psi(&rc, &cc).map(|value| Psi {
                value,
                n_bins: Some(bins.len()),
                bin_edges: Some(bins.edges),
                reference_counts: Some(rc),
                current_counts: Some(cc),
                epsilon: PSI_EPSILON,
            });
            (psi, js)
        }
        _ => (None, None),
    };
    let wasserstein = both.then(|| {
        let distance = numeric::wasserstein(r, c).unwrap_or(0.0);
        let reference_std = summary.reference.map_or(0.0, |s| s.std);
        Wasserstein { distance, reference_std, normed: distance / reference_std.max(WASSERSTEIN_STD_FLOOR) }
    });
    let drift = wasserstein.as_ref().and_then(|w| evidently_numeric(r, c, w.normed, n, || ks.map(|k| k.pvalue)));
    ColumnReport {
        kind: ColumnKind::Numeric,
        missing: Sides {
            reference: missing(rows.reference as usize, n.reference as usize),
            current: missing(rows.current as usize, n.current as usize),
        },
        n_valid: n,
        summary: Some(summary),
        ks: ks.into(),
        categories: None,
        reference_counts: None,
        current_counts: None,
        chi2: NumericStat::NotApplicable,
        psi,
        js_distance: js,
        wasserstein: wasserstein.into(),
        l_infinity: NumericStat::NotApplicable,
        z_test: NumericStat::NotApplicable,
        drift,
    }
}

fn categorical_report(kind: ColumnKind, reference: &Categories, current: &Categories) -> ColumnReport {
    let count = |values: &Categories| {
        values.counts().map(|(name, count)| (name.to_owned(), count)).collect::<BTreeMap<String, u64>>()
    };
    let rows = Sides { reference: reference.len() as u64, current: current.len() as u64 };
    categorical_report_of_counts(kind, Sides { reference: count(reference), current: count(current) }, rows)
}

/// A categorical or binary column's report from each side's counts per category and rows (missing cells are the
/// rows no category counts): what [`categorical_report`] computes, for callers that counted as they read.
pub(crate) fn categorical_report_of_counts(
    kind: ColumnKind,
    counts: Sides<BTreeMap<String, u64>>,
    rows: Sides<u64>,
) -> ColumnReport {
    let Sides { reference: mut rc, current: mut cc } = counts;
    // BTreeMap orders String keys by bytes, which for UTF-8 is code-point order.
    let categories: BTreeSet<String> = rc.keys().chain(cc.keys()).cloned().collect();
    for category in &categories {
        rc.entry(category.clone()).or_default();
        cc.entry(category.clone()).or_default();
    }
    let r: Vec<u64> = rc.values().copied().collect();
    let c: Vec<u64> = cc.values().copied().collect();
    let (nr, nc) = (r.iter().sum::<u64>(), c.iter().sum::<u64>());
    let both = nr > 0 && nc > 0;
    let ones = |counts: &BTreeMap<String, u64>| counts.get("1").copied().unwrap_or(0);
    let z_test = match kind {
        ColumnKind::Binary => categorical::z_test((ones(&rc), ones(&cc)), (nr, nc)).into(),
        _ => NumericStat::NotApplicable,
    };
    let drift = both.then(|| evidently_categorical(&r, &c)).flatten();
    ColumnReport {
        kind,
        missing: Sides {
            reference: missing(rows.reference as usize, nr as usize),
            current: missing(rows.current as usize, nc as usize),
        },
        n_valid: Sides { reference: nr, current: nc },
        summary: None,
        ks: NumericStat::NotApplicable,
        categories: Some(categories.into_iter().collect()),
        reference_counts: Some(rc),
        current_counts: Some(cc),
        chi2: categorical::chi2_homogeneity(&r, &c).into(),
        psi: numeric::psi(&r, &c).map(|value| Psi {
            value,
            n_bins: None,
            bin_edges: None,
            reference_counts: None,
            current_counts: None,
            epsilon: PSI_EPSILON,
        }),
        js_distance: numeric::js_distance(&r, &c),
        wasserstein: NumericStat::NotApplicable,
        l_infinity: categorical::l_infinity(&r, &c).into(),
        z_test,
        drift,
    }
}

/// Evidently's reference-size cut: at most this many reference values → p-value tests, more → distances.
const EVIDENTLY_SMALL_REFERENCE: usize = 1000;
const P_THRESHOLD: f64 = 0.05;
const DISTANCE_THRESHOLD: f64 = 0.1;

fn p_verdict(stattest: &'static str, p: f64, inclusive: bool) -> Verdict {
    Verdict { stattest, drift_score: p, threshold: P_THRESHOLD, drifted: if inclusive { p <= 0.05 } else { p < 0.05 } }
}

fn distance_verdict(stattest: &'static str, score: f64) -> Verdict {
    Verdict { stattest, drift_score: score, threshold: DISTANCE_THRESHOLD, drifted: score >= DISTANCE_THRESHOLD }
}

/// `counts` scaled to sum to `n` (cumulative rounding, so the scaled counts sum to `n` exactly); unchanged when they
/// already do.
pub(crate) fn scale_counts(counts: &[u64], n: u64) -> Vec<u64> {
    let total: u64 = counts.iter().sum();
    if total == n || total == 0 {
        return counts.to_vec();
    }
    let (mut cumulative, mut previous) = (0u64, 0u64);
    counts
        .iter()
        .map(|&count| {
            cumulative += count;
            let scaled = (cumulative as f64 * n as f64 / total as f64).round() as u64;
            let out = scaled - previous;
            previous = scaled;
            out
        })
        .collect()
}

/// Value counts of two sorted numeric samples over their distinct values, in one merge walk.
fn value_counts(r: &[f64], c: &[f64]) -> (Vec<u64>, Vec<u64>) {
    let (mut rc, mut cc) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < r.len() || j < c.len() {
        let v = match (r.get(i), c.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let (i0, j0) = (i, j);
        while i < r.len() && r[i] == v {
            i += 1;
        }
        while j < c.len() && c[j] == v {
            j += 1;
        }
        rc.push((i - i0) as u64);
        cc.push((j - j0) as u64);
    }
    (rc, cc)
}

/// The number of distinct values of two sorted samples together, stopping once it passes `cap`.
fn distinct_up_to(r: &[f64], c: &[f64], cap: usize) -> usize {
    let (mut i, mut j, mut distinct) = (0, 0, 0);
    while (i < r.len() || j < c.len()) && distinct <= cap {
        let v = match (r.get(i), c.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        // Skip the run of v on both sides (binary search: runs may be long).
        i += r[i..].partition_point(|&x| x <= v);
        j += c[j..].partition_point(|&x| x <= v);
        distinct += 1;
    }
    distinct
}

/// Evidently's verdict for a numeric column from its sorted points `r` and `c`, which stand for `n` values a side
/// (the values themselves, or a stream's quantile grids); `normed` is their Wasserstein distance over the
/// reference's std (floored), computed once for the report. The choice of test and the counts use `n`, and
/// `ks_pvalue` gives the K-S p-value for those sizes.
fn evidently_numeric(
    r: &[f64],
    c: &[f64],
    normed: f64,
    n: Sides<u64>,
    ks_pvalue: impl FnOnce() -> Option<f64>,
) -> Option<Verdict> {
    // Evidently's choice needs only whether there are more than 5 distinct values.
    let distinct = distinct_up_to(r, c, 5);
    let counts = || {
        let (rc, cc) = value_counts(r, c);
        (scale_counts(&rc, n.reference), scale_counts(&cc, n.current))
    };
    Some(if n.reference <= EVIDENTLY_SMALL_REFERENCE as u64 {
        match distinct {
            d if d > 5 => p_verdict("ks", ks_pvalue()?, true),
            d if d > 2 => {
                let (rc, cc) = counts();
                p_verdict("chisquare", categorical::evidently_chisquare_pvalue(&rc, &cc)?, false)
            }
            _ => {
                // The first sorted value is coded 0, every other value 1.
                let (rc, cc) = counts();
                let ones = |counts: &[u64]| counts.iter().skip(1).sum::<u64>();
                p_verdict(
                    "z",
                    categorical::evidently_z_pvalue((ones(&rc), ones(&cc)), (n.reference, n.current))?,
                    false,
                )
            }
        }
    } else if distinct > 5 {
        distance_verdict("wasserstein", normed)
    } else {
        let (rc, cc) = counts();
        distance_verdict("jensenshannon", numeric::js_distance(&rc, &cc)? * std::f64::consts::LN_2.sqrt())
    })
}

fn evidently_categorical(r: &[u64], c: &[u64]) -> Option<Verdict> {
    let nr: u64 = r.iter().sum();
    Some(if nr as usize <= EVIDENTLY_SMALL_REFERENCE {
        if r.len() > 2 {
            p_verdict("chisquare", categorical::evidently_chisquare_pvalue(r, c)?, false)
        } else {
            let ones = |counts: &[u64]| counts.iter().skip(1).sum::<u64>();
            let n = (nr, c.iter().sum());
            p_verdict("z", categorical::evidently_z_pvalue((ones(r), ones(c)), n)?, false)
        }
    } else {
        distance_verdict("jensenshannon", numeric::js_distance(r, c)? * std::f64::consts::LN_2.sqrt())
    })
}

/// The share of drifted columns among those with a verdict, in `order`.
pub fn dataset_drift(order: &[String], columns: &BTreeMap<String, ColumnReport>) -> DatasetDrift {
    let judged: Vec<(&String, &Verdict)> =
        order.iter().filter_map(|name| Some((name, columns.get(name)?.drift.as_ref()?))).collect();
    let drifted_columns: Vec<String> =
        judged.iter().filter(|(_, v)| v.drifted).map(|(name, _)| (*name).clone()).collect();
    let share = if judged.is_empty() { 0.0 } else { drifted_columns.len() as f64 / judged.len() as f64 };
    DatasetDrift {
        number_of_columns: judged.len(),
        number_of_drifted_columns: drifted_columns.len(),
        share_of_drifted_columns: share,
        drift_share: DRIFT_SHARE,
        dataset_drift: !judged.is_empty() && share >= DRIFT_SHARE,
        drifted_columns,
    }
}

fn quality_blocks(
    options: &Options,
    typed: &BTreeMap<String, Sides<Values>>,
    reference: &Table,
    current: &Table,
) -> Result<Option<Quality>, ReportError> {
    if options.classification.is_none() && options.regression.is_none() {
        return Ok(None);
    }
    let column = |name: &str, flag: &str| {
        typed.get(name).ok_or_else(|| {
            ReportError(format!(
                "{flag}: no column {name:?} in {} and {}",
                reference.path.display(),
                current.path.display()
            ))
        })
    };
    let numbers = |values: &Values, name: &str, flag: &str| match values {
        Values::Numeric(v) => Ok(v.clone()),
        Values::Categorical(_) => Err(ReportError(format!("{flag}: column {name:?} is not numeric"))),
    };
    let binary_classification = match &options.classification {
        None => None,
        Some(spec) if !spec.classes.is_empty() => None,
        Some(spec) => {
            let (label, score) = (column(&spec.label, "--classification")?, column(&spec.score, "--classification")?);
            let side = |label: &Values, score: &Values| -> Result<Classification, ReportError> {
                Ok(quality::classification(
                    &positives(label, &spec.positive).collect::<Vec<_>>(),
                    &numbers(score, &spec.score, "--classification score")?,
                    spec.threshold,
                ))
            };
            Some(Sides {
                reference: side(&label.reference, &score.reference)?,
                current: side(&label.current, &score.current)?,
            })
        }
    };
    let regression = match &options.regression {
        None => None,
        Some(spec) => {
            let (target, prediction) =
                (column(&spec.target, "--regression")?, column(&spec.prediction, "--regression")?);
            let side = |t: &Values, p: &Values| -> Result<Regression, ReportError> {
                Ok(quality::regression(
                    &numbers(t, &spec.target, "--regression target")?,
                    &numbers(p, &spec.prediction, "--regression prediction")?,
                ))
            };
            Some(Sides {
                reference: side(&target.reference, &prediction.reference)?,
                current: side(&target.current, &prediction.current)?,
            })
        }
    };
    // A multiclass spec has no realized block (its quality is only estimated).
    Ok((binary_classification.is_some() || regression.is_some())
        .then_some(Quality { binary_classification, regression }))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The plain-decimal fast path gives exactly what `str::parse` gives, on every form it accepts.
        #[test]
        fn plain_decimals_parse_as_std_does(
            negative in proptest::bool::ANY,
            whole in "[0-9]{1,15}",
            fraction in proptest::option::of("[0-9]{1,15}"),
        ) {
            let text = format!("{}{whole}{}", if negative { "-" } else { "" }, fraction.map_or(String::new(), |f| format!(".{f}")));
            let std = text.parse::<f64>().unwrap();
            match plain_decimal(&text) {
                Some(fast) => proptest::prop_assert_eq!(fast.to_bits(), std.to_bits(), "{}", text),
                // Only more than 15 digits in all is left to str::parse.
                None => proptest::prop_assert!(text.bytes().filter(u8::is_ascii_digit).count() > 15, "{}", text),
            }
        }
    }

    #[test]
    fn what_is_not_a_plain_decimal_is_left_to_str_parse() {
        for text in ["", "-", ".5", "1.", "1e3", "+1", "1.2.3", "0x10", "inf", "NaN", " 1", "1 ", "--1", "1-"] {
            assert_eq!(plain_decimal(text), None, "{text:?}");
        }
        assert_eq!(parse_number("1e3"), Some(1000.0));
        assert_eq!(parse_number(".5"), Some(0.5));
        assert_eq!(parse_number("inf"), None);
        assert_eq!(plain_decimal("-0").map(f64::to_bits), Some((-0.0f64).to_bits()));
    }

    #[test]
    fn categories_code_each_value_once_past_the_scan_and_compare_by_value() {
        // 40 distinct values: the first 17 found by comparison, the rest through the hash map built on the way.
        let cells: Vec<Option<String>> =
            (0..400).map(|i| (i % 11 != 0).then(|| format!("c{}", (i * 7) % 40))).collect();
        let categories: Categories = cells.iter().map(Option::as_deref).collect();
        assert!(categories.iter().eq(cells.iter().map(Option::as_deref)), "every row reads back its value");
        assert_eq!(categories.names.len(), 40, "each distinct value stored once");
        assert_eq!(categories.missing(), cells.iter().filter(|c| c.is_none()).count());
        let counted: u64 = categories.counts().map(|(_, n)| n).sum();
        assert_eq!(counted as usize, categories.len() - categories.missing());
        // Equality is of the values, whatever order the codes were given in.
        let reversed: Categories = cells.iter().rev().map(Option::as_deref).collect();
        let back: Vec<Option<&str>> = reversed.iter().collect::<Vec<_>>().into_iter().rev().collect();
        assert_eq!(categories, back.into_iter().collect::<Categories>());
        assert_ne!(categories, reversed);
        // A subsample keeps the dictionary but counts only the values it holds.
        let every = Categories::from_cells([Some("a"), Some("b"), Some("a"), Some("b")]).every_kth(2);
        assert_eq!(every.counts().collect::<Vec<_>>(), [("a", 2)]);
    }
}
