//! Graceful shutdown: readiness goes false, new connections are refused, in-flight requests complete, workers stop.

use std::sync::Arc;

use hyper::StatusCode;
use tokio::net::TcpStream;

use crate::support::{model_repo, occupy_dense_worker, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_complete_and_new_connections_are_refused() {
    let repo = model_repo(&[("dense", "max_batch_size: 0\nworkers: 1\n")]);
    let server = TestServer::start_in(repo.path(), |_| {}).await;
    let addr = server.addr();
    let in_flight = occupy_dense_worker(&server).await;

    let mut accepting = server.server.accepting();
    let registry = Arc::clone(server.server.registry());
    let shutdown = server.server.shutdown_token();
    // What a signal handler does: cancel the token; `run_until_stopped` (in `vane serve`) drains.
    let stopped = tokio::spawn(server.server.run_until_stopped());
    shutdown.cancel();
    accepting.wait_for(|open| !open).await.unwrap();
    assert!(!registry.is_ready(), "readiness went false before the listener closed");
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "a new connection after the signal is refused");

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "the in-flight request completed: {}", reply.body);
    assert_eq!(reply.body["outputs"][0]["shape"], serde_json::json!([1000, 10]));
    assert!(stopped.await.unwrap(), "worker threads were joined");
}
