//! Bad input: each case gets the right 4xx with a message naming the problem, and the server keeps serving.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{breast_cancer_row, TestServer};

const INFER: &str = "/v2/models/breast_cancer/infer";

/// Sends `body` to the breast_cancer model, checks the error, then checks that a good request still works.
async fn refused(body: impl Into<bytes::Bytes>, status: StatusCode, needles: &[&str]) {
    let server = TestServer::start().await;
    server.post(INFER, body).await.assert_error(status, needles);
    assert_still_serving(&server).await;
    server.stop().await;
}

async fn assert_still_serving(server: &TestServer) {
    let ok = server.post_json(INFER, &breast_cancer_row()).await;
    assert_eq!(ok.status, StatusCode::OK, "server keeps serving: {}", ok.body);
}

fn with_input(change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut request = breast_cancer_row();
    change(&mut request["inputs"][0]);
    serde_json::to_vec(&request).unwrap()
}

#[tokio::test]
async fn invalid_json_is_400() {
    refused(r#"{"inputs": [{"name": "input""#, StatusCode::BAD_REQUEST, &["invalid JSON body", "EOF while parsing"])
        .await;
}

#[tokio::test]
async fn missing_inputs_is_400() {
    refused(r#"{"id": "1"}"#, StatusCode::BAD_REQUEST, &["missing field `inputs`"]).await;
}

#[tokio::test]
async fn unknown_input_name_is_400_naming_both() {
    let body = with_input(|input| input["name"] = json!("features"));
    refused(body, StatusCode::BAD_REQUEST, &["unknown input 'features'", "'input' (FP32 [-1, 30])"]).await;
}

#[tokio::test]
async fn wrong_datatype_is_400_naming_both() {
    let body = with_input(|input| input["datatype"] = json!("FP64"));
    refused(body, StatusCode::BAD_REQUEST, &["input 'input' has datatype FP64 but the model expects FP32"]).await;
}

#[tokio::test]
async fn shape_that_does_not_match_the_data_length_is_400() {
    let body = with_input(|input| input["shape"] = json!([1, 31]));
    refused(
        body,
        StatusCode::BAD_REQUEST,
        &["input 'input' has shape [1, 31], which needs 31 elements, but its data holds 30"],
    )
    .await;
}

#[tokio::test]
async fn wrong_feature_count_is_400_naming_the_expected_shape() {
    let body = with_input(|input| {
        input["shape"] = json!([1, 29]);
        input["data"].as_array_mut().unwrap().pop();
    });
    refused(body, StatusCode::BAD_REQUEST, &["input 'input' has shape [1, 29] but the model expects [-1, 30]"]).await;
}

#[tokio::test]
async fn nan_and_infinity_tokens_are_400_saying_so() {
    for token in ["NaN", "Infinity", "-Infinity"] {
        let body = String::from_utf8(with_input(|_| {})).unwrap().replacen("17.9", token, 1);
        assert!(body.contains(token));
        refused(body, StatusCode::BAD_REQUEST, &["invalid JSON body", "NaN and Infinity are not JSON numbers"]).await;
    }
}

#[tokio::test]
async fn a_string_where_a_number_belongs_is_400() {
    let body = with_input(|input| input["data"][3] = json!("1001.0"));
    refused(body, StatusCode::BAD_REQUEST, &["input 'input': expected a number (FP32), found a string"]).await;
}

#[tokio::test]
async fn empty_batch_is_400() {
    let body = with_input(|input| {
        input["shape"] = json!([0, 30]);
        input["data"] = json!([]);
    });
    refused(body, StatusCode::BAD_REQUEST, &["input 'input' has an empty batch (shape [0, 30])"]).await;
}

#[tokio::test]
async fn unknown_output_is_400() {
    let mut request = breast_cancer_row();
    request["outputs"] = json!([{"name": "score"}]);
    let body = serde_json::to_vec(&request).unwrap();
    refused(body, StatusCode::BAD_REQUEST, &["unknown output 'score'", "'probabilities'"]).await;
}

#[tokio::test]
async fn a_50_mb_body_is_413_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let huge = vec![b' '; 50 * 1024 * 1024];
    server
        .post(INFER, huge)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, &["larger than the 16777216-byte limit"]);
    assert_still_serving(&server).await;
    server.stop().await;
}

/// A chunked body declares no length: the cap applies while it streams.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let server = TestServer::start_with(|config| config.limits.max_body_bytes = 1024).await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let head = format!("POST {INFER} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 4096];
    stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
    stream.write_all(&chunk).await.unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#"{"error":"request body is larger than the 1024-byte limit"}"#), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_model_and_unknown_version_are_404() {
    let server = TestServer::start().await;
    let body = serde_json::to_vec(&breast_cancer_row()).unwrap();
    server
        .post("/v2/models/lung_cancer/infer", body.clone())
        .await
        .assert_error(StatusCode::NOT_FOUND, &["model 'lung_cancer' is not served", "breast_cancer"]);
    for version in ["3", "latest", "-1"] {
        server
            .post(&format!("/v2/models/breast_cancer/versions/{version}/infer"), body.clone())
            .await
            .assert_error(StatusCode::NOT_FOUND, &[&format!("has no version '{version}'"), "served versions: 1, 2"]);
    }
    server.get("/v2/models/lung_cancer").await.assert_error(StatusCode::NOT_FOUND, &["not served"]);
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let server = TestServer::start().await;
    server.get("/v1/models/x").await.assert_error(StatusCode::NOT_FOUND, &["no such endpoint: /v1/models/x"]);
    server.get(INFER).await.assert_error(StatusCode::METHOD_NOT_ALLOWED, &["use POST"]);
    server
        .send(Method::DELETE, "/v2/health/live", bytes::Bytes::new())
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, &["use GET"]);
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_type_in_a_multi_input_model_names_that_input() {
    let server = TestServer::start().await;
    let fixture = &crate::support::expected_outputs()["dtypes/1"];
    let mut inputs = fixture["inputs"].clone();
    inputs[2]["datatype"] = json!("INT32");
    let reply = server.post_json("/v2/models/dtypes/infer", &json!({"inputs": inputs})).await;
    reply.assert_error(StatusCode::BAD_REQUEST, &["input 'x_int64' has datatype INT32 but the model expects INT64"]);
    let mut inputs = fixture["inputs"].clone();
    inputs.as_array_mut().unwrap().remove(4);
    let reply = server.post_json("/v2/models/dtypes/infer", &json!({"inputs": inputs})).await;
    reply.assert_error(StatusCode::BAD_REQUEST, &["missing input 'x_bytes'"]);
    server.stop().await;
}
