//! Drift alerts end to end: shifted traffic makes the monitor fire `VaneDatasetDrift`, which reaches a real
//! Alertmanager (Debian's `prometheus-alertmanager`, installed when missing) through its v2 API, and from there a
//! webhook receiver in the test; the same alert reaches a generic JSON webhook directly, and `/api/v1/alerts` lists
//! it. Traffic back like the reference resolves it, and the resolution is delivered too.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::monitor::{firing_at_once_deployment, predict, reference_rows, report_after, shifted};
use crate::support::{ensure_debian_package, KillOnDrop, TestServer};

/// An HTTP server on loopback that answers 200 and hands every (path, JSON body) to the test.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let _ = tx.send((path, json));
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, rx)
}

/// Alertmanager on a free loopback port, routing everything to `webhook` at once; returns it and its URL.
fn alertmanager(webhook: &str, dir: &std::path::Path) -> (KillOnDrop, String) {
    let binary = ensure_debian_package("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager");
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, model]\n  group_wait: 0s\n  group_interval: 1s\n  \
             repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {webhook}\n        \
             send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stderr(Stdio::piped())
        .spawn()
        .expect("alertmanager starts");
    // Readiness: Alertmanager logs "Listening on" once its HTTP server is bound.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "alertmanager exited:\n{log}");
        log.push_str(&line);
        if line.contains("Listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    (KillOnDrop(child), format!("http://127.0.0.1:{port}"))
}

/// What the receiver got, by path: the two senders race, so a message for the other path is kept, not dropped.
struct Deliveries {
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    early: Vec<(String, Value)>,
}

impl Deliveries {
    /// The next message on `path`, waiting at most 30 s.
    async fn next_on(&mut self, path: &str) -> Value {
        if let Some(i) = self.early.iter().position(|(p, _)| p == path) {
            return self.early.remove(i).1;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (got, body) =
                tokio::time::timeout_at(deadline, self.rx.recv()).await.expect("delivered in time").unwrap();
            if got == path {
                return body;
            }
            self.early.push((got, body));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_drift_fires_through_alertmanager_and_a_webhook_then_resolves() {
    let scratch = tempfile::tempdir().unwrap();
    let (receiver_addr, rx) = receiver().await;
    let mut deliveries = Deliveries { rx, early: Vec::new() };
    let (_alertmanager, alertmanager_url) =
        tokio::task::block_in_place(|| alertmanager(&format!("http://{receiver_addr}/alertmanager"), scratch.path()));

    let (remote, _data, gitops) = firing_at_once_deployment();
    let (am, hook) = (alertmanager_url.clone(), format!("http://{receiver_addr}/direct"));
    let server = TestServer::start_with(move |config| {
        config.gitops = Some(gitops);
        config.alerting.alertmanagers = vec![am];
        config.alerting.webhooks = vec![hook];
        config.external_url = Some("http://vane.example:8080".into());
    })
    .await;
    server.until(|s| s.syncs >= 1).await;

    let sample: Vec<Vec<f64>> = reference_rows().into_iter().step_by(3).collect();
    predict(&server, &shifted(&sample)).await;
    report_after(&server, 190).await;

    let direct = deliveries.next_on("/direct").await;
    let text = direct["text"].as_str().unwrap();
    assert!(text.starts_with("[FIRING] breast_cancer v2 (commit "), "{text}");
    assert!(text.contains("of features drifted over the last 190 predictions (threshold 30%): mean_radius"), "{text}");
    assert!(text.ends_with("http://vane.example:8080/dashboard#breast_cancer-v2-drift"), "{text}");
    assert_eq!(direct["alerts"][0]["state"], "firing");

    let routed = deliveries.next_on("/alertmanager").await;
    assert_eq!(routed["status"], "firing", "{routed}");
    let alert = &routed["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "VaneDatasetDrift");
    assert_eq!(alert["labels"]["model"], "breast_cancer");
    assert_eq!(alert["labels"]["version"], "2");
    assert_eq!(alert["labels"]["severity"], "page");
    assert!(alert["annotations"]["description"]
        .as_str()
        .unwrap()
        .starts_with("dataset_drift_share vs threshold 0.3: dataset="));
    assert_eq!(alert["annotations"]["commit"], remote.git(&["rev-parse", "HEAD"]).as_str());
    // What changed, since when, which model bytes and which reference, and the dashboard section that shows it.
    let model_sha256 = crate::support::sha256_of(&remote.work.path().join("models/breast_cancer/2/model.onnx"));
    assert_eq!(alert["annotations"]["model_sha256"], model_sha256.as_str(), "{alert}");
    assert_eq!(alert["annotations"]["reference_sha256"].as_str().map(str::len), Some(64), "{alert}");
    assert!(alert["annotations"]["since"].as_str().unwrap().ends_with('Z'), "{alert}");
    assert_eq!(alert["annotations"]["windows"], "1", "{alert}");
    assert_eq!(alert["annotations"]["dashboard"], "http://vane.example:8080/dashboard#breast_cancer-v2-drift");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("; since 20") && summary.contains(&format!("model sha256:{}", &model_sha256[..12])),
        "{summary}"
    );

    let listed = server.get("/api/v1/alerts").await.body;
    assert_eq!(listed["alerts"][0]["state"], "firing", "{listed}");
    assert_eq!(listed["alerts"][0]["severity"], "page");

    // Traffic like the reference again: the window clears, the alert resolves, and both receivers hear of it.
    predict(&server, &sample).await;
    report_after(&server, 380).await;
    let direct = deliveries.next_on("/direct").await;
    assert!(direct["text"].as_str().unwrap().starts_with("[RESOLVED] breast_cancer v2"), "{direct}");
    let routed = deliveries.next_on("/alertmanager").await;
    assert_eq!(routed["status"], "resolved", "{routed}");
    let listed = server.get("/api/v1/alerts").await.body;
    assert_eq!(listed["alerts"][0]["state"], "resolved");
    let metrics = server.get("/metrics").await.body;
    assert!(metrics.as_str().unwrap().contains("vane_alert_delivery_failures_total 0"), "{metrics}");
    server.stop().await;
}

/// The second edition's alerts through a real Alertmanager: the q02 quality case replayed (its labels never sent)
/// pages `VaneEstimatedQualityDrop` and opens a `VaneMultivariateDrift` ticket, each with the model's and the
/// reference's sha256, since when, and the dashboard section that shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimated_quality_and_multivariate_alerts_reach_alertmanager_with_their_details() {
    use crate::live_quality_cases::{manifest, INPUTS};
    let scratch = tempfile::tempdir().unwrap();
    let (receiver_addr, rx) = receiver().await;
    let mut deliveries = Deliveries { rx, early: Vec::new() };
    let (_alertmanager, alertmanager_url) =
        tokio::task::block_in_place(|| alertmanager(&format!("http://{receiver_addr}/alertmanager"), scratch.path()));

    let case = crate::drift_compare::quality_cases()
        .into_iter()
        .find(|c| c.ends_with("q02_covariate_shift_miscalibrated"))
        .unwrap();
    let name = "q02_covariate_shift_miscalibrated";
    let expected = crate::drift_compare::expected(&case);
    let (header, rows) = crate::live_drift_cases::read_csv(&case.join("current.csv"));
    let remote = crate::support::GitRemote::new();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/quality-models/pass_through.onnx");
    remote.write("models/pass_through.onnx", &std::fs::read(&model).unwrap());
    remote.write(&format!("data/{name}/reference.csv"), &std::fs::read(case.join("reference.csv")).unwrap());
    remote.write(&format!("deploy/{name}.yaml"), manifest(name, &expected, remote.work.path(), rows.len()).as_bytes());
    remote.push("q02, monitored");
    let data = tempfile::tempdir().unwrap();
    let gitops =
        crate::gitops::gitops_config(remote.bare.path().display().to_string(), &data, Duration::from_secs(3600));
    let am = alertmanager_url.clone();
    let server = TestServer::start_with(move |config| {
        config.gitops = Some(gitops);
        config.alerting.alertmanagers = vec![am];
        config.external_url = Some("http://vane.example:8080".into());
    })
    .await;
    server.until(|s| s.syncs >= 1).await;

    let keep: Vec<usize> = INPUTS.iter().map(|c| header.iter().position(|h| h == c).unwrap()).collect();
    let inputs: Vec<String> = keep.iter().map(|&i| header[i].clone()).collect();
    let cells: Vec<Vec<String>> = rows.iter().map(|r| keep.iter().map(|&i| r[i].clone()).collect()).collect();
    let kinds = serde_json::json!({"cat": {"kind": "categorical"}, "region": {"kind": "categorical"}});
    crate::live_drift_cases::replay(&server, name, &inputs, &kinds, &cells).await;
    crate::monitor::report_of(&server, name, rows.len() as u64).await;

    // Alertmanager groups by alert name: one notification each, in either order.
    let mut by_name = std::collections::BTreeMap::new();
    while by_name.len() < 2 {
        let routed = deliveries.next_on("/alertmanager").await;
        for alert in routed["alerts"].as_array().unwrap() {
            by_name.insert(alert["labels"]["alertname"].as_str().unwrap().to_owned(), alert.clone());
        }
    }
    let model_sha256 = crate::support::sha256_of(&model);
    let reference_sha256 = crate::support::sha256_of(&case.join("reference.csv"));
    for (alertname, severity, section) in
        [("VaneEstimatedQualityDrop", "page", "quality"), ("VaneMultivariateDrift", "ticket", "multivariate")]
    {
        let alert = by_name.get(alertname).unwrap_or_else(|| panic!("{alertname} reached Alertmanager: {by_name:?}"));
        assert_eq!((alert["status"].as_str(), alert["labels"]["severity"].as_str()), (Some("firing"), Some(severity)));
        let annotations = &alert["annotations"];
        assert_eq!(annotations["model_sha256"], model_sha256.as_str(), "{alert}");
        assert_eq!(annotations["reference_sha256"], reference_sha256.as_str(), "{alert}");
        assert_eq!(annotations["commit"], remote.git(&["rev-parse", "HEAD"]).as_str(), "{alert}");
        assert!(annotations["since"].as_str().is_some_and(|s| s.ends_with('Z')), "{alert}");
        assert_eq!(
            annotations["dashboard"],
            format!("http://vane.example:8080/dashboard#{name}-v1-{section}").as_str()
        );
    }
    // The alert fires at the first evaluation past the floor, which may come while the rows are still arriving (the
    // monitor evaluates every 5 s): its summary holds that window's estimate. The full window's value is held to
    // NannyML's in live_quality_cases.rs.
    let estimated = by_name["VaneEstimatedQualityDrop"]["annotations"]["summary"].as_str().unwrap().to_owned();
    let value = estimated
        .split("accuracy estimated at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("the estimate is in the summary: {estimated}"));
    assert!(value < 0.72 && estimated.contains("from the scores alone, below 0.72 over the last "), "{estimated}");
    assert!(estimated.contains(&format!("model sha256:{}", &model_sha256[..12])), "{estimated}");
    server.stop().await;
}
