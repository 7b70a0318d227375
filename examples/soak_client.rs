//! The soak bench's load (`bash benches/soak.sh`): valid, invalid and slow clients at once against one `vane`, for a
//! long time, at a target request rate. Each valid connection sends on a fixed schedule and never runs ahead of it;
//! when it falls behind (this client shares a small machine) it does not try to catch up, so the rate achieved is
//! printed beside the latency, which is measured from each request's send to its answer.
//!
//! `soak_client ADDR capacity SECONDS` measures what this client gets in a closed loop (64 connections, as fast as
//! the server answers) and prints `capacity N` (requests per second): the load generator shares the machine's cores
//! with the server, so 80% of wrk's figure would be more than this client can send on time.
//!
//! `soak_client ADDR PID RATE SECONDS`: RATE valid batch-1 JSON requests per second to breast_cancer over 64
//! keep-alive connections (as many as a model version's queue holds, so a burst of them is never refused); beside
//! them, invalid requests at a hundredth of the rate (bad JSON, an unknown model, a wrong shape, a wrong datatype, an
//! oversized id), a 17 MiB body (over the size limit) every 2 s, and 64 slow clients sending headers a byte every
//! 300 ms, reconnecting when the server closes them. Every minute it prints the valid requests' rate, p50/p99
//! latency and errors, the invalid answers by status, the slow connections closed, and the server's resident memory
//! (from `/proc/PID/status`). It exits 1 if any valid request failed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const VALID_CONNECTIONS: usize = 64;
const SLOW_CLIENTS: usize = 64;

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(str::to_owned))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[derive(Default)]
struct Minute {
    latencies: Option<hdrhistogram::Histogram<u64>>,
    valid_ok: u64,
    valid_failed: u64,
    invalid: std::collections::BTreeMap<u16, u64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, addr, mode, seconds] = args.as_slice() {
        if mode == "capacity" {
            let addr: SocketAddr = addr.parse().expect("an address");
            let seconds: u64 = seconds.parse().expect("seconds");
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            println!("capacity {:.0}", runtime.block_on(capacity(addr, seconds)));
            return;
        }
    }
    let [_, addr, pid, rate, seconds] = args.as_slice() else {
        eprintln!("usage: soak_client ADDR PID RATE SECONDS");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("an address");
    let pid: u32 = pid.parse().expect("a pid");
    let rate: f64 = rate.parse().expect("requests per second");
    let seconds: u64 = seconds.parse().expect("seconds");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let slow_closed = Arc::new(AtomicU64::new(0));
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let (stop, closed) = (Arc::clone(&stop), Arc::clone(&slow_closed));
            std::thread::spawn(move || slow_client(addr, &stop, &closed))
        })
        .collect();
    let minute = Arc::new(Mutex::new(Minute::default()));
    let failed_total = runtime.block_on(load(addr, pid, rate, seconds, Arc::clone(&minute), Arc::clone(&slow_closed)));
    stop.store(true, Ordering::Relaxed);
    slow.into_iter().for_each(|t| t.join().unwrap());
    if failed_total > 0 {
        println!("FAILED: {failed_total} valid requests failed");
        std::process::exit(1);
    }
    println!("zero errors for the valid clients");
}

/// The valid request's body: row 0 of breast_cancer's reference data.
fn valid_body() -> Bytes {
    let row = std::fs::read_to_string("models/breast_cancer/reference.csv").expect("run from the repository root");
    let row = row.lines().nth(1).expect("a data row").to_owned();
    Bytes::from(format!(r#"{{"inputs":[{{"name":"input","shape":[1,30],"datatype":"FP32","data":[{row}]}}]}}"#))
}

/// Requests per second this client gets in a closed loop over `VALID_CONNECTIONS` connections.
async fn capacity(addr: SocketAddr, seconds: u64) -> f64 {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(VALID_CONNECTIONS).build_http();
    let (body, end) = (valid_body(), Instant::now() + Duration::from_secs(seconds));
    let uri: hyper::Uri = format!("http://{addr}/v2/models/breast_cancer/infer").parse().unwrap();
    let tasks: Vec<_> = (0..VALID_CONNECTIONS)
        .map(|_| {
            let (client, body, uri) = (client.clone(), body.clone(), uri.clone());
            tokio::spawn(async move {
                let mut answered = 0u64;
                while Instant::now() < end {
                    let request = hyper::Request::post(uri.clone()).body(Full::new(body.clone())).unwrap();
                    if let Ok(response) = client.request(request).await {
                        if response.into_body().collect().await.is_ok() {
                            answered += 1;
                        }
                    }
                }
                answered
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    total as f64 / seconds as f64
}

async fn load(
    addr: SocketAddr,
    pid: u32,
    rate: f64,
    seconds: u64,
    minute: Arc<Mutex<Minute>>,
    slow_closed: Arc<AtomicU64>,
) -> u64 {
    let valid = valid_body();
    let invalid: Vec<(&str, Bytes)> = vec![
        ("/v2/models/breast_cancer/infer", Bytes::from_static(b"{\"inputs\": [")),
        ("/v2/models/nope/infer", valid.clone()),
        (
            "/v2/models/breast_cancer/infer",
            Bytes::from_static(br#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#),
        ),
        (
            "/v2/models/breast_cancer/infer",
            Bytes::from(r#"{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP64","data":[0]}]}"#),
        ),
        ("/v2/models/breast_cancer/infer", Bytes::from(format!(r#"{{"id":"{}","inputs":[]}}"#, "x".repeat(4096)))),
    ];
    let oversized = Bytes::from(vec![b' '; 17 * 1024 * 1024]);
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(VALID_CONNECTIONS).build_http();
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let failed_total = Arc::new(AtomicU64::new(0));
    // Each of the valid "connections" is a task that sends its share of the rate on a fixed schedule.
    let per_task = rate / VALID_CONNECTIONS as f64;
    let mut tasks = Vec::new();
    for task in 0..VALID_CONNECTIONS {
        let (client, valid, minute, failed_total) =
            (client.clone(), valid.clone(), Arc::clone(&minute), Arc::clone(&failed_total));
        let uri: hyper::Uri = format!("http://{addr}/v2/models/breast_cancer/infer").parse().unwrap();
        tasks.push(tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / per_task);
            let mut due = started + period.mul_f64(task as f64 / VALID_CONNECTIONS as f64);
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                let request = hyper::Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(valid.clone()))
                    .unwrap();
                let ok = match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                let mut m = minute.lock().unwrap();
                if ok {
                    m.valid_ok += 1;
                    m.latencies
                        .get_or_insert_with(|| hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap())
                        .saturating_record(micros);
                } else {
                    m.valid_failed += 1;
                    failed_total.fetch_add(1, Ordering::Relaxed);
                }
                drop(m);
                // Behind schedule: the next request is due a period from now, not at once.
                due = (due + period).max(Instant::now());
            }
        }));
    }
    // Invalid requests at a hundredth of the rate, round robin over the kinds, and an oversized body every 2 s.
    for (kinds, period) in [
        (invalid, Duration::from_secs_f64(100.0 / rate)),
        (vec![("/v2/models/breast_cancer/infer", oversized)], Duration::from_secs(2)),
    ] {
        let (client, minute) = (client.clone(), Arc::clone(&minute));
        tasks.push(tokio::spawn(async move {
            let mut due = started;
            let mut n = 0usize;
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                let (path, body) = &kinds[n % kinds.len()];
                n += 1;
                let request = hyper::Request::post(format!("http://{addr}{path}"))
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let status = match client.request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        status
                    }
                    Err(_) => 0,
                };
                *minute.lock().unwrap().invalid.entry(status).or_default() += 1;
                due += period;
            }
        }));
    }
    // The report, once a minute (and at the end).
    let reporter = {
        let minute = Arc::clone(&minute);
        tokio::spawn(async move {
            let mut first: Option<(u64, u64)> = None;
            let mut last = (0, 0);
            let mut at = started;
            while at < end {
                at = (at + Duration::from_secs(60)).min(end);
                tokio::time::sleep_until(at.into()).await;
                let m = std::mem::take(&mut *minute.lock().unwrap());
                let (p50, p99) =
                    m.latencies.as_ref().map_or((0, 0), |h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99)));
                let rss = rss_mib(pid);
                println!(
                    "t={:>5}s valid ok {} ({:.0}/s) failed {} p50 {:.2} ms p99 {:.2} ms | invalid {:?} | slow closed {} | server RSS {} MiB",
                    started.elapsed().as_secs(),
                    m.valid_ok,
                    m.valid_ok as f64 / 60.0,
                    m.valid_failed,
                    p50 as f64 / 1000.0,
                    p99 as f64 / 1000.0,
                    m.invalid,
                    slow_closed.load(Ordering::Relaxed),
                    rss
                );
                first.get_or_insert((rss, p99));
                last = (rss, p99);
            }
            if let Some((rss, p99)) = first {
                println!(
                    "first minute: RSS {rss} MiB, p99 {:.2} ms; last minute: RSS {} MiB, p99 {:.2} ms",
                    p99 as f64 / 1000.0,
                    last.0,
                    last.1 as f64 / 1000.0
                );
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    let _ = reporter.await;
    failed_total.load(Ordering::Relaxed)
}

/// Sends request headers a byte at a time until the server closes the connection, then opens another.
fn slow_client(addr: SocketAddr, stop: &AtomicBool, closed: &AtomicU64) {
    let head = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-slow: ";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        };
        // The read waits up to 300 ms for the server to close the connection: it paces the bytes.
        let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        let mut buf = [0u8; 512];
        for byte in head.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            match stream.read(&mut buf) {
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                _ => break,
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
    }
}
