//! Real stand-ins for install-efa's tests: an OpenPGP signer (GnuPG in a scratch home), a
//! tarball maker that can also write the malicious entries a safe unpacker must refuse, and
//! an HTTP server on 127.0.0.1 that can fail, truncate and honour or ignore `Range`.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tar::{EntryType, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The OpenPGP signer and the digest are shared with the agent's and the orchestrator's
/// integration suites.
pub(crate) use rayefa_test_support::{Gpg, sha256_hex as sha256};

/// One tar entry to write.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Dir(&'static str),
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// A symbolic link; the path and target are written as given, unchecked.
    Symlink(&'static str, &'static str),
    /// A hard link to `target`, named from the archive's top.
    HardLink(&'static str, &'static str),
    /// A file whose name bytes go into the header as given (`../x`, `/etc/x`), which
    /// `tar::Builder` itself refuses to write.
    RawFile(&'static [u8]),
    Fifo(&'static str),
}

impl Entry {
    pub(crate) fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            path: path.to_owned(),
            mode,
            data: data.into(),
        }
    }
}

/// A gzip-compressed tarball of `entries`, in order.
pub(crate) fn tarball(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for entry in entries {
        let mut header = Header::new_gnu();
        header.set_mtime(1_700_000_000);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())
            }
            Entry::File { path, mode, data } => {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice())
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                raw_name(&mut header, path.as_bytes());
                raw_link(&mut header, target.as_bytes());
                header.set_cksum();
                builder.append(&header, std::io::empty())
            }
            Entry::HardLink(path, target) => {
                header.set_entry_type(EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                raw_name(&mut header, path.as_bytes());
                raw_link(&mut header, target.as_bytes());
                header.set_cksum();
                builder.append(&header, std::io::empty())
            }
            Entry::RawFile(name) => {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(4);
                raw_name(&mut header, name);
                header.set_cksum();
                builder.append(&header, b"evil".as_slice())
            }
            Entry::Fifo(path) => {
                header.set_entry_type(EntryType::Fifo);
                header.set_mode(0o644);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())
            }
        }
        .expect("append entry");
    }
    builder
        .into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
}

fn raw_name(header: &mut Header, name: &[u8]) {
    let field = &mut header.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

fn raw_link(header: &mut Header, target: &[u8]) {
    let field = &mut header.as_old_mut().linkname;
    field.fill(0);
    field[..target.len()].copy_from_slice(target);
}

/// What the installer stand-in does once it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Writes the manifest for `version`, exits 0.
    Installs,
    /// Writes the manifest, says "Reboot is needed!", exits 0.
    NeedsReboot,
    /// Fails installing packages, exits 1.
    Fails,
    /// Finds no EFA device and installs nothing, exits 0 (as on a machine without EFA when
    /// the configured version is not the tarball's).
    InstallsNothing,
}

/// An `aws-efa-installer/` tree like AWS's, whose `efa_installer.sh` writes the manifest
/// under `$EFA_TEST_ROOT` (set through the agent's `[environment]`).
pub(crate) fn installer_entries(version: &str, behaviour: Behaviour) -> Vec<Entry> {
    let act = match behaviour {
        Behaviour::Installs => "write_manifest\necho 'EFA installation complete.'\n",
        Behaviour::NeedsReboot => {
            "write_manifest\necho 'Failed to unload EFA kernel module.'\necho 'Reboot is needed!' >&2\n\
             echo '- Please reboot to complete the installation.'\n"
        }
        Behaviour::Fails => {
            "echo 'Error: Failed to install packages.' >&2\n\
             echo 'Error: failed to install EFA packages, exiting' >&2\nexit 1\n"
        }
        Behaviour::InstallsNothing => "echo 'EFA device not detected, skipping test.'\n",
    };
    let script = format!(
        "#!/bin/bash\n\
         source ./env.sh\n\
         [ -e common.sh ] || {{ echo 'Please cd into the installer directory.' >&2; exit 1; }}\n\
         echo \"= Starting Amazon Elastic Fabric Adapter Installation Script =\"\n\
         echo \"= EFA Installer Version: ${{EFA_INSTALLER_VERSION}} =\"\n\
         echo \"flags: $*\"\n\
         write_manifest() {{\n\
           mkdir -p \"$EFA_TEST_ROOT/opt/amazon\"\n\
           printf '# EFA installer version: %s\\n# Debug packages installed: no\\n# Packages installed:\\nlibfabric-aws-2.3.1 efa-2.17.1\\n' \"$EFA_INSTALLER_VERSION\" \\\n\
             > \"$EFA_TEST_ROOT/opt/amazon/efa_installed_packages\"\n\
         }}\n\
         {act}"
    );
    vec![
        Entry::Dir("aws-efa-installer/"),
        Entry::file(
            "aws-efa-installer/env.sh",
            0o644,
            format!("EFA_INSTALLER_VERSION={version}\n"),
        ),
        Entry::file("aws-efa-installer/common.sh", 0o644, "is_root() { :; }\n"),
        Entry::file("aws-efa-installer/efa_installer.sh", 0o755, script),
        Entry::Dir("aws-efa-installer/RPMS/"),
        Entry::file(
            "aws-efa-installer/RPMS/libfabric-aws.rpm",
            0o644,
            vec![7u8; 64 * 1024],
        ),
    ]
}

/// How the server answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The file, honouring `Range`.
    Serve,
    /// The whole file whatever `Range` says.
    IgnoreRange,
    /// Only this status and a short body.
    Status(u16),
    /// Headers for the whole (remaining) file, then only this many bytes, then the
    /// connection closes.
    Truncate(usize),
}

/// A request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) range: Option<String>,
}

#[derive(Debug, Default)]
struct Route {
    body: Vec<u8>,
    plan: VecDeque<Reply>,
}

#[derive(Debug, Default)]
struct ServerState {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
}

/// An HTTP/1.1 server on 127.0.0.1, one request per connection.
pub(crate) struct TestServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(ServerState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move { serve(stream, &shared).await });
            }
        });
        Self { addr, state, task }
    }

    /// Serves `body` at `path`, answering requests by `plan` in turn and by
    /// [`Reply::Serve`] once the plan is used up.
    pub(crate) fn route(&self, path: &str, body: Vec<u8>, plan: &[Reply]) {
        self.state.lock().expect("state").routes.insert(
            path.to_owned(),
            Route {
                body,
                plan: plan.iter().copied().collect(),
            },
        );
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    /// The requests for `path`.
    pub(crate) fn seen_for(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, state: &Mutex<ServerState>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    let path = text
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let range = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("range")
            .then(|| value.trim().to_owned())
    });
    let (reply, body) = {
        let mut state = state.lock().expect("state");
        state.seen.push(Seen {
            path: path.clone(),
            range: range.clone(),
        });
        match state.routes.get_mut(&path) {
            Some(route) => (
                route.plan.pop_front().unwrap_or(Reply::Serve),
                route.body.clone(),
            ),
            None => (Reply::Status(404), Vec::new()),
        }
    };
    let start = match (reply, &range) {
        (Reply::Serve | Reply::Truncate(_), Some(range)) => range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok()),
        _ => None,
    };
    let response = match (reply, start) {
        (Reply::Status(code), _) => {
            let text = format!("status {code}\n");
            let mut head = head(code, text.len(), None);
            head.extend_from_slice(text.as_bytes());
            head
        }
        (_, Some(start)) if start >= body.len() => {
            head(416, 0, Some(format!("bytes */{}", body.len())))
        }
        (Reply::Truncate(keep), start) => {
            let from = start.unwrap_or(0);
            let rest = &body[from..];
            let range = start.map(|s| format!("bytes {s}-{}/{}", body.len() - 1, body.len()));
            let mut out = head(if start.is_some() { 206 } else { 200 }, rest.len(), range);
            out.extend_from_slice(&rest[..keep.min(rest.len())]);
            out
        }
        (_, Some(start)) => {
            let range = format!("bytes {start}-{}/{}", body.len() - 1, body.len());
            let mut out = head(206, body.len() - start, Some(range));
            out.extend_from_slice(&body[start..]);
            out
        }
        (_, None) => {
            let mut out = head(200, body.len(), None);
            out.extend_from_slice(&body);
            out
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn head(status: u16, length: usize, content_range: Option<String>) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Whatever",
    };
    let mut text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {length}\r\nConnection: close\r\nAccept-Ranges: bytes\r\n"
    );
    if let Some(range) = content_range {
        text.push_str(&format!("Content-Range: {range}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// Writes `bytes` to `path` under a host root, making folders.
pub(crate) fn put(root: &Path, host_path: &str, bytes: &[u8]) -> PathBuf {
    let path = root.join(host_path.trim_start_matches('/'));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(bytes).expect("write");
    path
}
