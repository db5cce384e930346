//! What the agent's integration tests share: a scratch node, the real binary, plain HTTP.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_rayefa-agent");

/// A scratch root with a configuration file and a free loopback port.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub address: SocketAddr,
}

impl Node {
    /// A head node whose configuration is the common part plus `extra` TOML. Host-changing
    /// and slow steps are off unless `extra` turns them on; the metadata service is not asked.
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let address = free_port();
        let node = Self { dir, address };
        node.write_config(&format!(
            "[node]\ncluster_name = \"it\"\nrole = \"head\"\nnode_type = \"head_node\"\n\n\
             [agent]\nlisten = \"{address}\"\nimds = false\nstop_grace_secs = 2\n\n\
             [steps.grow-root]\nenabled = false\n[steps.install-efa]\nenabled = false\n\
             [steps.probe-efa]\nenabled = false\n[steps.install-ray]\nenabled = false\n\n\
             [environment]\nMARKS = \"{marks}\"\n\n{extra}",
            marks = node.path("marks").display()
        ));
        std::fs::create_dir_all(node.path("marks")).expect("marks dir");
        node
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn config(&self) -> PathBuf {
        self.path("agent.toml")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).expect("write config");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(AGENT);
        command
            .args(["--config"])
            .arg(self.config())
            .arg("--root")
            .arg(self.path("root"))
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        command
    }

    /// Starts `rayefa-agent run`, its stderr in `agent.log` of the scratch folder.
    pub fn spawn(&self) -> Child {
        self.spawn_with(|_| {})
    }

    /// Starts `rayefa-agent run` tagged with this node's folder (see
    /// [`rayefa_test_support::procs`]), so that [`procs::kill_tagged`] finds it and every
    /// command it starts; its stderr in `agent.log`.
    pub fn spawn_tagged(&self) -> Child {
        self.spawn_with(|command| procs::tag(command, self.dir.path()))
    }

    /// Starts `rayefa-agent run` as [`Node::spawn`] does, with `configure` applied to the
    /// command first; its stderr appended to `agent.log`.
    pub fn spawn_with(&self, configure: impl FnOnce(&mut Command)) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("agent.log"))
            .expect("log");
        let mut command = self.command(&["run"]);
        configure(&mut command);
        command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts")
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("agent runs")
    }

    /// Waits until `/readyz` answers 200 or `deadline` passes; the last answer either way.
    pub fn wait_ready(&self, deadline: Duration) -> (u16, String) {
        let start = Instant::now();
        loop {
            let answer = get(self.address, "/readyz");
            if answer.as_ref().is_ok_and(|(code, _)| *code == 200) || start.elapsed() > deadline {
                return answer.unwrap_or((0, String::new()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `predicate` holds for the status document.
    pub fn wait_status(
        &self,
        deadline: Duration,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Ok((200, body)) = get(self.address, "/v1/status") {
                let doc: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
                if predicate(&doc) {
                    return doc;
                }
                assert!(
                    start.elapsed() < deadline,
                    "status never matched; last: {doc:#}\nlog:\n{}",
                    self.log()
                );
            } else {
                assert!(
                    start.elapsed() < deadline,
                    "no status answer; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The status document `/v1/status` answers now.
    pub fn status(&self) -> serde_json::Value {
        let (_, body) = get(self.address, "/v1/status").expect("status");
        serde_json::from_str(&body).expect("status is JSON")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    pub fn marks(&self, name: &str) -> usize {
        std::fs::read_to_string(self.path("marks").join(name))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// A plain HTTP/1.1 exchange; the status code and body.
pub fn request(address: SocketAddr, raw: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(raw)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

pub fn get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(
        address,
        format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

// Re-exported so that every suite finds the process helpers where it finds `Node`; each suite
// uses some of them.
#[allow(unused_imports)]
pub use rayefa_test_support::procs::{self, kill, kill_and_wait, wait_exit};
