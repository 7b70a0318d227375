//! The binary tensor extension over a real socket: every model's fixture sent as raw bytes gives Python's answers,
//! outputs come back raw when asked, and framing that does not add up is a 400 naming the sizes.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::serve::assert_same_outputs;
use crate::support::{expected_outputs, from_raw, to_raw, TestServer};

/// The request's inputs as binary: the header with `binary_data_size` instead of `data`, and the bytes.
fn binary_inputs(inputs: &Value) -> (Vec<Value>, Vec<u8>) {
    let mut raw = Vec::new();
    let header = inputs
        .as_array()
        .unwrap()
        .iter()
        .map(|input| {
            let bytes = to_raw(input["datatype"].as_str().unwrap(), input["data"].as_array().unwrap());
            raw.extend_from_slice(&bytes);
            json!({"name": input["name"], "shape": input["shape"], "datatype": input["datatype"],
                   "parameters": {"binary_data_size": bytes.len()}})
        })
        .collect();
    (header, raw)
}

/// The response's outputs with their raw data decoded back into `data`, in output order.
fn decoded_outputs(header: &Value, mut raw: &[u8]) -> Value {
    let mut outputs = Vec::new();
    for output in header["outputs"].as_array().unwrap() {
        let mut output = output.clone();
        if let Some(size) = output["parameters"]["binary_data_size"].as_u64() {
            assert!(output.get("data").is_none(), "a binary output carries no JSON data: {output}");
            let (bytes, rest) = raw.split_at(size as usize);
            raw = rest;
            output["data"] = Value::Array(from_raw(output["datatype"].as_str().unwrap(), bytes));
            output.as_object_mut().unwrap().remove("parameters");
        }
        outputs.push(output);
    }
    assert!(raw.is_empty(), "{} raw bytes beyond the outputs' sizes", raw.len());
    Value::Array(outputs)
}

#[tokio::test]
async fn every_model_answers_binary_inputs_and_outputs_as_python_onnxruntime_did() {
    let server = TestServer::start().await;
    for (key, fixture) in &expected_outputs() {
        let (model, version) = (fixture["model"].as_str().unwrap(), fixture["version"].as_str().unwrap());
        let (inputs, raw) = binary_inputs(&fixture["inputs"]);
        let request = json!({"id": key, "inputs": inputs, "parameters": {"binary_data_output": true}});
        let path = format!("/v2/models/{model}/versions/{version}/infer");
        let (reply, raw_out) = server.post_framed(&path, &request, &raw).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}: {}", reply.body);
        assert_eq!(reply.headers["content-type"], "application/octet-stream");
        assert_eq!(reply.body["id"], key.as_str());
        assert_same_outputs(key, &decoded_outputs(&reply.body, &raw_out), &fixture["outputs"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn outputs_are_binary_only_where_asked_and_json_inputs_mix_with_binary_ones() {
    let server = TestServer::start().await;
    let fixture = &expected_outputs()["breast_cancer/1"];
    // JSON inputs with one output asked binary: the response has the header and only that output's bytes.
    let request = json!({"inputs": fixture["inputs"],
        "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": true}}]});
    let (reply, raw) = server.post_framed("/v2/models/breast_cancer/versions/1/infer", &request, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body["outputs"][0]["data"].is_array());
    assert_eq!(reply.body["outputs"][1]["parameters"]["binary_data_size"].as_u64(), Some(raw.len() as u64));
    assert_same_outputs("breast_cancer/1", &decoded_outputs(&reply.body, &raw), &fixture["outputs"]);
    // No output asked binary: a plain JSON response, no header.
    let request = json!({"inputs": fixture["inputs"]});
    let (reply, raw) = server.post_framed("/v2/models/breast_cancer/versions/1/infer", &request, &[]).await;
    assert!(raw.is_empty() && reply.headers.get("inference-header-content-length").is_none());
    assert_eq!(reply.headers["content-type"], "application/json");
    server.stop().await;
}

#[tokio::test]
async fn a_raw_binary_request_is_one_row_with_every_output_binary() {
    let server = TestServer::start().await;
    let fixture = &expected_outputs()["breast_cancer/1"];
    let row = &fixture["inputs"][0]["data"].as_array().unwrap()[..30];
    let (reply, raw) =
        server.post_with_header_length("/v2/models/breast_cancer/versions/1/infer", to_raw("FP32", row), 0).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let outputs = decoded_outputs(&reply.body, &raw);
    assert_eq!(outputs[0]["data"], json!([fixture["outputs"][0]["data"][0]]));
    assert_eq!(outputs[1]["shape"], json!([1, 2]));
    server.stop().await;
}

#[tokio::test]
async fn framing_that_does_not_add_up_is_refused_with_the_sizes() {
    let server = TestServer::start().await;
    let header = |size: usize| {
        json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                           "parameters": {"binary_data_size": size}}]})
    };
    let path = "/v2/models/breast_cancer/infer";
    let cases: [(Value, Vec<u8>, &str); 3] = [
        (header(120), vec![0; 100], "binary_data_size is 120 but only 100 bytes"),
        (header(100), vec![0; 100], "100 bytes of raw data, but 30 elements of 4 bytes need 120"),
        (header(120), vec![0; 124], "4 bytes follow the JSON header"),
    ];
    for (json, raw, needle) in cases {
        let (reply, _) = server.post_framed(path, &json, &raw).await;
        reply.assert_error(StatusCode::BAD_REQUEST, &[needle]);
    }
    let (reply, _) = server.post_with_header_length(path, b"{}".to_vec(), 4096).await;
    reply.assert_error(StatusCode::BAD_REQUEST, &["Inference-Header-Content-Length is 4096 but the body has only 2"]);
    let request = hyper::Request::post(format!("{}{path}", server.base()))
        .header("inference-header-content-length", "many")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    server.raw(request).await.assert_error(StatusCode::BAD_REQUEST, &["must be a byte count"]);
    // The server still answers after all of that.
    assert_eq!(server.get("/v2/health/ready").await.status, StatusCode::OK);
    server.stop().await;
}
