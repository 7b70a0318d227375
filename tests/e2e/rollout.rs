//! Progressive delivery: a deployment manifest's `rollout` block against real ONNX candidates (made by
//! `models/make_rollout_models.py`: `wrong`, `failing`, `slow`), real Git repositories and real traffic on loopback.
//! Decisions are awaited through the rollout's event channel, never by sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::rollout::{Phase, Rollout};
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::gitops::{gitops_config, serve};
use crate::support::{models_dir, sha256_of, GitRemote, TestClient, TestServer};

const MODEL: &str = "breast_cancer";

/// The reference rows of breast_cancer, as requests' inputs.
fn rows() -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(models_dir().join("breast_cancer/reference.csv")).unwrap();
    text.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect()
}

fn body(row: &[f64], id: &str) -> Value {
    json!({"id": id, "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}]})
}

/// The candidate file for version 3: a committed model version, or one of the rollout candidates.
fn candidate_path(candidate: &str) -> std::path::PathBuf {
    match candidate {
        "v1" => models_dir().join("breast_cancer/1/model.onnx"),
        "v2" => models_dir().join("breast_cancer/2/model.onnx"),
        other => models_dir().join("../tests/e2e/rollout-models").join(format!("{other}.onnx")),
    }
}

/// Writes breast_cancer versions 2 (stable) and 3 (`candidate`) with `rollout` (YAML, indented under `spec`) and the
/// monitor's quality block, into `remote`.
fn write_rollout(remote: &GitRemote, candidate: &str, rollout: &str) {
    write_rollout_batched(remote, candidate, rollout, 16);
}

/// [`write_rollout`] with `max_batch_size` set (1: every request runs alone, so its answer does not depend on the
/// rows it was batched with).
fn write_rollout_batched(remote: &GitRemote, candidate: &str, rollout: &str, batch: usize) {
    let v2 = models_dir().join("breast_cancer/2/model.onnx");
    let v3 = candidate_path(candidate);
    let reference = models_dir().join("breast_cancer/reference.csv");
    remote.write("models/breast_cancer/2/model.onnx", &std::fs::read(&v2).unwrap());
    remote.write("models/breast_cancer/3/model.onnx", &std::fs::read(&v3).unwrap());
    remote.write("models/breast_cancer/reference.csv", &std::fs::read(&reference).unwrap());
    let manifest = format!(
        "apiVersion: vane.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {MODEL}}}
spec:
  versions:
    - {{version: 2, model: {{path: models/breast_cancer/2/model.onnx, sha256: {}}}}}
    - {{version: 3, model: {{path: models/breast_cancer/3/model.onnx, sha256: {}}}}}
  reference_data: {{path: models/breast_cancer/reference.csv, sha256: {}}}
  serving: {{max_batch_size: {batch}, max_queue_delay: 200us}}
  monitoring:
    sample_rate: 1.0
    quality: {{task: binary_classification, output: probabilities, index: 1, threshold: 0.5, window: 1000}}
  rollout:
{rollout}",
        sha256_of(&v2),
        sha256_of(&v3),
        sha256_of(&reference),
    );
    remote.write("deploy/breast-cancer.yaml", manifest.as_bytes());
}

fn repo(candidate: &str, rollout: &str) -> GitRemote {
    let remote = GitRemote::new();
    write_rollout(&remote, candidate, rollout);
    remote.push("rollout");
    remote
}

fn url(remote: &GitRemote) -> String {
    format!("file://{}", remote.bare.path().display())
}

/// A GitOps server on a repository holding `candidate` and `rollout`, synced.
async fn started(candidate: &str, rollout: &str) -> (GitRemote, tempfile::TempDir, TestServer) {
    started_with(candidate, rollout, |_| {}).await
}

/// [`started`] with the server's settings changed by `tweak`.
async fn started_with(
    candidate: &str,
    rollout: &str,
    tweak: impl FnOnce(&mut gateway::ServeConfig),
) -> (GitRemote, tempfile::TempDir, TestServer) {
    let remote = repo(candidate, rollout);
    let data = tempfile::tempdir().unwrap();
    let config = gitops_config(url(&remote), &data, Duration::from_secs(3600));
    let server = TestServer::start_with(move |c| {
        c.gitops = Some(config);
        tweak(c);
    })
    .await;
    server.until(|s| s.syncs >= 1).await;
    (remote, data, server)
}

/// A breast_cancer request for `row` with the rollout key header `x-user-id: key`.
fn keyed(client: &TestClient, key: &str, row: &[f64]) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    hyper::Request::post(format!("{}/v2/models/{MODEL}/infer", client.base()))
        .header("x-user-id", key)
        .body(http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(&body(row, "keyed")).unwrap())))
        .unwrap()
}

/// Sends the first `n` reference rows one after another, with ids `{prefix}{i}`.
async fn send_rows(client: &TestClient, n: usize, prefix: &str) {
    for (i, row) in rows().iter().take(n).enumerate() {
        client.post_json(&format!("/v2/models/{MODEL}/infer"), &body(row, &format!("{prefix}{i}"))).await;
    }
}

/// The rollout of breast_cancer in the served set.
fn rollout(server: &TestServer) -> Arc<Rollout> {
    Arc::clone(server.server.registry().snapshot().rollout(MODEL).expect("breast_cancer has a rollout"))
}

/// Waits (at most `limit`) until the current rollout satisfies `done`; returns the time it took.
async fn wait_rollout(server: &TestServer, limit: Duration, done: impl Fn(&Rollout) -> bool) -> Duration {
    let started = Instant::now();
    let mut generations = server.server.registry().generations();
    loop {
        let current = rollout(server);
        let mut events = current.events();
        if done(&current) {
            return started.elapsed();
        }
        let remaining = limit.checked_sub(started.elapsed()).unwrap_or_else(|| {
            panic!("rollout not there in {limit:?}: {}", serde_json::to_string_pretty(&current.report()).unwrap())
        });
        // Woken by the next evaluation or decision, or by a new table; the limit only bounds the wait.
        let next = async {
            tokio::select! {
                _ = events.changed() => {}
                _ = generations.changed() => {}
            }
        };
        let _ = tokio::time::timeout(remaining, next).await;
    }
}

/// What the load saw: replies by status and variant.
#[derive(Default, Debug)]
struct Seen {
    ok: u64,
    failed: Vec<(StatusCode, Option<String>, String)>,
    by_variant: std::collections::BTreeMap<String, u64>,
    /// (variant, outputs) of each successful answer, when kept.
    answers: Vec<(usize, String, Value)>,
}

/// Sends requests from `clients` concurrent loops over the reference rows until `stop` is set; keeps the answers
/// when `keep` is set.
fn load(
    client: &TestClient,
    clients: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    keep: bool,
) -> tokio::task::JoinHandle<Seen> {
    let client = client.clone();
    tokio::spawn(async move {
        let rows = Arc::new(rows());
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (client, rows, counter, stop) =
                (client.clone(), Arc::clone(&rows), Arc::clone(&counter), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut seen = Seen::default();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let row = n % rows.len();
                    let reply = client
                        .post_json(&format!("/v2/models/{MODEL}/infer"), &body(&rows[row], &format!("r{n}")))
                        .await;
                    let variant = reply.headers.get("vane-variant").map(|v| v.to_str().unwrap().to_owned());
                    *seen.by_variant.entry(variant.clone().unwrap_or_default()).or_default() += 1;
                    if reply.status == StatusCode::OK {
                        seen.ok += 1;
                        if keep {
                            seen.answers.push((row, variant.unwrap_or_default(), reply.body["outputs"].clone()));
                        }
                    } else {
                        seen.failed.push((reply.status, variant, reply.body.to_string()));
                    }
                }
                seen
            }));
        }
        let mut all = Seen::default();
        for task in tasks {
            let seen = task.await.unwrap();
            all.ok += seen.ok;
            all.failed.extend(seen.failed);
            all.answers.extend(seen.answers);
            for (k, v) in seen.by_variant {
                *all.by_variant.entry(k).or_default() += v;
            }
        }
        all
    })
}

fn stopper() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}

const FAST_ANALYSIS: &str = "    analysis: {interval: 100ms, min_samples: 20, failure_limit: 2}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_is_promoted_step_by_step_and_no_request_fails() {
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: canary\n    key: x-user-id\n    grace_period: 1h\n    steps:\n      - {weight: 10, duration: 300ms, min_requests: 20}\n      - {weight: 50, duration: 300ms, min_requests: 20}\n      - {weight: 100, duration: 300ms, min_requests: 20}\n    analysis: {interval: 100ms, min_samples: 20, failure_limit: 2, checks: {error_rate_increase: 0.01, agreement: 0.99}}\n";
    // The candidate is version 2's model itself: it agrees (the stable also runs the candidate's requests, in the
    // background, to compare) and never fails.
    let (_remote, _data, server) = started("v2", rollout_yaml).await;
    let stop = stopper();
    let traffic = load(&server, 4, Arc::clone(&stop), false);
    let took = wait_rollout(&server, Duration::from_secs(60), |r| r.plan().phase == Phase::Promoted).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = traffic.await.unwrap();
    assert!(
        seen.failed.is_empty(),
        "no request fails through the steps and the promotion: {:?}",
        &seen.failed[..seen.failed.len().min(5)]
    );
    assert!(
        seen.by_variant.get("candidate").copied().unwrap_or(0) > 0 && seen.by_variant["stable"] > 0,
        "{:?}",
        seen.by_variant
    );
    let report = rollout(&server).report();
    let actions: Vec<&str> = report.decisions.iter().map(|d| d.action).collect();
    assert_eq!(actions, ["step", "step", "promote"], "{report:#?}");
    eprintln!("healthy canary: push to promotion {took:?} under load ({} requests)", seen.ok);
    // Promoted: unversioned requests go to the candidate; a named version bypasses the split.
    let reply = server.post_json(&format!("/v2/models/{MODEL}/infer"), &body(&rows()[0], "after")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["vane-variant"], "candidate");
    assert_eq!(reply.body["model_version"], "3");
    let reply = server.post_json(&format!("/v2/models/{MODEL}/versions/2/infer"), &body(&rows()[0], "pinned")).await;
    assert_eq!(
        (reply.headers["vane-variant"].to_str().unwrap(), &reply.body["model_version"]),
        ("explicit", &json!("2"))
    );
    // The API and the metrics say the same.
    let listed = server.get("/api/v1/rollouts").await;
    assert_eq!(listed.body["rollouts"][0]["phase"], "promoted", "{}", listed.body);
    let metrics = server.get("/metrics").await;
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains(r#"vane_rollout_phase{model="breast_cancer",candidate="3",phase="promoted"} 1"#), "{text}");
    assert!(text.contains(r#"vane_rollout_decisions_total{model="breast_cancer",candidate="3",action="promote"} 1"#));
    // A late rollback within the grace period is instant: the old stable is still loaded.
    let reply = server.post_json(&format!("/api/v1/rollouts/{MODEL}/abort"), &json!({"reason": "late doubt"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = server.post_json(&format!("/v2/models/{MODEL}/infer"), &body(&rows()[0], "rolled")).await;
    assert_eq!(
        (reply.headers["vane-variant"].to_str().unwrap(), &reply.body["model_version"]),
        ("stable", &json!("2"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_canary_is_rolled_back_within_bounded_time_and_alerts() {
    let rollout_yaml = format!(
        "    stable: 2\n    candidate: 3\n    strategy: canary\n    steps:\n      - {{weight: 20, duration: 1h}}\n      - {{weight: 100, duration: 1h}}\n{FAST_ANALYSIS}"
    );
    let (remote, _data, server) = started("failing", &rollout_yaml).await;
    let stop = stopper();
    let traffic = load(&server, 4, Arc::clone(&stop), false);
    // From the candidate's first failure (counted by the analysis) to the rollback.
    wait_rollout(&server, Duration::from_secs(60), |r| r.report().totals.candidate.errors > 0).await;
    let took = wait_rollout(&server, Duration::from_secs(60), |r| r.plan().phase == Phase::RolledBack).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = traffic.await.unwrap();
    eprintln!("failing canary: first candidate error to rollback {took:?}");
    // interval 100 ms x failure_limit 2, with room for a debug build beside the rest of the suite on two cores (the
    // release figure is benches/rollout.rs's).
    assert!(took < Duration::from_secs(10), "rolled back in {took:?}");
    // Every failed request was the candidate's, and the stable never failed.
    assert!(!seen.failed.is_empty());
    assert!(
        seen.failed.iter().all(|(s, v, _)| s.is_server_error() && v.as_deref() == Some("candidate")),
        "{:?}",
        &seen.failed[..3.min(seen.failed.len())]
    );
    // After the rollback, everything is on the stable and succeeds.
    for (i, row) in rows().iter().take(40).enumerate() {
        let reply = server.post_json(&format!("/v2/models/{MODEL}/infer"), &body(row, &format!("after{i}"))).await;
        assert_eq!((reply.status, reply.headers["vane-variant"].to_str().unwrap()), (StatusCode::OK, "stable"));
    }
    let report = rollout(&server).report();
    let reason = report.reason.clone().unwrap();
    assert!(reason.contains("error_rate_increase"), "{reason}");
    // The status is Degraded and says why; the alert names the check and its value.
    let status = server.get("/api/v1/status").await;
    assert_eq!(status.body["conditions"]["degraded"], true, "{}", status.body);
    assert!(status.body["conditions"]["degraded_reason"].as_str().unwrap().contains("rolled back"), "{}", status.body);
    let alerts = server.get("/api/v1/alerts").await;
    let alert = &alerts.body["alerts"][0];
    assert_eq!(
        (alert["name"].as_str().unwrap(), alert["statistic"].as_str().unwrap()),
        ("VaneRolloutRolledBack", "error_rate_increase"),
        "{alert}"
    );
    assert!(alert["breaches"][0]["value"].as_f64().unwrap() > 0.1, "{alert}");
    // The branch head still names the candidate, and it is not retried: a sync of the same head keeps it rolled back.
    server.push_webhook().await;
    assert_eq!(rollout(&server).plan().phase, Phase::RolledBack);
    // A new commit starts a new rollout (analysis from zero).
    write_rollout(&remote, "v2", &rollout_yaml);
    let commit = remote.push("a good candidate");
    server.push_webhook().await;
    let fresh = rollout(&server);
    assert_eq!(
        (fresh.plan().phase, fresh.plan().step, fresh.revision.as_deref()),
        (Phase::Progressing, 0, Some(commit.as_str()))
    );
    assert_eq!(fresh.report().totals.candidate.requests, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shadow_answers_with_the_stable_bit_for_bit_and_rolls_back_a_disagreeing_candidate() {
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: shadow\n    steps:\n      - {weight: 100, duration: 1h}\n    analysis: {interval: 100ms, min_samples: 50, failure_limit: 2, checks: {agreement: 0.95, error_rate_increase: 0.01}}\n";
    // Unbatched, so an answer is a function of its row alone and can be compared bit for bit.
    let remote = GitRemote::new();
    write_rollout_batched(&remote, "wrong", rollout_yaml, 1);
    remote.push("shadow");
    let data = tempfile::tempdir().unwrap();
    let server = serve(url(&remote), &data).await;
    let stop = stopper();
    let traffic = load(&server, 4, Arc::clone(&stop), true);
    let took = wait_rollout(&server, Duration::from_secs(60), |r| r.plan().phase == Phase::RolledBack).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = traffic.await.unwrap();
    assert!(seen.failed.is_empty(), "{:?}", &seen.failed[..seen.failed.len().min(3)]);
    // Every answer is the stable's, bit for bit: the same JSON as version 2 named explicitly.
    let rows = rows();
    let mut expected = std::collections::HashMap::new();
    for (row, variant, outputs) in &seen.answers {
        assert_eq!(variant, "stable");
        if !expected.contains_key(row) {
            let reply =
                server.post_json(&format!("/v2/models/{MODEL}/versions/2/infer"), &body(&rows[*row], "x")).await;
            expected.insert(*row, reply.body["outputs"].clone());
        }
        assert_eq!(outputs, &expected[row], "row {row}");
    }
    let report = rollout(&server).report();
    assert!(report.step_counters.compared.rows >= 50, "{report:#?}");
    assert_eq!(report.step_counters.compared.agreed, 0, "the wrong candidate never agrees");
    assert!(report.reason.as_deref().unwrap().contains("agreement"), "{report:#?}");
    eprintln!(
        "shadow: wrong candidate rolled back {took:?} after the push, {} answers all the stable's",
        seen.answers.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slower_canary_is_rolled_back_on_latency() {
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: canary\n    steps:\n      - {weight: 30, duration: 1h}\n    analysis: {interval: 100ms, min_samples: 50, failure_limit: 2, checks: {latency_p99_ratio: 1.5}}\n";
    let (_remote, _data, server) = started("slow", rollout_yaml).await;
    let stop = stopper();
    let traffic = load(&server, 2, Arc::clone(&stop), false);
    wait_rollout(&server, Duration::from_secs(60), |r| r.plan().phase == Phase::RolledBack).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(traffic.await.unwrap().failed.is_empty());
    let report = rollout(&server).report();
    let check = report.decisions.last().unwrap().checks.iter().find(|c| c.name == "latency_p99_ratio").unwrap().clone();
    assert!(check.value.unwrap() > 1.5, "{check:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worse_quality_on_posted_labels_rolls_back_and_labels_join_per_variant() {
    // Only the quality check: the wrong candidate is as fast and as error-free as the stable.
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: canary\n    steps:\n      - {weight: 50, duration: 1h}\n    analysis: {interval: 100ms, min_samples: 30, failure_limit: 1, checks: {quality_drop: 0.1}}\n";
    let (_remote, _data, server) = started("wrong", rollout_yaml).await;
    // 160 predictions with ids; each one's label is what version 2 (named explicitly, with no id) says.
    const N: usize = 160;
    let mut labels = Vec::new();
    for (i, row) in rows().iter().cycle().take(N).enumerate() {
        let id = format!("q{i}");
        let reply = server.post_json(&format!("/v2/models/{MODEL}/infer"), &body(row, &id)).await;
        assert_eq!(reply.status, StatusCode::OK);
        let mut truth = body(row, "");
        truth.as_object_mut().unwrap().remove("id");
        let truth = server.post_json(&format!("/v2/models/{MODEL}/versions/2/infer"), &truth).await;
        labels.push(json!({"id": id, "label": truth.body["outputs"][0]["data"][0]}));
    }
    // The monitor records predictions on its own thread, draining its queue before each evaluation: the labels go
    // once every prediction is recorded (each evaluation wakes the check; the timeout only bounds a wait).
    let mut evaluations = server.server.monitor_evaluations();
    let started = Instant::now();
    loop {
        let monitor = server.get(&format!("/api/v1/monitor/{MODEL}")).await;
        let stored: u64 =
            monitor.body["quality"].as_array().unwrap().iter().map(|q| q["predictions"].as_u64().unwrap()).sum();
        if stored >= N as u64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{stored} of {N} predictions recorded: {}", monitor.body);
        let _ = tokio::time::timeout(Duration::from_secs(1), evaluations.changed()).await;
    }
    let fed = server.post_json("/api/v1/feedback", &json!({"model": MODEL, "labels": labels})).await;
    assert_eq!((fed.status, &fed.body["joined"]), (StatusCode::OK, &json!(N)), "{}", fed.body);
    wait_rollout(&server, Duration::from_secs(30), |r| r.plan().phase != Phase::Progressing).await;
    let report = rollout(&server).report();
    assert_eq!(report.phase, Phase::RolledBack, "{report:#?}");
    let check = report.decisions.last().unwrap().checks.iter().find(|c| c.name == "quality_drop").unwrap().clone();
    assert!(check.value.unwrap() > 0.5, "{check:?}");
    // Both variants have their own labelled predictions.
    let monitor = server.get(&format!("/api/v1/monitor/{MODEL}")).await;
    let quality = monitor.body["quality"].as_array().unwrap();
    let by_version = |v: u64| quality.iter().find(|q| q["version"] == v).unwrap_or_else(|| panic!("{quality:?}"));
    assert!(by_version(2)["labelled"].as_u64().unwrap() >= 30 && by_version(3)["labelled"].as_u64().unwrap() >= 30);
    assert_eq!(by_version(2)["classification"]["accuracy"], 1.0);
    assert_eq!(by_version(3)["classification"]["accuracy"], 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn low_traffic_waits_at_min_samples_and_neither_passes_nor_fails() {
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: canary\n    steps:\n      - {weight: 50, duration: 0s}\n    analysis: {interval: 100ms, min_samples: 1000, failure_limit: 1}\n";
    let (_remote, _data, server) = started("failing", rollout_yaml).await;
    send_rows(&server, 60, "l").await;
    // Ten evaluations after the traffic: still waiting.
    let current = rollout(&server);
    let mut events = current.events();
    for _ in 0..10 {
        tokio::time::timeout(Duration::from_secs(10), events.changed()).await.expect("the analysis runs").unwrap();
    }
    let report = current.report();
    assert_eq!((report.phase, report.failures, report.step), (Phase::Progressing, 0, 1), "{report:#?}");
    assert!(report.totals.candidate.errors > 0, "the failing candidate did fail: {report:#?}");
    assert!(report.checks.iter().all(|c| c.passed.is_none()), "every check waits: {:#?}", report.checks);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ab_split_is_within_a_binomial_bound_and_keys_stay_on_one_variant_across_two_replicas() {
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: ab\n    key: x-user-id\n    steps:\n      - {weight: 30, duration: 1h}\n    analysis: {interval: 1s, min_samples: 100000}\n";
    let remote = repo("v1", rollout_yaml);
    let (a_data, b_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve(url(&remote), &a_data).await;
    let b = serve(url(&remote), &b_data).await;
    const KEYS: usize = 5000;
    let row = rows()[0].clone();
    let mut candidate = 0usize;
    let mut tasks = Vec::new();
    for chunk in 0..4 {
        let (a, b, row) = (a.client_only(), b.client_only(), row.clone());
        tasks.push(tokio::spawn(async move {
            let mut on_candidate = 0;
            for k in (chunk..KEYS).step_by(4) {
                let key = format!("user-{k}");
                let mut seen = Vec::new();
                for client in [&a, &b] {
                    let reply = client.raw(keyed(client, &key, &row)).await;
                    assert_eq!(reply.status, StatusCode::OK);
                    seen.push(reply.headers["vane-variant"].to_str().unwrap().to_owned());
                }
                assert_eq!(seen[0], seen[1], "key {key} maps to one variant on both replicas");
                on_candidate += usize::from(seen[0] == "candidate");
            }
            on_candidate
        }));
    }
    for task in tasks {
        candidate += task.await.unwrap();
    }
    // Binomial(5000, 0.3): mean 1500, sd 32.4; four sd either side.
    let (mean, sd) = (KEYS as f64 * 0.3, (KEYS as f64 * 0.3 * 0.7).sqrt());
    assert!((candidate as f64 - mean).abs() < 4.0 * sd, "{candidate} of {KEYS} on the candidate at weight 30%");
    // The analysis counted exactly what was served.
    let counted = rollout(&a).report().totals;
    assert_eq!((counted.candidate.requests + counted.stable.requests) as usize, KEYS);
    assert_eq!(counted.candidate.requests as usize, candidate);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_answers_say_the_variant_and_carry_the_provenance() {
    use gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use gateway::grpc::proto::model_infer_request::InferInputTensor;
    use gateway::grpc::proto::{InferTensorContents, ModelInferRequest};
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: canary\n    key: x-user-id\n    steps:\n      - {weight: 50, duration: 1h}\n";
    let (remote, _data, server) =
        started_with("v1", rollout_yaml, |c| c.grpc_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.server.grpc_addr().unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GrpcInferenceServiceClient::new(channel);
    let row: Vec<f32> = rows()[0].iter().map(|v| *v as f32).collect();
    let mut variants = std::collections::BTreeSet::new();
    for k in 0..40 {
        let key = format!("user-{k}");
        let mut request = tonic::Request::new(ModelInferRequest {
            model_name: MODEL.into(),
            id: format!("g{k}"),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 30],
                contents: Some(InferTensorContents { fp32_contents: row.clone(), ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        });
        request.metadata_mut().insert("x-user-id", key.parse().unwrap());
        let response = client.model_infer(request).await.unwrap();
        let metadata = response.metadata().clone();
        let variant = metadata.get("vane-variant").unwrap().to_str().unwrap().to_owned();
        let version = response.get_ref().model_version.clone();
        assert_eq!(version, if variant == "candidate" { "3" } else { "2" });
        assert_eq!(metadata.get("vane-commit").unwrap().to_str().unwrap(), remote.git(&["rev-parse", "HEAD"]));
        let model_sha = metadata.get("vane-model-sha256").unwrap().to_str().unwrap();
        let file = candidate_path(if version == "3" { "v1" } else { "v2" });
        assert_eq!(model_sha, sha256_of(&file));
        assert!(metadata.get("vane-data-sha256").is_some());
        // The same key over REST lands on the same variant.
        assert_eq!(
            server.raw(keyed(&server, &key, &rows()[0])).await.headers["vane-variant"].to_str().unwrap(),
            variant
        );
        variants.insert(variant);
    }
    assert_eq!(variants.len(), 2, "both variants served: {variants:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_adopts_a_peers_rollback_without_seeing_the_traffic() {
    let rollout_yaml = format!(
        "    stable: 2\n    candidate: 3\n    strategy: canary\n    key: x-user-id\n    steps:\n      - {{weight: 50, duration: 1h}}\n{FAST_ANALYSIS}"
    );
    let remote = repo("failing", &rollout_yaml);
    let (a_data, b_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve(url(&remote), &a_data).await;
    // B reads A's rollouts every 200 ms; it gets no traffic, so its own analysis waits at min_samples.
    let config = gitops_config(url(&remote), &b_data, Duration::from_secs(3600));
    let peer = a.base().to_owned();
    let b = TestServer::start_with(move |c| {
        c.gitops = Some(config);
        c.rollout_peers = vec![peer];
        c.rollout_peer_interval = Duration::from_millis(200);
    })
    .await;
    b.until(|s| s.syncs >= 1).await;
    assert_eq!(rollout(&a).identity, rollout(&b).identity, "the same rollout on both");
    let stop = stopper();
    let traffic = load(&a, 4, Arc::clone(&stop), false);
    wait_rollout(&a, Duration::from_secs(60), |r| r.plan().phase == Phase::RolledBack).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.unwrap();
    let adopted = wait_rollout(&b, Duration::from_secs(10), |r| r.plan().phase == Phase::RolledBack).await;
    eprintln!("peer rollback adopted {adopted:?} after the peer's");
    let report = rollout(&b).report();
    assert_eq!(report.totals.candidate.requests, 0, "B never served the candidate");
    let decision = report.decisions.last().unwrap();
    assert_eq!((decision.action, decision.by), ("adopt_rollback", "peer"));
    assert!(decision.reason.contains("error_rate_increase"), "the peer's reason travels: {}", decision.reason);
    // Every key is on the stable on both replicas now.
    for k in 0..50 {
        for client in [&*a, &*b] {
            assert_eq!(
                client.raw(keyed(client, &format!("user-{k}"), &rows()[0])).await.headers["vane-variant"],
                "stable"
            );
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decisions_survive_a_restart_and_the_cli_steers_a_rollout() {
    use gateway::rollout::client::{run, Action};
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: canary\n    steps:\n      - {weight: 50, duration: 1h}\n    analysis: {interval: 100ms, min_samples: 1000000}\n";
    let (remote, data, server) = started("v1", rollout_yaml).await;
    let base = server.base().to_owned();
    let cli = move |action: Action, model: Option<&'static str>| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || run(&base, action, model, Some("by the test"), None, false))
    };
    // After one evaluation, so the checks are listed.
    let mut events = rollout(&server).events();
    tokio::time::timeout(Duration::from_secs(10), events.changed()).await.unwrap().unwrap();
    let status = cli(Action::Status, None).await.unwrap().unwrap();
    assert!(status.starts_with("breast_cancer canary v2 -> v3: progressing (step 1/1, weight 50%"), "{status}");
    assert!(status.contains("wait error_rate_increase"), "{status}");
    assert_eq!(cli(Action::Pause, Some(MODEL)).await.unwrap().unwrap(), "pause: by the test");
    assert_eq!(rollout(&server).plan().phase, Phase::Paused);
    let refused = cli(Action::Pause, Some(MODEL)).await.unwrap().unwrap_err();
    assert!(refused.contains("409") && refused.contains("cannot pause a rollout that is paused"), "{refused}");
    let missing = cli(Action::Abort, None).await.unwrap().unwrap_err();
    assert!(missing.contains("say which model to abort"), "{missing}");
    cli(Action::Resume, Some(MODEL)).await.unwrap().unwrap();
    assert_eq!(cli(Action::Abort, Some(MODEL)).await.unwrap().unwrap(), "abort: by the test");
    server.stop().await;
    // The same head after a restart: the rollout starts as it was decided, and the candidate gets no traffic.
    let server = serve(url(&remote), &data).await;
    let restored = rollout(&server);
    assert_eq!(restored.plan().phase, Phase::Aborted);
    assert_eq!(restored.stop_reason().as_deref(), Some("by the test"));
    for i in 0..20 {
        let reply = server.post_json(&format!("/v2/models/{MODEL}/infer"), &body(&rows()[i], "after-restart")).await;
        assert_eq!(reply.headers["vane-variant"], "stable");
    }
    let remembered = std::fs::read_to_string(data.path().join("rollouts.json")).unwrap();
    assert!(remembered.contains("\"phase\": \"aborted\""), "{remembered}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_work_is_dropped_first_when_the_server_is_busy() {
    // A shadow of the slow candidate on every request, and a server allowing 8 requests in flight: with 8 clients it
    // is always more than half busy, so mirrors are dropped while no client is refused.
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: shadow\n    steps:\n      - {weight: 100, duration: 1h}\n    analysis: {interval: 100ms, min_samples: 1000000}\n";
    let (_remote, _data, server) = started_with("slow", rollout_yaml, |c| {
        c.limits.max_concurrent_requests = std::num::NonZeroUsize::new(8).unwrap();
    })
    .await;
    let stop = stopper();
    let traffic = load(&server, 8, Arc::clone(&stop), false);
    wait_rollout(&server, Duration::from_secs(60), |r| {
        r.report().mirrors_dropped >= 100 && r.report().totals.stable.requests >= 500
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = traffic.await.unwrap();
    assert!(
        seen.failed.is_empty(),
        "no client is refused while shadows are dropped: {:?}",
        &seen.failed[..seen.failed.len().min(3)]
    );
    let report = rollout(&server).report();
    assert!(report.totals.candidate.requests < report.totals.stable.requests, "{report:#?}");
    let metrics = server.get("/metrics").await;
    assert!(metrics
        .body
        .as_str()
        .unwrap()
        .contains("vane_rollout_mirrors_dropped_total{model=\"breast_cancer\",candidate=\"3\"}"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_candidate_mid_rollout_restarts_the_analysis_and_an_unrelated_commit_does_not() {
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: canary\n    steps:\n      - {weight: 50, duration: 1h}\n    analysis: {interval: 100ms, min_samples: 1000000}\n";
    let (remote, _data, server) = started("v1", rollout_yaml).await;
    send_rows(&server, 40, "m").await;
    let first = rollout(&server);
    assert_eq!(first.report().totals.stable.requests + first.report().totals.candidate.requests, 40);
    // A commit that leaves the rollout's artifacts and block alone (a label, and a serving setting that reloads both
    // versions): the same rollout, counters and all.
    let manifest = std::fs::read_to_string(remote.work.path().join("deploy/breast-cancer.yaml")).unwrap();
    let changed = manifest
        .replace("metadata: {name: breast_cancer}", "metadata: {name: breast_cancer, labels: {owner: risk}}")
        .replace("max_queue_delay: 200us", "max_queue_delay: 300us");
    assert_ne!(changed, manifest);
    let before = server.server.registry().resolve(MODEL, Some("3")).unwrap();
    remote.write("deploy/breast-cancer.yaml", changed.as_bytes());
    remote.push("a label and a serving setting");
    server.push_webhook().await;
    assert!(!Arc::ptr_eq(&before, &server.server.registry().resolve(MODEL, Some("3")).unwrap()), "reloaded");
    assert!(Arc::ptr_eq(&first, &rollout(&server)), "an unrelated commit keeps the rollout");
    // A new candidate mid-rollout: a new rollout, from its first step, with nothing counted.
    write_rollout(&remote, "wrong", rollout_yaml);
    let commit = remote.push("another candidate");
    server.push_webhook().await;
    let second = rollout(&server);
    assert!(!Arc::ptr_eq(&first, &second));
    assert_ne!(first.identity, second.identity);
    let report = second.report();
    assert_eq!((report.phase, report.step, report.revision.as_deref()), (Phase::Progressing, 1, Some(commit.as_str())));
    assert_eq!(report.totals.stable.requests + report.totals.candidate.requests, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_compared_output_is_compared_even_when_clients_ask_for_another_and_left_out_of_their_answer() {
    let rollout_yaml = "    stable: 2\n    candidate: 3\n    strategy: canary\n    steps:\n      - {weight: 100, duration: 1h}\n    analysis: {interval: 100ms, min_samples: 1000000, checks: {agreement: 0.9}}\n";
    let (_remote, _data, server) = started("v2", rollout_yaml).await;
    for (i, row) in rows().iter().take(30).enumerate() {
        let mut request = body(row, &format!("o{i}"));
        request["outputs"] = json!([{"name": "label"}]);
        let reply = server.post_json(&format!("/v2/models/{MODEL}/infer"), &request).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let names: Vec<&str> =
            reply.body["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["label"], "only what the client asked for");
    }
    // Each answer was compared on `probabilities` (the quality output) with the stable's, in the background.
    wait_rollout(&server, Duration::from_secs(30), |r| r.report().step_counters.compared.rows >= 30).await;
    let compared = rollout(&server).report().step_counters.compared;
    assert_eq!((compared.agreed, compared.incomparable), (compared.rows, 0), "{compared:?}");
    server.stop().await;
}
