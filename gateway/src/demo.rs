//! `vane demo`: the example models, built into the binary, served with ready-to-paste `curl` commands.
//!
//! The models and their reference data are embedded, so the demo needs nothing but the binary (and ONNX Runtime).
//! With `git` on the PATH, the demo is GitOps: it writes them into a Git repository with one deployment manifest per
//! model, pushes it to a local bare "remote", serves that remote (`--repo`), and prints the git commands that
//! publish a new version. Without git it serves the files as a `--model-dir`. Each model gets an example request
//! made from the first row of its reference data.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use monitor::ReferenceData;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::infer::{DataType, Signature};

/// One embedded model version.
pub struct EmbeddedModel {
    /// The model's name.
    pub name: &'static str,
    /// Its version.
    pub version: u64,
    /// The ONNX file.
    pub onnx: &'static [u8],
    /// The reference data (CSV with a header).
    pub reference: &'static str,
}

macro_rules! embedded {
    ($name:literal, $version:literal) => {
        EmbeddedModel {
            name: $name,
            version: $version,
            onnx: include_bytes!(concat!("../../models/", $name, "/", $version, "/model.onnx")),
            reference: include_str!(concat!("../../models/", $name, "/reference.csv")),
        }
    };
}

/// The example models: a breast-cancer classifier in two versions, a digits MLP and an 8 MB dense MLP.
pub const MODELS: [EmbeddedModel; 4] =
    [embedded!("breast_cancer", 1), embedded!("breast_cancer", 2), embedded!("digits", 1), embedded!("dense", 1)];

/// The demo's rollout candidates for breast_cancer: a healthy one (version 1's model as version 3), then a worse one
/// (version 4, which fails on a third of its rows: `models/make_rollout_models.py`'s `failing`).
pub const HEALTHY_CANDIDATE: (u64, &[u8]) = (3, include_bytes!("../../models/breast_cancer/1/model.onnx"));
/// See [`HEALTHY_CANDIDATE`].
pub const WORSE_CANDIDATE: (u64, &[u8]) = (4, include_bytes!("../../tests/e2e/rollout-models/failing.onnx"));

/// When the demo pushes its first rollout: after the tour's first commands, before the traffic drifts.
pub const ROLLOUT_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

/// The rollout block of the demo's canaries: three steps a few seconds each, judged every second on the error rate
/// and the p99 latency.
fn demo_rollout(stable: u64, candidate: u64) -> String {
    format!(
        "  rollout:\n    stable: {stable}\n    candidate: {candidate}\n    strategy: canary\n    grace_period: 30s\n    steps:\n      - {{weight: 10, duration: 5s, min_requests: 50}}\n      - {{weight: 50, duration: 5s, min_requests: 100}}\n      - {{weight: 100, duration: 5s, min_requests: 100}}\n    analysis: {{interval: 1s, min_samples: 50, failure_limit: 2}}\n"
    )
}

/// The model the demo's traffic goes to.
pub const DRIFT_MODEL: &str = "breast_cancer";

/// How long the demo's traffic looks like the reference before it starts to drift.
pub const DRIFT_AFTER: std::time::Duration = std::time::Duration::from_secs(45);

/// Sends `breast_cancer` predictions to `addr` about 200 times a second until `stop`: rows of its reference data
/// for [`DRIFT_AFTER`], then the same rows with the first ten features half as large again, so the monitor sees
/// drift, an alert fires and the dashboard changes. Blocking; one short-lived connection per request.
pub fn send_traffic(addr: std::net::SocketAddr, stop: &std::sync::atomic::AtomicBool) {
    use std::io::{Read as _, Write as _};
    let reference = MODELS.iter().find(|m| m.name == DRIFT_MODEL).map_or("", |m| m.reference);
    let Ok(data) = ReferenceData::from_csv_reader(reference.as_bytes(), Path::new("reference.csv")) else { return };
    let started = std::time::Instant::now();
    let mut row = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(mut values) = data.numeric_row(row % data.rows) else { return };
        row += 1;
        if started.elapsed() >= DRIFT_AFTER {
            for v in values.iter_mut().take(10) {
                *v *= 1.5;
            }
        }
        let body = json!({"id": format!("demo-{row}"), "inputs": [{"name": "input", "shape": [1, values.len()], "datatype": "FP32", "data": values}]})
            .to_string();
        let request = format!(
            "POST /v2/models/{DRIFT_MODEL}/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_end(&mut Vec::new());
        }
        // Pacing, not waiting: enough traffic for the demo's canary steps to gather their samples in seconds.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Writes the embedded models into `dir` as `<model>/<version>/model.onnx` plus `<model>/reference.csv`. Blocking.
pub fn write_repository(dir: &Path) -> io::Result<()> {
    for model in &MODELS {
        let version_dir = dir.join(model.name).join(model.version.to_string());
        fs::create_dir_all(&version_dir)?;
        fs::write(version_dir.join(reconciler::model_dir::MODEL_FILE), model.onnx)?;
        fs::write(dir.join(model.name).join("reference.csv"), model.reference)?;
    }
    Ok(())
}

/// A deployment manifest for each embedded model: reference data, serving settings, then (last, so a new version
/// can be appended with one shell command) its versions.
fn manifests() -> Vec<(String, String)> {
    manifests_with(&[], None)
}

/// [`manifests`], with `extra` versions of breast_cancer and a rollout block (placed before the versions).
fn manifests_with(extra: &[(u64, &[u8])], rollout: Option<String>) -> Vec<(String, String)> {
    let names: Vec<&str> = MODELS.iter().map(|m| m.name).fold(Vec::new(), |mut names, n| {
        if !names.contains(&n) {
            names.push(n);
        }
        names
    });
    names
        .into_iter()
        .map(|name| {
            let versions = MODELS.iter().filter(|m| m.name == name);
            let reference = MODELS.iter().find(|m| m.name == name).map_or("", |m| m.reference);
            // breast_cancer gets the demo's drifting traffic: a small window and a short `for`, so an alert fires
            // within about half a minute of the drift.
            let monitoring = if name == DRIFT_MODEL {
                "  monitoring:\n    window_size: 200\n    min_samples: 100\n    thresholds: {dataset_drift_share: 0.3}\n    for: 10s\n"
            } else {
                ""
            };
            let rollout = rollout.as_deref().filter(|_| name == DRIFT_MODEL).unwrap_or_default();
            let mut text = format!(
                "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {name}\nspec:\n  reference_data:\n    path: models/{name}/reference.csv\n    sha256: {}\n{monitoring}  serving:\n    max_queue_delay: 300us\n{rollout}  versions:\n",
                hex::encode(Sha256::digest(reference.as_bytes()))
            );
            let extra = extra.iter().filter(|_| name == DRIFT_MODEL).copied();
            for (version, onnx) in versions.map(|m| (m.version, m.onnx)).chain(extra) {
                text.push_str(&format!(
                    "    - version: {version}\n      model: {{path: models/{name}/{version}/model.onnx, sha256: {}}}\n",
                    hex::encode(Sha256::digest(onnx))
                ));
            }
            (format!("deploy/{name}.yaml"), text)
        })
        .collect()
}

/// Makes the GitOps demo under `root`: `work/` (a clone to edit) holding the models, their reference data and a
/// manifest per model, pushed to `deploy.git` (the bare repository Vane follows). Returns the bare repository's path,
/// or `Ok(None)` when git is not installed. Blocking.
pub fn seed_git_repository(root: &Path) -> io::Result<Option<PathBuf>> {
    if Command::new("git").arg("--version").output().is_err() {
        return Ok(None);
    }
    let (work, bare) = (root.join("work"), root.join("deploy.git"));
    fs::create_dir_all(&work)?;
    git(root, &["init", "-q", "--bare", "-b", "main", "deploy.git"])?;
    git(&work, &["init", "-q", "-b", "main"])?;
    write_repository(&work.join("models"))?;
    for (path, text) in manifests() {
        fs::create_dir_all(work.join(&path).parent().unwrap_or(&work))?;
        fs::write(work.join(path), text)?;
    }
    git(&work, &["remote", "add", "origin", &bare.display().to_string()])?;
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-q", "-m", "Deploy the example models"])?;
    git(&work, &["push", "-q", "origin", "main"])?;
    Ok(Some(bare))
}

/// The demo's two rollouts, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoRollout {
    /// breast_cancer version 3 (healthy) as a canary of version 2: promoted.
    Healthy,
    /// Then version 4 (fails on a third of its rows) as a canary of version 3: rolled back.
    Worse,
}

/// Commits and pushes one of the demo's rollouts from `root/work`; returns the commit id. Blocking.
pub fn push_rollout(root: &Path, which: DemoRollout) -> io::Result<String> {
    let work = root.join("work");
    let (extra, rollout, message): (Vec<(u64, &[u8])>, _, _) = match which {
        DemoRollout::Healthy => (
            vec![HEALTHY_CANDIDATE],
            demo_rollout(2, HEALTHY_CANDIDATE.0),
            "Canary: breast_cancer v3 (a healthy candidate)",
        ),
        DemoRollout::Worse => (
            vec![HEALTHY_CANDIDATE, WORSE_CANDIDATE],
            demo_rollout(HEALTHY_CANDIDATE.0, WORSE_CANDIDATE.0),
            "Canary: breast_cancer v4 (fails on a third of its rows)",
        ),
    };
    for (version, onnx) in &extra {
        let dir = work.join("models").join(DRIFT_MODEL).join(version.to_string());
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(reconciler::model_dir::MODEL_FILE), onnx)?;
    }
    for (path, text) in manifests_with(&extra, Some(rollout)).into_iter().filter(|(p, _)| p.contains(DRIFT_MODEL)) {
        fs::write(work.join(path), text)?;
    }
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-q", "-m", message])?;
    git(&work, &["push", "-q", "origin", "main"])?;
    let output = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(&work).output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// What the demo prints about its rollouts: what it will push, and the commands to watch.
pub fn rollout_instructions(base: &str, vane: &str) -> String {
    let after = ROLLOUT_AFTER.as_secs();
    [
        String::new(),
        format!("  # Progressive delivery: {after} s in, the demo pushes breast_cancer v3 as a canary of v2 (10%, 50%, 100%,"),
        "  # a few seconds each, judged every second on its error rate and p99 against v2): it is promoted. Then it"
            .to_owned(),
        "  # pushes v4, which fails on a third of its rows: it is rolled back within seconds, an alert fires, and the"
            .to_owned(),
        "  # status says Degraded until a new commit. One log line per decision; to watch:".to_owned(),
        format!("  {vane} rollout status --server {base}"),
        format!("  curl -s {base}/api/v1/rollouts"),
        format!("  curl -s {base}/metrics | grep 'vane_rollout_phase.* 1$'"),
        format!("  curl -si -d @REQUEST {base}/v2/models/breast_cancer/infer | grep -iE 'vane-variant|model_version'"),
        String::new(),
        String::new(),
    ]
    .join("\n")
}

fn git(dir: &Path, args: &[&str]) -> io::Result<()> {
    let output = Command::new("git")
        .args(["-c", "user.name=vane demo", "-c", "user.email=demo@vane.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim())))
    }
}

/// The commands that publish a new `digits` version (version 1's file as version 2) by `git push`. (breast_cancer is
/// the demo's own rollout.)
pub fn publish_instructions(base: &str, root: &Path) -> String {
    let work = root.join("work");
    format!(
        "  # Deploy by git push: publish digits version 2, then watch it answer within the poll interval.\n\
         \x20 cd {work}\n\
         \x20 mkdir -p models/digits/2 && cp models/digits/1/model.onnx models/digits/2/\n\
         \x20 printf '    - version: 2\\n      model: {{path: models/digits/2/model.onnx, sha256: %s}}\\n' \\\n\
         \x20     \"$(sha256sum models/digits/2/model.onnx | cut -d' ' -f1)\" >> deploy/digits.yaml\n\
         \x20 git add -A && git commit -qm 'digits v2' && git push -q origin main\n\
         \x20 curl -s {base}/api/v1/status      # last_applied moves to your commit\n\
         \x20 curl -si -d @{req} {base}/v2/models/digits/infer | grep -iE 'vane-commit|model_version'\n\n\
         \x20 # A bad commit (try a wrong sha256) is refused with its reason in the status; the last good set keeps serving.\n",
        work = work.display(),
        req = root.join("requests/digits.json").display(),
    )
}

/// Writes `requests/<model>.json`, an inference request with the first row of the model's reference data, for
/// every example model whose single input is an FP32 row vector. Returns the model names and file paths. Blocking.
pub fn write_example_requests(dir: &Path, signatures: &[(String, Signature)]) -> io::Result<Vec<(String, PathBuf)>> {
    let requests = dir.join("requests");
    fs::create_dir_all(&requests)?;
    let mut written = Vec::new();
    for (name, signature) in signatures {
        let [input] = signature.inputs.as_slice() else { continue };
        let Some(model) = MODELS.iter().find(|m| m.name == name) else { continue };
        if input.datatype != DataType::Fp32 || input.shape.len() != 2 {
            continue;
        }
        let reference = ReferenceData::from_csv_reader(model.reference.as_bytes(), Path::new(model.name))
            .map_err(io::Error::other)?;
        let Some(row) = reference.numeric_row(0) else { continue };
        let body = json!({
            "id": format!("demo-{name}"),
            "inputs": [{"name": &*input.name, "shape": [1, row.len()], "datatype": "FP32", "data": row}],
        });
        let path = requests.join(format!("{name}.json"));
        fs::write(&path, serde_json::to_vec(&body).map_err(io::Error::other)?)?;
        written.push((name.clone(), path));
    }
    Ok(written)
}

/// The text the demo prints: what is served and a `curl` command for each thing to try.
pub fn instructions(base: &str, dir: &Path, requests: &[(String, PathBuf)], versions: &[(String, Vec<u64>)]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Vane is serving {} example models on {base} (model files in {})\n",
        versions.len(),
        dir.display()
    );
    let _ = writeln!(text, "  # Is the server ready? What does it offer?");
    let _ = writeln!(text, "  curl -s {base}/v2/health/ready");
    let _ = writeln!(text, "  curl -s {base}/v2\n");
    for (name, path) in requests {
        let served = versions.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice()).unwrap_or_default();
        let _ =
            writeln!(text, "  # {name}: what it takes and gives, then a prediction for row 0 of its reference data");
        let _ = writeln!(text, "  curl -s {base}/v2/models/{name}");
        let _ = writeln!(
            text,
            "  curl -s -H 'Content-Type: application/json' -d @{} {base}/v2/models/{name}/infer",
            path.display()
        );
        if let Some(oldest) = served.first().filter(|_| served.len() > 1) {
            let _ = writeln!(
                text,
                "  curl -s -H 'Content-Type: application/json' -d @{} {base}/v2/models/{name}/versions/{oldest}/infer",
                path.display()
            );
        }
        let _ = writeln!(text);
    }
    let _ = writeln!(text, "  # A mistake gets a 400 that says what was wrong:");
    let _ = writeln!(
        text,
        "  curl -s -d '{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[1,2]}}]}}' {base}/v2/models/breast_cancer/infer\n"
    );
    let _ = writeln!(
        text,
        "  # Drift: the demo sends {DRIFT_MODEL} traffic like its reference data for {} s, then drifting (ten features \
         grow by half).\n  # About half a minute later an alert fires. Watch it in a browser, or:\n  #   {base}/dashboard",
        DRIFT_AFTER.as_secs()
    );
    let _ = writeln!(text, "  curl -s {base}/api/v1/monitor/{DRIFT_MODEL}");
    let _ = writeln!(text, "  curl -s {base}/api/v1/alerts\n");
    let _ = writeln!(text, "Press Ctrl-C to stop.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_manifests_are_valid_and_pin_the_embedded_bytes() {
        let files: Vec<(String, Vec<u8>)> = manifests().into_iter().map(|(p, t)| (p, t.into_bytes())).collect();
        let deployments = reconciler::manifest::parse_commit(&files).unwrap();
        let names: Vec<_> = deployments.iter().map(|d| (d.name.as_str(), d.versions.len())).collect();
        assert_eq!(names, [("breast_cancer", 2), ("dense", 1), ("digits", 1)]);
        let digest = hex::encode(Sha256::digest(MODELS[0].onnx));
        assert_eq!(deployments[0].versions[0].model.sha256, digest);
        let text = &files[0].1;
        assert!(
            String::from_utf8_lossy(text).trim_end().ends_with("}"),
            "versions come last, so one more can be appended"
        );
    }

    #[test]
    fn the_written_repository_is_what_the_model_dir_scanner_reads() {
        let dir = tempfile::tempdir().unwrap();
        write_repository(dir.path()).unwrap();
        let state = reconciler::model_dir::scan(dir.path()).unwrap();
        let names: Vec<_> = state.models.iter().map(|m| (m.name.as_str(), m.versions.len())).collect();
        assert_eq!(names, [("breast_cancer", 2), ("dense", 1), ("digits", 1)]);
    }
}
