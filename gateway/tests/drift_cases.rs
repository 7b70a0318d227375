//! Every public drift case (`monitor/tests/drift-cases`, a copy of `shared/drift-cases`) through `vane drift`, the
//! binary a user runs: each statistic in `expected.json` is compared field by field with the report (1e-6
//! relative; 1e-9 absolute below 1e-9; K-S p-values below 1e-6 to 1e-12 absolute; counts, edges and names
//! exactly), the column kinds are inferred as the case says, and each column's verdict and the dataset verdict
//! match Evidently's.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor/tests/drift-cases")
}

fn vane_drift(case: &Path, extra: &[String]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_vane"))
        .arg("drift")
        .arg("--reference")
        .arg(case.join("reference.csv"))
        .arg("--current")
        .arg(case.join("current.csv"))
        .args(extra)
        .output()
        .expect("vane runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the report is JSON")
}

/// Compares `expected` with `actual` at `path`, recursing into objects and arrays; returns the mismatches.
fn compare(path: &str, expected: &Value, actual: Option<&Value>, mismatches: &mut Vec<String>) {
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

fn quality_flags(expected: &Value) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(spec) = expected.pointer("/quality/binary_classification/spec") {
        flags.push("--classification".to_owned());
        flags.push(format!(
            "label={},score={},positive={},threshold={}",
            spec["label"].as_str().unwrap(),
            spec["score"].as_str().unwrap(),
            spec["positive"].as_str().unwrap(),
            spec["threshold"]
        ));
    }
    if let Some(spec) = expected.pointer("/quality/regression/spec") {
        flags.push("--regression".to_owned());
        flags.push(format!(
            "target={},prediction={}",
            spec["target"].as_str().unwrap(),
            spec["prediction"].as_str().unwrap()
        ));
    }
    flags
}

#[test]
fn every_public_case_matches_through_the_cli() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 6, "all six public cases are present");
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
        let report = vane_drift(case, &quality_flags(&expected));
        assert_eq!(report["column_order"], expected["column_order"], "{name}");
        assert_eq!(report["n_rows"], expected["n_rows"], "{name}");
        for (column, want) in expected["columns"].as_object().unwrap() {
            let got = &report["columns"][column];
            compare(&format!("{name}.columns.{column}"), want, Some(got), &mut mismatches);
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
                    mismatches.push(format!(
                        "{name}.{column}.drift.{key}: Evidently {}, we {}",
                        evidently[key], verdict[key]
                    ));
                }
            }
            compare(
                &format!("{name}.columns.{column}.drift.drift_score"),
                &evidently["drift_score"],
                Some(&verdict["drift_score"]),
                &mut mismatches,
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
        if let Some(quality) = expected.get("quality") {
            compare(&format!("{name}.quality"), quality, report.get("quality"), &mut mismatches);
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    assert!(compared >= 30, "only {compared} columns compared");
}
