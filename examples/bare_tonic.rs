//! The gRPC floor of `bash benches/grpc_floor.sh`: a bare tonic server on the same generated service as Vane's,
//! whose ModelInfer decodes the request (prost, as Vane's does) and answers a prepared response of the size Vane
//! answers for breast_cancer (two raw outputs, FP32 [1, 2] and INT64 [1]), and does nothing else: the gRPC stack's
//! own cost per call (HTTP/2, HPACK, tonic's codec, prost) with no model and no Vane. Same runtime as `vane serve`
//! (tokio, one worker thread per core) and TCP_NODELAY. Every other method answers UNIMPLEMENTED. Usage:
//! `bare_tonic [--direct | --hyper]`; prints `listening on ADDR` once bound. `--direct` answers ModelInfer in a tower layer
//! under tonic's router and codec (the body collected, its 5-byte frame read, prost on the message, the answer
//! framed by hand with `grpc-status` in the trailers): what a ModelInfer path of Vane's own on hyper's HTTP/2
//! would cost. `--hyper` leaves tonic out altogether: hyper's HTTP/2 server and a `service_fn` answering ModelInfer
//! the same way, what serving gRPC from Vane's own connection loop would cost.

use std::pin::Pin;

use gateway::grpc::proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use gateway::grpc::proto::model_infer_response::InferOutputTensor;
use gateway::grpc::proto::{self as pb, ModelInferRequest, ModelInferResponse};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

struct Bare {
    response: ModelInferResponse,
}

type Unary<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl GrpcInferenceService for Bare {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Unary<pb::ServerLiveResponse> {
        Err(Status::unimplemented("bare"))
    }
    async fn server_ready(&self, _: Request<pb::ServerReadyRequest>) -> Unary<pb::ServerReadyResponse> {
        Err(Status::unimplemented("bare"))
    }
    async fn model_ready(&self, _: Request<pb::ModelReadyRequest>) -> Unary<pb::ModelReadyResponse> {
        Err(Status::unimplemented("bare"))
    }
    async fn server_metadata(&self, _: Request<pb::ServerMetadataRequest>) -> Unary<pb::ServerMetadataResponse> {
        Err(Status::unimplemented("bare"))
    }
    async fn model_metadata(&self, _: Request<pb::ModelMetadataRequest>) -> Unary<pb::ModelMetadataResponse> {
        Err(Status::unimplemented("bare"))
    }
    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Unary<ModelInferResponse> {
        let request = request.into_inner();
        let mut response = self.response.clone();
        response.model_name = request.model_name;
        Ok(Response::new(response))
    }
    type ModelStreamInferStream = Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;
    async fn model_stream_infer(
        &self,
        _: Request<Streaming<ModelInferRequest>>,
    ) -> Unary<Self::ModelStreamInferStream> {
        Err(Status::unimplemented("bare"))
    }
    async fn repository_index(&self, _: Request<pb::RepositoryIndexRequest>) -> Unary<pb::RepositoryIndexResponse> {
        Err(Status::unimplemented("bare"))
    }
    async fn repository_model_load(
        &self,
        _: Request<pb::RepositoryModelLoadRequest>,
    ) -> Unary<pb::RepositoryModelLoadResponse> {
        Err(Status::unimplemented("bare"))
    }
    async fn repository_model_unload(
        &self,
        _: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Unary<pb::RepositoryModelUnloadResponse> {
        Err(Status::unimplemented("bare"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let output = |name: &str, datatype: &str, shape: Vec<i64>| InferOutputTensor {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape,
        ..InferOutputTensor::default()
    };
    let response = ModelInferResponse {
        model_version: "2".to_owned(),
        outputs: vec![output("probabilities", "FP32", vec![1, 2]), output("label", "INT64", vec![1])],
        raw_output_contents: vec![vec![0u8; 8].into(), vec![0u8; 8].into()],
        ..ModelInferResponse::default()
    };
    let mode = std::env::args().nth(1).unwrap_or_default();
    let direct = mode == "--direct";
    let answer = {
        let message = prost::Message::encode_to_vec(&response);
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
        framed.extend_from_slice(&message);
        bytes::Bytes::from(framed)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    if mode == "--hyper" {
        return serve_hyper(listener, answer).await;
    }
    // tonic sets TCP_NODELAY only on listeners it binds itself.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
        .map(|stream| stream.and_then(|s| s.set_nodelay(true).map(|()| s)));
    let layer = tower::util::option_layer(
        direct.then(|| tower::layer::layer_fn(move |inner| Direct { inner, answer: answer.clone() })),
    );
    tonic::transport::Server::builder()
        .layer(layer)
        .add_service(GrpcInferenceServiceServer::new(Bare { response }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// `--hyper`: no tonic at all. hyper's own HTTP/2 server (the builder Vane's REST listener uses, HTTP/2 only) with
/// a `service_fn` answering ModelInfer as `--direct` does; any other path gets UNIMPLEMENTED.
async fn serve_hyper(listener: tokio::net::TcpListener, answer: bytes::Bytes) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let answer = answer.clone();
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let answer = answer.clone();
            async move {
                let unary = request.uri().path() == "/inference.GRPCInferenceService/ModelInfer";
                let body = if unary { answer_infer(request.into_body(), answer).await } else { unimplemented() };
                Ok::<_, std::convert::Infallible>(body)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

type AnswerBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// The framed answer with `grpc-status` in the trailers, once the request's message decodes (INTERNAL if not):
/// `--direct`'s and `--hyper`'s alike.
async fn answer_infer<B: hyper::body::Body>(body: B, answer: bytes::Bytes) -> http::Response<AnswerBody> {
    use http_body_util::BodyExt;
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let decoded = body.get(5..).map(<ModelInferRequest as prost::Message>::decode);
    let status = if matches!(decoded, Some(Ok(_))) { "0" } else { "13" };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    let body = http_body_util::Full::new(answer).with_trailers(async move { Some(Ok(trailers)) }).boxed();
    let mut response = http::Response::new(body);
    response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
    response
}

fn unimplemented() -> http::Response<AnswerBody> {
    use http_body_util::BodyExt;
    let mut response = http::Response::new(http_body_util::Empty::new().boxed());
    let headers = response.headers_mut();
    headers.insert("content-type", http::HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", http::HeaderValue::from_static("12"));
    response
}

/// The `--direct` layer: ModelInfer answered here, everything else passed to tonic.
#[derive(Clone)]
struct Direct<S> {
    inner: S,
    answer: bytes::Bytes,
}

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for Direct<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse> + Send,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        if request.uri().path() != "/inference.GRPCInferenceService/ModelInfer" {
            return Box::pin(self.inner.call(request));
        }
        let answer = self.answer.clone();
        Box::pin(async move { Ok(answer_infer(request.into_body(), answer).await.map(tonic::body::Body::new)) })
    }
}
