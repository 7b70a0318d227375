//! Comparing a drift report with a public drift case's `expected.json`, field by field: shared by the CLI test
//! (`gateway/tests/drift_cases.rs`) and the live-path test (`tests/e2e/live_drift_cases.rs`), so both hold the
//! report to the same tolerances. Each statistic is compared at 1e-6 relative (1e-9 absolute below 1e-9; K-S
//! p-values below 1e-6 to 1e-12 absolute); counts, edges and names exactly; each column's verdict and the dataset
//! verdict must be Evidently's.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The case folders (those with an `expected.json`) under `monitor/tests/<folder>`, in name order; there must be
/// `count` of them.
fn case_dirs(folder: &str, count: usize) -> Vec<PathBuf> {
    let root = if env!("CARGO_PKG_NAME") == "gateway" { "../monitor/tests" } else { "monitor/tests" };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(root).join(folder);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), count, "all {count} cases of {folder} are present");
    cases
}

/// The six public cases (`monitor/tests/drift-cases`, a copy of `shared/drift-cases`), in name order.
pub(crate) fn cases() -> Vec<PathBuf> {
    case_dirs("drift-cases", 6)
}

/// The three quality cases (`monitor/tests/quality-cases`, a copy of `shared/quality-cases`: NannyML's estimated
/// quality and multivariate drift), in name order.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub(crate) fn quality_cases() -> Vec<PathBuf> {
    case_dirs("quality-cases", 3)
}

/// A case's `expected.json`.
pub(crate) fn expected(case: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap()
}

/// Compares every column of `expected` with `report` (statistics and Evidently's verdicts) and the dataset verdict;
/// returns how many column verdicts were compared.
pub(crate) fn compare_columns(name: &str, expected: &Value, report: &Value, mismatches: &mut Vec<String>) -> usize {
    let mut compared = 0;
    for (column, want) in expected["columns"].as_object().unwrap() {
        let got = &report["columns"][column];
        compare(&format!("{name}.columns.{column}"), want, Some(got), mismatches);
        // The verdict by Evidently's default choice of test.
        let evidently = &want["evidently"];
        if evidently.get("skipped").and_then(Value::as_bool) == Some(true) {
            if !got["drift"].is_null() {
                mismatches.push(format!("{name}.{column}: Evidently skipped it, we judged it"));
            }
            continue;
        }
        let verdict = &got["drift"];
        for key in ["stattest", "threshold", "drifted"] {
            if verdict[key] != evidently[key] {
                mismatches
                    .push(format!("{name}.{column}.drift.{key}: Evidently {}, we {}", evidently[key], verdict[key]));
            }
        }
        compare(
            &format!("{name}.columns.{column}.drift.drift_score"),
            &evidently["drift_score"],
            Some(&verdict["drift_score"]),
            mismatches,
        );
        compared += 1;
    }
    let dataset = &expected["dataset_drift"]["evidently"];
    for key in ["number_of_columns", "number_of_drifted_columns", "share_of_drifted_columns", "dataset_drift"] {
        if report["dataset_drift"][key] != dataset[key] {
            mismatches.push(format!(
                "{name}.dataset_drift.{key}: Evidently {}, we {}",
                dataset[key], report["dataset_drift"][key]
            ));
        }
    }
    compared
}

/// Compares `expected` with `actual` at `path`, recursing into objects and arrays; records the mismatches.
pub(crate) fn compare(path: &str, expected: &Value, actual: Option<&Value>, mismatches: &mut Vec<String>) {
    let actual = actual.unwrap_or(&Value::Null);
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                if matches!(key.as_str(), "scenario" | "evidently" | "stattest_name" | "column_type" | "spec") {
                    continue;
                }
                compare(&format!("{path}.{key}"), value, a.get(key), mismatches);
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                compare(&format!("{path}[{i}]"), e, Some(a), mismatches);
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            let (e, a) = (e.as_f64().unwrap(), a.as_f64().unwrap());
            let tolerance = if path.contains(".ks.pvalue") && e.abs() < 1e-6 {
                1e-12
            } else if e.abs() < 1e-9 {
                1e-9
            } else if path.contains(".ks.statistic") {
                1e-12 * e.abs()
            } else {
                1e-6 * e.abs()
            };
            if (e - a).abs() > tolerance {
                mismatches.push(format!("{path}: expected {e:e}, got {a:e}"));
            }
        }
        (e, a) if e == a => {}
        (e, a) => mismatches.push(format!("{path}: expected {e}, got {a}")),
    }
}
