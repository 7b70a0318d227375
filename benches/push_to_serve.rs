//! Time from `git push` to the new version answering, with a webhook and with polling.
//!
//! `cargo bench --bench push_to_serve` builds the release `vane`, serves a bare repository on disk with
//! `--repo`, and for the breast_cancer model (1 KB) and the dense model (8.4 MB) publishes a new version five times:
//! push, then (webhook run) a signed webhook, then asks the unversioned route until the new version answers. The
//! poll run uses `--poll-interval 1s` and no webhook, so its figure is dominated by where in the interval the push
//! lands (expect about half the interval plus the sync).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{build_vane, git, http, is_bench_run, root, serving_addr, sha256};
use hmac::Mac;
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

fn main() -> Result<()> {
    if !is_bench_run() {
        return Ok(());
    }
    let vane = build_vane()?;
    let mut lines = Vec::new();
    for (mode, poll) in [("webhook", "1h"), ("poll 1s", "1s")] {
        for (model, features) in [("breast_cancer", 30usize), ("dense", 1024)] {
            let times = measure(&vane, mode == "webhook", poll, model, features)?;
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            let max = times.iter().cloned().fold(0.0, f64::max);
            lines.push(format!(
                "{mode:<8} {model:<14} mean {:.0} ms, max {:.0} ms over {} pushes",
                mean * 1e3,
                max * 1e3,
                times.len()
            ));
        }
    }
    println!("\n== push to serve (release vane, bare repository on local disk)");
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

fn measure(vane: &Path, webhook: bool, poll: &str, model: &str, features: usize) -> Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let (work, bare) = (dir.path().join("work"), dir.path().join("deploy.git"));
    std::fs::create_dir_all(&work)?;
    git(dir.path(), &["init", "-q", "--bare", "-b", "main", "deploy.git"])?;
    git(&work, &["init", "-q", "-b", "main"])?;
    let file = std::fs::read(root().join("models").join(model).join("1/model.onnx"))?;
    let sha = sha256(&file);
    let mut manifest = format!(
        "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {model}}}\nspec:\n  versions:\n"
    );
    let publish = |manifest: &mut String, version: u32| -> Result<()> {
        let path = format!("models/{model}/{version}/model.onnx");
        std::fs::create_dir_all(work.join(&path).parent().context("parent")?)?;
        std::fs::write(work.join(&path), &file)?;
        manifest.push_str(&format!("    - version: {version}\n      model: {{path: {path}, sha256: {sha}}}\n"));
        std::fs::create_dir_all(work.join("deploy"))?;
        std::fs::write(work.join("deploy/m.yaml"), manifest.as_bytes())?;
        git(&work, &["add", "-A"])?;
        git(&work, &["commit", "-q", "-m", &format!("v{version}")])?;
        git(&work, &["push", "-q", bare.to_str().context("path")?, "main"])?;
        Ok(())
    };
    publish(&mut manifest, 1)?;
    let mut child = Command::new(vane)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--poll-interval",
            poll,
            "--repo",
        ])
        .arg(&bare)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("VANE_WEBHOOK_SECRET", "bench")
        .env("RUST_LOG", "warn,gateway=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let addr = serving_addr(&mut child)?;
    let row: Vec<f64> = vec![0.5; features];
    let body = serde_json::to_vec(
        &json!({"inputs": [{"name": "input", "shape": [1, features], "datatype": "FP32", "data": row}]}),
    )?;
    wait_for_version(&addr, model, &body, 1, Duration::from_secs(60))?;
    let mut times = Vec::new();
    for version in 2..=6 {
        let started = Instant::now();
        publish(&mut manifest, version)?;
        if webhook {
            let payload = br#"{"ref":"refs/heads/main"}"#;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"bench")?;
            mac.update(payload);
            let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            http(&addr, "POST", "/api/v1/hooks/git", &[("x-hub-signature-256", &signature)], payload)?;
        }
        wait_for_version(&addr, model, &body, version, Duration::from_secs(60))?;
        times.push(started.elapsed().as_secs_f64());
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    Ok(times)
}

/// Asks the unversioned route until `version` answers (each request answers at once; this is the measurement).
fn wait_for_version(addr: &str, model: &str, body: &[u8], version: u32, limit: Duration) -> Result<()> {
    let started = Instant::now();
    let wanted = format!("\"model_version\":\"{version}\"");
    while started.elapsed() < limit {
        if let Ok((200, answer)) = http(addr, "POST", &format!("/v2/models/{model}/infer"), &[], body) {
            if String::from_utf8_lossy(&answer).contains(&wanted) {
                return Ok(());
            }
        }
    }
    bail!("version {version} of {model} did not answer within {limit:?}")
}
