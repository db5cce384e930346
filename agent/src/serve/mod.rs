//! The read-only status server: `/healthz`, `/readyz`, `/v1/status`, `/metrics`.

mod metrics;
mod routes;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::engine::StatusBoard;

/// The most bytes of request line and headers a client may send.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A client must have sent its whole request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this; status readers reconnect cheaply.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves `board` on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    board: StatusBoard,
    max_connections: usize,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: {max_connections} already open");
            drop(stream);
            continue;
        };
        let board = board.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let board = board.clone();
                async move { Ok::<_, Infallible>(routes::answer(&request, &board)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = &mut connection => {}
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
                }
            }
            drop(permit);
        });
    }
}
