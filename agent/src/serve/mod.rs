//! The status server: `/healthz`, `/readyz`, `/v1/status`, `/metrics`, read-only; and under
//! `/v1/control/` the control requests, each authenticated by the cluster's secret.

mod metrics;
mod routes;

pub(crate) use routes::respond;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::control::{self, Control};
use crate::engine::StatusBoard;

/// The most bytes of request line and headers a client may send.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A client must have sent its whole request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this; status readers reconnect cheaply.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long a new connection waits for the slot of the connection closed to make room.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The open connections by age, each with a way to close it, so that a full server makes
/// room for a new client by closing its oldest connection. Without this, clients that open
/// `max_connections` connections and keep them silent (or send a byte now and then) would shut
/// everyone else out, `/healthz` included, for as long as they like.
#[derive(Debug, Default)]
struct Connections {
    next: u64,
    by_age: BTreeMap<u64, CancellationToken>,
}

impl Connections {
    /// The next connection's number: connections are as old as their accept, whatever order
    /// their tasks run in.
    fn number(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Connection `id` holds a slot now and may be closed to make room.
    fn open(&mut self, id: u64) -> CancellationToken {
        let close = CancellationToken::new();
        self.by_age.insert(id, close.clone());
        close
    }

    fn closed(&mut self, id: u64) {
        self.by_age.remove(&id);
    }

    /// Closes the oldest connection.
    fn close_oldest(&mut self) {
        if let Some((_, close)) = self.by_age.pop_first() {
            close.cancel();
        }
    }
}

/// The listening socket's queue of connections not yet accepted. The default (128) fills in
/// one burst of connections while the agent waits for a CPU on a busy node; a client whose
/// connection finds it full waits a whole SYN retransmission (1 s) before it is even queued.
const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `address` with [`LISTEN_BACKLOG`].
pub(crate) fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted agent must not wait for its predecessor's connections to leave TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `board` (and `control`'s requests) on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    board: StatusBoard,
    control: Arc<Control>,
    max_connections: usize,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let connections = Arc::new(Mutex::new(Connections::default()));
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
        let ready = permits.clone().try_acquire_owned().ok();
        let (id, mut close) = {
            let mut open = lock(&connections);
            let id = open.number();
            if ready.is_none() {
                tracing::debug!(%peer, "{max_connections} connections open: closing the oldest");
                open.close_oldest();
            }
            (id, ready.is_some().then(|| open.open(id)))
        };
        let connections = connections.clone();
        let permits = permits.clone();
        let board = board.clone();
        let control = control.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // The accept loop does not wait for the closed connection's slot: under a flood it
            // must keep taking connections off the queue, or the clients it should serve wait
            // behind the flood in the kernel's queue.
            let permit = match ready {
                Some(permit) => permit,
                None => match tokio::time::timeout(EVICTION_WAIT, permits.acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return,
                },
            };
            // Only connections holding a slot are candidates for closing.
            let close = close
                .get_or_insert_with(|| lock(&connections).open(id))
                .clone();
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let board = board.clone();
                let control = control.clone();
                async move {
                    let answer = if request.uri().path().starts_with(control::PREFIX) {
                        control.answer(request).await
                    } else {
                        routes::answer(&request, &board)
                    };
                    Ok::<_, Infallible>(answer)
                }
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
                () = close.cancelled() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
                }
            }
            lock(&connections).closed(id);
            drop(permit);
        });
    }
}

fn lock(connections: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    connections
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
