//! Starting a gateway on 127.0.0.1:0 over the committed models, and a small HTTP client for it.

use std::path::PathBuf;

use bytes::Bytes;
use gateway::{ServeConfig, Server};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// The repository's `models/` directory.
pub(crate) fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// A running gateway and a client for it. Stopped gracefully by [`TestServer::stop`].
pub(crate) struct TestServer {
    pub(crate) server: Server,
    client: TestClient,
}

/// An HTTP client bound to one server's address.
#[derive(Clone)]
pub(crate) struct TestClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::ops::Deref for TestServer {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

/// A response: status, headers and the body parsed as JSON (`Value::Null` for an empty body).
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Value,
}

impl TestServer {
    /// Serves `models/` with default settings.
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Serves `models/` with settings changed by `tweak`.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), models_dir());
        // Tests wait on the monitor's reports; a short interval keeps them quick.
        config.monitor_interval = std::time::Duration::from_millis(200);
        tweak(&mut config);
        let server = gateway::start(config).await.expect("gateway starts");
        let base = format!("http://{}", server.local_addr());
        let client = TestClient { base, client: Client::builder(TokioExecutor::new()).build_http() };
        Self { server, client }
    }

    /// A client for this server that does not keep the server alive.
    pub(crate) fn client_only(&self) -> TestClient {
        self.client.clone()
    }

    /// The address, for raw-socket tests.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub(crate) async fn stop(self) {
        self.server.stop().await;
    }
}

impl TestClient {
    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends a prepared request.
    pub(crate) async fn raw(&self, request: Request<Full<Bytes>>) -> Reply {
        let response = self.client.request(request).await.expect("request is answered");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body is read").to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("body is JSON") };
        Reply { status: parts.status, headers: parts.headers, body }
    }

    /// Posts a binary-extension body (`json` header, then `raw`) and splits the answer the same way: the JSON part
    /// (the whole body when the response has no `Inference-Header-Content-Length`) and the raw bytes after it.
    pub(crate) async fn post_framed(&self, path: &str, json: &Value, raw: &[u8]) -> (Reply, Bytes) {
        let mut body = serde_json::to_vec(json).unwrap();
        let header = body.len();
        body.extend_from_slice(raw);
        self.post_with_header_length(path, body, header).await
    }

    /// Posts `body` with `Inference-Header-Content-Length: header`, splitting the answer as [`Self::post_framed`].
    pub(crate) async fn post_with_header_length(&self, path: &str, body: Vec<u8>, header: usize) -> (Reply, Bytes) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .header("inference-header-content-length", header)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.client.request(request).await.expect("request is answered");
        let (parts, body) = response.into_parts();
        let mut bytes = body.collect().await.expect("body is read").to_bytes();
        let split = match parts.headers.get("inference-header-content-length") {
            Some(v) => v.to_str().unwrap().parse::<usize>().unwrap(),
            None => bytes.len(),
        };
        let raw = bytes.split_off(split);
        let body = serde_json::from_slice(&bytes).expect("header is JSON");
        (Reply { status: parts.status, headers: parts.headers, body }, raw)
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Bytes::new()).await
    }

    pub(crate) async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.send(Method::POST, path, body.into()).await
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(path, serde_json::to_vec(body).unwrap()).await
    }

    pub(crate) async fn send(&self, method: Method, path: &str, body: Bytes) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        let response = self.client.request(request).await.expect("request is answered");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body is read").to_bytes();
        let json = parts.headers.get("content-type").is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
        let body = match (bytes.is_empty(), json) {
            (true, _) => Value::Null,
            (false, true) => serde_json::from_slice(&bytes).expect("body is JSON"),
            // Text answers (`/metrics`) are kept whole as a string.
            (false, false) => Value::String(String::from_utf8(bytes.to_vec()).expect("body is UTF-8")),
        };
        Reply { status: parts.status, headers: parts.headers, body }
    }
}

impl Reply {
    /// Asserts the status and that the `{"error": ...}` body contains every one of `needles`.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: StatusCode, needles: &[&str]) {
        assert_eq!(self.status, status, "body: {}", self.body);
        let message = self.body["error"].as_str().unwrap_or_else(|| panic!("no error message in {}", self.body));
        for needle in needles {
            assert!(message.contains(needle), "{message:?} should contain {needle:?}");
        }
        assert_eq!(self.body.as_object().map(|o| o.len()), Some(1), "only the error field: {}", self.body);
    }
}

/// The expected outputs the models script recorded from Python's onnxruntime.
pub(crate) fn expected_outputs() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(models_dir().join("expected_outputs.json")).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(map) => map,
        other => panic!("expected_outputs.json is not an object: {other}"),
    }
}

/// A one-row breast_cancer request (the first row of its expected-output fixture).
pub(crate) fn breast_cancer_row() -> Value {
    let fixture = &expected_outputs()["breast_cancer/1"];
    let row: Vec<Value> = fixture["inputs"][0]["data"].as_array().unwrap()[..30].to_vec();
    serde_json::json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}]})
}

/// A model repository in a temporary folder: the named models' committed versions (linked, not copied), each with
/// the given `config.yaml` text.
pub(crate) fn model_repo(models: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in models {
        let source = models_dir().join(name);
        for entry in std::fs::read_dir(&source).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_str().is_some_and(|n| n.parse::<u64>().is_ok()) {
                let version = dir.path().join(name).join(entry.file_name());
                std::fs::create_dir_all(&version).unwrap();
                std::os::unix::fs::symlink(entry.path().join("model.onnx"), version.join("model.onnx")).unwrap();
            }
        }
        std::fs::write(dir.path().join(name).join("config.yaml"), config).unwrap();
    }
    dir
}

impl TestServer {
    /// Serves the repository at `dir` with settings changed by `tweak`.
    pub(crate) async fn start_in(dir: &std::path::Path, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = dir.to_path_buf();
        Self::start_with(move |config| {
            config.model_dir = dir;
            tweak(config);
        })
        .await
    }

    /// The loaded model version a request for `model` would get now.
    pub(crate) fn model(&self, model: &str) -> std::sync::Arc<gateway::infer::LoadedModel> {
        self.server.registry().resolve(model, None).unwrap()
    }
}

/// A request of `rows` rows of zeros for the dense model: 1,000 rows take it tens of milliseconds.
pub(crate) fn dense_zeros(rows: usize) -> Value {
    serde_json::json!({"inputs": [{"name": "input", "shape": [rows, 1024], "datatype": "FP32", "data": vec![0.0f32; rows * 1024]}]})
}

/// Sends a 1,000-row dense request and returns once a worker is running it (tens of milliseconds of work), so the
/// caller can act while that worker is busy. The request's reply comes from the returned task.
pub(crate) async fn occupy_dense_worker(server: &TestServer) -> tokio::task::JoinHandle<Reply> {
    let model = server.model("dense");
    let client = server.client_only();
    let slow = tokio::spawn(async move { client.post_json("/v2/models/dense/infer", &dense_zeros(1000)).await });
    model.stats().wait_until(|s| s.running == 1).await;
    slow
}

/// A Git work repository and the bare "remote" it pushes to, driven by the git CLI.
pub(crate) struct GitRemote {
    pub(crate) work: tempfile::TempDir,
    pub(crate) bare: tempfile::TempDir,
}

impl GitRemote {
    /// An empty work repository and its bare remote, nothing pushed yet.
    pub(crate) fn new() -> Self {
        let remote = Self { work: tempfile::tempdir().unwrap(), bare: tempfile::tempdir().unwrap() };
        remote.git(&["init", "-q", "-b", "main"]);
        let status = std::process::Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(remote.bare.path())
            .status()
            .unwrap();
        assert!(status.success());
        remote
    }

    /// A deploy repository holding `configs/deploy/breast-cancer.yaml` and the breast_cancer files it names, pushed.
    pub(crate) fn with_breast_cancer() -> Self {
        let remote = Self::new();
        let manifest = std::fs::read(models_dir().join("../configs/deploy/breast-cancer.yaml")).unwrap();
        remote.write("deploy/breast-cancer.yaml", &manifest);
        for file in ["1/model.onnx", "2/model.onnx", "reference.csv"] {
            remote.write(
                &format!("models/breast_cancer/{file}"),
                &std::fs::read(models_dir().join("breast_cancer").join(file)).unwrap(),
            );
        }
        remote.push("first");
        remote
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .args(["-c", "user.name=vane-test", "-c", "user.email=test@vane.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.work.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    pub(crate) fn write(&self, path: &str, content: &[u8]) {
        let file = self.work.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }

    /// Commits everything, pushes it to the bare remote and returns the commit id.
    pub(crate) fn push(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["push", "-q", "--force", self.bare.path().to_str().unwrap(), "main"]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub(crate) fn manifest(&self) -> String {
        std::fs::read_to_string(self.work.path().join("deploy/breast-cancer.yaml")).unwrap()
    }
}

/// The sha256 of a committed model file, as lower-case hex.
pub(crate) fn sha256_of(path: &std::path::Path) -> String {
    let output = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// `binary`, installing Debian's `package` when it is missing (CI and the dev machines run as root).
pub(crate) fn ensure_debian_package(binary: &str, package: &str) -> std::path::PathBuf {
    // One apt-get at a time: tests run in parallel and dpkg has one lock.
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _apt = APT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = std::path::PathBuf::from(binary);
    if !path.exists() {
        eprintln!("installing {package} from Debian for the tests");
        for args in [&["update", "-qq"][..], &["install", "-y", "-qq", "--no-install-recommends", package][..]] {
            let status = std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .expect("apt-get runs");
            assert!(status.success(), "apt-get {args:?} failed");
        }
    }
    path
}

/// A child process killed (and reaped) when dropped.
/// Debian's Prometheus (installed when missing) on a free loopback port, scraping `targets` and evaluating `rules`
/// every second; returned once its log says it is ready (bounded at 60 s), with its port and its data folder. It
/// stops when the handle is dropped.
pub(crate) async fn prometheus(
    rules: &std::path::Path,
    targets: &[std::net::SocketAddr],
) -> (KillOnDrop, u16, tempfile::TempDir) {
    use std::io::BufRead;
    let binary = ensure_debian_package("/usr/bin/prometheus", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("prometheus.yml");
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n  - \
             job_name: vane\n    static_configs: [{{targets: [{}]}}]\n",
            rules.display(),
            targets.join(", ")
        ),
    )
    .unwrap();
    let child = std::process::Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Ready when it says so in its log (bounded by the child ending the stream).
    let stderr = child.0.stderr.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stderr).lines();
        let ready = lines.by_ref().map_while(Result::ok).any(|l| l.contains("Server is ready to receive web requests"));
        std::thread::spawn(move || lines.for_each(drop));
        ready
    });
    let started = tokio::time::timeout(std::time::Duration::from_secs(60), ready).await;
    assert!(started.unwrap().unwrap(), "prometheus started");
    (child, port, dir)
}

pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A JSON `data` array as the protocol's raw layout for `datatype`.
pub(crate) fn to_raw(datatype: &str, data: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in data {
        match datatype {
            "FP32" => out.extend((v.as_f64().unwrap() as f32).to_le_bytes()),
            "FP64" => out.extend(v.as_f64().unwrap().to_le_bytes()),
            "INT32" => out.extend((v.as_i64().unwrap() as i32).to_le_bytes()),
            "INT64" => out.extend(v.as_i64().unwrap().to_le_bytes()),
            "BOOL" => out.push(u8::from(v.as_bool().unwrap())),
            "BYTES" => {
                let s = v.as_str().unwrap();
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            other => panic!("no raw form in this test for {other}"),
        }
    }
    out
}

/// Raw bytes of `datatype` back to JSON values.
pub(crate) fn from_raw(datatype: &str, raw: &[u8]) -> Vec<Value> {
    match datatype {
        "FP32" => raw.chunks_exact(4).map(|c| json!(f32::from_le_bytes(c.try_into().unwrap()))).collect(),
        "FP64" => raw.chunks_exact(8).map(|c| json!(f64::from_le_bytes(c.try_into().unwrap()))).collect(),
        "INT32" => raw.chunks_exact(4).map(|c| json!(i32::from_le_bytes(c.try_into().unwrap()))).collect(),
        "INT64" => raw.chunks_exact(8).map(|c| json!(i64::from_le_bytes(c.try_into().unwrap()))).collect(),
        "BOOL" => raw.iter().map(|&b| json!(b == 1)).collect(),
        "BYTES" => {
            let (mut out, mut rest) = (Vec::new(), raw);
            while !rest.is_empty() {
                let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                out.push(json!(std::str::from_utf8(&rest[4..4 + n]).unwrap()));
                rest = &rest[4 + n..];
            }
            out
        }
        other => panic!("no raw form in this test for {other}"),
    }
}
