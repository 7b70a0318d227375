//! Every public drift case through the live path: a GitOps deployment per case serves a pass-through model whose
//! inputs are the case's columns (`tests/e2e/drift-models/`, made by `models/make_drift_models.py`) with the case's
//! `reference.csv` as its reference data; `current.csv` is replayed as prediction traffic (binary tensors, so every
//! value arrives as the double the CSV text denotes and an empty cell as NaN or an empty string, both missing), and
//! the monitor's report is compared field by field with `expected.json`, as the CLI's is. The quality case also
//! posts its labels to `/api/v1/feedback` (the delayed ones never come) and compares the joined metrics.

use std::path::Path;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::drift_compare::{cases, compare, compare_columns, expected};
use crate::gitops::serve;
use crate::monitor::report_of;
use crate::support::{sha256_of, GitRemote, TestServer};

const QUALITY_CASE: &str = "p06_quality_classification_regression";
/// The quality case deployed a second time with a regression quality block (a manifest has one).
const REGRESSION: &str = "p06_regression";
/// The quality case deployed a third time with `cls_score` as the reference's prediction column (so not a feature),
/// and alert rules on accuracy and on the prediction's PSI.
const PREDICTION: &str = "p06_prediction";

/// A CSV of the drift cases: the header and the rows as cell texts (no quoting is used in them).
pub(crate) fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(str::to_owned).collect();
    (header, lines.map(|l| l.split(',').map(str::to_owned).collect()).collect())
}

/// The manifest of deployment `name`: the case's model and reference, a window holding all of `current.csv`, the
/// case's column kinds, and an optional quality block.
pub(crate) fn manifest(name: &str, case: &str, expected: &Value, work: &Path, quality: &str) -> String {
    let rows = expected["n_rows"]["current"].as_u64().unwrap();
    let columns: Vec<String> = expected["columns"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(c, v)| format!("{c}: {}", v["kind"].as_str().unwrap()))
        .collect();
    format!(
        "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {name}\nspec:\n  versions:\n    \
         - version: 1\n      model:\n        path: models/{case}.onnx\n        sha256: {}\n  reference_data:\n    \
         path: data/{case}/reference.csv\n    sha256: {}\n  monitoring:\n    window_size: {rows}\n    \
         min_samples: 1\n    columns: {{{}}}\n{quality}",
        sha256_of(&work.join(format!("models/{case}.onnx"))),
        sha256_of(&work.join(format!("data/{case}/reference.csv"))),
        columns.join(", "),
    )
}

/// The firing alerts of `model` once there are `count` of them, waiting on the monitor's events (at most 30 s).
async fn alerts_firing(server: &TestServer, model: &str, count: usize) -> Vec<Value> {
    let mut events = server.server.monitor_evaluations();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        events.borrow_and_update();
        let alerts = server.get("/api/v1/alerts").await.body;
        let firing: Vec<Value> = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["model"] == model && a["state"] == "firing")
            .cloned()
            .collect();
        if firing.len() >= count {
            return firing;
        }
        let waited = tokio::time::timeout_at(deadline, events.changed()).await;
        waited.unwrap_or_else(|_| panic!("{count} firing alerts of {model} in time: {alerts}")).unwrap();
    }
}

/// The score column's PSI in the quality case's expected.json.
fn expected_psi(deployments: &[(String, std::path::PathBuf, Value)]) -> Value {
    let (_, _, expected) = deployments.iter().find(|(name, ..)| name == PREDICTION).unwrap();
    expected["columns"]["cls_score"]["psi"]["value"].clone()
}

/// Sends `rows` to `model` in 100-row binary requests with ids `r{k}` (row i of request k is `r{k}#{i}`).
pub(crate) async fn replay(server: &TestServer, model: &str, header: &[String], kinds: &Value, rows: &[Vec<String>]) {
    for (k, chunk) in rows.chunks(100).enumerate() {
        let mut raw = Vec::new();
        let mut inputs = Vec::new();
        for (c, column) in header.iter().enumerate() {
            let start = raw.len();
            let categorical = kinds[column]["kind"] == "categorical";
            for row in chunk {
                let cell = row[c].as_str();
                if categorical {
                    raw.extend((cell.len() as u32).to_le_bytes());
                    raw.extend(cell.as_bytes());
                } else {
                    let value = if cell.is_empty() { f64::NAN } else { cell.parse::<f64>().unwrap() };
                    raw.extend(value.to_le_bytes());
                }
            }
            inputs.push(json!({"name": column, "shape": [chunk.len()],
                "datatype": if categorical { "BYTES" } else { "FP64" },
                "parameters": {"binary_data_size": raw.len() - start}}));
        }
        let request = json!({"id": format!("r{k}"), "inputs": inputs, "parameters": {"binary_data_output": true}});
        let (reply, _) = server.post_framed(&format!("/v2/models/{model}/infer"), &request, &raw).await;
        assert_eq!(reply.status, StatusCode::OK, "{model}: {}", reply.body);
    }
}

/// Posts the labels in column `label` of `rows` (empty cells are labels that never came), by the replay's ids.
pub(crate) async fn post_labels(
    server: &TestServer,
    model: &str,
    header: &[String],
    rows: &[Vec<String>],
    label: &str,
) {
    let c = header.iter().position(|h| h == label).unwrap();
    let labels: Vec<Value> = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| !row[c].is_empty())
        .map(|(i, row)| json!({"id": format!("r{}#{}", i / 100, i % 100), "label": row[c].parse::<f64>().unwrap()}))
        .collect();
    let reply = server.post_json("/api/v1/feedback", &json!({"model": model, "labels": labels})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["joined"], labels.len(), "every label finds its prediction: {}", reply.body);
}

/// The live quality report next to the case's `current` side, on the fields both carry.
fn compare_quality(path: &str, want: &Value, live: &Value, metrics: &Value, mismatches: &mut Vec<String>) {
    compare(&format!("{path}.predictions"), &want["n_rows"], live.get("predictions"), mismatches);
    compare(&format!("{path}.labelled"), &want["n_labelled"], live.get("labelled"), mismatches);
    compare(&format!("{path}.label_coverage"), &want["label_coverage"], live.get("label_coverage"), mismatches);
    let mut want = want.clone();
    let fields = want.as_object_mut().unwrap();
    // Over the labelled pairs only: the live window holds no unlabelled rows, so the row counts and the estimate
    // from all scores (labels not needed) are the side's, not the window's.
    for side_only in ["n_rows", "n_labelled", "label_coverage", "estimated_from_scores_uncalibrated"] {
        fields.remove(side_only);
    }
    compare(path, &want, Some(metrics), mismatches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_public_case_matches_through_the_live_path() {
    let remote = GitRemote::new();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/drift-models");
    let mut deployments = Vec::new(); // (deployment, case directory, expected)
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        remote.write(&format!("models/{name}.onnx"), &std::fs::read(models.join(format!("{name}.onnx"))).unwrap());
        remote.write(&format!("data/{name}/reference.csv"), &std::fs::read(case.join("reference.csv")).unwrap());
        let expected = expected(&case);
        if name == QUALITY_CASE {
            let spec = &expected["quality"]["binary_classification"]["spec"];
            let classification = format!(
                "    quality: {{task: binary_classification, output: {}_out, index: 0, threshold: {}}}\n",
                spec["score"].as_str().unwrap(),
                spec["threshold"]
            );
            let regression = format!(
                "    quality: {{task: regression, output: {}_out, index: 0}}\n",
                expected["quality"]["regression"]["spec"]["prediction"].as_str().unwrap()
            );
            let text = manifest(REGRESSION, &name, &expected, remote.work.path(), &regression);
            remote.write(&format!("deploy/{REGRESSION}.yaml"), text.as_bytes());
            let watched = format!(
                "{classification}    prediction: {{column: {}}}\n    thresholds: {{accuracy: 0.8, prediction_psi: 0.2}}\n    \
                 for: 0s\n",
                spec["score"].as_str().unwrap()
            );
            let text = manifest(PREDICTION, &name, &expected, remote.work.path(), &watched);
            remote.write(&format!("deploy/{PREDICTION}.yaml"), text.as_bytes());
            deployments.push((PREDICTION.to_owned(), case.clone(), expected.clone()));
            let text = manifest(&name, &name, &expected, remote.work.path(), &classification);
            remote.write(&format!("deploy/{name}.yaml"), text.as_bytes());
            deployments.push((REGRESSION.to_owned(), case.clone(), expected.clone()));
        } else {
            let text = manifest(&name, &name, &expected, remote.work.path(), "");
            remote.write(&format!("deploy/{name}.yaml"), text.as_bytes());
        }
        deployments.push((name, case, expected));
    }
    remote.push("the public drift cases");
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;

    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (name, case, expected) in &deployments {
        let ready = server.get(&format!("/v2/models/{name}/ready")).await;
        assert_eq!(ready.status, StatusCode::OK, "{name} is served: {}", ready.body);
        let (header, rows) = read_csv(&case.join("current.csv"));
        assert_eq!(
            header,
            expected["column_order"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect::<Vec<_>>()
        );
        replay(&server, name, &header, &expected["columns"], &rows).await;
        let view = report_of(&server, name, rows.len() as u64).await;
        let report = &view["versions"][0];
        assert_eq!(report["window_rows"], rows.len(), "{name}: the window holds all of current.csv");
        if name == PREDICTION {
            // The live predictions against the reference's: the statistics the CLI gives the score column.
            let mut drift = report["prediction_drift"].clone();
            assert_eq!(drift["column"], "cls_score", "{report}");
            drift.as_object_mut().unwrap().remove("column");
            compare(
                &format!("{name}.prediction_drift"),
                &expected["columns"]["cls_score"],
                Some(&drift),
                &mut mismatches,
            );
            assert!(report["columns"].get("cls_score").is_none(), "the prediction column is not a feature");
        } else if name != REGRESSION {
            compared += compare_columns(name, expected, report, &mut mismatches);
        }
        let quality = &expected["quality"];
        let (side, label_key, metrics) = match name.as_str() {
            QUALITY_CASE | PREDICTION => ("binary_classification", "label", "classification"),
            REGRESSION => ("regression", "target", "regression"),
            _ => continue,
        };
        post_labels(&server, name, &header, &rows, quality[side]["spec"][label_key].as_str().unwrap()).await;
        let live = &server.get(&format!("/api/v1/monitor/{name}")).await.body["quality"][0];
        compare_quality(
            &format!("{name}.quality.{side}"),
            &quality[side]["current"],
            live,
            &live[metrics],
            &mut mismatches,
        );
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    assert!(compared >= 30, "only {compared} columns compared");

    // Accuracy 0.745 < 0.8 over 640 labelled predictions, and the score's PSI 0.334 > 0.2: both alerts fire.
    let alerts = alerts_firing(&server, PREDICTION, 2).await;
    let quality = alerts.iter().find(|a| a["name"] == "VaneQualityDrop").expect("quality alert");
    assert_eq!((quality["statistic"].as_str(), quality["severity"].as_str()), (Some("accuracy"), Some("page")));
    assert!(quality["summary"].as_str().unwrap().contains("accuracy 0.7453 below 0.8 over the last 640 labelled"));
    let prediction = alerts.iter().find(|a| a["name"] == "VanePredictionDrift").expect("prediction alert");
    assert_eq!(prediction["breaches"][0]["value"], expected_psi(&deployments));
    let metrics = server.get("/metrics").await.body;
    let gauge = format!(r#"vane_prediction_drift{{model="{PREDICTION}",version="1",statistic="psi"}}"#);
    let text = metrics.as_str().unwrap();
    assert!(text.contains(&gauge), "{gauge} is exported");
    // The firing count the shipped Prometheus rule VaneDriftAlertsFiring reads.
    let firing = format!("vane_drift_alerts_firing{{model=\"{PREDICTION}\"}} 2");
    assert!(text.contains(&firing), "{firing} in {text}");
    server.stop().await;
}
