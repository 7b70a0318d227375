//! What the process-level benches share: building the release `vane`, finding the address it serves on, and a
//! one-shot HTTP/1.1 exchange. Each bench uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub(crate) mod servers;

/// The repository root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cores this process may run on.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whether the binary was started by `cargo bench` (a `cargo test --benches` run only checks that it builds).
pub(crate) fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Builds the release binary (a no-op when it is current) and returns its path.
pub(crate) fn build_vane() -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "gateway", "--bin", "vane"])
        .current_dir(root())
        .status()?;
    if !status.success() {
        bail!("building vane failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join("release/vane"))
}

/// Builds the release examples `names` (no-ops when current) and returns the folder they are in.
pub(crate) fn build_examples(names: &[&str]) -> Result<PathBuf> {
    let mut command = Command::new(env!("CARGO"));
    command.args(["build", "--release"]).current_dir(root());
    for name in names {
        command.args(["--example", name]);
    }
    if !command.status()?.success() {
        bail!("building the examples {names:?} failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join("release/examples"))
}

/// Reads a `vane --log-format json` child's log until it says it is serving; returns the address, and keeps
/// draining the log on a thread so the child never blocks on a full pipe.
#[allow(dead_code)] // each bench binary uses one of the two
pub(crate) fn serving_addr(child: &mut Child) -> Result<String> {
    serving_addrs(child).map(|(http, _)| http)
}

/// [`serving_addr`], with the gRPC address (`None` when gRPC is off).
pub(crate) fn serving_addrs(child: &mut Child) -> Result<(String, Option<String>)> {
    let mut stderr = BufReader::new(child.stderr.take().context("stderr is piped")?);
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line)? == 0 {
            bail!("vane exited before serving");
        }
        let event: Value = serde_json::from_str(&line)?;
        if event["fields"]["message"] == "vane is serving" {
            let addr = event["fields"]["addr"].as_str().context("addr")?.to_owned();
            let grpc = event["fields"]["grpc"].as_str().filter(|g| *g != "off").map(str::to_owned);
            std::thread::spawn(move || for _ in stderr.lines() {});
            return Ok((addr, grpc));
        }
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the status code and the body.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let status = std::str::from_utf8(&answer[9..12]).ok().and_then(|s| s.parse().ok()).context("no status")?;
    Ok((status, answer[split + 4..].to_vec()))
}

/// One inference through the V2 router in-process (no socket): the response body's length. Panics on a non-2xx.
/// The URI is cloned (its bytes shared, as hyper shares its read buffer) and the one-frame body read in place, so
/// the harness adds no allocation of its own to what the router does.
pub(crate) async fn route_once(
    state: std::sync::Arc<gateway::routes::AppState>,
    uri: &hyper::Uri,
    body: bytes::Bytes,
) -> usize {
    use http_body_util::BodyExt;
    let request = hyper::Request::post(uri.clone()).body(http_body_util::Full::new(body)).unwrap();
    let response = gateway::routes::route(state, request).await;
    assert!(response.status().is_success());
    let mut body = response.into_body();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        length += frame.unwrap().into_data().map_or(0, |data| data.len());
    }
    length
}

/// Installs Debian's wrk when it is not on the PATH.
pub(crate) fn ensure_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("installing wrk from Debian's packages");
    for args in [vec!["update", "-qq"], vec!["install", "-y", "-qq", "wrk"]] {
        let status = Command::new("apt-get").args(&args).env("DEBIAN_FRONTEND", "noninteractive").status()?;
        if !status.success() {
            bail!("apt-get {} failed: install wrk by hand", args.join(" "));
        }
    }
    Ok(())
}

/// One wrk run's figures.
pub(crate) struct Run {
    pub(crate) rate: f64,
    pub(crate) errors: u64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
}

impl Run {
    pub(crate) fn summary(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let errors = if self.errors > 0 { format!(" ERRORS {}", self.errors) } else { String::new() };
        format!(
            "{:>8.0} req/s p50 {:.2} p99 {:.2} p99.9 {:.2} ms{errors}",
            self.rate,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us)
        )
    }
}

const WRK_SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local header = os.getenv("VANE_BENCH_HEADER")
if header then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = header
end
local f = assert(io.open(os.getenv("VANE_BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("VANE_RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// A wrk run posting the file `body`; with `header`, as the binary extension with that JSON header length. Two
/// client threads (one at concurrency 1).
pub(crate) fn wrk(
    addr: std::net::SocketAddr,
    path: &str,
    body: &std::path::Path,
    header: Option<usize>,
    concurrency: usize,
    seconds: u64,
) -> Result<Run> {
    wrk_threads(addr, path, body, header, concurrency, seconds, concurrency.min(2))
}

/// [`wrk`] with `threads` client threads.
pub(crate) fn wrk_threads(
    addr: std::net::SocketAddr,
    path: &str,
    body: &std::path::Path,
    header: Option<usize>,
    concurrency: usize,
    seconds: u64,
    threads: usize,
) -> Result<Run> {
    let script = body.with_extension("lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let mut command = Command::new("wrk");
    if let Some(header) = header {
        command.env("VANE_BENCH_HEADER", header.to_string());
    }
    let output = command
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &concurrency.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}{path}"))
        .env("VANE_BENCH_BODY", body)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("VANE_RESULT"))
        .with_context(|| format!("wrk printed no result: {text}"))?;
    let n: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    let [requests, duration_us, errors, p50_us, p99_us, p999_us] = n[..] else { bail!("bad wrk line {line}") };
    Ok(Run { rate: requests as f64 / (duration_us as f64 / 1e6), errors, p50_us, p99_us, p999_us })
}

/// Runs git in `dir` as the bench's author; fails on a non-zero exit.
pub(crate) fn git(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let status = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@vane.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .status()?;
    if !status.success() {
        bail!("git {args:?} failed");
    }
    Ok(())
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
