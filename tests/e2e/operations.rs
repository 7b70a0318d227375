//! Operations: Vane's `/metrics` as Prometheus reads it (`promtool check metrics`, and a real Prometheus from
//! Debian scraping a test instance, queried through its HTTP API), the shipped rules (`promtool check rules`,
//! `promtool test rules`) and Alertmanager route (`amtool check-config`), the Grafana dashboard's queries (every
//! metric they use is exported), and the Dockerfile and Kubernetes manifests (they parse, their probes answer 200,
//! their settings exist, the files they copy exist).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::support::{breast_cancer_row, ensure_debian_package, TestServer};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// A server with gRPC on, after traffic of every outcome the request series count.
async fn server_with_traffic() -> TestServer {
    let server = TestServer::start_with(|c| c.grpc_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    for _ in 0..20 {
        assert_eq!(
            server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await.status,
            StatusCode::OK
        );
    }
    let bad = json!({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]});
    assert_eq!(server.post_json("/v2/models/breast_cancer/infer", &bad).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.post_json("/v2/models/nope/infer", &bad).await.status, StatusCode::NOT_FOUND);
    server
}

async fn metrics_text(server: &TestServer) -> String {
    server.get("/metrics").await.body.as_str().expect("text").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_series_count_outcomes_and_promtool_accepts_the_output() {
    let server = server_with_traffic().await;
    let text = metrics_text(&server).await;
    for series in [
        r#"vane_requests_total{model="breast_cancer",version="2",protocol="http",outcome="success"} 20"#,
        r#"vane_requests_total{model="breast_cancer",version="2",protocol="http",outcome="client_error"} 1"#,
        r#"vane_requests_total{model="",version="",protocol="http",outcome="client_error"} 1"#,
        r#"vane_request_duration_seconds_count{model="breast_cancer",version="2",protocol="http"} 21"#,
        r#"vane_queue_duration_seconds_count{model="breast_cancer",version="2"} 20"#,
        r#"vane_batch_rows_bucket{model="breast_cancer",version="2",le="1"} 20"#,
        r#"vane_queue_capacity{model="breast_cancer",version="2"} 64"#,
        r#"vane_queue_depth{model="breast_cancer",version="2"} 0"#,
        "vane_models_loaded 5",
    ] {
        assert!(text.contains(series), "{series} in:\n{text}");
    }
    let info =
        text.lines().find(|l| l.starts_with(r#"vane_model_info{model="breast_cancer",version="2""#)).expect("info");
    // A model directory's fingerprint is the file's size and mtime (GitOps mode: sha256:<hex>, tested in gitops.rs).
    assert!(info.contains(r#"commit="",digest="size="#), "{info}");

    let promtool = ensure_debian_package("/usr/bin/promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_vane_and_its_p99_is_sane() {
    let server = server_with_traffic().await;
    let (_prometheus, port, _dir) =
        crate::support::prometheus(&root().join("configs/prometheus/vane-rules.yaml"), &[server.addr()]).await;

    // Keep traffic flowing while Prometheus scrapes, so rates over the last seconds are defined.
    let client = server.client_only();
    let traffic = tokio::spawn(async move {
        loop {
            client.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await;
        }
    });
    let query = |q: &'static str| {
        let url = format!("http://127.0.0.1:{port}/api/v1/query?query={}", urlencode(q));
        async move {
            let text =
                tokio::task::spawn_blocking(move || run(Command::new("curl").args(["-s", "--max-time", "5", &url])))
                    .await
                    .unwrap();
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
        }
    };
    // Each of Prometheus's scrapes of Vane wakes the test, which then asks for the quantile; bounded by 60 s.
    let mut scrapes = server.server.metrics_scrapes();
    let p99 = "histogram_quantile(0.99, sum by (le) (rate(vane_request_duration_seconds_bucket{model=\"breast_cancer\"}[5s])))";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let value = loop {
        let answer = query(p99).await;
        let value = answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| v.is_finite()) {
            break v;
        }
        let waited = tokio::time::timeout_at(deadline, scrapes.changed()).await;
        waited.unwrap_or_else(|_| panic!("no p99 from Prometheus in time: {answer}")).unwrap();
    };
    traffic.abort();
    // Loopback batch-1 requests to a 30-feature model: well under a second, and above the first bucket's 0.1 ms
    // only in its tail; the quantile interpolates within the buckets, so the bound is the bucket range.
    assert!(value > 0.0 && value <= 0.25, "p99 {value} s");
    let up = query("up{job=\"vane\"}").await;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let info = query("count(vane_model_info)").await;
    assert_eq!(info["data"]["result"][0]["value"][1], "5", "one info series per served version: {info}");
    let rules = tokio::task::spawn_blocking(move || {
        run(Command::new("curl").args(["-s", "--max-time", "5", &format!("http://127.0.0.1:{port}/api/v1/rules")]))
    })
    .await
    .unwrap();
    let rules: Value = serde_json::from_str(&rules).unwrap();
    assert_eq!(rules["data"]["groups"][0]["rules"].as_array().map(Vec::len), Some(7), "the shipped rules load");
    server.stop().await;
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[test]
fn the_shipped_rules_pass_promtool_and_the_alertmanager_route_passes_amtool() {
    let promtool = ensure_debian_package("/usr/bin/promtool", "prometheus");
    let dir = root().join("configs/prometheus");
    let checked = run(Command::new(&promtool).args(["check", "rules", "vane-rules.yaml"]).current_dir(&dir));
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = run(Command::new(&promtool).args(["test", "rules", "vane-rules.test.yaml"]).current_dir(&dir));
    assert!(tested.contains("SUCCESS"), "{tested}");
    // The fleet's recording rules and their alert (tests/e2e/fleet.rs runs them on a real Prometheus too).
    let checked = run(Command::new(&promtool).args(["check", "rules", "vane-fleet-rules.yaml"]).current_dir(&dir));
    assert!(checked.contains("SUCCESS: 18 rules found"), "{checked}");
    let tested = run(Command::new(&promtool).args(["test", "rules", "vane-fleet-rules.test.yaml"]).current_dir(&dir));
    assert!(tested.contains("SUCCESS"), "{tested}");
    let amtool = ensure_debian_package("/usr/bin/amtool", "prometheus-alertmanager");
    let checked =
        run(Command::new(amtool).arg("check-config").arg(root().join("configs/alertmanager/alertmanager.yml")));
    assert!(checked.contains("SUCCESS"), "{checked}");
}

/// Metric names in a PromQL expression (identifiers starting with `vane_`), without histogram suffixes.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("vane_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        names.push(base.to_owned());
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_rules_use_only_exported_metrics() {
    // GitOps and monitoring series appear only in those modes; their names are in the code that registers them.
    let server = server_with_traffic().await;
    let text = metrics_text(&server).await;
    let exported: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    // Registered in every mode, but printed only once they have a series: the Git sync's (GitOps mode) and the
    // monitor's (once a monitored version reports); tests/e2e/monitor.rs and gitops.rs read them from /metrics.
    let registered_elsewhere = [
        "vane_sync_total",
        "vane_last_successful_sync_timestamp_seconds",
        "vane_dataset_drift_share",
        "vane_feature_drift",
        "vane_model_quality",
        "vane_drift_alerts_firing",
        "vane_feature_window_values",
        "vane_feature_reference_values",
        "vane_estimated_quality",
        "vane_multivariate_drift",
        "vane_data_quality",
    ];
    let known = |name: &str| exported.contains(&name) || registered_elsewhere.contains(&name);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("configs/grafana/vane-dashboard.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_owned()))
        .collect();
    let rules: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join("configs/prometheus/vane-rules.yaml")).unwrap())
            .unwrap();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        exprs.push(rule["expr"].as_str().unwrap().to_owned());
    }
    let fleet: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("configs/prometheus/vane-fleet-rules.yaml")).unwrap(),
    )
    .unwrap();
    for rule in fleet["groups"][0]["rules"].as_array().unwrap() {
        exprs.push(rule["expr"].as_str().unwrap().to_owned());
    }
    let mut checked = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(known(&name), "{name} (in {expr}) is not exported; exported: {exported:?}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} metric references checked");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_manifests_parse_and_their_probes_and_settings_are_real() {
    let text = std::fs::read_to_string(root().join("configs/k8s/vane.yaml")).unwrap();
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let kinds: Vec<&str> = documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Deployment", "Service", "Service", "ServiceMonitor", "HorizontalPodAutoscaler"]);
    let container = &documents[0]["spec"]["template"]["spec"]["containers"][0];
    // The rollout peers are the headless Service, which selects the pods and is not scraped a second time.
    let peers = &documents[2];
    let value =
        |name: &str| container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["value"].clone();
    let port = peers["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert_eq!(value("VANE_ROLLOUT_PEERS"), format!("http://{}:{port}", peers["metadata"]["name"].as_str().unwrap()));
    assert_eq!(
        (peers["spec"]["clusterIP"].as_str(), &peers["spec"]["selector"]),
        (Some("None"), &documents[1]["spec"]["selector"])
    );
    let scraped = &documents[3]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"];
    assert_ne!(&peers["metadata"]["labels"]["app.kubernetes.io/name"], scraped);
    let server = TestServer::start().await;
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert_eq!(server.get(path).await.status, StatusCode::OK, "{probe} {path}");
    }
    let settings = std::fs::read_to_string(root().join("configs/serve.env")).unwrap();
    for env in container["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        assert!(settings.contains(&format!("{name}=")), "{name} is not a setting in configs/serve.env");
    }
    // The HPA's metric and the ServiceMonitor's path are real.
    assert_eq!(documents[4]["spec"]["metrics"][0]["pods"]["metric"]["name"], "vane_queue_depth");
    assert!(metrics_text(&server).await.contains("# TYPE vane_queue_depth gauge"));
    assert_eq!(documents[3]["spec"]["endpoints"][0]["path"], "/metrics");
    // The Dockerfile copies only what exists.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(root().join(source).exists(), "Dockerfile copies {source}, which does not exist");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_request_metrics_off_nothing_is_recorded_but_the_served_set_is_still_read() {
    let server = TestServer::start_with(|c| c.request_metrics = false).await;
    assert_eq!(server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await.status, StatusCode::OK);
    let text = metrics_text(&server).await;
    assert!(!text.contains("vane_requests_total{"), "no request series: {text}");
    assert!(!text.contains("vane_queue_duration_seconds_count{"), "no queue series: {text}");
    assert!(text.contains(r#"vane_queue_depth{model="breast_cancer",version="2"} 0"#), "{text}");
    server.stop().await;
}
