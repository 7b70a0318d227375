//! The README's first command, run exactly as written from the repository's root on this checkout: it must build,
//! start the demo, and answer the demo's example request. A fresh clone once stopped at `error: no bin target named
//! 'vane' in default-run packages`; this keeps that from coming back unnoticed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_readmes_first_command_runs_the_demo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme.split("```sh\n").nth(1).expect("a sh block").split("```").next().unwrap();
    let first = block.lines().next().unwrap();
    let command = first.split('#').next().unwrap().trim();
    assert_eq!(command, "cargo run --bin vane -- demo", "the test runs the README's first command; update both");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("cargo"));
    // Ports 0: the command as written, on free ports (VANE_LISTEN and VANE_GRPC_LISTEN are its flags' variables), so
    // it can run beside other tests. No traffic generator: the test sends its own request.
    let mut child = Command::new("timeout")
        .args(["--foreground", "600"])
        .arg(cargo)
        .args(words)
        .arg("--no-traffic")
        .current_dir(&root)
        .env("VANE_LISTEN", "127.0.0.1:0")
        .env("VANE_GRPC_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut printed = String::new();
    // The demo prints its instructions once it serves: the base URL and the example request's path.
    let (base, request) = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the demo exited; it printed: {printed}");
        printed.push_str(&line);
        let base = printed.split_whitespace().find_map(|w| w.strip_prefix("http://")).map(str::to_owned);
        let request = printed.split_whitespace().find(|w| w.ends_with("/requests/breast_cancer.json"));
        if let (Some(base), Some(request)) = (base, request) {
            let base = base.split('/').next().unwrap().to_owned();
            break (base, request.trim_start_matches('@').to_owned());
        }
        assert!(started.elapsed() < Duration::from_secs(600), "{printed}");
    };
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let body = std::fs::read(&request).unwrap();
    let mut stream = TcpStream::connect(&base).unwrap();
    let head = format!(
        "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    // `cargo run` execs the binary, and `timeout` passes SIGTERM on to it: the demo stops as on Ctrl-C.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""model_name":"breast_cancer""#) && answer.contains(r#""outputs""#), "{answer}");
    assert!(status.success(), "the demo did not stop cleanly: {status:?}");
}
