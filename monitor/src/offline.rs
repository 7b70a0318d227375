//! `vane drift`: the offline report of a current file against a reference file, as JSON (the field names of
//! `shared/drift-cases/*/expected.json`) or as a self-contained HTML page. The two files are read on two threads,
//! and the columns are computed on as many threads as the machine has cores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::drift::{self, ClassificationSpec, ColumnKind, DriftReport, Options, RegressionSpec};
use crate::table::Table;

/// Parses `NAME=KIND` (`--column`).
pub fn parse_column(text: &str) -> Result<(String, ColumnKind), String> {
    let (name, kind) = text.split_once('=').ok_or_else(|| format!("{text:?}: expected NAME=KIND"))?;
    Ok((name.to_owned(), kind.parse()?))
}

fn key_values(text: &str, flag: &str, allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for part in text.split(',') {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("{flag} {text:?}: {part:?} is not KEY=VALUE"))?;
        if !allowed.contains(&key) {
            return Err(format!("{flag} {text:?}: unknown key {key:?} (allowed: {})", allowed.join(", ")));
        }
        map.insert(key.to_owned(), value.to_owned());
    }
    Ok(map)
}

/// Parses `label=COL,score=COL[,prediction=COL][,positive=V][,threshold=T]` (`--classification`), or for a
/// multiclass classifier `label=COL,score=COL_A:COL_B:...,classes=A:B:...[,prediction=COL]`.
pub fn parse_classification(text: &str) -> Result<ClassificationSpec, String> {
    let flag = "--classification";
    let mut map = key_values(text, flag, &["label", "score", "prediction", "positive", "threshold", "classes"])?;
    let classes = match (map.remove("classes"), map.get("score")) {
        (None, Some(score)) if score.contains(':') => {
            return Err(format!("{flag} {text:?}: several score columns need classes=A:B:... (one per column)"));
        }
        (None, _) => Vec::new(),
        (Some(classes), score) => {
            let (classes, columns): (Vec<&str>, Vec<&str>) =
                (classes.split(':').collect(), score.map(|s| s.split(':').collect()).unwrap_or_default());
            if classes.len() < 2 || classes.len() != columns.len() {
                return Err(format!(
                    "{flag} {text:?}: classes=... names {} classes for {} score columns (at least 2, one each)",
                    classes.len(),
                    columns.len()
                ));
            }
            classes.into_iter().zip(columns).map(|(c, s)| (c.to_owned(), s.to_owned())).collect()
        }
    };
    let mut take = |key: &str| map.remove(key).ok_or_else(|| format!("{flag} {text:?}: {key}=COLUMN is required"));
    let (label, score) = (take("label")?, take("score")?);
    let threshold = match map.remove("threshold") {
        Some(t) => t.parse::<f64>().map_err(|_| format!("{flag}: threshold {t:?} is not a number"))?,
        None => 0.5,
    };
    Ok(ClassificationSpec {
        label,
        score,
        positive: map.remove("positive").unwrap_or_else(|| "1".to_owned()),
        threshold,
        prediction: map.remove("prediction"),
        classes,
    })
}

/// Parses `target=COL,prediction=COL` (`--regression`).
pub fn parse_regression(text: &str) -> Result<RegressionSpec, String> {
    let flag = "--regression";
    let mut map = key_values(text, flag, &["target", "prediction"])?;
    let mut take = |key: &str| map.remove(key).ok_or_else(|| format!("{flag} {text:?}: {key}=COLUMN is required"));
    Ok(RegressionSpec { target: take("target")?, prediction: take("prediction")? })
}

/// Reads a table: Parquet when the file starts with Parquet's magic bytes, else CSV.
pub fn read_table(path: &Path) -> Result<Table, String> {
    Table::from_path(path).map_err(|e| e.to_string())
}

/// Reads both files (in parallel) and builds the report.
pub fn run(reference: &Path, current: &Path, options: &Options) -> Result<DriftReport, String> {
    let (reference, current) = std::thread::scope(|scope| {
        let other = scope.spawn(|| read_table(current));
        let reference = read_table(reference);
        (reference, other.join().unwrap_or_else(|_| Err("reading the current file failed".to_owned())))
    });
    let (reference, current) = (reference?, current?);
    drift::report(&reference, &current, options).map_err(|e| e.to_string())
}

/// Where the report goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON.
    Json,
    /// A self-contained HTML page.
    Html,
}

/// Renders the report.
pub fn render(report: &DriftReport, format: Format, title: &str) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Html => crate::html::report_page(report, title),
    }
}

/// Writes the rendered report to `out`, or returns it for standard output.
pub fn write(rendered: String, out: Option<&PathBuf>) -> Result<Option<String>, String> {
    match out {
        Some(path) => {
            std::fs::write(path, rendered).map(|()| None).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => Ok(Some(rendered)),
    }
}
