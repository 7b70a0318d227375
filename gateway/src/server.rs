//! Accepting connections and shutting down gracefully.

use std::convert::Infallible;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::errors::ApiError;
use crate::routes::error_response;
use crate::stack::HttpService;

/// Serves HTTP/1 and HTTP/2 on `listener` until `shutdown` is cancelled, then closes the listener (new connections
/// are refused; `accepting` turns false), and lets open connections finish their requests for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    service: HttpService,
    shutdown: CancellationToken,
    accepting: watch::Sender<bool>,
    grace: Duration,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE: back off briefly instead of spinning, and keep serving open connections.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small request/response exchanges: send each as soon as it is written.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let per_connection = service.clone();
        let handler = hyper::service::service_fn(move |request| {
            let call = per_connection.clone().oneshot(request);
            async move {
                // The stack's rescue layer already turned every call error into a response; a readiness error
                // (none of our layers has one) still gets an answer rather than a dropped connection.
                Ok::<_, Infallible>(call.await.unwrap_or_else(|_| error_response(&ApiError::Overloaded)))
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), handler);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    accepting.send_replace(false);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace_ms = grace.as_millis(), "grace period over; closing the remaining connections");
    }
}
