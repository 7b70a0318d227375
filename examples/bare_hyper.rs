//! The HTTP ceiling of the request-path bench (`bash benches/ceiling.sh`): a bare hyper server that does the socket
//! work Vane does for a request (accept, parse, read the whole body, write a response of the same bytes and
//! content type) and nothing else. Same runtime as `vane serve` (tokio, one worker thread per core), same socket
//! option (TCP_NODELAY), same connection builder (HTTP/1.1 and HTTP/2). Usage: `bare_hyper RESPONSE_FILE`; prints
//! `listening on ADDR` once bound.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let file = std::env::args().nth(1).expect("usage: bare_hyper RESPONSE_FILE");
    let response = Bytes::from(std::fs::read(file)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let response = response.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let response = response.clone();
            async move {
                let _ = request.into_body().collect().await;
                let mut reply = Response::new(Full::new(response));
                reply.headers_mut().insert("content-type", "application/json".parse().unwrap());
                Ok::<_, std::convert::Infallible>(reply)
            }
        });
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
