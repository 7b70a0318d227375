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
use drift_compare::{cases, compare, compare_columns, expected, quality_cases};

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

/// `--stream` reads each file once into bounded summaries; every public case is within its exact values, so the
/// streamed report is the exact one, field for field, plus the `streamed` block that says nothing was estimated.
#[test]
fn every_public_case_streams_to_the_exact_report() {
    for case in &cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let exact = vane_drift(case, &[]);
        let mut streamed = vane_drift(case, &["--stream".to_owned()]);
        let how = streamed.as_object_mut().unwrap().remove("streamed").expect("the streamed block");
        assert_eq!(how["approximate_columns"], serde_json::json!([]), "{name}");
        assert_eq!(streamed, exact, "{name}");
    }
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

fn estimate_flags(calibration: &str) -> Vec<String> {
    [
        "--classification",
        "label=y_true,score=y_pred_proba,prediction=y_pred",
        "--estimated-quality",
        calibration,
        "--multivariate",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// NannyML's estimated quality (CBPE, with the case's calibration) and PCA reconstruction error, field by field,
/// through `vane drift`; and the estimate never reads the current file's labels: blanking them changes nothing.
#[test]
fn every_quality_case_matches_nannyml_through_the_cli() {
    let mut mismatches = Vec::new();
    let scratch = tempfile::tempdir().unwrap();
    for case in &quality_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected = expected(case);
        let calibration = expected["calibration"].as_str().unwrap();
        let report = vane_drift(case, &estimate_flags(calibration));
        assert_eq!(report["estimated_quality"]["calibration"], expected["calibration"], "{name}");
        compare(
            &format!("{name}.estimated_quality"),
            &expected["estimated_quality"],
            report.get("estimated_quality"),
            &mut mismatches,
        );
        compare(
            &format!("{name}.multivariate"),
            &expected["multivariate"],
            report.get("multivariate"),
            &mut mismatches,
        );
        assert_eq!(report["multivariate"]["features"], expected["columns"]["features"], "{name}");

        // The current file without its labels: the same estimate.
        let text = std::fs::read_to_string(case.join("current.csv")).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let label = header.iter().position(|h| *h == "y_true").unwrap();
        let mut blank = header.join(",") + "\n";
        for line in lines {
            let mut cells: Vec<&str> = line.split(',').collect();
            cells[label] = "";
            blank += &(cells.join(",") + "\n");
        }
        let unlabelled = scratch.path().join(format!("{name}.csv"));
        std::fs::write(&unlabelled, blank).unwrap();
        let without = vane_drift_files(&case.join("reference.csv"), &unlabelled, &estimate_flags(calibration));
        assert_eq!(without["estimated_quality"], report["estimated_quality"], "{name}: the labels were read");
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

/// `auto` calibrates when isotonic probabilities, fitted on nine tenths of the reference, are better calibrated on
/// the tenth left out. The two cases NannyML was told to calibrate are calibrated, and give NannyML's numbers; the
/// case it was told not to calibrate has overconfident scores (the model sees a noisy logit), and `auto`'s estimate
/// comes closer to the accuracy its labels show than the uncalibrated one.
#[test]
fn auto_calibration_is_chosen_on_held_out_reference_rows() {
    for case in &quality_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected = expected(case);
        let auto = vane_drift(case, &estimate_flags("auto"));
        let estimate = &auto["estimated_quality"];
        assert_eq!(estimate["calibration_requested"], "auto", "{name}");
        let (raw, isotonic) = (
            estimate["calibration_errors"]["raw"].as_f64().unwrap(),
            estimate["calibration_errors"]["isotonic"].as_f64().unwrap(),
        );
        assert_eq!(estimate["calibration"], "isotonic", "{name}: errors raw {raw}, isotonic {isotonic}");
        let realized = expected["realized_quality"]["accuracy"].as_f64().unwrap();
        let auto_accuracy = estimate["accuracy"].as_f64().unwrap();
        if expected["calibration"] == "isotonic" {
            let mut mismatches = Vec::new();
            compare(&name, &expected["estimated_quality"], Some(estimate), &mut mismatches);
            assert!(mismatches.is_empty(), "{mismatches:?}");
        } else {
            let raw_accuracy = expected["estimated_quality"]["accuracy"].as_f64().unwrap();
            assert!(
                (auto_accuracy - realized).abs() < (raw_accuracy - realized).abs(),
                "{name}: auto {auto_accuracy}, uncalibrated {raw_accuracy}, realized {realized}"
            );
        }
    }
}

/// The report's data-quality section on hand-made files: the reference says what a column is, so a word in a
/// numeric column is of the wrong type (and the column's drift is then judged as categorical, as before), a number
/// past the reference's range and a category it never had are counted, each with an example.
#[test]
fn the_data_quality_section_counts_hand_made_problems() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.csv");
    let current = dir.path().join("current.csv");
    std::fs::write(&reference, "x,colour,flag\n0,red,0\n5,blue,1\n10,red,0\n2,blue,1\n").unwrap();
    std::fs::write(&current, "x,colour,flag\n1,red,0\nabc,blue,0.5\n11,teal,1\n,red,1\n3,,0\n").unwrap();
    let report = vane_drift_files(&reference, &current, &[]);
    let x = &report["data_quality"]["x"];
    assert_eq!((x["rows"].as_u64(), x["missing"]["count"].as_u64()), (Some(5), Some(1)), "{x}");
    assert_eq!((x["wrong_type"]["count"].as_u64(), x["wrong_type"]["example"].as_str()), (Some(1), Some("abc")), "{x}");
    assert_eq!((x["out_of_range"]["share"].as_f64(), x["out_of_range"]["example"].as_str()), (Some(0.2), Some("11")));
    let colour = &report["data_quality"]["colour"];
    assert_eq!(colour["unseen_category"]["example"], "teal", "{colour}");
    assert_eq!((colour["unseen_category"]["count"].as_u64(), colour["missing"]["count"].as_u64()), (Some(1), Some(1)));
    // A 0/1 reference column with a 0.5 now: typed numeric for drift, but the 0.5 is of the wrong type.
    let flag = &report["data_quality"]["flag"];
    assert_eq!(
        (flag["wrong_type"]["count"].as_u64(), flag["wrong_type"]["example"].as_str()),
        (Some(1), Some("0.5")),
        "{flag}"
    );
}

/// A three-class classifier (`monitor/tests/quality-cases-multiclass`, NannyML 0.13.1's multiclass CBPE with isotonic
/// calibration): the one-vs-rest estimate, macro-averaged, matches field by field through `vane drift`.
#[test]
fn the_multiclass_case_matches_nannyml_one_vs_rest() {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor/tests/quality-cases-multiclass/m01_three_classes_shift");
    let expected = expected(&case);
    let report = vane_drift(
        &case,
        &[
            "--classification",
            "label=y_true,score=proba_a:proba_b:proba_c,classes=a:b:c,prediction=y_pred",
            "--estimated-quality",
            "isotonic",
            "--multivariate",
        ]
        .map(str::to_owned),
    );
    let mut mismatches = Vec::new();
    compare("m01.estimated_quality", &expected["estimated_quality"], report.get("estimated_quality"), &mut mismatches);
    assert!(mismatches.is_empty(), "{mismatches:?}");
    assert_eq!((report["estimated_quality"]["classes"].as_u64(), report.get("quality")), (Some(3), None));
    assert_eq!(
        report["multivariate"]["features"],
        serde_json::json!(["x0", "x1", "x2", "x3"]),
        "scores are not features"
    );
    // Several score columns without their classes are refused, naming what is missing.
    let output = Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["drift", "--reference", "a.csv", "--current", "b.csv", "--classification", "label=y,score=p:q"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("several score columns need classes=A:B:..."));
}
