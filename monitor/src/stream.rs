//! `vane drift --stream`: the drift report of two CSV files of any length in bounded memory. Each file is read
//! once, row by row, on its own thread, into a summary per column; the report is built from the two summaries.
//!
//! What a column's summary holds, and so what the report costs whatever the files' length:
//! - its rows and missing cells, exactly;
//! - while every cell is a number: the count, sum and sum of squares (mean and std), and an Apache DataSketches KLL
//!   sketch of the values ([`SKETCH_K`]; exact minimum and maximum), plus the first [`EXACT_VALUES`] values
//!   themselves: a side with no more values than that is reported exactly, as `vane drift` without `--stream`
//!   reports it;
//! - while the column has at most [`MAX_CATEGORIES`] distinct cells (and [`MAX_CATEGORY_BYTES`] of their text):
//!   each distinct cell's count, exactly, for a column that turns out categorical or binary.
//!
//! So a column costs at most about 2.6 MiB per side: 512 KiB of exact values, 100 KiB of sketch, and the categories
//! (1 MiB of text and their table). A file's rows cost nothing beyond the CSV reader's buffer and one record.
//!
//! What is approximate, for a numeric side with more than [`EXACT_VALUES`] values: the statistics are computed on
//! [`GRID`] quantiles of each side's sketch (ranks (i + ½)/GRID), each standing for n/GRID values. The K-S statistic
//! is within [`DriftReport::streamed`]'s `rank_error` of the exact one on each side; its p-value is Kolmogorov's
//! limiting one for the true sizes (`pvalue_method` `kolmogorov`). PSI and Jensen-Shannon bin counts, Wasserstein and the out-of-range count of the data
//! quality checks carry the same rank error. Missing counts, means, standard deviations, minima and maxima, and
//! every categorical and binary statistic stay exact. The sketch compacts at random, so two runs over the same
//! large files may differ within that error.
//!
//! Column kinds are inferred by the rule of [`crate::drift::type_column`]: a column with a cell that is not a
//! number on either side is categorical (and needs its categories kept on both sides: past [`MAX_CATEGORIES`] that
//! is an error that names the column and says what to do), 0/1 everywhere is binary, else numeric.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch};
use serde::Serialize;

use crate::data_quality::{self as checks, share, FeatureQuality};
use crate::drift::{
    categorical_report_of_counts, dataset_drift, numeric_report_of, numeric_report_sorted, ColumnKind, ColumnReport,
    DriftReport, NumericSides, Options, ReportError, Sides,
};
use crate::stats::ks::{self, KsTest};
use crate::stats::numeric::{Bins, Summary};

/// KLL's accuracy parameter: a normalized rank error of about 0.07% (99% confidence), about 100 KiB a sketch.
pub const SKETCH_K: u16 = 4096;
/// Values per column and side kept as they are: up to this many, a side's statistics are exact.
pub const EXACT_VALUES: usize = 65_536;
/// Distinct cells per column and side counted while the column may be categorical.
pub const MAX_CATEGORIES: usize = 10_000;
/// Bytes of distinct cell text per column and side counted while the column may be categorical.
pub const MAX_CATEGORY_BYTES: usize = 1 << 20;
/// Quantiles per side the approximate statistics are computed on.
pub const GRID: usize = 16_384;

/// How a streamed report was made, so a reader knows which figures are estimates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Streamed {
    /// The quantile sketch.
    pub sketch: &'static str,
    /// Its accuracy parameter.
    pub k: u16,
    /// Its normalized rank error (99% confidence), per side.
    pub rank_error: f64,
    /// Values per side up to which a column's statistics are exact.
    pub exact_values: usize,
    /// Quantiles per side the approximate statistics are computed on.
    pub grid: usize,
    /// Numeric columns whose statistics are estimates (a side had more than `exact_values` values).
    pub approximate_columns: Vec<String>,
}

/// A numeric view of one column on one side, kept while every cell parses as a number.
struct Numbers {
    count: u64,
    /// The first value: sums are taken around it, so the variance keeps its digits.
    shift: f64,
    sum: f64,
    sum_squares: f64,
    zeros: u64,
    ones: u64,
    /// The smallest value that is neither 0 nor 1 (the data-quality example for a 0/1 reference).
    smallest_other: Option<f64>,
    /// The first [`EXACT_VALUES`] values; emptied when there are more.
    exact: Vec<f64>,
    sketch: KllSketch<KllFloat<f64>>,
}

impl Numbers {
    fn new() -> Self {
        Self {
            count: 0,
            shift: 0.0,
            sum: 0.0,
            sum_squares: 0.0,
            zeros: 0,
            ones: 0,
            smallest_other: None,
            exact: Vec::new(),
            // k is within KLL's bounds (8..=65535), so this cannot fail.
            sketch: KllSketch::new(SKETCH_K).unwrap_or_else(|_| unreachable!("k {SKETCH_K} is valid")),
        }
    }

    fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.shift = v;
        }
        self.count += 1;
        let d = v - self.shift;
        self.sum += d;
        self.sum_squares += d * d;
        if v == 0.0 {
            self.zeros += 1;
        } else if v == 1.0 {
            self.ones += 1;
        } else if self.smallest_other.is_none_or(|s| v < s) {
            self.smallest_other = Some(v);
        }
        if self.count as usize <= EXACT_VALUES {
            self.exact.push(v);
        } else if !self.exact.is_empty() {
            self.exact = Vec::new();
        }
        if self.all_zero_one() {
            // The counts are the distribution while every value is 0 or 1: the sketch waits (a 0/1 column read to
            // the end never needs it).
            return;
        }
        if self.sketch.is_empty() {
            let (zeros, ones) = (self.zeros, self.ones);
            (0..zeros).for_each(|_| self.sketch_update(0.0));
            (0..ones).for_each(|_| self.sketch_update(1.0));
        }
        self.sketch_update(v);
    }

    fn sketch_update(&mut self, v: f64) {
        // parse_number admits finite values only, so the value is never NaN.
        if let Ok(item) = KllFloat::<f64>::new(v) {
            self.sketch.update(item);
        }
    }

    /// Every value so far is 0 or 1, and the sketch has not been fed: the counts say everything.
    fn only_zero_one(&self) -> bool {
        self.count > 0 && self.all_zero_one()
    }

    fn is_exact(&self) -> bool {
        self.count as usize <= EXACT_VALUES
    }

    fn all_zero_one(&self) -> bool {
        self.zeros + self.ones == self.count
    }

    fn min(&self) -> Option<f64> {
        if self.only_zero_one() {
            return Some(if self.zeros > 0 { 0.0 } else { 1.0 });
        }
        self.sketch.min_item().map(|v| v.into_inner())
    }

    fn max(&self) -> Option<f64> {
        if self.only_zero_one() {
            return Some(if self.ones > 0 { 1.0 } else { 0.0 });
        }
        self.sketch.max_item().map(|v| v.into_inner())
    }

    /// The sorted values (exact), or [`GRID`] quantiles of the sketch with the exact minimum and maximum at the ends.
    fn points(&self) -> Vec<f64> {
        if self.is_exact() {
            let mut values = self.exact.clone();
            radsort::sort(&mut values);
            return values;
        }
        if self.only_zero_one() {
            // The grid of a two-point distribution, exactly.
            let share = self.zeros as f64 / self.count as f64;
            return (0..GRID).map(|i| if (i as f64 + 0.5) / (GRID as f64) <= share { 0.0 } else { 1.0 }).collect();
        }
        let view = self.sketch.sorted_view();
        let mut points: Vec<f64> = (0..GRID)
            .map(|i| {
                let rank = (i as f64 + 0.5) / GRID as f64;
                view.quantile(rank, SearchCriteria::Inclusive).ok().flatten().map_or(f64::NAN, |v| v.into_inner())
            })
            .collect();
        if let (Some(first), Some(min)) = (points.first_mut(), self.min()) {
            *first = min;
        }
        if let (Some(last), Some(max)) = (points.last_mut(), self.max()) {
            *last = max;
        }
        points
    }

    /// Values per bin: counted when exact; else from the ranks at the edges (each within the rank error, and
    /// summing to the count).
    fn bin_counts(&self, bins: &Bins, points: &[f64]) -> Vec<u64> {
        if self.is_exact() {
            return bins.counts_sorted(points);
        }
        // A bin holds the values above the edge before it, up to and including its own (Bins::bin_of).
        let mut counts = Vec::with_capacity(bins.len());
        let mut previous = 0u64;
        for &edge in &bins.edges {
            let cumulative = ((self.rank(edge, SearchCriteria::Inclusive) * self.count as f64).round() as u64)
                .clamp(previous, self.count);
            counts.push(cumulative - previous);
            previous = cumulative;
        }
        counts.push(self.count - previous);
        counts
    }

    fn summary(&self) -> Option<Summary> {
        let n = self.count as f64;
        let (min, max) = (self.min()?, self.max()?);
        let mean = self.shift + self.sum / n;
        let variance = ((self.sum_squares - self.sum * self.sum / n) / n).max(0.0);
        Some(Summary { mean, std: variance.sqrt(), min, max })
    }

    /// The share of values below `x` (`Exclusive`) or at most `x` (`Inclusive`).
    fn rank(&self, x: f64, criteria: SearchCriteria) -> f64 {
        let Ok(item) = KllFloat::<f64>::new(x) else { return 0.0 };
        if self.is_exact() {
            let below = self
                .exact
                .iter()
                .filter(|&&v| if criteria == SearchCriteria::Inclusive { v <= x } else { v < x })
                .count();
            return below as f64 / self.count.max(1) as f64;
        }
        if self.only_zero_one() {
            let at_most = |y: f64| if criteria == SearchCriteria::Inclusive { y <= x } else { y < x };
            let below = u64::from(at_most(0.0)) * self.zeros + u64::from(at_most(1.0)) * self.ones;
            return below as f64 / self.count as f64;
        }
        self.sketch.rank(&item, criteria).unwrap_or(0.0)
    }
}

/// One column on one side.
struct ColumnSummary {
    missing: u64,
    numbers: Option<Numbers>,
    /// The first cell that is not a number: (file row, cell).
    first_text: Option<(u64, String)>,
    categories: Option<Counts>,
}

/// Each distinct cell's count: the first [`FEW`] in a vector searched in order (a categorical column has a
/// handful of values, and comparing a few short strings costs less than hashing each cell), the rest in a map.
#[derive(Default)]
struct Counts {
    few: Vec<(Box<str>, u64)>,
    many: HashMap<Box<str>, u64>,
    bytes: usize,
}

/// Distinct cells kept in [`Counts`]'s vector.
const FEW: usize = 16;

impl Counts {
    /// Counts `cell`; `false` (and nothing counted) when it is new and [`MAX_CATEGORIES`] or
    /// [`MAX_CATEGORY_BYTES`] is reached.
    fn add(&mut self, cell: &str) -> bool {
        if let Some((_, count)) = self.few.iter_mut().find(|(seen, _)| **seen == *cell) {
            *count += 1;
            return true;
        }
        if let Some(count) = self.many.get_mut(cell) {
            *count += 1;
            return true;
        }
        if self.few.len() + self.many.len() >= MAX_CATEGORIES || self.bytes + cell.len() > MAX_CATEGORY_BYTES {
            return false;
        }
        self.bytes += cell.len();
        if self.few.len() < FEW {
            self.few.push((cell.into(), 1));
        } else {
            self.many.insert(cell.into(), 1);
        }
        true
    }

    fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.few.iter().map(|(cell, n)| (&**cell, *n)).chain(self.many.iter().map(|(cell, n)| (&**cell, *n)))
    }
}

/// One file, summarized.
pub struct SideSummary {
    path: PathBuf,
    names: Vec<String>,
    rows: u64,
    columns: Vec<ColumnSummary>,
}

/// Reads `path` (CSV with a header row) once, summarizing each column; `kinds` are the columns set by hand.
pub fn summarize(path: &Path, kinds: &BTreeMap<String, ColumnKind>) -> Result<SideSummary, ReportError> {
    let error = |message: String| ReportError(format!("{}: {message}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| error(e.to_string()))?;
    let mut start = [0u8; 4];
    if std::io::Read::read(&mut &file, &mut start).ok() == Some(4) && &start == b"PAR1" {
        return Err(error("--stream reads CSV files; this one is Parquet (leave --stream out to read it)".into()));
    }
    let file = std::fs::File::open(path).map_err(|e| error(e.to_string()))?;
    let mut reader = csv::ReaderBuilder::new().from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let csv_error = |e: csv::Error| match e.position() {
        Some(position) => error(format!("row {}: {e}", position.line())),
        None => error(e.to_string()),
    };
    let names: Vec<String> = reader.headers().map_err(csv_error)?.iter().map(str::to_owned).collect();
    // The operator names the files: no bound on their size, but a column named twice is refused as without --stream.
    crate::table::check_names(&names, path, crate::table::TableLimits::UNBOUNDED)
        .map_err(|e| ReportError(e.to_string()))?;
    let forced: Vec<Option<ColumnKind>> = names.iter().map(|name| kinds.get(name).copied()).collect();
    let mut columns: Vec<ColumnSummary> = forced
        .iter()
        .map(|kind| ColumnSummary {
            missing: 0,
            numbers: (*kind != Some(ColumnKind::Categorical)).then(Numbers::new),
            first_text: None,
            // A column set numeric or binary never needs its categories.
            categories: matches!(kind, None | Some(ColumnKind::Categorical)).then(Counts::default),
        })
        .collect();
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    while reader.read_byte_record(&mut record).map_err(csv_error)? {
        let row = record.position().map_or(rows + 2, csv::Position::line);
        let text =
            std::str::from_utf8(record.as_slice()).map_err(|_| error(format!("row {row}: a cell is not UTF-8")))?;
        for (i, column) in columns.iter_mut().enumerate() {
            let Some(cell) = record.range(i).and_then(|range| text.get(range)) else {
                return Err(error(format!("row {row}: a cell is not UTF-8")));
            };
            if cell.is_empty() {
                column.missing += 1;
                continue;
            }
            if let Some(numbers) = &mut column.numbers {
                match crate::drift::parse_number(cell) {
                    Some(v) if forced[i] != Some(ColumnKind::Binary) || v == 0.0 || v == 1.0 => numbers.add(v),
                    _ if forced[i].is_some() => {
                        let what = if forced[i] == Some(ColumnKind::Binary) { "0 or 1" } else { "a number" };
                        return Err(error(format!(
                            "row {row}, column {:?}: {cell:?} is not {what} (the column is set {})",
                            names[i],
                            if forced[i] == Some(ColumnKind::Binary) { "binary" } else { "numeric" }
                        )));
                    }
                    _ => {
                        column.numbers = None;
                        column.first_text = Some((row, cell.to_owned()));
                    }
                }
            }
            if let Some(categories) = &mut column.categories {
                if categories.add(cell) {
                    continue;
                }
                if column.numbers.is_some() {
                    // Too many distinct numbers to be categories: the column stays numeric unless a word turns up.
                    column.categories = None;
                } else {
                    let word = column.first_text.as_ref().map(|(row, cell)| (path, *row, cell.as_str()));
                    return Err(too_many_categories(path, &names[i], word));
                }
            }
        }
        rows += 1;
    }
    Ok(SideSummary { path: path.to_owned(), names, rows, columns })
}

/// `word`: where the column's first cell that is not a number is (file, row, cell), when known.
fn too_many_categories(path: &Path, name: &str, word: Option<(&Path, u64, &str)>) -> ReportError {
    let word = word.map_or(String::new(), |(file, row, cell)| {
        format!(" (the first: {} row {row}, {:?})", file.display(), checks::example(cell))
    });
    ReportError(format!(
        "{}: column {name:?} has more than {MAX_CATEGORIES} distinct values (or {} MiB of them) and cells that are not \
         numbers{word}; --stream counts at most that many categories per column. Leave --stream out to report it \
         exactly, or fix the column's cells if it is meant to be numeric",
        path.display(),
        MAX_CATEGORY_BYTES >> 20
    ))
}

/// Reads both files at once (a thread each) and builds the report.
pub fn run(reference: &Path, current: &Path, options: &Options) -> Result<DriftReport, ReportError> {
    let refused = [
        (options.classification.is_some(), "--classification"),
        (options.regression.is_some(), "--regression"),
        (options.estimated_quality.is_some(), "--estimated-quality"),
        (options.multivariate, "--multivariate"),
    ];
    if let Some((_, flag)) = refused.iter().find(|(asked, _)| *asked) {
        return Err(ReportError(format!(
            "{flag} needs every row's values together, which --stream does not keep; leave --stream out"
        )));
    }
    let (reference, current) = std::thread::scope(|scope| {
        let other = scope.spawn(|| summarize(current, &options.kinds));
        let reference = summarize(reference, &options.kinds);
        (reference, other.join().unwrap_or_else(|_| Err(ReportError("reading the current file failed".into()))))
    });
    report(&reference?, &current?, options)
}

/// The report of two summarized files.
pub fn report(reference: &SideSummary, current: &SideSummary, options: &Options) -> Result<DriftReport, ReportError> {
    let index = |side: &SideSummary, name: &str| side.names.iter().position(|n| n == name);
    for (one, other) in [(reference, current), (current, reference)] {
        if let Some(name) = one.names.iter().find(|name| index(other, name).is_none()) {
            return Err(ReportError(format!(
                "column {name:?} is in {} but not in {}",
                one.path.display(),
                other.path.display()
            )));
        }
    }
    for name in options.kinds.keys() {
        if index(reference, name).is_none() {
            return Err(ReportError(format!("--column {name}: no such column in {}", reference.path.display())));
        }
    }
    let rows = Sides { reference: reference.rows, current: current.rows };
    let mut columns = BTreeMap::new();
    let mut data_quality = BTreeMap::new();
    let mut approximate_columns = Vec::new();
    for (ri, name) in reference.names.iter().enumerate() {
        let ci = index(current, name).unwrap_or(0);
        let (r, c) = (&reference.columns[ri], &current.columns[ci]);
        let forced = options.kinds.get(name).copied();
        let kind = forced.unwrap_or(match (&r.numbers, &c.numbers) {
            (Some(rn), Some(cn)) if rn.count + cn.count > 0 && rn.all_zero_one() && cn.all_zero_one() => {
                ColumnKind::Binary
            }
            (Some(_), Some(_)) => ColumnKind::Numeric,
            _ => ColumnKind::Categorical,
        });
        let (column, quality) = match kind {
            ColumnKind::Numeric => {
                let (Some(rn), Some(cn)) = (&r.numbers, &c.numbers) else {
                    return Err(ReportError(format!("column {name:?} could not be typed")));
                };
                if !rn.is_exact() || !cn.is_exact() {
                    approximate_columns.push(name.clone());
                }
                let quality = numeric_quality(rn, cn, c.missing, rows.current, forced.is_none());
                (numeric_report(rn, cn, rows), quality)
            }
            ColumnKind::Binary => {
                let counts = |side: &ColumnSummary| match &side.numbers {
                    Some(n) => BTreeMap::from([("0".to_owned(), n.zeros), ("1".to_owned(), n.ones)])
                        .into_iter()
                        .filter(|(_, count)| *count > 0)
                        .collect(),
                    None => BTreeMap::new(),
                };
                let report =
                    categorical_report_of_counts(kind, Sides { reference: counts(r), current: counts(c) }, rows);
                let quality = FeatureQuality {
                    rows: rows.current,
                    missing: share(c.missing, rows.current, None),
                    out_of_range: None,
                    unseen_category: None,
                    wrong_type: share(0, rows.current, None),
                };
                (report, quality)
            }
            ColumnKind::Categorical => {
                let counts =
                    |side: &SideSummary, column: &ColumnSummary| -> Result<BTreeMap<String, u64>, ReportError> {
                        let categories = column.categories.as_ref().ok_or_else(|| {
                            let word = [(reference, r), (current, c)].into_iter().find_map(|(side, column)| {
                                column.first_text.as_ref().map(|(row, cell)| (side.path.as_path(), *row, cell.as_str()))
                            });
                            too_many_categories(&side.path, name, word)
                        })?;
                        Ok(categories.iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    };
                let counts = Sides { reference: counts(reference, r)?, current: counts(current, c)? };
                let quality = categorical_quality(&counts, r, c.missing, rows.current, forced.is_none());
                (categorical_report_of_counts(kind, counts, rows), quality)
            }
        };
        columns.insert(name.clone(), column);
        data_quality.insert(name.clone(), quality);
    }
    let dataset_drift = dataset_drift(&reference.names, &columns);
    let probe = KllSketch::<KllFloat<f64>>::new(SKETCH_K).map_err(|e| ReportError(e.to_string()))?;
    Ok(DriftReport {
        n_rows: rows,
        column_order: reference.names.clone(),
        columns,
        dataset_drift,
        quality: None,
        estimated_quality: None,
        multivariate: None,
        data_quality,
        streamed: Some(Streamed {
            sketch: "KLL (Apache DataSketches)",
            k: SKETCH_K,
            rank_error: probe.normalized_rank_error(),
            exact_values: EXACT_VALUES,
            grid: GRID,
            approximate_columns,
        }),
    })
}

/// A numeric column's report: exact when both sides kept every value, else on the sketches' quantile grids.
fn numeric_report(r: &Numbers, c: &Numbers, rows: Sides<u64>) -> ColumnReport {
    let (rp, cp) = (r.points(), c.points());
    if r.is_exact() && c.is_exact() {
        return numeric_report_sorted(&rp, &cp, rows);
    }
    let n = Sides { reference: r.count, current: c.count };
    // D on the grids, and its p-value for the true sizes from Kolmogorov's limiting distribution: scipy's `asymp`
    // (kstwo.sf at n = en) sums O(en) terms, seconds a column at ten million rows, and differs from the limit by
    // O(1/sqrt(en)), far inside what the estimate of D moves it.
    let ks = ks::ks_statistic(&rp, &cp).map(|statistic| {
        let (big, small) = (n.reference.max(n.current) as f64, n.reference.min(n.current) as f64);
        let pvalue = ks::kolmogorov_sf((big * small / (big + small)).sqrt() * statistic);
        KsTest { statistic, pvalue, pvalue_method: "kolmogorov", pvalue_asymp: pvalue, pvalue_kolmogorov: pvalue }
    });
    let sides = NumericSides {
        points: Sides { reference: &rp, current: &cp },
        n,
        rows,
        summary: Sides { reference: r.summary(), current: c.summary() },
        ks,
    };
    numeric_report_of(sides, |bins| Sides { reference: r.bin_counts(bins, &rp), current: c.bin_counts(bins, &cp) })
}

/// The data-quality checks of a numeric column (see `drift::data_quality_of`): numbers outside the reference's
/// [min, max] (the count from the current side's ranks, the example its farthest value, its minimum or maximum); a
/// 0/1 reference (kind inferred) makes other numbers the wrong type.
fn numeric_quality(r: &Numbers, c: &Numbers, missing: u64, rows: u64, inferred: bool) -> FeatureQuality {
    if inferred && r.count > 0 && r.all_zero_one() {
        let wrong = c.count - c.zeros - c.ones;
        return FeatureQuality {
            rows,
            missing: share(missing, rows, None),
            out_of_range: None,
            unseen_category: None,
            wrong_type: share(wrong, rows, c.smallest_other.map(|v| checks::example(&format!("{v}")))),
        };
    }
    let out_of_range = match (r.min(), r.max(), c.min(), c.max()) {
        (Some(lo), Some(hi), Some(c_min), Some(c_max)) => {
            let (below_by, above_by) = (lo - c_min, c_max - hi);
            // An estimate, but never below what the exact extremes prove: one value past each end that is crossed.
            let below = ((c.rank(lo, SearchCriteria::Exclusive) * c.count as f64).round() as u64)
                .max(u64::from(below_by > 0.0));
            let above = (((1.0 - c.rank(hi, SearchCriteria::Inclusive)) * c.count as f64).round() as u64)
                .max(u64::from(above_by > 0.0));
            let farthest = match (below_by > 0.0, above_by > 0.0) {
                (true, true) if above_by > below_by => Some(c_max),
                (true, _) => Some(c_min),
                (false, true) => Some(c_max),
                (false, false) => None,
            };
            share(below + above, rows, farthest.map(|x| format!("{x}")))
        }
        _ => share(0, rows, None),
    };
    FeatureQuality {
        rows,
        missing: share(missing, rows, None),
        out_of_range: Some(out_of_range),
        unseen_category: None,
        wrong_type: share(0, rows, None),
    }
}

/// The data-quality checks of a categorical column, exact from the counts: unseen categories; or, when the
/// reference alone is numeric (the current side's words made the column categorical), the current cells that are
/// not numbers (or not 0/1) as the wrong type and the rest against the reference's range.
fn categorical_quality(
    counts: &Sides<BTreeMap<String, u64>>,
    r: &ColumnSummary,
    missing: u64,
    rows: u64,
    inferred: bool,
) -> FeatureQuality {
    let most_frequent = |items: &mut dyn Iterator<Item = (&String, u64)>| {
        // The most frequent, the smallest on a tie (BTreeMap order).
        let mut best: Option<(&String, u64)> = None;
        for (value, count) in items {
            if best.is_none_or(|(_, n)| count > n) {
                best = Some((value, count));
            }
        }
        best.map(|(v, _)| checks::example(v))
    };
    match &r.numbers {
        Some(rn) if inferred => {
            let binary = rn.count > 0 && rn.all_zero_one();
            let fits = |v: f64| !binary || v == 0.0 || v == 1.0;
            let mut wrong = 0;
            let mut wrong_cells = Vec::new();
            let (mut out, mut farthest) = (0u64, None::<(f64, f64)>);
            for (cell, &count) in &counts.current {
                match crate::drift::parse_number(cell).filter(|v| fits(*v)) {
                    None => {
                        wrong += count;
                        wrong_cells.push((cell, count));
                    }
                    Some(x) if !binary => {
                        if let (Some(lo), Some(hi)) = (rn.min(), rn.max()) {
                            if x < lo || x > hi {
                                out += count;
                                let distance = if x < lo { lo - x } else { x - hi };
                                if farthest.is_none_or(|(d, f)| distance > d || (distance == d && x < f)) {
                                    farthest = Some((distance, x));
                                }
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
            FeatureQuality {
                rows,
                missing: share(missing, rows, None),
                out_of_range: (!binary).then(|| share(out, rows, farthest.map(|(_, x)| format!("{x}")))),
                unseen_category: None,
                wrong_type: share(wrong, rows, most_frequent(&mut wrong_cells.into_iter())),
            }
        }
        _ => {
            let mut unseen =
                counts.current.iter().filter(|(c, _)| !counts.reference.contains_key(*c)).map(|(c, n)| (c, *n));
            let unseen: Vec<(&String, u64)> = unseen.by_ref().filter(|(_, n)| *n > 0).collect();
            let count = unseen.iter().map(|(_, n)| n).sum();
            FeatureQuality {
                rows,
                missing: share(missing, rows, None),
                out_of_range: None,
                unseen_category: Some(share(count, rows, most_frequent(&mut unseen.into_iter()))),
                wrong_type: share(0, rows, None),
            }
        }
    }
}

#[cfg(test)]
mod tests;
