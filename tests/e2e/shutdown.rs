//! Graceful shutdown: readiness goes false, new connections are refused, in-flight requests complete, workers stop.

use std::sync::Arc;

use hyper::StatusCode;
use tokio::net::TcpStream;

use crate::support::{dense_zeros, model_repo, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_complete_and_new_connections_are_refused() {
    let repo = model_repo(&[("dense", "max_batch_size: 0\nworkers: 1\n")]);
    let server = Arc::new(TestServer::start_in(repo.path(), |_| {}).await);
    let model = server.model("dense");
    let addr = server.addr();
    let in_flight = {
        let client = server.client_only();
        tokio::spawn(async move { client.post_json("/v2/models/dense/infer", &dense_zeros(1000)).await })
    };
    model.stats().wait_until(|s| s.running == 1).await;
    drop(model);

    let mut accepting = server.server.accepting();
    let registry = Arc::clone(server.server.registry());
    let shutdown = server.server.shutdown_token();
    // What a signal handler does: cancel the token; `run_until_stopped` (in `vane serve`) drains.
    let client = server.client_only();
    let server = Arc::into_inner(server).expect("the request task holds only the client");
    let stopped = tokio::spawn(server.server.run_until_stopped());
    shutdown.cancel();
    accepting.wait_for(|open| !open).await.unwrap();
    assert!(!registry.is_ready(), "readiness went false before the listener closed");
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "a new connection after the signal is refused");

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "the in-flight request completed: {}", reply.body);
    assert_eq!(reply.body["outputs"][0]["shape"], serde_json::json!([1000, 10]));
    drop(client);
    assert!(stopped.await.unwrap(), "worker threads were joined");
}
