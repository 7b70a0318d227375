//! GitOps: `vane serve --repo` against real repositories made with git, pushes, webhooks and bad commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::gitops::GitOpsConfig;
use hyper::{Method, StatusCode};
use reconciler::controller::{ControllerConfig, SyncStatus};
use reconciler::source::GitSpec;
use serde_json::json;

use crate::support::{breast_cancer_row, models_dir, sha256_of, GitRemote, KillOnDrop, TestServer};

use gateway::auth::Secret;

const SECRET: &str = "s3cret";
const TOKEN: &str = "t0ken";

pub(crate) async fn serve(url: String, data: &tempfile::TempDir) -> TestServer {
    serve_polling(url, data, Duration::from_secs(3600)).await
}

async fn serve_polling(url: String, data: &tempfile::TempDir, poll_interval: Duration) -> TestServer {
    serve_with(url, data, poll_interval, None).await
}

/// GitOps mode with the admin token set (admin calls then need it, feedback too).
async fn serve_with_admin_token(url: String, data: &tempfile::TempDir) -> TestServer {
    serve_with(url, data, Duration::from_secs(3600), Secret::new(TOKEN)).await
}

async fn serve_with(
    url: String,
    data: &tempfile::TempDir,
    poll_interval: Duration,
    admin_token: Option<Secret>,
) -> TestServer {
    let config = gitops_config(url, data, poll_interval);
    let server = TestServer::start_with(move |c| {
        c.gitops = Some(config);
        c.admin_token = admin_token;
    })
    .await;
    server.until(|s| s.syncs >= 1).await;
    server
}

/// GitOps mode on `url`, with the test webhook secret and admin token.
pub(crate) fn gitops_config(url: String, data: &tempfile::TempDir, poll_interval: Duration) -> GitOpsConfig {
    GitOpsConfig {
        controller: ControllerConfig {
            poll_interval,
            git_timeout: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(120),
            max_backoff: Duration::from_secs(3600),
            ..ControllerConfig::new(GitSpec::new(url, "main", "deploy"), data.path().to_path_buf())
        },
        webhook_secret: Secret::new(SECRET),
    }
}

impl TestServer {
    pub(crate) async fn until(&self, condition: impl Fn(&SyncStatus) -> bool) -> SyncStatus {
        let mut status = self.server.controller().expect("gitops mode").status();
        let reached = tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| condition(s))).await;
        #[allow(clippy::let_and_return)] // the binding ends the borrow of `status` before it is dropped
        let current = reached.expect("in time").expect("loop alive").clone();
        current
    }

    fn syncs(&self) -> u64 {
        self.server.controller().unwrap().status().borrow().syncs
    }

    /// Sends a correctly signed GitHub-style push webhook and waits for the sync it triggers.
    pub(crate) async fn push_webhook(&self) -> SyncStatus {
        let done = self.syncs();
        let reply = self.webhook(&sign(SECRET.as_bytes(), PUSH)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        self.until(|s| s.syncs > done).await
    }

    async fn webhook(&self, signature: &str) -> crate::support::Reply {
        self.webhook_with(signature, PUSH, None).await
    }

    async fn webhook_with(&self, signature: &str, body: &[u8], delivery: Option<&str>) -> crate::support::Reply {
        let mut request = hyper::Request::post(format!("{}/api/v1/hooks/git", self.base()))
            .header("x-hub-signature-256", format!("sha256={signature}"));
        if let Some(id) = delivery {
            request = request.header("x-github-delivery", id);
        }
        self.raw(request.body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body))).unwrap()).await
    }
}

const PUSH: &[u8] = br#"{"ref":"refs/heads/main","after":"0000"}"#;

fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sync_serves_the_manifest_with_provenance_and_status() {
    let remote = GitRemote::with_breast_cancer();
    let commit = remote.git(&["rev-parse", "HEAD"]);
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;
    let reply = server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["model_version"], "2");
    assert_eq!(reply.headers["vane-commit"], commit.as_str());
    assert_eq!(
        reply.headers["vane-model-sha256"],
        sha256_of(&models_dir().join("breast_cancer/2/model.onnx")).as_str()
    );
    assert_eq!(
        reply.headers["vane-data-sha256"],
        sha256_of(&models_dir().join("breast_cancer/reference.csv")).as_str()
    );

    let status = server.get("/api/v1/status").await.body;
    assert_eq!(status["mode"], "git");
    assert_eq!(status["conditions"], json!({"ready": true, "reconciling": false, "stalled": false, "degraded": false}));
    assert_eq!(status["revision"], commit.as_str());
    assert_eq!(status["sync"]["last_applied"]["commit"], commit.as_str());
    assert_eq!(status["models"][0]["versions"], json!(["1", "2"]));

    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("vane_sync_total{outcome=\"applied\"} 1\n"), "{text}");
    assert!(text.contains("vane_sync_duration_seconds_count{outcome=\"applied\"} 1\n"), "{text}");
    assert!(text.contains("vane_sync_head_refused 0\n"), "{text}");
    // The info series names the commit and the digest the manifest pinned.
    let info = format!(
        "vane_model_info{{model=\"breast_cancer\",version=\"2\",commit=\"{commit}\",digest=\"sha256:{}\"}} 1",
        sha256_of(&models_dir().join("breast_cancer/2/model.onnx"))
    );
    assert!(text.contains(&info), "{info} in {text}");
    let applied_at = status["sync"]["last_applied"]["at_unix_ms"].as_u64().unwrap() as f64 / 1000.0;
    let gauge = text
        .lines()
        .find_map(|l| l.strip_prefix("vane_last_applied_commit_timestamp_seconds "))
        .map(|v| v.parse::<f64>().unwrap())
        .expect("last applied gauge");
    assert!((gauge - applied_at).abs() < 1.0, "gauge {gauge} vs status {applied_at}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_serves_a_push_at_once_and_a_bad_signature_triggers_nothing() {
    let remote = GitRemote::with_breast_cancer();
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;
    // Version 3: version 1's file under a new number.
    remote.write(
        "models/breast_cancer/3/model.onnx",
        &std::fs::read(models_dir().join("breast_cancer/1/model.onnx")).unwrap(),
    );
    let sha1 = sha256_of(&models_dir().join("breast_cancer/1/model.onnx"));
    let manifest = remote.manifest().replace(
        "  versions:                        # 1 to 16",
        &format!("  versions:\n    - version: 3\n      model: {{path: models/breast_cancer/3/model.onnx, sha256: {sha1}}}\n    # 1 to 16"),
    );
    remote.write("deploy/breast-cancer.yaml", manifest.as_bytes());
    let pushed = remote.push("version 3");

    let before = server.syncs();
    let reply = server.webhook(&sign(b"wrong secret", PUSH)).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, &["webhook signature missing or wrong"]);
    assert_eq!(server.syncs(), before, "a bad signature triggers nothing");

    let status = server.push_webhook().await;
    assert_eq!(status.last_applied.unwrap().commit, pushed);
    let reply = server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await;
    assert_eq!(
        (reply.body["model_version"].as_str(), reply.headers["vane-commit"].to_str().unwrap()),
        (Some("3"), pushed.as_str())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commits_keep_the_old_model_serving_and_the_status_names_the_reason() {
    let remote = GitRemote::with_breast_cancer();
    let good = remote.git(&["rev-parse", "HEAD"]);
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;
    let good_manifest = remote.manifest();
    let corrupt = b"not an onnx graph";
    let cases = [
        (
            good_manifest.replace(
                "{name: input, datatype: FP32, shape: [-1, 30]}",
                "{name: input, datatype: FP64, shape: [-1, 30]}",
            ),
            None,
            "input 'input' is declared FP64 [-1, 30] but the graph has FP32 [-1, 30]",
        ),
        (
            good_manifest
                .replace(&sha256_of(&models_dir().join("breast_cancer/2/model.onnx")), &sha256_of_bytes(corrupt)),
            Some(corrupt.as_slice()),
            "cannot load",
        ),
    ];
    for (manifest, model, reason) in cases {
        remote.write("deploy/breast-cancer.yaml", manifest.as_bytes());
        if let Some(bytes) = model {
            remote.write("models/breast_cancer/2/model.onnx", bytes);
        }
        let bad = remote.push("bad");
        let status = server.push_webhook().await;
        assert_eq!(status.last_applied.as_ref().unwrap().commit, good, "the old commit keeps serving");
        let attempted = status.last_attempted.unwrap();
        assert_eq!(attempted.commit.as_deref(), Some(bad.as_str()));
        assert!(
            attempted.reason.as_deref().unwrap().contains(reason),
            "{:?} should contain {reason:?}",
            attempted.reason
        );
        let reply = server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await;
        assert_eq!((reply.status, reply.headers["vane-commit"].to_str().unwrap()), (StatusCode::OK, good.as_str()));
        let status = server.get("/api/v1/status").await.body;
        assert_eq!(
            (status["conditions"]["stalled"].as_bool(), status["conditions"]["ready"].as_bool()),
            (Some(true), Some(true))
        );
        let metrics = server.get("/metrics").await.body;
        assert!(metrics.as_str().unwrap().contains("vane_sync_head_refused 1\n"), "{metrics}");
        remote.git(&["checkout", "-q", &good, "--", "."]);
    }
    server.stop().await;
}

fn sha256_of_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_swap_the_model_under_load_with_no_failed_request_and_admin_calls_need_the_token() {
    let remote = GitRemote::with_breast_cancer();
    let first = remote.git(&["rev-parse", "HEAD"]);
    let data = tempfile::tempdir().unwrap();
    let server = Arc::new(serve_with_admin_token(remote.bare.path().display().to_string(), &data).await);
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (client, done) = (server.client_only(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut answered = 0u32;
                while !done.load(Ordering::Relaxed) {
                    let reply = client.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let manifest = remote.manifest();
    for round in 0..6 {
        // Alternate the serving settings: each push loads and swaps a new set.
        let batch = if round % 2 == 0 { "max_batch_size: 32" } else { "max_batch_size: 64" };
        remote.write("deploy/breast-cancer.yaml", manifest.replace("max_batch_size: 64", batch).as_bytes());
        let pushed = remote.push("settings");
        assert_eq!(server.push_webhook().await.last_applied.unwrap().commit, pushed);
    }
    done.store(true, Ordering::Relaxed);
    for client in clients {
        assert!(client.await.unwrap() > 0);
    }

    // Admin calls: a wrong token is refused; the right one rolls back to the first commit.
    let rollback = |token: &'static str| {
        let request = hyper::Request::builder()
            .method(Method::POST)
            .uri(format!("{}/api/v1/rollback", server.base()))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(&json!({"commit": first})).unwrap())))
            .unwrap();
        server.raw(request)
    };
    rollback("nope").await.assert_error(StatusCode::UNAUTHORIZED, &["wrong token"]);
    let reply = rollback(TOKEN).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let reply = server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await;
    assert_eq!(reply.headers["vane-commit"], first.as_str());
    let status = server.get("/api/v1/status").await.body;
    assert_eq!(status["conditions"]["degraded"], true, "serving differs from the branch head");
    assert_eq!(status["sync"]["diverged_from_head"], true);
}

/// The network path: the repository served by `git daemon` on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_served_by_git_daemon_is_followed() {
    let remote = GitRemote::with_breast_cancer();
    let commit = remote.git(&["rev-parse", "HEAD"]);
    std::fs::write(remote.bare.path().join("git-daemon-export-ok"), b"").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // `git daemon` runs git-daemon as a child; start that program itself so killing it stops the server, and keep
    // it off the test's output pipes.
    let exec_path = std::process::Command::new("git").arg("--exec-path").output().unwrap();
    let exec_path = String::from_utf8(exec_path.stdout).unwrap();
    let daemon = std::process::Command::new(std::path::Path::new(exec_path.trim()).join("git-daemon"))
        .args(["--reuseaddr", "--listen=127.0.0.1", &format!("--port={port}"), "--informative-errors"])
        .arg(format!("--base-path={}", remote.bare.path().parent().unwrap().display()))
        .arg(remote.bare.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = KillOnDrop(daemon);
    // Readiness: the daemon accepts connections (each attempt is answered at once, refused until it listens).
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::task::yield_now().await;
        }
    });
    ready.await.expect("git daemon listens");
    let name = remote.bare.path().file_name().unwrap().to_str().unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = serve(format!("git://127.0.0.1:{port}/{name}"), &data).await;
    let status = server.until(|s| s.last_applied.is_some() || s.last_error.is_some()).await;
    assert_eq!(status.last_applied.map(|c| c.commit), Some(commit), "{:?}", status.last_error);
    server.stop().await;
}

/// Stops a child process when the test ends, whether it passes or panics.
/// A version with a golden set serves only if its warm-up reproduces the set's outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_golden_set_must_be_reproduced_before_a_version_serves() {
    let remote = GitRemote::with_breast_cancer();
    let fixtures = crate::support::expected_outputs();
    let golden = |key: &str| {
        serde_json::to_vec(&json!({"inputs": fixtures[key]["inputs"], "outputs": fixtures[key]["outputs"]})).unwrap()
    };
    remote.write("golden/bc.json", &golden("breast_cancer/2"));
    let manifest = remote.manifest().replace(
        "      io:                          # optional",
        "      warmup: {golden: golden/bc.json, tolerance: 0.00001}\n      io:                          # optional",
    );
    remote.write("deploy/breast-cancer.yaml", manifest.as_bytes());
    let good = remote.push("golden");
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;
    let status = server.until(|s| s.last_applied.is_some() || s.last_error.is_some()).await;
    assert_eq!(status.last_applied.map(|c| c.commit), Some(good.clone()), "{:?}", status.last_error);

    // Version 1's answers as version 2's golden set: refused before any traffic.
    remote.write("golden/bc.json", &golden("breast_cancer/1"));
    let bad = remote.push("wrong golden");
    let status = server.push_webhook().await;
    assert_eq!(status.last_applied.unwrap().commit, good);
    let attempted = status.last_attempted.unwrap();
    assert_eq!(attempted.commit.as_deref(), Some(bad.as_str()));
    assert!(attempted.reason.as_deref().unwrap().contains("differs from the golden set"), "{:?}", attempted.reason);
    server.stop().await;
}

/// Without a webhook, the poll picks a push up by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_served_by_polling_without_a_webhook() {
    let remote = GitRemote::with_breast_cancer();
    let data = tempfile::tempdir().unwrap();
    let server = serve_polling(remote.bare.path().display().to_string(), &data, Duration::from_millis(100)).await;
    let manifest = remote.manifest().replace("max_batch_size: 64", "max_batch_size: 16");
    remote.write("deploy/breast-cancer.yaml", manifest.as_bytes());
    let pushed = remote.push("smaller batches");
    let status = server.until(|s| s.last_applied.as_ref().is_some_and(|c| c.commit == pushed)).await;
    assert_eq!(status.history[0].trigger, reconciler::controller::Trigger::Poll);
    let reply = server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await;
    assert_eq!(reply.headers["vane-commit"], pushed.as_str());
    server.stop().await;
}

/// A delivery is acted on once: the same signed payload with the same delivery id is acknowledged and ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivery_is_acted_on_once() {
    let remote = GitRemote::with_breast_cancer();
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;
    let done = server.syncs();
    let signature = sign(SECRET.as_bytes(), PUSH);
    let reply = server.webhook_with(&signature, PUSH, Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")).await;
    assert_eq!((reply.status, reply.body["triggered"].as_bool()), (StatusCode::ACCEPTED, Some(true)), "{}", reply.body);
    server.until(|s| s.syncs > done).await;
    let done = server.syncs();
    let replay = server.webhook_with(&signature, PUSH, Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")).await;
    assert_eq!(replay.status, StatusCode::ACCEPTED);
    assert_eq!(replay.body["triggered"], false);
    assert_eq!(replay.body["message"], "this delivery was received before; ignored");
    // Another delivery goes through, so the replay was not merely merged into a pending trigger.
    let reply = server.webhook_with(&signature, PUSH, Some("8e1b2c3d-0000-11e3-81ab-4c9367dc0958")).await;
    assert_eq!(reply.body["triggered"], true);
    server.until(|s| s.syncs > done).await;
    assert_eq!(server.syncs(), done + 1, "one sync for two deliveries, the replay triggered nothing");
    server.stop().await;
}

/// Two pushes in quick succession: the first commit's load (sixteen versions) is still running when the second
/// arrives; it is cancelled before its next version and the second loads after it, never beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quick_pushes_never_run_two_loads_at_once() {
    let remote = GitRemote::with_breast_cancer();
    let data = tempfile::tempdir().unwrap();
    let server = serve(remote.bare.path().display().to_string(), &data).await;
    let model = std::fs::read(models_dir().join("dense/1/model.onnx")).unwrap();
    remote.write("models/dense/model.onnx", &model);
    let sha = sha256_of(&models_dir().join("dense/1/model.onnx"));
    let versions: String = (1..=16)
        .map(|v| format!("    - version: {v}\n      model: {{path: models/dense/model.onnx, sha256: {sha}}}\n"))
        .collect();
    let dense = format!(
        "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: dense}}\nspec:\n  versions:\n{versions}  serving: {{workers: 2}}\n"
    );
    remote.write("deploy/dense.yaml", dense.as_bytes());
    let slow = remote.push("sixteen dense versions");
    let done = server.syncs();
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{slow}"}}"#);
    let reply = server.webhook_with(&sign(SECRET.as_bytes(), body.as_bytes()), body.as_bytes(), None).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    // The first commit is loading (its artifacts are resolved; the registry is building its set).
    server.until(|s| s.reconciling_commit.as_deref() == Some(slow.as_str())).await;
    remote.write("deploy/dense.yaml", dense.replace("workers: 2", "workers: 1").as_bytes());
    let fast = remote.push("one instance each");
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{fast}"}}"#);
    let reply = server.webhook_with(&sign(SECRET.as_bytes(), body.as_bytes()), body.as_bytes(), None).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let status = server.until(|s| s.last_applied.as_ref().is_some_and(|c| c.commit == fast)).await;
    assert!(status.syncs > done);
    let loads = server.get("/api/v1/status").await.body["loads"].clone();
    assert_eq!(loads["overlapped"], 0, "no load started while another ran: {loads}");
    assert_eq!(loads["running"], 0);
    let superseded = status.history.iter().find(|r| r.commit.as_deref() == Some(slow.as_str())).unwrap();
    assert_eq!(superseded.outcome, reconciler::controller::Outcome::Superseded, "{:?}", status.history);
    assert!(loads["cancelled"].as_u64().unwrap() >= 1, "the superseded load stopped early: {loads}");
    server.stop().await;
}
