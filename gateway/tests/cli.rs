//! The `vane` binary as a user runs it: start-up failures are one clear line and a non-zero exit, and a served
//! process answers and stops on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// Runs `vane` with `args`, bounded by coreutils' `timeout` so a process that wrongly keeps serving fails the test.
fn vane(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("timeout");
    command.arg("60").arg(env!("CARGO_BIN_EXE_vane")).args(args).env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("vane runs")
}

/// Asserts a failed exit whose stderr is exactly one line containing every needle.
#[track_caller]
fn assert_one_line_failure(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should fail; stderr: {stderr}");
    assert_ne!(output.status.code(), Some(124), "timed out instead of failing: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].starts_with("vane: error: "), "{stderr}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{:?} should contain {needle:?}", lines[0]);
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn serve_args(model_dir: &Path) -> Vec<String> {
    ["serve", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--model-dir"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([model_dir.display().to_string()])
        .collect()
}

fn run_serve(model_dir: &Path, env: &[(&str, &str)]) -> Output {
    let args = serve_args(model_dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vane(&args, env)
}

#[test]
fn a_missing_onnx_runtime_library_is_one_line_saying_what_was_looked_for() {
    let output = run_serve(&models_dir(), &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")]);
    assert_one_line_failure(
        &output,
        &[
            "ONNX Runtime library not found at /nonexistent/libonnxruntime.so.1.31.1",
            "from ORT_DYLIB_PATH",
            "set ORT_DYLIB_PATH",
        ],
    );
}

#[test]
fn a_file_that_is_not_the_library_is_one_line_too() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared object").unwrap();
    let output = run_serve(&models_dir(), &[("ORT_DYLIB_PATH", fake.to_str().unwrap())]);
    assert_one_line_failure(&output, &["could not be loaded", "ORT_DYLIB_PATH must name libonnxruntime.so.1.31.1"]);
}

#[test]
fn a_missing_model_directory_is_one_line() {
    let output = run_serve(Path::new("/nonexistent/models"), &[]);
    assert_one_line_failure(&output, &["cannot read model directory /nonexistent/models"]);
}

#[test]
fn a_trace_sample_rate_outside_0_to_1_is_one_line() {
    let output = run_serve(&models_dir(), &[("VANE_TRACE_SAMPLE_RATE", "5")]);
    assert_one_line_failure(&output, &["the trace sample rate must be between 0 and 1, got 5"]);
}

#[test]
fn a_corrupt_model_file_is_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("broken/1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("model.onnx"), b"\x08\x07garbage").unwrap();
    let output = run_serve(dir.path(), &[]);
    assert_one_line_failure(&output, &["cannot load", "broken/1/model.onnx"]);
}

#[test]
fn a_served_process_answers_and_exits_cleanly_on_sigterm() {
    // --foreground: timeout passes a signal on to vane alone (by default it also signals its process group, so vane
    // would see SIGTERM twice and take the second as "exit at once").
    let mut child = Command::new("timeout")
        .args(["--foreground", "60"])
        .arg(env!("CARGO_BIN_EXE_vane"))
        .args(serve_args(&models_dir()))
        .args(["--log-format", "json"])
        // The edge's lines for refused requests are at debug; this turns them on for the routes only.
        .env("RUST_LOG", "info,gateway::routes=debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // The readiness signal: the log line the server writes once it accepts connections.
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "vane exited before serving");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["fields"]["message"] == "vane is serving" {
            break event["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.write_all(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"ready":true}"#), "{answer}");

    // A refused request: the caller's id comes back and is on the log line; without one, an id is made.
    let exchange = |head: &str| {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    // It carries the caller's W3C trace context: its trace id goes on the log line even with trace export off.
    let answer = exchange("POST /v2/models/nope/infer HTTP/1.1\r\nhost: x\r\nx-request-id: test-7\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
    assert!(answer.starts_with("HTTP/1.1 404") && answer.contains("x-request-id: test-7\r\n"), "{answer}");
    let answer =
        exchange("POST /v2/models/nope/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
    assert!(answer.contains("x-request-id: vane-"), "{answer}");

    // `timeout` forwards SIGTERM to vane.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "exit {status:?}; log: {rest}");
    assert!(rest.contains("all inference workers stopped"), "{rest}");
    let refused: Vec<serde_json::Value> = rest
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["fields"]["message"] == "request refused")
        .collect();
    assert_eq!(refused.len(), 2, "one line per refused request: {rest}");
    assert_eq!(refused[0]["level"], "DEBUG");
    assert_eq!(refused[0]["fields"]["request_id"], "test-7");
    assert_eq!(refused[0]["fields"]["status"], 404);
    assert_eq!(refused[0]["fields"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(refused[0]["fields"]["span_id"], "00f067aa0ba902b7");
    assert!(refused[1]["fields"].get("trace_id").is_none(), "no trace, no trace id: {}", refused[1]);
    assert!(refused[1]["fields"]["request_id"].as_str().unwrap().starts_with("vane-"), "{}", refused[1]);
}

/// `configs/serve.env` documents every setting: each key must be one `vane serve` reads, with the default it states.
#[test]
fn the_example_env_file_names_real_settings_with_their_real_defaults() {
    let help = vane(&["serve", "--help"], &[]);
    let help = String::from_utf8(help.stdout).unwrap();
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/serve.env")).unwrap();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').unwrap();
        let entry =
            help.split("\n      --").find(|flag| flag.contains(&format!("[env: {key}="))).unwrap_or_else(|| {
                panic!("{key} is not a setting of vane serve:\n{help}");
            });
        if let Some(default) = entry.split("[default: ").nth(1) {
            assert_eq!(default.split(']').next(), Some(value), "{key}: the file says {value}, vane says {entry}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "the file lists the settings ({checked})");
}

/// Writes `files` into a fresh folder for `vane drift`.
fn drift_files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn drift(dir: &Path, extra: &[&str]) -> Output {
    let (reference, current) = (dir.join("ref.csv"), dir.join("cur.csv"));
    let mut args = vec!["drift", "--reference", reference.to_str().unwrap(), "--current", current.to_str().unwrap()];
    args.extend_from_slice(extra);
    vane(&args, &[])
}

#[test]
fn drift_reports_bad_input_in_one_line_naming_the_file_row_and_column() {
    let dir = drift_files(&[("ref.csv", "a,b\n1,x\n2,y\n"), ("cur.csv", "a,b\n1,x\n2\n")]);
    let output = drift(dir.path(), &[]);
    assert_one_line_failure(&output, &["cur.csv: row 3 has 1 cells, the header has 2"]);

    let dir = drift_files(&[("ref.csv", "a,b\n1,x\n"), ("cur.csv", "a\n1\n")]);
    assert_one_line_failure(&drift(dir.path(), &[]), &["column \"b\" is in", "ref.csv but not in", "cur.csv"]);

    let dir = drift_files(&[("ref.csv", "a\n1\n2\n"), ("cur.csv", "a\n1\nlots\n")]);
    let output = drift(dir.path(), &["--column", "a=numeric"]);
    assert_one_line_failure(&output, &["cur.csv: row 3, column \"a\": \"lots\" is not a number"]);

    let dir = drift_files(&[("ref.csv", "a\n1\n")]);
    assert_one_line_failure(&drift(dir.path(), &[]), &["cur.csv: No such file"]);

    let dir = drift_files(&[("ref.csv", "a\n1\n"), ("cur.csv", "a\n1\n")]);
    let output = drift(dir.path(), &["--column", "a=colour"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown column kind \"colour\""));
}

#[test]
fn drift_writes_an_html_page_with_the_drifted_column_first() {
    let reference: String = "x,colour\n".to_owned() + &(0..200).map(|i| format!("{i},red\n")).collect::<String>();
    let current: String = "x,colour\n".to_owned() + &(0..200).map(|i| format!("{},red\n", i + 150)).collect::<String>();
    let dir = drift_files(&[("ref.csv", &reference), ("cur.csv", &current)]);
    let out = dir.path().join("report.html");
    let output = drift(dir.path(), &["--format", "html", "--out", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty(), "the report went to the file");
    let page = std::fs::read_to_string(out).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("1 of 2 columns drifted (50%): dataset drift"), "{page}");
    let (x, colour) = (page.find("<td>x</td>").unwrap(), page.find("<td>colour</td>").unwrap());
    assert!(x < colour, "the drifted column comes first");
    assert!(page.contains("<svg class=\"bars\""));
}
