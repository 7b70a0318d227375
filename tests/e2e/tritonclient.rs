//! Triton's own Python clients against Vane: `tests/python/test_tritonclient.py` (tritonclient's HTTP and gRPC
//! clients, JSON and binary, every model compared with onnxruntime's answers, streaming, repository calls, errors as
//! the client's exceptions) run against a real server on loopback. The test builds the venv it needs from
//! `tests/python/requirements.txt` (PyPI) under `target/`, once per requirements file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{models_dir, TestServer};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Tests that need the venv take this first: on a fresh clone the first one builds it, and a second one checking it
/// meanwhile would see it half-made and remove it under the first one's pip (a CI run failed that way).
static VENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The venv's python, creating the venv and installing the requirements if this requirements file has not been
/// installed there yet. Blocking; one caller at a time.
pub(crate) fn python_with_requirements() -> PathBuf {
    let _building = VENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let requirements = root().join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let venv = root().join("target/python-tritonclient");
    let marker = venv.join("installed-requirements.txt");
    let python = venv.join("bin/python");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) && python.is_file() {
        return python;
    }
    let run = |command: &mut Command| {
        let output = command.output().expect("the command runs");
        assert!(
            output.status.success(),
            "{command:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let _ = std::fs::remove_dir_all(&venv);
    // Debian splits venv's ensurepip into python3-venv; install it when the first attempt says it is missing.
    if !Command::new("python3").args(["-m", "venv"]).arg(&venv).output().is_ok_and(|o| o.status.success()) {
        let _ = std::fs::remove_dir_all(&venv);
        crate::support::ensure_debian_package("/nonexistent/python3-venv-marker", "python3-venv");
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements));
    std::fs::write(&marker, wanted).unwrap();
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_and_grpc_work_against_vane_unchanged() {
    let python = tokio::task::spawn_blocking(python_with_requirements).await.unwrap();
    let server = TestServer::start_with(|c| c.grpc_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let (http, grpc) = (server.addr(), server.server.grpc_addr().unwrap());
    let output = tokio::task::spawn_blocking(move || {
        // coreutils' timeout bounds a hung client.
        Command::new("timeout")
            .arg("300")
            .arg(python)
            .arg(root().join("tests/python/test_tritonclient.py"))
            .env("VANE_HTTP", http.to_string())
            .env("VANE_GRPC", grpc.to_string())
            .env("VANE_MODELS", models_dir())
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the tritonclient suite failed:\n{report}");
    assert!(report.contains("Ran 7 tests") && report.contains("OK"), "{report}");
    server.stop().await;
}
