//! What the process-level benches share: building the release `vane`, finding the address it serves on, and a
//! one-shot HTTP/1.1 exchange. Each bench uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The repository root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
pub(crate) async fn route_once(
    state: std::sync::Arc<gateway::routes::AppState>,
    path: &str,
    body: bytes::Bytes,
) -> usize {
    use http_body_util::BodyExt;
    let request = hyper::Request::post(path).body(http_body_util::Full::new(body)).unwrap();
    let response = gateway::routes::route(state, request).await;
    assert!(response.status().is_success());
    response.into_body().collect().await.unwrap().to_bytes().len()
}
