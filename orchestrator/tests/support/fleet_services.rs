//! What the host offers the fleet's nodes on the bridge, besides the metadata stand-in: a file
//! server for the EFA installer (the `rayefa.efa` URLs point at it), a relay to the S3
//! endpoint the agent packages are published to (moto behind the project's proxy, which
//! listen on the host's loopback), and a CONNECT proxy that lets pip reach PyPI and nothing
//! else (the nodes have no route off the bridge).
//!
//! Each service runs on a runtime of its own; dropping the service drops the runtime, which
//! closes its listener and every connection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The hosts the PyPI proxy lets through, on port 443 only.
pub const PYPI_HOSTS: [&str; 2] = ["pypi.org", "files.pythonhosted.org"];

/// A runtime that serves until dropped.
#[derive(Debug)]
struct Service {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Service {
    fn new() -> Service {
        Service {
            runtime: Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("service runtime"),
            ),
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("a live runtime")
    }

    /// Binds `addr` now (so that a taken port fails the test at once, naming it).
    fn bind(&self, addr: SocketAddr, what: &str) -> TcpListener {
        self.runtime()
            .block_on(TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("binding the {what} at {addr}: {e}"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One request the file server answered.
#[derive(Debug, Clone)]
pub struct Served {
    /// Who asked.
    pub peer: SocketAddr,
    /// The path asked for.
    pub path: String,
    /// The status answered.
    pub status: u16,
}

/// Serves named files over HTTP.
#[derive(Debug)]
pub struct FileServer {
    addr: SocketAddr,
    files: Arc<Mutex<BTreeMap<String, PathBuf>>>,
    served: Arc<Mutex<Vec<Served>>>,
    _service: Service,
}

impl FileServer {
    /// Starts serving at `addr`; nothing is published yet.
    pub fn start(addr: SocketAddr) -> FileServer {
        let service = Service::new();
        let listener = service.bind(addr, "file server");
        let files: Arc<Mutex<BTreeMap<String, PathBuf>>> = Arc::default();
        let served: Arc<Mutex<Vec<Served>>> = Arc::default();
        let (state_files, state_served) = (Arc::clone(&files), Arc::clone(&served));
        service.runtime().spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (files, served) = (Arc::clone(&state_files), Arc::clone(&state_served));
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let answer = answer_file(&files, &request);
                        served.lock().expect("served lock").push(Served {
                            peer,
                            path: request.uri().path().to_owned(),
                            status: answer.status().as_u16(),
                        });
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FileServer {
            addr,
            files,
            served,
            _service: service,
        }
    }

    /// Serves `file` at `/name` and answers its URL.
    pub fn publish(&self, name: &str, file: PathBuf) -> String {
        self.files
            .lock()
            .expect("files lock")
            .insert(format!("/{name}"), file);
        format!("http://{}/{name}", self.addr)
    }

    /// The requests answered so far.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().expect("served lock").clone()
    }
}

fn answer_file(
    files: &Mutex<BTreeMap<String, PathBuf>>,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = files
        .lock()
        .expect("files lock")
        .get(request.uri().path())
        .cloned();
    let body = match (request.method(), path) {
        (&hyper::Method::GET, Some(path)) => std::fs::read(&path).ok(),
        _ => None,
    };
    let (status, body) = match body {
        Some(bytes) => (StatusCode::OK, bytes),
        None => (StatusCode::NOT_FOUND, b"not found\n".to_vec()),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .expect("a response")
}

/// One CONNECT the proxy was asked for.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// Who asked.
    pub peer: SocketAddr,
    /// `host:port` as asked.
    pub target: String,
    /// Whether it was let through.
    pub allowed: bool,
}

/// An HTTP CONNECT proxy that tunnels to [`PYPI_HOSTS`] on port 443 and refuses the rest.
#[derive(Debug)]
pub struct PypiProxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<Tunnel>>>,
    _service: Service,
}

impl PypiProxy {
    /// Starts the proxy at `addr`.
    pub fn start(addr: SocketAddr) -> PypiProxy {
        let service = Service::new();
        let listener = service.bind(addr, "PyPI proxy");
        let tunnels: Arc<Mutex<Vec<Tunnel>>> = Arc::default();
        let record = Arc::clone(&tunnels);
        service.runtime().spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let record = Arc::clone(&record);
                tokio::spawn(async move { tunnel(stream, peer, &record).await });
            }
        });
        PypiProxy {
            addr,
            tunnels,
            _service: service,
        }
    }

    /// The proxy URL for pip's `--proxy`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The CONNECTs asked for so far.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.tunnels.lock().expect("tunnels lock").clone()
    }
}

/// Reads one CONNECT request head, and tunnels it when the target is allowed.
async fn tunnel(mut client: TcpStream, peer: SocketAddr, record: &Mutex<Vec<Tunnel>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line, so that nothing of the TLS stream after it is eaten.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let allowed = method == "CONNECT"
        && target
            .strip_suffix(":443")
            .is_some_and(|host| PYPI_HOSTS.contains(&host));
    record.lock().expect("tunnels lock").push(Tunnel {
        peer,
        target: target.to_owned(),
        allowed,
    });
    if !allowed {
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        let _ = client
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// A TCP relay from an address on the bridge to one on the host's loopback: the nodes' route to
/// the S3 endpoint, as a VPC endpoint is a site's. Bytes pass unchanged, so the `Host` a node
/// sends is the bridge address the orchestrator signed its presigned URL for, and the proxy
/// behind checks the signature against exactly that.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    _service: Service,
}

impl Relay {
    /// Relays every connection to `addr` to `upstream`.
    pub fn start(addr: SocketAddr, upstream: SocketAddr) -> Relay {
        let service = Service::new();
        let listener = service.bind(addr, "S3 relay");
        let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let record = Arc::clone(&peers);
        service.runtime().spawn(async move {
            loop {
                let Ok((mut client, peer)) = listener.accept().await else {
                    continue;
                };
                record.lock().expect("peers lock").push(peer);
                tokio::spawn(async move {
                    // A refused upstream closes the client's connection: it sees the endpoint
                    // as down, which is what it is.
                    if let Ok(mut upstream) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Relay {
            addr,
            peers,
            _service: service,
        }
    }

    /// The endpoint URL on the bridge (`AWS_ENDPOINT_URL_S3`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Who connected so far, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().expect("peers lock").clone()
    }
}
