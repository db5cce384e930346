//! A local node's directory and its record, `node.json`.
//!
//! ```text
//! <cluster dir>/lock                     held while nodes are launched or removed
//! <cluster dir>/nodes/<id>/node.json     the record below
//! <cluster dir>/nodes/<id>/agent.toml    the rendered agent configuration
//! <cluster dir>/nodes/<id>/agent.log     the agent's stdout and stderr
//! <cluster dir>/nodes/<id>/tags.json     tags kept for Ray's autoscaler (absent: none)
//! <cluster dir>/nodes/<id>/root/         the agent's --root (its state directory lives under it)
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use rayefa_wire::Role;
use serde::{Deserialize, Serialize};

use super::process::ProcessIdentity;

/// What `node.json` says about a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeFile {
    /// The node's id, also its directory's name.
    pub(crate) id: String,
    /// Its node type.
    pub(crate) node_type: String,
    /// Head or worker.
    pub(crate) role: Role,
    /// Its slot: the offset of its address from the cluster's first address.
    pub(crate) slot: u32,
    /// The loopback address its agent listens on.
    pub(crate) address: Ipv4Addr,
    /// The agent's port.
    pub(crate) port: u16,
    /// The agent process.
    pub(crate) pid: i32,
    /// The agent process's start time, against pid reuse.
    pub(crate) start_time: u64,
    /// When the node was first launched, in milliseconds since the Unix epoch.
    pub(crate) launched_at_ms: u64,
}

impl NodeFile {
    /// The process identity recorded for the node.
    pub(crate) fn process(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// Where the agent serves HTTP.
    pub(crate) fn agent_address(&self) -> SocketAddr {
        SocketAddr::from((self.address, self.port))
    }
}

/// The paths of one node.
#[derive(Debug, Clone)]
pub(crate) struct NodeDir {
    /// `<cluster dir>/nodes/<id>`.
    pub(crate) dir: PathBuf,
}

impl NodeDir {
    /// The directory of node `id` under `cluster_dir`.
    pub(crate) fn new(cluster_dir: &Path, id: &str) -> Self {
        Self {
            dir: cluster_dir.join("nodes").join(id),
        }
    }

    /// `node.json`
    pub(crate) fn record(&self) -> PathBuf {
        self.dir.join("node.json")
    }

    /// `agent.toml`
    pub(crate) fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    /// `agent.log`
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// `root/`
    pub(crate) fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `tags.json`
    pub(crate) fn tags(&self) -> PathBuf {
        self.dir.join("tags.json")
    }

    /// Reads `tags.json`; a node without one has no tags.
    pub(crate) fn read_tags(&self) -> io::Result<BTreeMap<String, String>> {
        let text = match std::fs::read_to_string(self.tags()) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.tags().display()),
            )
        })
    }

    /// Writes `tags.json` atomically.
    pub(crate) fn write_tags(&self, tags: &BTreeMap<String, String>) -> io::Result<()> {
        let text = serde_json::to_string_pretty(tags).map_err(io::Error::other)?;
        let temporary = self.dir.join("tags.json.new");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, self.tags())
    }

    /// Reads `node.json`.
    pub(crate) fn read(&self) -> io::Result<NodeFile> {
        let text = std::fs::read_to_string(self.record())?;
        serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.record().display()),
            )
        })
    }

    /// Writes `node.json` atomically (a reader never sees half a record).
    pub(crate) fn write(&self, node: &NodeFile) -> io::Result<()> {
        let text = serde_json::to_string_pretty(node).map_err(io::Error::other)?;
        let temporary = self.dir.join("node.json.new");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, self.record())
    }
}

/// Every node directory under `cluster_dir` that has a record, sorted by id.
pub(crate) fn all(cluster_dir: &Path) -> io::Result<Vec<(NodeDir, NodeFile)>> {
    let nodes = cluster_dir.join("nodes");
    let entries = match std::fs::read_dir(&nodes) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let dir = NodeDir::new(cluster_dir, &id);
        match dir.read() {
            Ok(node) => found.push((dir, node)),
            // A directory without a record is a launch that died before writing it; it has
            // no process to find.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    found.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    Ok(found)
}
