//! The three quality cases through the live path: one GitOps deployment per case serves a pass-through model whose
//! output `score` is its input `y_pred_proba` (`tests/e2e/quality-models/`, made by `models/make_quality_models.py`),
//! with the case's `reference.csv` as its reference data and the manifest's `quality.estimate` naming the label,
//! score and prediction columns (so they are not features). `current.csv`'s features and scores are replayed as
//! traffic (its labels are never sent), and the monitor's estimated quality and multivariate drift are compared with
//! NannyML's, field by field; then the alerts the manifest's thresholds ask for fire exactly where the numbers say.

use std::path::Path;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::drift_compare::{compare, expected, quality_cases};
use crate::gitops::serve;
use crate::live_drift_cases::{post_labels, read_csv, replay};
use crate::monitor::report_of;
use crate::support::{sha256_of, GitRemote};

/// The model's inputs: the features and the score.
pub(crate) const INPUTS: [&str; 9] = ["x0", "x1", "x2", "x3", "x4", "x5", "cat", "region", "y_pred_proba"];
/// Estimated accuracy below this pages (q02 0.7156 and q03 0.7058 are below, q01 0.7538 is not).
const ACCURACY_FLOOR: f64 = 0.72;

pub(crate) fn manifest(case: &str, expected: &Value, work: &Path, window: usize) -> String {
    format!(
        "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {case}\nspec:\n  versions:\n    \
         - version: 1\n      model:\n        path: models/pass_through.onnx\n        sha256: {}\n  reference_data:\n    \
         path: data/{case}/reference.csv\n    sha256: {}\n  monitoring:\n    window_size: {}\n    min_samples: 1\n    \
         quality:\n      task: binary_classification\n      output: score\n      threshold: 0.5\n      window: {window}\n      estimate:\n        \
         label_column: y_true\n        score_column: y_pred_proba\n        prediction_column: y_pred\n        \
         calibration: {}\n    thresholds: {{estimated_accuracy: {ACCURACY_FLOOR}, multivariate_z: 3}}\n    for: 0s\n",
        sha256_of(&work.join("models/pass_through.onnx")),
        sha256_of(&work.join(format!("data/{case}/reference.csv"))),
        window,
        expected["calibration"].as_str().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_quality_case_matches_nannyml_through_the_live_path() {
    let remote = GitRemote::new();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/quality-models/pass_through.onnx");
    remote.write("models/pass_through.onnx", &std::fs::read(model).unwrap());
    let mut deployments = Vec::new();
    for case in quality_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        remote.write(&format!("data/{name}/reference.csv"), &std::fs::read(case.join("reference.csv")).unwrap());
        let (header, rows) = read_csv(&case.join("current.csv"));
        let expected = expected(&case);
        let text = manifest(&name, &expected, remote.work.path(), rows.len());
        remote.write(&format!("deploy/{name}.yaml"), text.as_bytes());
        deployments.push((name, header, rows, expected));
    }
    remote.push("the quality cases");
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;

    let kinds = json!({"cat": {"kind": "categorical"}, "region": {"kind": "categorical"}});
    let mut mismatches = Vec::new();
    for (name, header, rows, expected) in &deployments {
        let ready = server.get(&format!("/v2/models/{name}/ready")).await;
        assert_eq!(ready.status, StatusCode::OK, "{name} is served: {}", ready.body);
        // Only the model's inputs: the labels (and the reference's predicted-label column) are never sent.
        let keep: Vec<usize> = INPUTS.iter().map(|c| header.iter().position(|h| h == c).unwrap()).collect();
        let inputs: Vec<String> = keep.iter().map(|&i| header[i].clone()).collect();
        let cells: Vec<Vec<String>> = rows.iter().map(|r| keep.iter().map(|&i| r[i].clone()).collect()).collect();
        replay(&server, name, &inputs, &kinds, &cells).await;
        let view = report_of(&server, name, rows.len() as u64).await;
        let report = &view["versions"][0];
        assert_eq!(report["window_rows"], rows.len(), "{name}: the window holds all of current.csv");
        let features: Vec<&str> = report["columns"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            features,
            ["cat", "region", "x0", "x1", "x2", "x3", "x4", "x5"],
            "{name}: label and score are not features"
        );
        let estimated = &report["estimated_quality"];
        assert_eq!(estimated["calibration"], expected["calibration"], "{name}");
        assert_eq!(estimated["n_rows"], rows.len(), "{name}");
        compare(&format!("{name}.estimated_quality"), &expected["estimated_quality"], Some(estimated), &mut mismatches);
        let multivariate = &report["multivariate"];
        let want = &expected["multivariate"];
        compare(
            &format!("{name}.multivariate.current"),
            &want["reconstruction_error"]["current"],
            multivariate.get("reconstruction_error"),
            &mut mismatches,
        );
        compare(
            &format!("{name}.multivariate.reference"),
            &want["reconstruction_error"]["reference"],
            multivariate.get("reference_error"),
            &mut mismatches,
        );
        compare(
            &format!("{name}.pca_components"),
            &want["pca_components"],
            multivariate.get("pca_components"),
            &mut mismatches,
        );
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));

    // The alerts of the evaluation that held every row were set before its report was published.
    let alerts = server.get("/api/v1/alerts").await.body;
    let firing = |model: &str, name: &str| {
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["model"] == model && a["name"] == name && a["state"] == "firing")
            .cloned()
    };
    for (name, _, rows, expected) in &deployments {
        let accuracy = expected["estimated_quality"]["accuracy"].as_f64().unwrap();
        let estimated = firing(name, "VaneEstimatedQualityDrop");
        assert_eq!(estimated.is_some(), accuracy < ACCURACY_FLOOR, "{name}: estimated accuracy {accuracy}: {alerts}");
        if let Some(alert) = estimated {
            assert_eq!(alert["severity"], "page");
            let summary = alert["summary"].as_str().unwrap();
            let wanted = format!("accuracy estimated at {accuracy:.4} from the scores alone, below {ACCURACY_FLOOR} over the last {} predictions", rows.len());
            assert!(summary.contains(&wanted), "{summary}");
        }
        // NannyML's own numbers say which cases moved: q01's error is within 3 standard errors, q02's and q03's not.
        let drifted = name != "q01_calibrated_no_shift";
        let multivariate = firing(name, "VaneMultivariateDrift");
        assert_eq!(multivariate.is_some(), drifted, "{name}: {alerts}");
        if let Some(alert) = multivariate {
            assert_eq!(alert["severity"], "ticket");
            assert!(alert["summary"].as_str().unwrap().contains("PCA reconstruction error"), "{alert}");
        }
    }
    // The labels of one case arrive: the dashboard shows its estimate beside the realized quality.
    let (name, header, rows, expected) = &deployments[1];
    post_labels(&server, name, header, rows, "y_true").await;
    let page = server.get("/dashboard").await.body;
    let page = page.as_str().unwrap();
    let estimated = expected["estimated_quality"]["accuracy"].as_f64().unwrap();
    let realized = expected["realized_quality"]["accuracy"].as_f64().unwrap();
    let row = format!("<tr><td>accuracy</td><td>{estimated:.4}</td><td>{realized:.4}</td></tr>");
    assert!(page.contains(&row), "{row} on the dashboard");
    for section in ["drift", "quality", "multivariate", "data-quality"] {
        assert!(page.contains(&format!("id=\"{name}-v1-{section}\"")), "the {section} section of {name}");
    }
    let metrics = server.get("/metrics").await.body;
    let text = metrics.as_str().unwrap();
    for series in [
        r#"vane_estimated_quality{model="q02_covariate_shift_miscalibrated",version="1",statistic="accuracy"} 0.71564"#,
        r#"vane_multivariate_drift{model="q01_calibrated_no_shift",version="1",statistic="reconstruction_error"} 1.23519"#,
    ] {
        assert!(text.contains(series), "{series} is exported");
    }
    server.stop().await;
}

/// Data-quality checks on a hand-made window, through the live path: a model whose inputs are text, so a request
/// can carry a word where the reference has numbers and 0.5 where it has 0 or 1. Each share is the hand count, and
/// each rule's alert names the feature, the share and an example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_quality_shares_of_a_hand_made_window_and_their_alerts() {
    let remote = GitRemote::new();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/quality-models/text_inputs.onnx");
    remote.write("models/text.onnx", &std::fs::read(model).unwrap());
    // The reference: x from 0 to 10, colour red or blue, flag 0 or 1.
    let mut reference = String::from("x,colour,flag\n");
    for i in 0..200 {
        reference += &format!("{},{},{}\n", i % 11, ["red", "blue"][i % 2], i % 2);
    }
    remote.write("data/dq.csv", reference.as_bytes());
    let manifest = format!(
        "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: dq\nspec:\n  versions:\n    \
         - version: 1\n      model:\n        path: models/text.onnx\n        sha256: {}\n  reference_data:\n    \
         path: data/dq.csv\n    sha256: {}\n  monitoring:\n    window_size: 20\n    min_samples: 1\n    \
         columns: {{flag: binary}}\n    thresholds: {{data_wrong_type_share: 0.05, data_out_of_range_share: 0.1, \
         data_unseen_category_share: 0.1, data_missing_share: 0.5}}\n    for: 0s\n",
        sha256_of(&remote.work.path().join("models/text.onnx")),
        sha256_of(&remote.work.path().join("data/dq.csv")),
    );
    remote.write("deploy/dq.yaml", manifest.as_bytes());
    remote.push("a model with text inputs");
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;

    // 20 rows. x: 14 in range, 2 words, 3 outside [0, 10], 1 empty. colour: 16 seen, 3 green, 1 empty.
    // flag: 18 zeros and ones, one 0.5, one empty.
    let mut x: Vec<&str> = vec!["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "10", "3.5", "2", "1"];
    x.extend(["abc", "n/a", "20", "-5", "10.5", ""]);
    let mut colour = vec!["red"; 8];
    colour.extend(vec!["blue"; 8]);
    colour.extend(["green", "green", "green", ""]);
    let mut flag = ["0", "1"].repeat(9);
    flag.extend(["0.5", ""]);
    let request = json!({"inputs": [
        {"name": "x", "datatype": "BYTES", "shape": [20], "data": x},
        {"name": "colour", "datatype": "BYTES", "shape": [20], "data": colour},
        {"name": "flag", "datatype": "BYTES", "shape": [20], "data": flag},
    ]});
    let reply = server.post_json("/v2/models/dq/infer", &request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let view = report_of(&server, "dq", 20).await;
    let checks = &view["versions"][0]["data_quality"];
    let share = |feature: &str, check: &str| checks[feature][check]["share"].as_f64();
    assert_eq!(share("x", "wrong_type"), Some(0.1), "{checks}");
    assert_eq!(share("x", "out_of_range"), Some(0.15), "{checks}");
    assert_eq!(share("x", "missing"), Some(0.05), "{checks}");
    assert_eq!(checks["x"]["out_of_range"]["example"], "20", "the farthest outside [0, 10]");
    assert_eq!(share("colour", "unseen_category"), Some(0.15), "{checks}");
    assert_eq!(checks["colour"]["unseen_category"]["example"], "green");
    assert_eq!(share("colour", "missing"), Some(0.05), "{checks}");
    assert_eq!(share("flag", "wrong_type"), Some(0.05), "{checks}");
    assert_eq!(share("flag", "missing"), Some(0.05), "{checks}");
    assert!(checks["colour"].get("out_of_range").is_none() && checks["x"].get("unseen_category").is_none());

    // The alerts of the evaluation that held every row were set before its report was published.
    let alerts = server.get("/api/v1/alerts").await.body;
    let summary = |statistic: &str| {
        let alert = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["model"] == "dq" && a["statistic"] == statistic && a["state"] == "firing")
            .unwrap_or_else(|| panic!("{statistic} fires: {alerts}"));
        assert_eq!((alert["name"].as_str(), alert["severity"].as_str()), (Some("VaneDataQuality"), Some("ticket")));
        alert["summary"].as_str().unwrap().to_owned()
    };
    let wrong = summary("data_wrong_type_share");
    assert!(
        wrong.contains("values of the wrong type above 5.0% over the last 20 predictions in 2 feature(s)"),
        "{wrong}"
    );
    assert!(wrong.contains(r#"x 10.0% (e.g. "n/a")"#) && wrong.contains(r#"flag 5.0% (e.g. "0.5")"#), "{wrong}");
    let range = summary("data_out_of_range_share");
    assert!(range.contains(r#"1 feature(s): x 15.0% (e.g. "20")"#), "{range}");
    let unseen = summary("data_unseen_category_share");
    assert!(unseen.contains(r#"colour 15.0% (e.g. "green")"#), "{unseen}");
    assert!(
        !alerts["alerts"].as_array().unwrap().iter().any(|a| a["statistic"] == "data_missing_share"),
        "5% missing is below 50%: {alerts}"
    );
    let metrics = server.get("/metrics").await.body;
    let gauge = r#"vane_data_quality{model="dq",version="1",feature="x",statistic="wrong_type"} 0.1"#;
    assert!(metrics.as_str().unwrap().contains(gauge), "{gauge} is exported");
    server.stop().await;
}
