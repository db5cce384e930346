//! A moto server of the test's own, on a free loopback port.
//!
//! moto stands in for AWS (EC2, SSM, STS, IAM) in the orchestrator's tests. Each test starts
//! its own server so tests run in parallel without seeing each other's instances; the server
//! is killed when the handle is dropped. Install it with `python3 -m pip install 'moto[server]'`;
//! `MOTO_SERVER` names another executable.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to answer after it was started (it needs about half a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Moto {
    /// Starts a moto server on a free loopback port and waits until it answers.
    pub fn start() -> Moto {
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        // The port is free when asked for, but another process may take it before moto binds
        // it: a few tries make that race harmless.
        for _ in 0..5 {
            let addr = free_loopback_port();
            let mut child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
                .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
                .env("MOTO_ENABLE_AMI_VALIDATION", "true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "starting `{program}` failed ({e}); install it with \
                         python3 -m pip install 'moto[server]'"
                    )
                });
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if http_request(addr, "GET", "/moto-api/data.json").is_some() {
                    return Moto { child, addr };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("moto_server on {addr} did not answer within {START_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("moto_server exited at start five times (ports taken?)");
    }

    /// The base URL for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Wipes every resource the server holds.
    pub fn reset(&self) {
        let status = http_request(self.addr, "POST", "/moto-api/reset");
        assert_eq!(status, Some(200), "POST /moto-api/reset on {}", self.addr);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address whose port nobody listened on a moment ago.
fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port");
    listener
        .local_addr()
        .expect("local address of a bound socket")
}

/// One HTTP/1.1 request without a body; the response's status code, or `None` when nothing
/// answered.
fn http_request(addr: SocketAddr, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let status_line = response.split(|b| *b == b'\n').next()?;
    let status_line = std::str::from_utf8(status_line).ok()?;
    status_line.split_whitespace().nth(1)?.parse().ok()
}
