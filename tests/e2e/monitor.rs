//! The live monitor end to end: predictions served from a GitOps deployment whose manifest names reference data
//! are sampled into a window and compared with that reference, by the same statistics as `vane drift`. Traffic
//! drawn from the reference shows no dataset drift; shifted traffic drifts the shifted features, in the
//! `/api/v1/monitor` view and in `/metrics`.

use std::path::Path;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::gitops::serve;
use crate::support::{models_dir, GitRemote, TestServer};

/// Replaces the manifest's `monitoring:` block with `block` and pushes.
pub(crate) fn set_monitoring(remote: &GitRemote, block: &str) {
    let manifest = remote.manifest();
    let start = manifest.find("  monitoring:").unwrap();
    let end = manifest.find("  allow_history_rewrite").unwrap();
    remote.write("deploy/breast-cancer.yaml", format!("{}{block}{}", &manifest[..start], &manifest[end..]).as_bytes());
    remote.push("monitoring settings for the test");
}

/// A breast_cancer deployment whose dataset-drift alert (at 30% of features) fires at once, with a 190-row window:
/// the remote, the data folder, and the GitOps config to serve it.
pub(crate) fn firing_at_once_deployment() -> (GitRemote, tempfile::TempDir, gateway::gitops::GitOpsConfig) {
    let remote = GitRemote::with_breast_cancer();
    set_monitoring(
        &remote,
        "  monitoring:\n    window_size: 190\n    min_samples: 100\n    thresholds: {dataset_drift_share: 0.3}\n    \
         for: 0s\n",
    );
    let data = tempfile::tempdir().unwrap();
    let config =
        crate::gitops::gitops_config(remote.bare.path().display().to_string(), &data, Duration::from_secs(3600));
    (remote, data, config)
}

/// The breast-cancer sample with the first ten features half as large again.
pub(crate) fn shifted(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    rows.iter().map(|row| row.iter().enumerate().map(|(i, v)| if i < 10 { v * 1.5 } else { *v }).collect()).collect()
}

/// Rows of the breast-cancer reference (30 features each).
pub(crate) fn reference_rows() -> Vec<Vec<f64>> {
    let data = monitor::ReferenceData::from_csv_path(&models_dir().join("breast_cancer/reference.csv")).unwrap();
    (0..data.rows).map(|i| data.numeric_row(i).unwrap()).collect()
}

pub(crate) async fn predict(server: &TestServer, rows: &[Vec<f64>]) {
    for chunk in rows.chunks(50) {
        let data: Vec<f32> = chunk.iter().flatten().map(|&v| v as f32).collect();
        let body = json!({"inputs": [{"name": "input", "shape": [chunk.len(), 30], "datatype": "FP32", "data": data}]});
        let reply = server.post_json("/v2/models/breast_cancer/infer", &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
}

/// The monitor view once its report covers `rows` observed rows, waiting (at most 30 s) on the monitor's report
/// counter rather than polling.
pub(crate) async fn report_after(server: &TestServer, rows: u64) -> Value {
    report_of(server, "breast_cancer", rows).await
}

/// [`report_after`] for any model.
pub(crate) async fn report_of(server: &TestServer, model: &str, rows: u64) -> Value {
    let mut evaluations = server.server.monitor_evaluations();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        evaluations.borrow_and_update();
        let view = server.get(&format!("/api/v1/monitor/{model}")).await.body;
        if view["versions"][0]["rows_observed"].as_u64() == Some(rows) {
            return view;
        }
        tokio::time::timeout_at(deadline, evaluations.changed()).await.expect("a report in time").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_like_traffic_does_not_drift_and_shifted_traffic_does() {
    let remote = GitRemote::with_breast_cancer();
    set_monitoring(&remote, "  monitoring:\n    window_size: 190\n    min_samples: 100\n");
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;

    let view = server.get("/api/v1/monitor/breast_cancer").await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.body);
    assert_eq!(view.body["versions"], json!([]), "no traffic yet, no report");

    // Every third reference row: the reference's own distribution.
    let rows = reference_rows();
    let sample: Vec<Vec<f64>> = rows.iter().step_by(3).cloned().collect();
    assert_eq!(sample.len(), 190);
    predict(&server, &sample).await;
    let view = report_after(&server, 190).await;
    let report = &view["versions"][0];
    assert_eq!(report["window_rows"], 190);
    assert_eq!(report["version"], 2, "the default version served the traffic");
    assert_eq!(report["enough_samples"], true);
    assert_eq!(report["data_sha256"], crate::support::sha256_of(&models_dir().join("breast_cancer/reference.csv")));
    assert_eq!(report["columns"].as_object().unwrap().len(), 30);
    let dataset = &report["dataset_drift"];
    assert_eq!(dataset["dataset_drift"], false, "{dataset}");
    assert!(dataset["number_of_drifted_columns"].as_u64().unwrap() <= 3, "{dataset}");

    // The live statistics are the offline ones: the same rows (as the f32 the model saw) through `vane drift`'s code.
    let offline = offline_report(&sample);
    for feature in ["mean_radius", "worst_area", "fractal_dimension_error"] {
        let (live, offline) = (&report["columns"][feature], &offline["columns"][feature]);
        for stat in ["/psi/value", "/ks/statistic", "/ks/pvalue", "/wasserstein/distance", "/js_distance"] {
            // Equal up to the last bit JSON text may move (serde_json's default float parsing is not exact).
            let (a, b) =
                (live.pointer(stat).unwrap().as_f64().unwrap(), offline.pointer(stat).unwrap().as_f64().unwrap());
            assert!((a - b).abs() <= 1e-14 * b.abs().max(1e-300), "{feature}{stat}: live {a}, offline {b}");
        }
        assert_eq!(live["psi"]["current_counts"], offline["psi"]["current_counts"], "{feature}");
    }

    // Traffic where the first ten features grow by half: a full window of it.
    predict(&server, &shifted(&sample)).await;
    let view = report_after(&server, 380).await;
    let report = &view["versions"][0];
    let drifted: Vec<&str> =
        report["dataset_drift"]["drifted_columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for feature in ["mean_radius", "mean_texture", "mean_perimeter", "mean_area"] {
        assert!(drifted.contains(&feature), "{feature} should drift: {drifted:?}");
        assert_eq!(report["columns"][feature]["drift"]["stattest"], "ks");
    }
    assert!(drifted.len() >= 10, "{drifted:?}");

    let metrics = server.get("/metrics").await.body;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(r#"vane_feature_drifted{model="breast_cancer",version="2",feature="mean_radius"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"vane_monitor_window_rows{model="breast_cancer",version="2"} 190"#), "{text}");
    assert!(text.contains("vane_monitor_observations_dropped_total 0"), "{text}");
    server.stop().await;
}

/// The offline report of `rows` (as f32, the model's input type) against the reference CSV.
fn offline_report(rows: &[Vec<f64>]) -> Value {
    let reference_path = models_dir().join("breast_cancer/reference.csv");
    let reference = monitor::table::Table::from_csv_path(&reference_path).unwrap();
    let mut csv = reference.names.join(",") + "\n";
    for row in rows {
        let cells: Vec<String> = row.iter().map(|&v| format!("{}", f64::from(v as f32))).collect();
        csv.push_str(&(cells.join(",") + "\n"));
    }
    let current = monitor::table::Table::from_csv_reader(csv.as_bytes(), Path::new("window.csv")).unwrap();
    let report = monitor::drift::report(&reference, &current, &monitor::drift::Options::default()).unwrap();
    serde_json::to_value(report).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_reference_data_is_not_monitored() {
    let server = TestServer::start().await;
    let reply = server.get("/api/v1/monitor/breast_cancer").await;
    reply.assert_error(StatusCode::FORBIDDEN, &["monitoring of this model", "spec.reference_data"]);
    let reply = server.get("/api/v1/monitor/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_posted_later_join_predictions_by_request_id_into_quality() {
    let remote = GitRemote::with_breast_cancer();
    set_monitoring(
        &remote,
        "  monitoring:\n    window_size: 100\n    min_samples: 10\n    quality: {task: binary_classification, \
         output: probabilities, index: 1}\n",
    );
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;
    // Twenty predictions, each with an id; the model's own decision is the "truth" for 15 and wrong for 5.
    let mut labels = Vec::new();
    for (i, row) in reference_rows().iter().take(20).enumerate() {
        let data: Vec<f32> = row.iter().map(|&v| v as f32).collect();
        let body = json!({"id": format!("req-{i}"), "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": data}]});
        let reply = server.post_json("/v2/models/breast_cancer/infer", &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let positive = reply.body["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap()
            ["data"][1]
            .as_f64()
            .unwrap()
            >= 0.5;
        let truth = if i < 15 { positive } else { !positive };
        labels.push(json!({"id": format!("req-{i}"), "label": truth}));
    }
    report_after(&server, 20).await;
    labels.push(json!({"id": "never-seen", "label": 1}));
    let reply = server.post_json("/api/v1/feedback", &json!({"model": "breast_cancer", "labels": labels})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, json!({"joined": 20, "unknown": ["never-seen"]}));

    let view = server.get("/api/v1/monitor/breast_cancer").await.body;
    let quality = &view["quality"][0];
    assert_eq!((quality["predictions"].as_u64(), quality["labelled"].as_u64()), (Some(20), Some(20)));
    assert_eq!(quality["label_coverage"], 1.0);
    assert_eq!(quality["classification"]["accuracy"], 0.75, "{quality}");
    let metrics = server.get("/metrics").await.body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"vane_model_quality{model="breast_cancer",version="2",metric="accuracy"} 0.75"#),
        "{metrics}"
    );

    let reply = server.post_json("/api/v1/feedback", &json!({"model": "breast_cancer", "id": "x"})).await;
    reply.assert_error(StatusCode::BAD_REQUEST, &["\"id\" and \"label\" go together"]);
    let reply = server.post_json("/api/v1/feedback", &json!({"model": "nope", "id": "x", "label": 1})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_stops_being_served_leaves_the_metrics() {
    let remote = GitRemote::with_breast_cancer();
    set_monitoring(&remote, "  monitoring:\n    window_size: 190\n    min_samples: 100\n");
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;
    predict(&server, &reference_rows()[..100]).await;
    report_after(&server, 100).await;
    let series = [
        r#"vane_monitor_window_rows{model="breast_cancer",version="2"}"#,
        r#"vane_feature_drift{model="breast_cancer",version="2",feature="mean_radius",statistic="psi"}"#,
        r#"vane_feature_drifted{model="breast_cancer",version="2",feature="mean_radius"}"#,
    ];
    let metrics = server.get("/metrics").await.body.as_str().unwrap().to_owned();
    for s in series {
        assert!(metrics.contains(s), "{s} is exported while version 2 is served");
    }

    // A commit that serves version 1 only: version 2's window and every series of it go.
    let manifest = remote.manifest();
    let (start, end) = (manifest.find("    - version: 2").unwrap(), manifest.find("    - version: 1").unwrap());
    remote.write("deploy/breast-cancer.yaml", format!("{}{}", &manifest[..start], &manifest[end..]).as_bytes());
    remote.push("serve version 1 only");
    server.push_webhook().await;
    let mut events = server.server.monitor_evaluations();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        events.borrow_and_update();
        let metrics = server.get("/metrics").await.body.as_str().unwrap().to_owned();
        if !metrics.contains(r#"version="2""#) {
            break;
        }
        let waited = tokio::time::timeout_at(deadline, events.changed()).await;
        waited.unwrap_or_else(|_| panic!("version 2's series are still exported:\n{metrics}")).unwrap();
    }
    assert_eq!(server.get("/api/v1/monitor/breast_cancer").await.body["versions"], json!([]));
    server.stop().await;
}

/// A model directory opts in with a `monitoring:` block in the model's config.yaml; the reference data is the
/// folder's reference.csv. Without it no profile is built (a folder's reference.csv alone does not monitor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_directory_is_monitored_when_its_config_asks() {
    let dir = crate::support::model_repo(&[
        ("breast_cancer", "max_batch_size: 64\nmonitoring:\n  window_size: 150\n  min_samples: 100\n"),
        ("digits", ""),
    ]);
    std::fs::copy(models_dir().join("breast_cancer/reference.csv"), dir.path().join("breast_cancer/reference.csv"))
        .unwrap();
    std::fs::copy(models_dir().join("digits/reference.csv"), dir.path().join("digits/reference.csv")).unwrap();
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    predict(&server, &reference_rows()[..150]).await;
    let view = report_after(&server, 150).await;
    let report = &view["versions"][0];
    assert_eq!(report["window_rows"], 150);
    assert_eq!(report["data_sha256"], crate::support::sha256_of(&models_dir().join("breast_cancer/reference.csv")));
    assert_eq!(report["dataset_drift"]["number_of_columns"], 30);
    let digits = server.get("/api/v1/monitor/digits").await;
    digits.assert_error(StatusCode::FORBIDDEN, &["a monitoring block in its config.yaml"]);

    // A monitoring block without reference data beside it is refused at start, naming the file it wants.
    let bad = crate::support::model_repo(&[("breast_cancer", "monitoring:\n  window_size: 10\n")]);
    let mut config = gateway::ServeConfig::new("127.0.0.1:0".parse().unwrap(), bad.path().to_path_buf());
    config.monitor_interval = Duration::from_millis(200);
    let error = gateway::start(config).await.err().expect("refused").to_string();
    assert!(
        error.contains("monitoring needs the reference data beside it: reference.csv or reference.parquet"),
        "{error}"
    );
    server.stop().await;
}
