//! Accepting connections and shutting down gracefully.

use std::convert::Infallible;
use std::time::Duration;

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::errors::ApiError;
use crate::routes::error_response;
use crate::stack::{HttpService, Limits};
use crate::tls::{MaybeTls, Tls};

/// The connection builder with the edge's bounds: hyper's timer (without it hyper silently disables its header-read
/// timeout), the header-read timeout (which also closes HTTP/1 connections idle between requests), a cap on header
/// size, and HTTP/2's stream and header-list limits with keep-alive pings that close dead peers.
pub fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    builder
}

/// The most header bytes a request may carry (HTTP/1 read buffer, HTTP/2 header list); Triton-style clients send a
/// few hundred.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves HTTP/1 and HTTP/2 on `listener` until `shutdown` is cancelled, then closes the listener (new connections
/// are refused; `accepting` turns false), and lets open connections finish their requests for up to `grace`.
/// At most `limits.max_connections` connections are open at once: past it the loop stops accepting (new connections
/// wait in the kernel's backlog) until one closes.
pub async fn serve(
    listener: TcpListener,
    service: HttpService,
    shutdown: CancellationToken,
    accepting: watch::Sender<bool>,
    grace: Duration,
    limits: Limits,
    tls: Option<Tls>,
) {
    let builder = connection_builder(&limits);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.get()));
    loop {
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
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
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        let handshake = limits.header_read_timeout;
        tokio::spawn(async move {
            // The TLS handshake in the connection's own task, bounded by the header timeout: a silent client costs
            // only its slot, and never stalls the accept loop.
            let stream = match MaybeTls::accept(stream, tls.as_ref().map(Tls::rest), handshake).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
            };
            let connection = builder.serve_connection(TokioIo::new(stream), handler);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    accepting.send_replace(false);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace_ms = grace.as_millis(), "grace period over; closing the remaining connections");
    }
}
