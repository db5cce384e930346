//! The fault-injecting HTTP/1.1 server both test suites use wherever a test needs a server of
//! its own: a download host, a metadata service, a node's status server, an agent that never
//! answers.
//!
//! Each path has a body and a plan of misbehaviours ([`Reply`]), used one per request, after
//! which the path serves its body (honouring `Range: bytes=N-`). A path without a route is
//! answered by [`Server::otherwise`], 404 until told otherwise. The server runs on threads of
//! its own, so synchronous tests use it as it is; dropping it closes its listener and every
//! connection it holds.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the server answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The body, honouring `Range`.
    Serve,
    /// This status and a short body.
    Status(u16),
    /// Headers for the whole (remaining) body, this many bytes of it, then a TCP reset.
    ResetAfter(usize),
    /// Headers for the whole (remaining) body, this many bytes of it, then an orderly close.
    CloseAfter(usize),
    /// The body after this long.
    Slow(Duration),
    /// Reads the request and never answers (the connection stays open).
    Hang,
}

/// A request the server read: its path and its `Range` header.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
}

#[derive(Debug)]
struct Route {
    body: Vec<u8>,
    plan: VecDeque<Reply>,
}

#[derive(Debug)]
struct State {
    routes: HashMap<String, Route>,
    /// How paths without a route are answered.
    otherwise: Reply,
    seen: Vec<Seen>,
    /// The connections of [`Reply::Hang`], open until the server is dropped.
    held: Vec<TcpStream>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fault server state")
    }
}

/// The server; it stops answering when dropped.
#[derive(Debug)]
pub struct Server {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// A server on a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A server listening at `address` (a node's own address, say). Panics when it cannot
    /// bind there.
    pub fn start_at(address: SocketAddr) -> Self {
        let listener =
            TcpListener::bind(address).unwrap_or_else(|e| panic!("binding {address}: {e}"));
        let address = listener.local_addr().expect("the listener's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                routes: HashMap::new(),
                otherwise: Reply::Status(404),
                seen: Vec::new(),
                held: Vec::new(),
            }),
            stopping: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || answer(stream, &shared));
            }
        });
        Self {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Serves `body` at `path` after the misbehaviours in `plan`, one per request.
    pub fn route(&self, path: &str, body: impl Into<Vec<u8>>, plan: &[Reply]) {
        self.shared.lock().routes.insert(
            path.to_owned(),
            Route {
                body: body.into(),
                plan: plan.iter().cloned().collect(),
            },
        );
    }

    /// Answers every request for a path without a route by `reply` (an empty body where it
    /// serves one).
    pub fn otherwise(&self, reply: Reply) {
        self.shared.lock().otherwise = reply;
    }

    /// The requests made for `path` so far: their `Range` headers.
    pub fn ranges(&self, path: &str) -> Vec<Option<String>> {
        self.shared
            .lock()
            .seen
            .iter()
            .filter(|seen| seen.path == path)
            .map(|seen| seen.range.clone())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // The acceptor sees the flag once a connection wakes it.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.shared.lock().held.clear();
    }
}

/// Reads one request's head (and skips its body); `None` at the end of the connection.
fn read_request(reader: &mut impl BufRead) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut range = None;
    let mut length = 0u64;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_owned());
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    std::io::copy(&mut reader.take(length), &mut std::io::sink()).ok()?;
    Some(Seen { path, range })
}

/// Answers the requests of one connection in turn, until one of them ends it.
fn answer(stream: TcpStream, shared: &Shared) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    while let Some(seen) = read_request(&mut reader) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (reply, body) = {
            let mut state = shared.lock();
            state.seen.push(seen.clone());
            let otherwise = state.otherwise.clone();
            match state.routes.get_mut(&seen.path) {
                Some(route) => (
                    route.plan.pop_front().unwrap_or(Reply::Serve),
                    route.body.clone(),
                ),
                None => (otherwise, Vec::new()),
            }
        };
        let range = seen.range.as_deref();
        let keep_going = match reply {
            Reply::Serve => serve(&mut stream, &body, range),
            Reply::Slow(wait) => {
                std::thread::sleep(wait);
                serve(&mut stream, &body, range)
            }
            Reply::Status(code) => {
                let text = format!("status {code}\n");
                write!(
                    stream,
                    "HTTP/1.1 {code} {}\r\nContent-Length: {}\r\n\r\n{text}",
                    reason(code),
                    text.len()
                )
                .is_ok()
            }
            Reply::ResetAfter(bytes) | Reply::CloseAfter(bytes) => {
                let start = range_start(range).min(body.len());
                let rest = &body[start..];
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    rest.len()
                );
                let _ = stream.write_all(&rest[..bytes.min(rest.len())]);
                let _ = stream.flush();
                if matches!(reply, Reply::ResetAfter(_)) {
                    reset_on_close(&stream);
                }
                false
            }
            Reply::Hang => {
                shared.lock().held.push(stream);
                return;
            }
        };
        if !keep_going {
            return;
        }
    }
}

/// The `N` of `bytes=N-`, 0 without one.
fn range_start(range: Option<&str>) -> usize {
    range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Writes `body` whole (200) or from the start of `range` (206); whether that worked.
fn serve(stream: &mut TcpStream, body: &[u8], range: Option<&str>) -> bool {
    let start = range_start(range);
    let written = if range.is_some() && start < body.len() {
        write!(
            stream,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\n\r\n",
            body.len() - start,
            body.len() - 1,
            body.len()
        )
        .and_then(|()| stream.write_all(&body[start..]))
    } else {
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .and_then(|()| stream.write_all(body))
    };
    written.is_ok()
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Injected",
    }
}

/// Makes the closing of `stream` (when every handle on it is dropped) a TCP reset, as a
/// middlebox that drops the connection would.
fn reset_on_close(stream: &TcpStream) {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this server owns, with a valid linger struct and its size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request on a connection of its own; the whole answer as text, whatever ended it.
    fn exchange(server: &Server, request: &str) -> String {
        let mut client = TcpStream::connect(server.address()).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        client.write_all(request.as_bytes()).expect("write");
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn get(path: &str, headers: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
    }

    #[test]
    fn a_route_serves_its_body_after_its_plan_and_honours_range() {
        let server = Server::start();
        server.route("/file", "0123456789", &[Reply::Status(503)]);
        assert!(exchange(&server, &get("/file", "")).starts_with("HTTP/1.1 503 "));
        let whole = exchange(&server, &get("/file", ""));
        assert!(whole.starts_with("HTTP/1.1 200 OK\r\n"), "{whole}");
        assert!(whole.ends_with("\r\n\r\n0123456789"), "{whole}");
        let rest = exchange(&server, &get("/file", "Range: bytes=4-\r\n"));
        assert!(rest.starts_with("HTTP/1.1 206 "), "{rest}");
        assert!(rest.contains("Content-Range: bytes 4-9/10\r\n"), "{rest}");
        assert!(rest.ends_with("\r\n\r\n456789"), "{rest}");
        assert_eq!(
            server.ranges("/file"),
            vec![None, None, Some("bytes=4-".to_owned())]
        );
    }

    #[test]
    fn a_body_cut_short_announces_the_whole_length() {
        let server = Server::start();
        server.route("/file", "0123456789", &[Reply::CloseAfter(3)]);
        let cut = exchange(&server, &get("/file", ""));
        assert!(cut.contains("Content-Length: 10\r\n"), "{cut}");
        assert!(cut.ends_with("\r\n\r\n012"), "{cut}");
    }

    #[test]
    fn a_path_without_a_route_is_404_unless_told_otherwise() {
        let server = Server::start();
        assert!(exchange(&server, &get("/nothing", "")).starts_with("HTTP/1.1 404 "));
        server.otherwise(Reply::Hang);
        let mut client = TcpStream::connect(server.address()).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        client
            .write_all(get("/v1/status", "").as_bytes())
            .expect("write");
        let mut byte = [0u8; 1];
        let waited = client.read(&mut byte).expect_err("no answer");
        assert_eq!(waited.kind(), std::io::ErrorKind::WouldBlock, "{waited}");
        drop(server);
        assert_eq!(
            client.read(&mut byte).expect("closed"),
            0,
            "dropping the server closes what it held"
        );
    }

    #[test]
    fn requests_on_one_connection_are_answered_in_turn_bodies_skipped() {
        let server = Server::start();
        server.route("/latest/api/token", "token", &[]);
        server.route("/latest/meta-data/instance-id", "i-0", &[]);
        let answer = exchange(
            &server,
            &format!(
                "PUT /latest/api/token HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody{}",
                get("/latest/meta-data/instance-id", "")
            ),
        );
        assert!(answer.contains("\r\n\r\ntokenHTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("\r\n\r\ni-0"), "{answer}");
    }
}
