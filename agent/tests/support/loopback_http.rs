//! A small HTTP/1.1 server on 127.0.0.1 for fault tests: each path has a body and a plan of
//! misbehaviours, used one per request, after which it serves the body (honouring `Range`).

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers one request.
#[derive(Debug, Clone)]
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

#[derive(Debug, Default)]
struct Route {
    body: Vec<u8>,
    plan: VecDeque<Reply>,
}

#[derive(Debug, Default)]
struct Shared {
    routes: HashMap<String, Route>,
    /// Every request: method, path and its `Range` header.
    seen: Vec<(String, String, Option<String>)>,
    hung: Vec<TcpStream>,
}

/// The server; it stops answering when dropped (its thread ends with the test process).
#[derive(Clone)]
pub struct Server {
    pub address: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || answer(stream, &state));
            }
        });
        Self { address, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Serves `body` at `path` after the misbehaviours in `plan`, one per request.
    pub fn route(&self, path: &str, body: impl Into<Vec<u8>>, plan: &[Reply]) {
        self.lock().routes.insert(
            path.to_owned(),
            Route {
                body: body.into(),
                plan: plan.iter().cloned().collect(),
            },
        );
    }

    /// The requests made for `path`: their `Range` headers.
    pub fn ranges(&self, path: &str) -> Vec<Option<String>> {
        self.lock()
            .seen
            .iter()
            .filter(|(_, p, _)| p == path)
            .map(|(_, _, range)| range.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("server state")
    }
}

fn answer(stream: TcpStream, shared: &Mutex<Shared>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let path = words.next().unwrap_or_default().to_owned();
        let mut range = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_owned());
            }
        }
        let (reply, body) = {
            let mut shared = shared.lock().expect("server state");
            shared.seen.push((method, path.clone(), range.clone()));
            match shared.routes.get_mut(&path) {
                Some(route) => (
                    route.plan.pop_front().unwrap_or(Reply::Serve),
                    route.body.clone(),
                ),
                None => (Reply::Status(404), Vec::new()),
            }
        };
        let mut stream = stream.try_clone().expect("clone");
        let keep_going = match reply {
            Reply::Serve => serve(&mut stream, &body, range.as_deref()),
            Reply::Slow(wait) => {
                std::thread::sleep(wait);
                serve(&mut stream, &body, range.as_deref())
            }
            Reply::Status(code) => {
                let text = format!("status {code}\n");
                write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )
                .is_ok()
            }
            Reply::ResetAfter(bytes) | Reply::CloseAfter(bytes) => {
                let start = range_start(range.as_deref()).min(body.len());
                let rest = &body[start..];
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    rest.len()
                );
                let _ = stream.write_all(&rest[..bytes.min(rest.len())]);
                let _ = stream.flush();
                if matches!(reply, Reply::ResetAfter(_)) {
                    reset(&stream);
                }
                false
            }
            Reply::Hang => {
                shared.lock().expect("server state").hung.push(stream);
                return;
            }
        };
        if !keep_going {
            return;
        }
    }
}

fn range_start(range: Option<&str>) -> usize {
    range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

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

/// Makes the closing of `stream` (when every handle on it is dropped) a TCP reset, as a
/// middlebox that drops the connection would.
fn reset(stream: &TcpStream) {
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
