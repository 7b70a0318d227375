//! Safe at the source: the `vane` binary in its own process against real Git repositories made with `git`, so a
//! restart, a `kill -9` and hostile pushes are what an operator would see, and resident memory is read from
//! `/proc/<pid>/status` (what the OOM killer sees) while the pushes are refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{models_dir, one_at_a_time, status_bytes};

/// A work repository and the bare remote it pushes to.
struct Remote {
    work: tempfile::TempDir,
    bare: PathBuf,
    _bare_parent: tempfile::TempDir,
}

impl Remote {
    /// breast_cancer from `configs/deploy/breast-cancer.yaml`, pushed.
    fn with_breast_cancer() -> Self {
        let parent = tempfile::tempdir().unwrap();
        let bare = parent.path().join("deploy.git");
        let remote = Self { work: tempfile::tempdir().unwrap(), bare, _bare_parent: parent };
        run(Command::new("git").args(["init", "-q", "--bare", "-b", "main"]).arg(&remote.bare));
        remote.git(&["init", "-q", "-b", "main"]);
        remote.write(
            "deploy/breast-cancer.yaml",
            &std::fs::read(models_dir().join("../configs/deploy/breast-cancer.yaml")).unwrap(),
        );
        for file in ["1/model.onnx", "2/model.onnx", "reference.csv"] {
            let bytes = std::fs::read(models_dir().join("breast_cancer").join(file)).unwrap();
            remote.write(&format!("models/breast_cancer/{file}"), &bytes);
        }
        remote.push("first");
        remote
    }

    fn git(&self, args: &[&str]) -> String {
        run(Command::new("git")
            .args(["-c", "user.name=vane-test", "-c", "user.email=test@vane.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.work.path()))
    }

    fn write(&self, path: &str, content: &[u8]) {
        let file = self.work.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }

    fn push(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["push", "-q", "--force", self.bare.to_str().unwrap(), "main"]);
        self.git(&["rev-parse", "HEAD"])
    }
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A `vane serve --repo` process with JSON logs read into a channel, killed when dropped.
struct Vane {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<Value>,
    started: Instant,
}

impl Vane {
    fn start(repo: &Path, data: &Path, extra: &[&str]) -> Self {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vane"))
            .args(["serve", "--listen", "127.0.0.1:0", "--grpc-listen", "off", "--log-format", "json"])
            .args(["--poll-interval", "1h"])
            .arg("--repo")
            .arg(repo)
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("VANE_ADMIN_TOKEN")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("vane starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                let event: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let mut vane = Self { child, addr: "0.0.0.0:0".parse().unwrap(), log, started };
        let serving = vane.wait_for("the server listens", |e| e["fields"]["message"] == "vane is serving");
        vane.addr = serving["fields"]["addr"].as_str().unwrap().parse().unwrap();
        vane
    }

    /// The next log event that satisfies `condition` (within 120 s).
    fn wait_for(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(event) if condition(&event) => return event,
                Ok(_) => {}
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
    }

    /// Waits for the sync of `commit` to finish and returns its outcome (`Applied`, `Refused`, ...).
    fn synced(&self, commit: &str) -> String {
        let event = self.wait_for(&format!("the sync of {commit}"), |e| {
            e["fields"]["message"] == "sync finished"
                && e["fields"]["commit"].as_str().is_some_and(|c| c.contains(commit))
        });
        event["fields"]["outcome"].as_str().unwrap().to_owned()
    }

    fn get(&self, path: &str) -> (u16, Value) {
        exchange(self.addr, "GET", path, b"")
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, Value) {
        exchange(self.addr, "POST", path, body)
    }

    /// The commit serving answers.
    fn serving(&self) -> String {
        let row = r#"{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[14,20,90,600,0.1,0.1,0.1,0.05,0.2,0.06,0.4,1,3,40,0.007,0.02,0.03,0.01,0.02,0.003,16,25,105,800,0.13,0.25,0.3,0.12,0.3,0.08]}]}"#;
        let (status, _, headers) =
            exchange_with_headers(self.addr, "POST", "/v2/models/breast_cancer/infer", row.as_bytes());
        assert_eq!(status, 200);
        headers.lines().find_map(|l| l.strip_prefix("vane-commit: ")).unwrap().trim().to_owned()
    }

    /// (VmRSS, VmHWM) in bytes.
    fn memory(&self) -> (u64, u64) {
        let field = |name: &str| status_bytes(self.child.id(), name).unwrap_or_else(|| panic!("{name}"));
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) {
        run(Command::new("kill").arg("-TERM").arg(self.child.id().to_string()));
        let _ = self.child.wait();
    }
}

impl Drop for Vane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exchange(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, body, _) = exchange_with_headers(addr, method, path, body);
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn exchange_with_headers(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    // Bodies here are small and not chunked by the server (it sends a length), so the rest is the body.
    (status, body.to_owned(), headers.to_ascii_lowercase().replace("vane-commit:", "vane-commit: "))
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Restart with the remote gone serves the last applied commit from the local clone and cache, as fast as a
/// restart with Git up; `kill -9` in the middle of a sync, then a restart, serves the last applied commit too.
#[test]
fn a_restart_serves_the_last_applied_commit_with_git_down_or_after_kill_9() {
    let _alone = one_at_a_time();
    let remote = Remote::with_breast_cancer();
    let good = remote.git(&["rev-parse", "HEAD"]);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("vane");

    let vane = Vane::start(&remote.bare, &data_dir, &[]);
    assert_eq!(vane.synced(&good), "Applied");
    let first = vane.started.elapsed();
    assert_eq!(vane.serving(), good);
    vane.stop();

    // Restart with Git up: the restore serves first, then the sync finds nothing new.
    let vane = Vane::start(&remote.bare, &data_dir, &[]);
    vane.wait_for("the restore", |e| {
        e["fields"]["message"] == "serving the last applied commit from the local clone and cache"
    });
    let git_up = vane.started.elapsed();
    assert_eq!(vane.get("/v2/health/ready").0, 200);
    assert_eq!(vane.serving(), good);
    vane.stop();

    // Restart with the remote moved away (a Git outage): the same.
    let moved = remote.bare.with_extension("moved");
    std::fs::rename(&remote.bare, &moved).unwrap();
    let vane = Vane::start(&remote.bare, &data_dir, &[]);
    vane.wait_for("the restore", |e| {
        e["fields"]["message"] == "serving the last applied commit from the local clone and cache"
    });
    let git_down = vane.started.elapsed();
    assert_eq!(vane.get("/v2/health/ready").0, 200);
    assert_eq!(vane.serving(), good);
    vane.wait_for("the failed fetch", |e| {
        e["fields"]["message"] == "sync did not apply; the last good set keeps serving"
    });
    let status = vane.get("/api/v1/status").1;
    assert_eq!(status["conditions"]["degraded"], true, "{status}");
    let reason = status["conditions"]["degraded_reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot be read (No such file or directory") && !reason.contains("unsupported URL"),
        "{reason}"
    );
    vane.stop();
    std::fs::rename(&moved, &remote.bare).unwrap();
    eprintln!(
        "restart to ready: first start (clone, fetch, load) {}, restart with Git up {}, restart with Git down {} ({:.2}x)",
        secs(first),
        secs(git_up),
        secs(git_down),
        git_down.as_secs_f64() / git_up.as_secs_f64()
    );

    // kill -9 in the middle of a sync of a new commit: the restart serves the last applied commit first, then tries
    // the new one again; killed again in that second attempt, the next start refuses it (a commit that kills the
    // process twice in a row is not retried forever) and still serves the last applied commit.
    let manifest = std::fs::read_to_string(remote.work.path().join("deploy/breast-cancer.yaml")).unwrap();
    remote.write("deploy/breast-cancer.yaml", manifest.replace("max_batch_size: 64", "max_batch_size: 8").as_bytes());
    let next = remote.push("smaller batches");
    let began = |vane: &Vane, attempt: u64| {
        vane.wait_for(&format!("attempt {attempt} of the new commit"), |e| {
            e["fields"]["message"] == "a new branch head: fetching, validating and loading it"
                && e["fields"]["commit"] == next.as_str()
                && e["fields"]["attempt"] == attempt
        });
    };
    let vane = Vane::start(&remote.bare, &data_dir, &[]);
    began(&vane, 1);
    vane.kill();
    let vane = Vane::start(&remote.bare, &data_dir, &[]);
    let restored = vane.wait_for("the restore", |e| {
        e["fields"]["message"] == "serving the last applied commit from the local clone and cache"
    });
    assert_eq!(restored["fields"]["commit"], good.as_str());
    assert_eq!(vane.serving(), good);
    began(&vane, 2);
    vane.kill();
    let vane = Vane::start(&remote.bare, &data_dir, &[]);
    vane.wait_for("the restore", |e| {
        e["fields"]["message"] == "serving the last applied commit from the local clone and cache"
    });
    assert_eq!(vane.synced(&next), "Unchanged", "refused, not tried a third time");
    assert_eq!(vane.serving(), good);
    let status = vane.get("/api/v1/status").1;
    let refusal = &status["sync"]["refused"][0];
    assert_eq!(refusal["commit"], next.as_str());
    assert!(refusal["reason"].as_str().unwrap().contains("stopped 2 times in a row while applying"), "{refusal}");
    // A new commit is tried as usual.
    remote.write("deploy/breast-cancer.yaml", manifest.replace("max_batch_size: 64", "max_batch_size: 16").as_bytes());
    let fixed = remote.push("another try");
    assert_eq!(vane.post("/api/v1/sync", b"").0, 202);
    assert_eq!(vane.synced(&fixed), "Applied");
    assert_eq!(vane.serving(), fixed);
    vane.stop();
}

/// Each hostile push is refused with its reason while the last good commit serves, and resident memory stays
/// bounded; a head refused before a restart is not tried again after it.
#[test]
fn hostile_pushes_are_refused_with_their_reason_and_memory_stays_bounded() {
    let _alone = one_at_a_time();
    let remote = Remote::with_breast_cancer();
    let good = remote.git(&["rev-parse", "HEAD"]);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("vane");
    let root = data.path().join("artifacts");
    std::fs::create_dir(&root).unwrap();
    let fifo = root.join("model.fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let vane = Vane::start(&remote.bare, &data_dir, &["--artifact-root", root.to_str().unwrap()]);
    assert_eq!(vane.synced(&good), "Applied");
    // The peak so far (start-up and the first load) is the baseline the hostile pushes are measured against.
    let (_, idle) = vane.memory();

    // Each case adds deploy/evil.yaml (or a file in deploy/): one bad file refuses the whole commit.
    let evil = |model: &str, extra: &str| {
        format!(
            "apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: evil}}\nspec:\n  versions:\n    \
             - version: 1\n      model: {{{model}}}\n{extra}"
        )
    };
    let no_digest = "0".repeat(64);
    let zeros = vec![0u8; 1 << 30];
    let huge = huge_static_shape_model();
    let huge_sha = sha256_hex(&huge);
    let nulls = std::fs::read(run_length_nulls_parquet(data.path())).unwrap();
    let nulls_sha = sha256_hex(&nulls);
    let model_sha = sha256_hex(&std::fs::read(models_dir().join("breast_cancer/2/model.onnx")).unwrap());
    type Case<'a> = (&'static str, Box<dyn Fn(&Remote) + 'a>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "a 1 GiB inflation bomb in deploy/",
            Box::new(|r: &Remote| r.write("deploy/zeros.yaml", &zeros)),
            "deploy/zeros.yaml in commit",
        ),
        (
            "the same bomb as a model artifact",
            Box::new(|r: &Remote| {
                r.write("models/zeros.onnx", &zeros);
                r.write(
                    "deploy/evil.yaml",
                    evil(&format!("path: models/zeros.onnx, sha256: {no_digest}"), "").as_bytes(),
                );
            }),
            "is 1073741824 bytes; files over 268435456 bytes are refused before the fetch",
        ),
        (
            "file:// outside the artifact roots",
            Box::new(|r: &Remote| {
                r.write(
                    "deploy/evil.yaml",
                    evil(&format!("uri: \"file:///etc/passwd\", sha256: {no_digest}"), "").as_bytes(),
                )
            }),
            "file:///etc/passwd: is outside the artifact roots",
        ),
        (
            "/dev/zero",
            Box::new(|r: &Remote| {
                r.write(
                    "deploy/evil.yaml",
                    evil(&format!("uri: \"file:///dev/zero\", sha256: {no_digest}"), "").as_bytes(),
                )
            }),
            "file:///dev/zero: is outside the artifact roots",
        ),
        (
            "a FIFO inside the roots",
            Box::new(|r: &Remote| {
                let model = format!("uri: \"file://{}\", sha256: {no_digest}", fifo.display());
                r.write("deploy/evil.yaml", evil(&model, "").as_bytes());
            }),
            "not a regular file (a FIFO, socket or device)",
        ),
        (
            "cloud metadata",
            Box::new(|r: &Remote| {
                let model = format!("uri: \"https://169.254.169.254/latest/meta-data/iam\", sha256: {no_digest}");
                r.write("deploy/evil.yaml", evil(&model, "").as_bytes());
            }),
            "169.254.169.254 resolves to 169.254.169.254, a loopback, private or link-local address; refused",
        ),
        (
            "Parquet of 3 million run-length-encoded null rows as reference data",
            Box::new(|r: &Remote| {
                r.write("models/nulls.parquet", &nulls);
                let model = format!("path: models/breast_cancer/2/model.onnx, sha256: {model_sha}");
                let reference = format!("  reference_data: {{path: models/nulls.parquet, sha256: {nulls_sha}}}\n");
                r.write("deploy/evil.yaml", evil(&model, &reference).as_bytes());
            }),
            "the row count exceeds the limit of 2000000",
        ),
        (
            "a huge static shape",
            Box::new(|r: &Remote| {
                r.write("models/huge.onnx", &huge);
                r.write(
                    "deploy/evil.yaml",
                    evil(&format!("path: models/huge.onnx, sha256: {huge_sha}"), "").as_bytes(),
                );
            }),
            "warming it up needs more than 33554432 elements",
        ),
    ];
    let mut peak = 0;
    let mut head = good.clone();
    for (name, push, reason) in &cases {
        push(&remote);
        let bad = remote.push(name);
        head.clone_from(&bad);
        assert_eq!(vane.post("/api/v1/sync", b"").0, 202);
        assert_eq!(vane.synced(&bad), "Refused", "{name}");
        let status = vane.get("/api/v1/status").1;
        let got = status["sync"]["last_attempted"]["reason"].as_str().unwrap_or_default().to_owned();
        assert!(got.contains(reason), "{name}: {got:?} should contain {reason:?}");
        assert_eq!(vane.serving(), good, "{name}: the last good commit serves");
        let (_, hwm) = vane.memory();
        peak = peak.max(hwm);
        eprintln!("{name}: refused; peak resident {} MiB (peak before {} MiB)", hwm >> 20, idle >> 20);
        // The next case starts from the good commit (a local remote's new history must not hold a refused bomb).
        remote.git(&["reset", "-q", "--hard", &good]);
    }
    // The bound: the 1 GiB bomb must not be inflated; what remains is the reference-table and load work of the
    // small cases. 256 MiB over idle is far below one inflated copy of the bomb.
    assert!(peak < idle + (256 << 20), "peak {} MiB, idle {} MiB", peak >> 20, idle >> 20);

    // The last refused head is not tried again after a restart.
    vane.stop();
    let vane = Vane::start(&remote.bare, &data_dir, &["--artifact-root", root.to_str().unwrap()]);
    vane.wait_for("the restore", |e| {
        e["fields"]["message"] == "serving the last applied commit from the local clone and cache"
    });
    assert_eq!(vane.synced(&head), "Unchanged", "a head refused before the restart is not re-attempted");
    assert_eq!(vane.serving(), good);
    vane.stop();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A Parquet file of 3 million null rows in one column: a few kilobytes on disk.
fn run_length_nulls_parquet(dir: &Path) -> PathBuf {
    use parquet::data_type::FloatType;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let schema = std::sync::Arc::new(parse_message_type("message m { optional float mean_radius; }").unwrap());
    let path = dir.join("nulls.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer =
        SerializedFileWriter::new(file, schema, std::sync::Arc::new(WriterProperties::builder().build())).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    column.typed::<FloatType>().write_batch(&[], Some(&vec![0i16; 3_000_000]), None).unwrap();
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
    path
}

/// An ONNX graph (one Identity node) whose input has the static shape [1, 100000, 100000]: loading it costs
/// nothing, warming it up would allocate 40 GB. Encoded by hand (protobuf wire format, onnx.proto's field numbers).
fn huge_static_shape_model() -> Vec<u8> {
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    fn int(number: u64, value: u64, out: &mut Vec<u8>) {
        varint(number << 3, out);
        varint(value, out);
    }
    let value_info = |name: &str| {
        let mut shape = Vec::new();
        for dim in [1u64, 100_000, 100_000] {
            let mut d = Vec::new();
            int(1, dim, &mut d);
            field(1, &d, &mut shape);
        }
        let mut tensor = Vec::new();
        int(1, 1, &mut tensor); // FLOAT
        field(2, &shape, &mut tensor);
        let mut kind = Vec::new();
        field(1, &tensor, &mut kind);
        let mut info = Vec::new();
        field(1, name.as_bytes(), &mut info);
        field(2, &kind, &mut info);
        info
    };
    let mut node = Vec::new();
    field(1, b"x", &mut node);
    field(2, b"y", &mut node);
    field(4, b"Identity", &mut node);
    let mut graph = Vec::new();
    field(1, &node, &mut graph);
    field(2, b"huge", &mut graph);
    field(11, &value_info("x"), &mut graph);
    field(12, &value_info("y"), &mut graph);
    let mut opset = Vec::new();
    field(1, b"", &mut opset);
    int(2, 13, &mut opset);
    let mut model = Vec::new();
    int(1, 8, &mut model);
    field(7, &graph, &mut model);
    field(8, &opset, &mut model);
    model
}

/// Over the network (`git daemon`), the pack is streamed by libgit2's indexer and the blob's size read from the
/// object database header before it would be inflated: the 1 GiB bomb in deploy/ costs next to nothing.
#[test]
fn an_inflation_bomb_fetched_over_the_network_is_refused_from_its_header() {
    let _alone = one_at_a_time();
    let remote = Remote::with_breast_cancer();
    let good = remote.git(&["rev-parse", "HEAD"]);
    std::fs::write(remote.bare.join("git-daemon-export-ok"), b"").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let exec_path = run(Command::new("git").arg("--exec-path"));
    let daemon = Command::new(Path::new(&exec_path).join("git-daemon"))
        .args(["--reuseaddr", "--listen=127.0.0.1", &format!("--port={port}")])
        .arg(format!("--base-path={}", remote.bare.parent().unwrap().display()))
        .arg(&remote.bare)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _daemon = KillOnDrop(daemon);
    // Readiness: connections are refused at once until the daemon listens.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "git daemon listens");
        std::thread::yield_now();
    }
    let data = tempfile::tempdir().unwrap();
    let url = format!("git://127.0.0.1:{port}/deploy.git");
    let vane = Vane::start(Path::new(&url), &data.path().join("vane"), &[]);
    assert_eq!(vane.synced(&good), "Applied");
    let (_, idle) = vane.memory();
    remote.write("deploy/zeros.yaml", &vec![0u8; 1 << 30]);
    let bad = remote.push("bomb");
    assert_eq!(vane.post("/api/v1/sync", b"").0, 202);
    assert_eq!(vane.synced(&bad), "Refused");
    let reason = vane.get("/api/v1/status").1["sync"]["last_attempted"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("is 1073741824 bytes; the limit is 262144 (read before the blob is inflated"), "{reason}");
    let (_, peak) = vane.memory();
    eprintln!("inflation bomb over git://: refused; peak resident {} MiB (peak before {} MiB)", peak >> 20, idle >> 20);
    assert!(peak < idle + (64 << 20), "peak {} MiB, idle {} MiB", peak >> 20, idle >> 20);
    assert_eq!(vane.serving(), good);
}

/// `--allowed-signers` and `--path-signers` on the binary: a head signed by a listed key deploys, one that changes a
/// manifest its signer may not change is refused naming both, and the log gives the verification's cost.
#[test]
fn signed_commits_deploy_and_a_signer_not_allowed_for_a_path_is_refused() {
    let _alone = one_at_a_time();
    let keys = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let key = keys.path().join(name);
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&key));
        (key.clone(), std::fs::read_to_string(key.with_extension("pub")).unwrap())
    };
    let ((ops, ops_pub), (dev, dev_pub)) = (keygen("ops"), keygen("dev"));
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(&allowed, format!("ops@example.com {ops_pub}dev@example.com {dev_pub}")).unwrap();
    let remote = Remote::with_breast_cancer();
    let signed_push = |key: &Path, message: &str| {
        remote.git(&["add", "-A"]);
        let signing = format!("user.signingkey={}", key.display());
        remote.git(&["-c", "gpg.format=ssh", "-c", &signing, "commit", "-q", "-S", "--allow-empty", "-m", message]);
        remote.git(&["push", "-q", "--force", remote.bare.to_str().unwrap(), "main"]);
        remote.git(&["rev-parse", "HEAD"])
    };
    let first = signed_push(&ops, "signed by ops");
    let data = tempfile::tempdir().unwrap();
    let flags =
        ["--allowed-signers", allowed.to_str().unwrap(), "--path-signers", "deploy/breast-cancer.yaml=ops@example.com"];
    let vane = Vane::start(&remote.bare, &data.path().join("vane"), &flags);
    let verified = vane.wait_for("the verification", |e| e["fields"]["message"] == "signed head verified");
    assert_eq!(vane.synced(&first), "Applied");
    eprintln!("signature verification: {} us per sync (the head's SSHSIG, ed25519)", verified["fields"]["verify_us"]);

    let manifest = std::fs::read_to_string(remote.work.path().join("deploy/breast-cancer.yaml")).unwrap();
    remote.write("deploy/breast-cancer.yaml", manifest.replace("max_batch_size: 64", "max_batch_size: 8").as_bytes());
    let by_dev = signed_push(&dev, "dev changes the manifest");
    assert_eq!(vane.post("/api/v1/sync", b"").0, 202);
    assert_eq!(vane.synced(&by_dev), "Refused");
    let reason = vane.get("/api/v1/status").1["sync"]["last_attempted"]["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("changes deploy/breast-cancer.yaml, which only ops@example.com may change; it is signed by dev@example.com (SHA256:"),
        "{reason}"
    );
    assert_eq!(vane.serving(), first);
    let by_ops = signed_push(&ops, "ops signs the same change");
    assert_eq!(vane.post("/api/v1/sync", b"").0, 202);
    assert_eq!(vane.synced(&by_ops), "Applied");
    assert_eq!(vane.serving(), by_ops);
    vane.stop();
}
