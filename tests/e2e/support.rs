//! Starting a gateway on 127.0.0.1:0 over the committed models, and a small HTTP client for it.

use std::path::PathBuf;

use bytes::Bytes;
use gateway::{ServeConfig, Server};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The repository's `models/` directory.
pub(crate) fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// A running gateway and a client for it. Stopped gracefully by [`TestServer::stop`].
pub(crate) struct TestServer {
    pub(crate) server: Server,
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
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
        tweak(&mut config);
        let server = gateway::start(config).await.expect("gateway starts");
        let base = format!("http://{}", server.local_addr());
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { server, base, client }
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
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("body is JSON") };
        Reply { status: parts.status, headers: parts.headers, body }
    }

    /// The address, for raw-socket tests.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub(crate) async fn stop(self) {
        self.server.stop().await;
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
