//! The V2 protocol over gRPC against a real server on loopback, through the client tonic generates from the same
//! `.proto`: health and metadata, every model's fixture with typed and with raw tensors (answers equal Python
//! onnxruntime's), errors as gRPC status codes with the REST messages, and a stream whose bad request is answered
//! in-stream without ending it.

use gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use gateway::grpc::proto::model_infer_request::InferInputTensor;
use gateway::grpc::proto::{self, InferTensorContents, ModelInferRequest, ModelInferResponse};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

use crate::serve::assert_same_outputs;
use crate::support::{expected_outputs, from_raw, TestServer};

async fn start() -> (TestServer, GrpcInferenceServiceClient<Channel>) {
    let server = TestServer::start_with(|c| c.grpc_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let addr = server.server.grpc_addr().expect("gRPC is served");
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("gRPC connects");
    let client = GrpcInferenceServiceClient::new(channel);
    (server, client)
}

/// A fixture input as a typed gRPC tensor.
fn typed_input(input: &Value) -> InferInputTensor {
    let data = input["data"].as_array().unwrap();
    let mut contents = InferTensorContents::default();
    match input["datatype"].as_str().unwrap() {
        "FP32" => contents.fp32_contents = data.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
        "FP64" => contents.fp64_contents = data.iter().map(|v| v.as_f64().unwrap()).collect(),
        "INT32" => contents.int_contents = data.iter().map(|v| v.as_i64().unwrap() as i32).collect(),
        "INT64" => contents.int64_contents = data.iter().map(|v| v.as_i64().unwrap()).collect(),
        "BOOL" => contents.bool_contents = data.iter().map(|v| v.as_bool().unwrap()).collect(),
        "BYTES" => contents.bytes_contents = data.iter().map(|v| v.as_str().unwrap().as_bytes().to_vec()).collect(),
        other => panic!("no typed form in this test for {other}"),
    }
    InferInputTensor {
        name: input["name"].as_str().unwrap().to_owned(),
        datatype: input["datatype"].as_str().unwrap().to_owned(),
        shape: input["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect(),
        parameters: Default::default(),
        contents: Some(contents),
    }
}

/// The response's raw outputs as the JSON outputs the fixture holds.
fn outputs_json(response: &ModelInferResponse) -> Value {
    assert_eq!(response.raw_output_contents.len(), response.outputs.len(), "one raw buffer per output");
    let outputs = response
        .outputs
        .iter()
        .zip(&response.raw_output_contents)
        .map(|(o, raw)| {
            let data = from_raw(&o.datatype, raw);
            json!({"name": o.name, "datatype": o.datatype, "shape": o.shape, "data": data})
        })
        .collect();
    Value::Array(outputs)
}

fn request(model: &str, version: &str, id: &str, inputs: Vec<InferInputTensor>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_owned(),
        model_version: version.to_owned(),
        id: id.to_owned(),
        inputs,
        ..ModelInferRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metadata_answer_as_over_rest() {
    let (server, mut client) = start().await;
    assert!(client.server_live(proto::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(client.server_ready(proto::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let metadata = client.server_metadata(proto::ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!((metadata.name.as_str(), metadata.extensions.len()), ("vane", 2), "{metadata:?}");
    let ready = |name: &str, version: &str| proto::ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(client.model_ready(ready("breast_cancer", "1")).await.unwrap().into_inner().ready);
    assert!(!client.model_ready(ready("breast_cancer", "9")).await.unwrap().into_inner().ready);
    assert!(!client.model_ready(ready("nope", "")).await.unwrap().into_inner().ready);
    let model = client
        .model_metadata(proto::ModelMetadataRequest { name: "breast_cancer".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((model.versions, model.platform.as_str()), (vec!["1".to_owned(), "2".to_owned()], "onnxruntime_onnx"));
    assert_eq!((model.inputs[0].name.as_str(), model.inputs[0].shape.as_slice()), ("input", [-1, 30].as_slice()));
    let missing = client
        .model_metadata(proto::ModelMetadataRequest { name: "nope".into(), version: String::new() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("model 'nope' is not served"), "{}", missing.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_answers_typed_and_raw_tensors_as_python_onnxruntime_did() {
    let (server, mut client) = start().await;
    for (key, fixture) in &expected_outputs() {
        let (model, version) = (fixture["model"].as_str().unwrap(), fixture["version"].as_str().unwrap());
        let inputs: Vec<InferInputTensor> = fixture["inputs"].as_array().unwrap().iter().map(typed_input).collect();
        // Typed contents.
        let typed = client.model_infer(request(model, version, key, inputs.clone())).await;
        let typed = typed.unwrap_or_else(|e| panic!("{key}: {e}")).into_inner();
        assert_eq!(
            (typed.model_name.as_str(), typed.model_version.as_str(), typed.id.as_str()),
            (model, version, key.as_str())
        );
        assert_same_outputs(key, &outputs_json(&typed), &fixture["outputs"]);
        // The same tensors raw: what tritonclient sends.
        let mut raw_request = request(model, version, key, Vec::new());
        for mut input in inputs {
            let tensor = gateway::infer::Tensor {
                name: input.name.as_str().into(),
                shape: Default::default(),
                data: typed_to_data(&input.datatype, input.contents.take().unwrap()),
            };
            let mut raw = Vec::new();
            tensor.data.write_raw(&mut raw);
            raw_request.raw_input_contents.push(raw.into());
            raw_request.inputs.push(input);
        }
        let raw = client.model_infer(raw_request).await.unwrap_or_else(|e| panic!("{key} raw: {e}")).into_inner();
        assert_same_outputs(key, &outputs_json(&raw), &fixture["outputs"]);
    }
    server.stop().await;
}

fn typed_to_data(datatype: &str, c: InferTensorContents) -> gateway::infer::TensorData {
    use gateway::infer::TensorData as D;
    match datatype {
        "FP32" => D::Fp32(c.fp32_contents),
        "FP64" => D::Fp64(c.fp64_contents),
        "INT32" => D::Int32(c.int_contents),
        "INT64" => D::Int64(c.int64_contents),
        "BOOL" => D::Bool(c.bool_contents),
        "BYTES" => D::Bytes(c.bytes_contents.into_iter().map(|b| String::from_utf8(b).unwrap()).collect()),
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_status_codes_with_the_rest_messages() {
    let (server, mut client) = start().await;
    let fixture = &expected_outputs()["breast_cancer/1"];
    let good = typed_input(&fixture["inputs"][0]);
    let cases: Vec<(ModelInferRequest, Code, &str)> = vec![
        (request("nope", "", "", vec![good.clone()]), Code::NotFound, "model 'nope' is not served"),
        (request("breast_cancer", "7", "", vec![good.clone()]), Code::NotFound, "has no version '7'"),
        (
            request("breast_cancer", "", "", vec![InferInputTensor { shape: vec![1, 29], ..good.clone() }]),
            Code::InvalidArgument,
            "which needs 29 elements",
        ),
        (
            request("breast_cancer", "", "", vec![InferInputTensor { datatype: "FP64".into(), ..good.clone() }]),
            Code::InvalidArgument,
            "has datatype FP64 but the model expects FP32",
        ),
        (
            ModelInferRequest {
                raw_input_contents: vec![vec![0; 120].into()],
                ..request("breast_cancer", "", "", vec![good.clone()])
            },
            Code::InvalidArgument,
            "has both contents and raw_input_contents",
        ),
        (
            ModelInferRequest {
                raw_input_contents: vec![vec![0; 100].into()],
                ..request("breast_cancer", "", "", vec![InferInputTensor { contents: None, ..good.clone() }])
            },
            Code::InvalidArgument,
            "100 bytes of raw data, but",
        ),
    ];
    for (request, code, needle) in cases {
        let error = client.model_infer(request).await.unwrap_err();
        assert_eq!(error.code(), code, "{}", error.message());
        assert!(error.message().contains(needle), "{:?} should contain {needle:?}", error.message());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_answers_every_request_and_a_bad_one_in_stream() {
    let (server, mut client) = start().await;
    let fixture = &expected_outputs()["breast_cancer/1"];
    let good = typed_input(&fixture["inputs"][0]);
    let mut requests: Vec<ModelInferRequest> =
        (0..20).map(|i| request("breast_cancer", "1", &format!("s{i}"), vec![good.clone()])).collect();
    requests[7].model_name = "nope".into();
    let mut answers = client.model_stream_infer(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let mut seen = std::collections::BTreeMap::new();
    while let Some(answer) = answers.message().await.unwrap() {
        let response = answer.infer_response.expect("every answer names its request");
        seen.insert(response.id.clone(), (answer.error_message, response));
        if seen.len() == 20 {
            break;
        }
    }
    assert_eq!(seen.len(), 20, "one answer per request");
    for (id, (error, response)) in &seen {
        if id == "s7" {
            assert!(error.contains("model 'nope' is not served"), "{error}");
        } else {
            assert!(error.is_empty(), "{id}: {error}");
            assert_same_outputs(id, &outputs_json(response), &fixture["outputs"]);
        }
    }
    server.stop().await;
}

/// One unary call over a raw HTTP/2 connection: `grpc-status` and `grpc-message` (from the headers of a
/// trailers-only answer, else from the trailers), and the body's bytes.
async fn raw_call(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: Vec<u8>) -> (String, String, Vec<u8>) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}/inference.GRPCInferenceService/ModelInfer"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |name: &str| {
        let value = parts.headers.get(name).or_else(|| trailers.get(name));
        value.map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    };
    (field("grpc-status"), field("grpc-message"), collected.to_bytes().to_vec())
}

fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut body = vec![flag];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(message);
    body
}

/// ModelInfer is answered below tonic's router and codec (the message unframed and the answer framed by Vane): a
/// well-formed call answers as through tonic, a body that is not exactly one uncompressed message is INTERNAL with
/// a message that says what was wrong, and a compressed call is left to tonic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_are_unframed_exactly_and_a_compressed_one_is_left_to_tonic() {
    use prost::Message;
    let (server, _client) = start().await;
    let addr = server.server.grpc_addr().unwrap();
    let fixture = &expected_outputs()["breast_cancer/1"];
    let message = request("breast_cancer", "1", "raw", vec![typed_input(&fixture["inputs"][0])]).encode_to_vec();

    let (code, text, body) = raw_call(addr, &[], framed(0, &message)).await;
    assert_eq!(code, "0", "{text}");
    let answer = body.get(5..).expect("a framed answer");
    assert_eq!(u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize, answer.len(), "one whole message");
    let answer = ModelInferResponse::decode(answer).unwrap();
    assert_eq!(answer.id, "raw");
    assert_same_outputs("breast_cancer/1", &outputs_json(&answer), &fixture["outputs"]);

    let mut two = framed(0, &message);
    two.extend(framed(0, &message));
    let truncated = framed(0, &message)[..40].to_vec();
    let cases = [
        (two, "exactly one gRPC message"),
        (truncated, "exactly one gRPC message"),
        (Vec::new(), "it held none"),
        (framed(1, &message), "marked compressed but the call names no grpc-encoding"),
        (framed(0, b"\xff\xff\xff"), "could not be decoded"),
    ];
    for (body, needle) in cases {
        let (code, text, _) = raw_call(addr, &[], body).await;
        assert_eq!(code, "13", "{text}");
        let text = percent_decode(&text);
        assert!(text.contains(needle), "{text:?} should contain {needle:?}");
    }

    // A compressed call goes on to tonic, which serves no compression: its own status, not this path's.
    let (code, text, _) = raw_call(addr, &[("grpc-encoding", "gzip")], framed(1, &message)).await;
    assert_eq!(code, "12", "{text}");
    server.stop().await;
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
