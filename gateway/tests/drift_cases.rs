//! Every public drift case (`monitor/tests/drift-cases`, a copy of `shared/drift-cases`) through `vane drift`, the
//! binary a user runs: each statistic in `expected.json` is compared field by field with the report (1e-6
//! relative; 1e-9 absolute below 1e-9; K-S p-values below 1e-6 to 1e-12 absolute; counts, edges and names
//! exactly), the column kinds are inferred as the case says, and each column's verdict and the dataset verdict
//! match Evidently's.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[path = "../../tests/e2e/drift_compare.rs"]
mod drift_compare;
use drift_compare::{cases, compare, compare_columns, expected};

fn vane_drift(case: &Path, extra: &[String]) -> Value {
    vane_drift_files(&case.join("reference.csv"), &case.join("current.csv"), extra)
}

fn vane_drift_files(reference: &Path, current: &Path, extra: &[String]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_vane"))
        .arg("drift")
        .arg("--reference")
        .arg(reference)
        .arg("--current")
        .arg(current)
        .args(extra)
        .output()
        .expect("vane runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the report is JSON")
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
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for case in &cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected = expected(case);
        let report = vane_drift(case, &quality_flags(&expected));
        assert_eq!(report["column_order"], expected["column_order"], "{name}");
        assert_eq!(report["n_rows"], expected["n_rows"], "{name}");
        compared += compare_columns(&name, &expected, &report, &mut mismatches);
        if let Some(quality) = expected.get("quality") {
            compare(&format!("{name}.quality"), quality, report.get("quality"), &mut mismatches);
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    assert!(compared >= 30, "only {compared} columns compared");
}

/// The same cases written as Parquet by pandas/pyarrow (`monitor/tests/parquet/make.py`: snappy and zstd, nulls for
/// the empty cells) give the same report, field by field.
#[test]
fn parquet_files_give_the_same_report_as_csv() {
    let parquet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor/tests/parquet");
    let mut mismatches = Vec::new();
    let mut read = 0;
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let reference = parquet.join(format!("{name}.reference.parquet"));
        if !reference.is_file() {
            continue;
        }
        read += 1;
        let report = vane_drift_files(&reference, &parquet.join(format!("{name}.current.parquet")), &[]);
        let expected = expected(&case);
        assert_eq!(report["n_rows"], expected["n_rows"], "{name}");
        assert!(compare_columns(&name, &expected, &report, &mut mismatches) >= 5, "{name}");
    }
    assert_eq!(read, 2, "p02 and p03 are committed as Parquet");
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}
