//! The V2 endpoints answer as the protocol says, and predictions equal Python onnxruntime's.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::support::{breast_cancer_row, expected_outputs, TestServer};

#[tokio::test]
async fn health_endpoints_report_live_and_ready() {
    let server = TestServer::start().await;
    let live = server.get("/v2/health/live").await;
    assert_eq!((live.status, live.body.clone()), (StatusCode::OK, json!({"live": true})));
    let ready = server.get("/v2/health/ready").await;
    assert_eq!((ready.status, ready.body.clone()), (StatusCode::OK, json!({"ready": true})));
    server.stop().await;
}

#[tokio::test]
async fn server_metadata_names_vane_and_lists_extensions() {
    let server = TestServer::start().await;
    let reply = server.get("/v2").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["name"], "vane");
    assert_eq!(reply.body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        reply.body["extensions"],
        serde_json::json!(["binary_tensor_data", "model_repository"]),
        "{}",
        reply.body
    );
    assert_eq!(reply.headers["content-type"], "application/json");
    server.stop().await;
}

#[tokio::test]
async fn model_metadata_comes_from_the_onnx_graph() {
    let server = TestServer::start().await;
    let expected = json!({
        "name": "breast_cancer",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ],
    });
    for path in ["/v2/models/breast_cancer", "/v2/models/breast_cancer/versions/1"] {
        let reply = server.get(path).await;
        assert_eq!((reply.status, &reply.body), (StatusCode::OK, &expected), "{path}");
    }
    let dtypes = server.get("/v2/models/dtypes").await.body;
    let inputs: Vec<(&str, &str)> = dtypes["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["datatype"].as_str().unwrap()))
        .collect();
    assert_eq!(
        inputs,
        [("x_fp64", "FP64"), ("x_int32", "INT32"), ("x_int64", "INT64"), ("x_bool", "BOOL"), ("x_bytes", "BYTES")]
    );
    assert_eq!(server.get("/v2/models/dense").await.body["inputs"][0]["shape"], json!([-1, 1024]));
    server.stop().await;
}

#[tokio::test]
async fn model_ready_for_served_versions_and_404_for_others() {
    let server = TestServer::start().await;
    for path in ["/v2/models/digits/ready", "/v2/models/breast_cancer/versions/1/ready"] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.body["ready"], true);
    }
    server.get("/v2/models/digits/versions/2/ready").await.assert_error(StatusCode::NOT_FOUND, &["no version '2'"]);
    server.get("/v2/models/nope/ready").await.assert_error(StatusCode::NOT_FOUND, &["'nope' is not served"]);
    server.stop().await;
}

/// Every model and version in the fixture, through the versioned route, gives what Python's onnxruntime gave.
#[tokio::test]
async fn predictions_equal_python_onnxruntime_for_every_model() {
    let server = TestServer::start().await;
    let fixtures = expected_outputs();
    assert!(fixtures.len() >= 5, "fixture covers every model version");
    for (key, fixture) in &fixtures {
        let (model, version) = (fixture["model"].as_str().unwrap(), fixture["version"].as_str().unwrap());
        let request = json!({"id": key, "inputs": fixture["inputs"]});
        let reply = server.post_json(&format!("/v2/models/{model}/versions/{version}/infer"), &request).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}: {}", reply.body);
        assert_eq!(reply.body["model_name"], model);
        assert_eq!(reply.body["model_version"], version);
        assert_eq!(reply.body["id"], key.as_str());
        assert_same_outputs(key, &reply.body["outputs"], &fixture["outputs"]);
    }
    server.stop().await;
}

pub(crate) fn assert_same_outputs(key: &str, got: &Value, want: &Value) {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "{key}: output count");
    for (g, w) in got.iter().zip(want) {
        let name = w["name"].as_str().unwrap();
        assert_eq!(g["name"], w["name"], "{key}");
        assert_eq!(g["datatype"], w["datatype"], "{key}/{name}");
        assert_eq!(g["shape"], w["shape"], "{key}/{name}");
        let (gd, wd) = (g["data"].as_array().unwrap(), w["data"].as_array().unwrap());
        assert_eq!(gd.len(), wd.len(), "{key}/{name}");
        for (i, (a, b)) in gd.iter().zip(wd).enumerate() {
            match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) if w["datatype"] == "FP32" || w["datatype"] == "FP64" => {
                    // Same library, same graph: only float32 printing and summation order may differ.
                    assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "{key}/{name}[{i}]: {a} vs {b}");
                }
                _ => assert_eq!(a, b, "{key}/{name}[{i}]"),
            }
        }
    }
}

#[tokio::test]
async fn an_unversioned_request_is_served_by_the_highest_version_and_says_so() {
    let server = TestServer::start().await;
    let reply = server.post_json("/v2/models/breast_cancer/infer", &breast_cancer_row()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["model_version"], "2");
    let v1 = server.post_json("/v2/models/breast_cancer/versions/1/infer", &breast_cancer_row()).await;
    assert_eq!(v1.body["model_version"], "1");
    assert_ne!(reply.body["outputs"][1]["data"], v1.body["outputs"][1]["data"], "the two versions differ");
    server.stop().await;
}

#[tokio::test]
async fn nested_data_gives_the_same_answer_as_flat_data() {
    let server = TestServer::start().await;
    let fixture = &expected_outputs()["digits/1"];
    let flat = fixture["inputs"][0]["data"].as_array().unwrap();
    let nested: Vec<Value> = flat.chunks(64).map(|row| Value::Array(row.to_vec())).collect();
    let request = json!({"inputs": [{"name": "input", "shape": [5, 64], "datatype": "FP32", "data": nested}]});
    let reply = server.post_json("/v2/models/digits/infer", &request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_same_outputs("digits nested", &reply.body["outputs"], &fixture["outputs"]);
    server.stop().await;
}

#[tokio::test]
async fn requested_outputs_restrict_the_response_and_parameters_are_accepted() {
    let server = TestServer::start().await;
    let mut request = breast_cancer_row();
    request["outputs"] = json!([{"name": "probabilities", "parameters": {"binary_data": false}}]);
    request["parameters"] = json!({"priority": 1, "content_type": "np", "flag": true});
    request["id"] = json!("abc-123");
    let reply = server.post_json("/v2/models/breast_cancer/infer", &request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let names: Vec<&str> =
        reply.body["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["probabilities"]);
    assert_eq!(reply.body["id"], "abc-123");
    server.stop().await;
}

#[tokio::test]
async fn a_multi_row_batch_is_answered_row_for_row() {
    let server = TestServer::start().await;
    let fixture = &expected_outputs()["breast_cancer/2"];
    let reply = server.post_json("/v2/models/breast_cancer/infer", &json!({"inputs": fixture["inputs"]})).await;
    assert_eq!(reply.body["outputs"][0]["shape"], json!([5]));
    assert_eq!(reply.body["outputs"][0]["data"], fixture["outputs"][0]["data"]);
    server.stop().await;
}

#[tokio::test]
async fn model_statistics_count_rows_runs_and_requests() {
    let server = TestServer::start().await;
    let fixture = &expected_outputs()["breast_cancer/1"];
    for _ in 0..2 {
        let reply =
            server.post_json("/v2/models/breast_cancer/versions/1/infer", &json!({"inputs": fixture["inputs"]})).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = server.get("/v2/models/breast_cancer/versions/1/stats").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let stats = &reply.body["model_stats"][0];
    assert_eq!((stats["name"].as_str(), stats["version"].as_str()), (Some("breast_cancer"), Some("1")));
    assert_eq!(stats["inference_count"], 10, "two requests of five rows");
    assert_eq!(stats["request_count"], 2);
    assert!(stats["execution_count"].as_u64().unwrap() >= 1);
    let all = server.get("/v2/models/breast_cancer/stats").await.body;
    assert_eq!(all["model_stats"].as_array().unwrap().len(), 2, "every served version");
    server.get("/v2/models/nope/stats").await.assert_error(StatusCode::NOT_FOUND, &["not served"]);
    server.stop().await;
}
