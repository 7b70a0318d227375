//! The edge against hostile clients, on the `vane` binary in its own process so its resident memory can be read
//! from `/proc/<pid>/status` (what the OOM killer and Kubernetes' memory limit see): each hostile request costs one
//! quick error, the process stays up and under its memory budget plus its idle footprint, slow clients are cut off
//! at the header timeout while health answers at once, and probes answer 200 while inference is shed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{models_dir, one_at_a_time, status_bytes};

/// A `vane serve --model-dir models` process, killed when dropped.
struct Vane {
    child: Child,
    addr: SocketAddr,
    grpc: SocketAddr,
}

impl Vane {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vane"))
            .args(["serve", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--model-dir")
            .arg(models_dir())
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("vane starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        // The readiness signal: the line the server logs once every model is loaded and the socket accepts.
        let (addr, grpc) = loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "vane exited before serving");
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["fields"]["message"] == "vane is serving" {
                let field = |name: &str| event["fields"][name].as_str().unwrap().parse().unwrap();
                break (field("addr"), field("grpc"));
            }
        };
        // Keep draining the log so the process never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self { child, addr, grpc }
    }

    /// (VmRSS, VmHWM) in bytes.
    fn memory(&self) -> (u64, u64) {
        let pid = self.child.id();
        let field = |name| status_bytes(pid, name).unwrap_or_else(|| panic!("{name} of process {pid}"));
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Vane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
fn exchange(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before the whole body is sent: a refused write is not the test's concern.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A hostile request: its name, path, body, the statuses it may get, and a needle its answer holds.
type Case = (&'static str, &'static str, Vec<u8>, &'static [u16], &'static str);

const BUDGET: u64 = 256 * 1024 * 1024;

/// The hostile requests, each answered with a 4xx or 503 within seconds, one after another and then many at once,
/// while resident memory stays under the budget plus the idle footprint.
#[test]
fn hostile_requests_cost_one_error_each_and_memory_stays_under_the_budget() {
    let _alone = one_at_a_time();
    let mut vane = Vane::start(&["--max-inflight-bytes", &BUDGET.to_string()]);
    let addr = vane.addr;
    let row = r#"{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}"#;
    for _ in 0..20 {
        assert_eq!(exchange(addr, "POST", "/v2/models/breast_cancer/infer", row.as_bytes()).0, 200);
    }
    let (idle, _) = vane.memory();

    let sixteen_mib = 16 * 1024 * 1024 - 4096;
    let mut cases: Vec<Case> = Vec::new();
    // 200,000 BYTES inputs of a declared 65,536 elements each (24 GB resident on an earlier build).
    let mut many = String::from(r#"{"inputs":["#);
    for i in 0..200_000 {
        if i > 0 {
            many.push(',');
        }
        many.push_str(&format!(r#"{{"name":"a{i}","shape":[65536],"datatype":"BYTES","data":[]}}"#));
    }
    many.push_str("]}");
    cases.push(("many inputs", "/v2/models/dtypes/infer", many.into_bytes(), &[400], "unknown input 'a0'"));
    // The same against a model with one input, each input valid on its own (each is decoded as it is read), so the
    // second reaches the count check.
    let one = format!(r#"{{"name":"input","shape":[1,30],"datatype":"FP32","data":[{}]}}"#, vec!["0"; 30].join(","));
    let mut many = String::from(r#"{"inputs":["#);
    for i in 0..100_000 {
        if i > 0 {
            many.push(',');
        }
        many.push_str(&one);
    }
    many.push_str("]}");
    cases.push(("repeated inputs", "/v2/models/breast_cancer/infer", many.into_bytes(), &[400], "more than 1 inputs"));
    // 16 MiB of one-character BYTES elements.
    let count = (sixteen_mib - 200) / 4;
    let mut strings = format!(r#"{{"inputs":[{{"name":"x_bytes","shape":[{count}],"datatype":"BYTES","data":["#);
    strings.push_str(&vec![r#""a""#; count].join(","));
    strings.push_str("]}]}");
    // Decoded within 8x its size (4 million Strings), then refused for the inputs it lacks.
    cases.push(("one-character strings", "/v2/models/dtypes/infer", strings.into_bytes(), &[400], "missing input"));
    // Deep nesting.
    let depth = 1_000_000;
    let nested = format!(
        r#"{{"inputs":[{{"name":"input","shape":[1,30],"datatype":"FP32","data":{}1{}}}]}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    cases.push(("deep nesting", "/v2/models/breast_cancer/infer", nested.into_bytes(), &[400], "recursion limit"));
    // A huge declared shape over little data.
    let huge_shape = r#"{"inputs":[{"name":"input","shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#;
    cases.push(("huge shape", "/v2/models/breast_cancer/infer", huge_shape.as_bytes().to_vec(), &[400], "too large"));
    let huge_rows = r#"{"inputs":[{"name":"input","shape":[100000000,30],"datatype":"FP32","data":[1]}]}"#;
    cases.push(("huge row count", "/v2/models/breast_cancer/infer", huge_rows.as_bytes().to_vec(), &[400], "holds 1"));
    // A wrong datatype over a huge array: refused by the datatype, before the data is read.
    let zeros = (sixteen_mib - 200) / 2;
    let mut wrong = format!(r#"{{"inputs":[{{"name":"input","shape":[{zeros}],"datatype":"FP64","data":["#);
    wrong.push_str(&vec!["0"; zeros].join(","));
    wrong.push_str("]}]}");
    let wrong = wrong.into_bytes();
    cases.push(("wrong datatype", "/v2/models/breast_cancer/infer", wrong.clone(), &[400], "has datatype FP64"));
    // A 15 MB request id.
    let long_id = format!(r#"{{"id":"{}","inputs":[]}}"#, "i".repeat(15_000_000));
    cases.push(("huge id", "/v2/models/breast_cancer/infer", long_id.into_bytes(), &[400], "request id is 15000000"));

    let sampler = PeakSampler::start(vane.child.id());
    for (name, path, body, statuses, needle) in &cases {
        let started = Instant::now();
        let (status, answer) = exchange(addr, "POST", path, body);
        let took = started.elapsed();
        assert!(statuses.contains(&status), "{name}: status {status}, {answer}");
        assert!(answer.contains(needle), "{name}: {answer}");
        assert!(took < Duration::from_secs(10), "{name}: answered after {took:?}");
        assert!(vane.alive(), "{name} ended the process");
        let so_far = sampler.peak() >> 20;
        eprintln!(
            "{name}: {status} in {took:?} (peak so far {so_far} MiB): {}",
            answer.chars().take(120).collect::<String>()
        );
    }
    // Many maximum-size bodies at once: each is charged 9x its size before decoding, so the budget admits one or two
    // and sheds the rest with 503 before keeping their bodies.
    let rows = (sixteen_mib - 200) / 60;
    let mut big = format!(r#"{{"inputs":[{{"name":"input","shape":[{rows},30],"datatype":"FP32","data":["#);
    big.push_str(&vec!["0"; rows * 30].join(","));
    big.push_str("]}]}");
    let big = Arc::new(big.into_bytes());
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let big = Arc::clone(&big);
            std::thread::spawn(move || exchange(addr, "POST", "/v2/models/breast_cancer/infer", &big))
        })
        .collect();
    let mut statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap().0).collect();
    statuses.sort_unstable();
    eprintln!("32 maximum-size bodies at once: {statuses:?}");
    assert!(statuses.iter().all(|s| [400, 503].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&503), "the budget should shed some of 32 x 16 MiB: {statuses:?}");
    let peak = sampler.peak();
    eprintln!("idle {} MiB, peak {} MiB, budget {} MiB", idle >> 20, peak >> 20, BUDGET >> 20);
    assert!(peak < idle + BUDGET, "peak resident {peak} over idle {idle} + budget {BUDGET}");
    // Still serving.
    assert!(vane.alive());
    assert_eq!(exchange(addr, "GET", "/v2/health/live", b"").0, 200);
    assert_eq!(exchange(addr, "POST", "/v2/models/breast_cancer/infer", row.as_bytes()).0, 200);
}

/// Hundreds of connections sending their headers a byte at a time: health answers within 100 ms throughout, and
/// the slow connections are closed at the header timeout.
#[test]
fn slow_clients_are_cut_off_at_the_header_timeout_while_health_answers() {
    let _alone = one_at_a_time();
    let vane = Vane::start(&["--header-timeout", "2s"]);
    let addr = vane.addr;
    let slow = 300;
    let started = Instant::now();
    let (stop_probing, probing) = std::sync::mpsc::channel::<()>();
    let prober = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut probes = 0;
        // About 50 probes a second until told to stop: the wait between probes is the stop signal's.
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = probing.recv_timeout(Duration::from_millis(20)) {
            let t = Instant::now();
            let (status, _) = exchange(addr, "GET", "/v2/health/live", b"");
            assert_eq!(status, 200);
            worst = worst.max(t.elapsed());
            probes += 1;
        }
        (worst, probes)
    });
    let senders: Vec<_> = (0..slow)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                // The read waits up to 200 ms for the server to close the connection: it paces the bytes and sees the
                // close the moment it happens.
                stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let head = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-slow: ";
                let opened = Instant::now();
                let mut buf = [0u8; 256];
                for byte in head.iter().cycle() {
                    if stream.write_all(&[*byte]).is_err() {
                        return opened.elapsed();
                    }
                    match stream.read(&mut buf) {
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        // Closed (or answered 408) by the server.
                        _ => return opened.elapsed(),
                    }
                    assert!(opened.elapsed() < Duration::from_secs(30), "never closed");
                }
                unreachable!()
            })
        })
        .collect();
    let lifetimes: Vec<Duration> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    drop(stop_probing);
    let (worst, probes) = prober.join().unwrap();
    let longest = lifetimes.iter().max().unwrap();
    eprintln!("{slow} slow connections closed after at most {longest:?}; {probes} probes, slowest {worst:?}");
    assert!(lifetimes.iter().all(|l| *l >= Duration::from_millis(1500)), "closed too early: {lifetimes:?}");
    assert!(*longest < Duration::from_secs(6), "a slow connection outlived the 2 s header timeout: {longest:?}");
    assert!(probes > 10 && worst < Duration::from_millis(100), "{probes} probes, slowest {worst:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// While inference is shed with 503, liveness, readiness, `/metrics` and the status page answer 200, and shed
/// probes are not counted as inference.
#[test]
fn probes_answer_while_inference_is_shed() {
    let _alone = one_at_a_time();
    let vane = Vane::start(&["--max-concurrent-requests", "2", "--workers-per-model", "1", "--max-batch-size", "0"]);
    let addr = vane.addr;
    let rows = 64;
    let body = format!(
        r#"{{"inputs":[{{"name":"input","shape":[{rows},1024],"datatype":"FP32","data":[{}]}}]}}"#,
        vec!["0.5"; rows * 1024].join(",")
    );
    let body = Arc::new(body.into_bytes());
    let flooding = Arc::new(AtomicBool::new(true));
    let shed = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..48)
        .map(|_| {
            let (body, flooding, shed) = (Arc::clone(&body), Arc::clone(&flooding), Arc::clone(&shed));
            std::thread::spawn(move || {
                while flooding.load(Ordering::Relaxed) {
                    let (status, answer) = exchange(addr, "POST", "/v2/models/dense/infer", &body);
                    assert!(status == 200 || status == 503, "{status} {answer}");
                    if status == 503 {
                        shed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Probe until the flood has been shed for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut probes = 0;
    while shed.load(Ordering::Relaxed) < 200 || probes < 40 {
        assert!(Instant::now() < deadline, "the flood was never shed ({} shed)", shed.load(Ordering::Relaxed));
        for path in ["/v2/health/live", "/v2/health/ready", "/metrics", "/api/v1/status"] {
            let (status, answer) = exchange(addr, "GET", path, b"");
            assert_eq!(status, 200, "{path} under saturation: {answer}");
            probes += 1;
        }
    }
    flooding.store(false, Ordering::Relaxed);
    flood.into_iter().for_each(|t| t.join().unwrap());
    let (_, metrics) = exchange(addr, "GET", "/metrics", b"");
    let counter = |model: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(r#"vane_requests_total{{model="{model}""#))
                    && l.contains(r#"protocol="http""#)
                    && l.contains(r#"outcome="rejected""#)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let unresolved = counter("");
    let shed_total = shed.load(Ordering::Relaxed);
    let dense = counter("dense");
    eprintln!("{probes} probes answered 200 while {shed_total} inference requests were shed ({dense} counted)");
    // Shed inference is counted under its model; nothing lands under model="" (where shed probes used to).
    assert!(dense >= shed_total as f64, "{metrics}");
    assert_eq!(unresolved, 0.0, "{metrics}");
}

/// The kernel's own peak of a process's resident memory (`VmHWM`), from the moment it was reset: exact, where a
/// sampler reading `VmRSS` on a timer could miss a short peak.
struct PeakSampler {
    pid: u32,
}

impl PeakSampler {
    /// Resets the process's peak to its current resident size (`clear_refs` 5, Linux 4.0 and later).
    fn start(pid: u32) -> Self {
        std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").expect("reset the peak resident size");
        Self { pid }
    }

    /// The peak since the reset, in bytes.
    fn peak(&self) -> u64 {
        status_bytes(self.pid, "VmHWM:").expect("VmHWM")
    }
}

/// Over gRPC: a message past the size limit is RESOURCE_EXHAUSTED with REST's message, before it is buffered, and
/// 32 concurrent near-maximum messages are admitted only as the memory budget allows (UNAVAILABLE for the rest),
/// with resident memory under the budget plus the idle footprint.
#[test]
fn grpc_messages_meet_the_size_limit_and_the_memory_budget() {
    let _alone = one_at_a_time();
    use gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use gateway::grpc::proto::model_infer_request::InferInputTensor;
    use gateway::grpc::proto::ModelInferRequest;

    let vane = Vane::start(&["--max-inflight-bytes", &BUDGET.to_string()]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let url = format!("http://{}", vane.grpc);
    let request = |rows: usize| ModelInferRequest {
        model_name: "breast_cancer".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 30],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![vec![0u8; rows * 30 * 4].into()],
        ..ModelInferRequest::default()
    };
    let (idle, _) = vane.memory();
    let sampler = PeakSampler::start(vane.child.id());
    let (oversize, statuses) = {
        runtime.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
            let mut client = GrpcInferenceServiceClient::new(channel.clone()).max_decoding_message_size(1 << 20);
            let ok = client.model_infer(request(1)).await.expect("a valid call").into_inner();
            assert_eq!(ok.model_name, "breast_cancer");
            // 17 MiB: over the 16 MiB limit.
            let oversize = client.model_infer(request(17 * 1024 * 1024 / 120 + 1)).await.unwrap_err();
            let calls: Vec<_> = (0..32)
                .map(|_| {
                    let mut client = GrpcInferenceServiceClient::new(channel.clone());
                    tokio::spawn(async move {
                        match client.model_infer(request(15 * 1024 * 1024 / 120)).await {
                            Ok(_) => tonic::Code::Ok,
                            Err(status) => status.code(),
                        }
                    })
                })
                .collect();
            let mut statuses = Vec::new();
            for call in calls {
                statuses.push(call.await.unwrap());
            }
            (oversize, statuses)
        })
    };
    let peak = sampler.peak();
    assert_eq!(oversize.code(), tonic::Code::ResourceExhausted, "{oversize:?}");
    assert!(oversize.message().contains("request body is larger than the 16777216-byte limit"), "{oversize:?}");
    eprintln!("32 near-maximum gRPC messages at once: {statuses:?}; idle {} MiB, peak {} MiB", idle >> 20, peak >> 20);
    assert!(
        statuses.iter().all(|c| [tonic::Code::InvalidArgument, tonic::Code::Unavailable].contains(c)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&tonic::Code::Unavailable), "the budget should shed some: {statuses:?}");
    assert!(peak < idle + BUDGET, "peak {peak} over idle {idle} + budget {BUDGET}");
    assert_eq!(exchange(vane.addr, "GET", "/v2/health/live", b"").0, 200);
}
