//! The `local` provider: every node is a `rayefa-agent` process on this machine.
//!
//! Each node has its own directory (configuration, root, log, record), its own loopback
//! address (`127.a.b.c`, one per node, the same port everywhere, as on a real network) and a
//! process in a session of its own, so the nodes outlive `rayefa up` and a later `status` or
//! `down` finds them from their records. Steps that would change this machine (grow-root,
//! install-efa) are turned off, and the agent does not ask for EC2 instance metadata.

mod node_dir;
mod process;
mod provider_type;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use rayefa_wire::{AgentConfigFile, AgentSection, StepSection, StepsSection};

use self::node_dir::{NodeDir, NodeFile};
use self::process::{AgentCommand, Liveness, Stopped};
use super::{LaunchRequest, Lifecycle, NodeRecord, Provider, ProviderError, Termination};
use rayefa_cluster::Cluster;

pub(crate) use self::provider_type::Local;

/// Names the directory that holds rayefa's local state (default `$XDG_STATE_HOME/rayefa`).
pub(crate) const STATE_DIR_ENV: &str = "RAYEFA_STATE_DIR";

/// Runs a cluster's agents as detached processes, one directory per node.
#[derive(Debug)]
pub(crate) struct LocalProvider {
    cluster_dir: PathBuf,
    first_address: Ipv4Addr,
    port: u16,
    agent_binary: Result<PathBuf, String>,
    stop_grace: Duration,
}

impl LocalProvider {
    /// The provider of `cluster`.
    pub(crate) fn new(cluster: &Cluster) -> Result<Self, ProviderError> {
        let local = cluster
            .rayefa()
            .and_then(|r| r.local.clone())
            .unwrap_or_default();
        let base = cluster.path.parent().unwrap_or(Path::new("."));
        let cluster_dir = match &local.cluster_dir {
            Some(dir) => base.join(dir),
            None => state_dir()?.join("clusters").join(cluster.name()),
        };
        // Agents run in their node's directory, and a node's processes are recognised by its
        // directory's path: one absolute spelling, whatever directory rayefa runs from.
        let cluster_dir = absolute(&cluster_dir).map_err(|source| ProviderError::Io {
            context: format!("resolving {}", cluster_dir.display()),
            source,
        })?;
        let first_address = match &local.first_address {
            Some(text) => parse_loopback(&text.value).map_err(|message| {
                ProviderError::Failed(format!(
                    "{}:{}: rayefa.local.first_address: {message}",
                    cluster.display_path(),
                    text.referenced.line()
                ))
            })?,
            None => default_first_address(cluster.name()),
        };
        Ok(Self {
            cluster_dir,
            first_address,
            port: cluster.settings.agent_port,
            agent_binary: process::find_agent_binary(local.agent_binary.as_deref()),
            stop_grace: cluster
                .settings
                .down_timeout
                .unwrap_or(cluster.settings.stop_grace),
        })
    }

    /// Holds the cluster's lock file until dropped, so that two `up`s or an `up` and a
    /// `down` never pick the same slot or remove a node being launched.
    fn lock(&self) -> Result<Flock<File>, ProviderError> {
        std::fs::create_dir_all(&self.cluster_dir).map_err(|source| ProviderError::Io {
            context: format!("creating {}", self.cluster_dir.display()),
            source,
        })?;
        let path = self.cluster_dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ProviderError::Io {
                context: format!("opening {}", path.display()),
                source,
            })?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| ProviderError::Io {
            context: format!("locking {}", path.display()),
            source: errno.into(),
        })
    }

    /// `CLUSTER_DIR/control-secret`: the cluster's control secret, beside its nodes.
    fn cluster_secret(&self) -> PathBuf {
        self.cluster_dir.join("control-secret")
    }

    fn address_of(&self, slot: u32) -> Option<Ipv4Addr> {
        let address = u32::from(self.first_address).checked_add(slot)?;
        let address = Ipv4Addr::from(address);
        (address.octets()[0] == 127 && address.octets()[3] != 255).then_some(address)
    }

    /// Starts the agent of an existing node directory and records it.
    fn start(&self, dir: &NodeDir, mut node: NodeFile) -> Result<NodeFile, ProviderError> {
        let binary = self
            .agent_binary
            .clone()
            .map_err(ProviderError::AgentBinary)?;
        let identity = process::spawn_agent(&AgentCommand {
            binary: &binary,
            config: &dir.config(),
            root: &dir.root(),
            log: &dir.log(),
            dir: &dir.dir,
        })
        .map_err(|source| ProviderError::Io {
            context: format!("starting {} for node {}", binary.display(), node.id),
            source,
        })?;
        node.pid = identity.pid;
        node.start_time = identity.start_time;
        dir.write(&node).map_err(|source| ProviderError::Io {
            context: format!("writing {}", dir.record().display()),
            source,
        })?;
        Ok(node)
    }

    fn record_of(&self, dir: &NodeDir, node: &NodeFile) -> NodeRecord {
        let lifecycle = match process::liveness(&node.process(), &dir.config()) {
            Liveness::Running => Lifecycle::Running,
            Liveness::Gone(why) => Lifecycle::Stopped {
                why: with_log_tail(&why, &dir.log()),
            },
        };
        NodeRecord {
            id: node.id.clone(),
            node_type: node.node_type.clone(),
            role: node.role,
            agent_address: Some(node.agent_address()),
            private_address: Some(node.address.to_string()),
            lifecycle,
            launched_at_ms: Some(node.launched_at_ms),
        }
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    async fn launch(&self, request: LaunchRequest<'_>) -> Result<Vec<NodeRecord>, ProviderError> {
        let _lock = self.lock()?;
        let existing = node_dir::all(&self.cluster_dir).map_err(|source| ProviderError::Io {
            context: format!("reading {}", self.cluster_dir.display()),
            source,
        })?;
        let mut used_slots: BTreeSet<u32> = existing.iter().map(|(_, n)| n.slot).collect();
        let mut used_ids: BTreeSet<String> = existing.iter().map(|(_, n)| n.id.clone()).collect();
        let rendered = super::control_secret::secured(request.config, &self.cluster_secret())?;
        let mut launched = Vec::new();
        for _ in 0..request.count {
            let (slot, address) = self.free_slot(&used_slots)?;
            used_slots.insert(slot);
            let id = (0..)
                .map(|n| format!("{}-{n}", request.node_type))
                .find(|id| !used_ids.contains(id))
                .unwrap_or_default();
            used_ids.insert(id.clone());
            let dir = NodeDir::new(&self.cluster_dir, &id);
            std::fs::create_dir_all(dir.root()).map_err(|source| ProviderError::Io {
                context: format!("creating {}", dir.root().display()),
                source,
            })?;
            // Before the record: a listing never shows the node without its tags.
            if !request.tags.is_empty() {
                dir.write_tags(request.tags)
                    .map_err(|source| ProviderError::Io {
                        context: format!("writing {}", dir.tags().display()),
                        source,
                    })?;
            }
            let config = local_config(&rendered, address, self.port);
            let text = toml::to_string(&config).map_err(|e| {
                ProviderError::Failed(format!("rendering the agent configuration of {id}: {e}"))
            })?;
            std::fs::write(dir.config(), text).map_err(|source| ProviderError::Io {
                context: format!("writing {}", dir.config().display()),
                source,
            })?;
            let node = NodeFile {
                id,
                node_type: request.node_type.to_owned(),
                role: request.role,
                slot,
                address,
                port: self.port,
                pid: 0,
                start_time: 0,
                launched_at_ms: now_ms(),
            };
            let node = match self.start(&dir, node) {
                Ok(node) => node,
                Err(error) => {
                    // No process runs for it: leave no directory that looks like a node.
                    let _ = std::fs::remove_dir_all(&dir.dir);
                    return Err(error);
                }
            };
            launched.push(self.record_of(&dir, &node));
        }
        Ok(launched)
    }

    async fn list(&self) -> Result<Vec<NodeRecord>, ProviderError> {
        let nodes = node_dir::all(&self.cluster_dir).map_err(|source| ProviderError::Io {
            context: format!("reading {}", self.cluster_dir.display()),
            source,
        })?;
        Ok(nodes
            .iter()
            .map(|(dir, node)| self.record_of(dir, node))
            .collect())
    }

    async fn restart(&self, node: &NodeRecord) -> Result<NodeRecord, ProviderError> {
        let _lock = self.lock()?;
        let dir = NodeDir::new(&self.cluster_dir, &node.id);
        let file = dir.read().map_err(|source| ProviderError::Io {
            context: format!("reading {}", dir.record().display()),
            source,
        })?;
        if process::liveness(&file.process(), &dir.config()) == Liveness::Running {
            return Ok(self.record_of(&dir, &file));
        }
        let file = self.start(&dir, file)?;
        Ok(self.record_of(&dir, &file))
    }

    fn location(&self) -> Option<String> {
        Some(self.cluster_dir.display().to_string())
    }

    fn control_secret_file(&self) -> Result<PathBuf, ProviderError> {
        Ok(self.cluster_secret())
    }

    fn keeps_tags(&self) -> bool {
        true
    }

    async fn tags(
        &self,
        nodes: &[NodeRecord],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, ProviderError> {
        let mut found = BTreeMap::new();
        for node in nodes {
            let dir = NodeDir::new(&self.cluster_dir, &node.id);
            let tags = dir.read_tags().map_err(|source| ProviderError::Io {
                context: format!("reading {}", dir.tags().display()),
                source,
            })?;
            if !tags.is_empty() {
                found.insert(node.id.clone(), tags);
            }
        }
        Ok(found)
    }

    async fn set_tags(
        &self,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        let _lock = self.lock()?;
        let dir = NodeDir::new(&self.cluster_dir, id);
        if !dir.record().exists() {
            return Err(ProviderError::Failed(format!(
                "no node {id} in {}",
                self.cluster_dir.display()
            )));
        }
        let io = |source| ProviderError::Io {
            context: format!("updating {}", dir.tags().display()),
            source,
        };
        let mut kept = dir.read_tags().map_err(io)?;
        kept.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        dir.write_tags(&kept).map_err(io)
    }

    async fn terminate(&self, nodes: &[NodeRecord]) -> Result<Vec<Termination>, ProviderError> {
        let _lock = self.lock()?;
        let mut stops = tokio::task::JoinSet::new();
        for node in nodes {
            let dir = NodeDir::new(&self.cluster_dir, &node.id);
            let grace = self.stop_grace;
            let id = node.id.clone();
            stops.spawn(async move {
                let record = dir.read();
                let session = record.as_ref().ok().map(|file| file.pid);
                let outcome = match record {
                    Ok(file) => match process::stop(&file.process(), &dir.config(), grace).await {
                        Stopped::AlreadyGone => "was not running".to_owned(),
                        Stopped::Terminated(after) => {
                            format!("stopped after SIGTERM in {:.1} s", after.as_secs_f64())
                        }
                        Stopped::Killed => format!(
                            "killed with SIGKILL: it did not stop within {} s of SIGTERM",
                            grace.as_secs()
                        ),
                    },
                    Err(e) => format!("had no readable record ({e})"),
                };
                let others = process::stop_marked(&dir.dir, session, grace).await;
                let outcome = format!("{outcome}{}", others.describe());
                let removed = std::fs::remove_dir_all(&dir.dir);
                let outcome = match removed {
                    Ok(()) => outcome,
                    Err(e) => format!("{outcome}; its directory could not be removed: {e}"),
                };
                Termination { id, outcome }
            });
        }
        let mut done = Vec::new();
        while let Some(result) = stops.join_next().await {
            done.push(result.map_err(|e| ProviderError::Failed(format!("stopping a node: {e}")))?);
        }
        done.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(done)
    }
}

impl LocalProvider {
    /// The lowest slot whose address is not taken by a node and whose port is free.
    fn free_slot(&self, used: &BTreeSet<u32>) -> Result<(u32, Ipv4Addr), ProviderError> {
        for slot in 0..1024 {
            if used.contains(&slot) {
                continue;
            }
            let Some(address) = self.address_of(slot) else {
                break;
            };
            // Something else on this machine may already listen there (another cluster).
            if TcpListener::bind((address, self.port)).is_ok() {
                return Ok((slot, address));
            }
        }
        Err(ProviderError::Failed(format!(
            "no free loopback address from {} on port {}; set rayefa.local.first_address",
            self.first_address, self.port
        )))
    }
}

/// The rendered configuration with what differs on this machine: the node's own listen
/// address (also given to commands as [`NODE_ADDRESS_ENV`], since every node shares the
/// machine's interfaces), commands run as whoever runs rayefa (not `auth.ssh_user`: switching
/// users would need root and that user on this machine), no instance metadata service, and no
/// step that changes the host.
fn local_config(rendered: &AgentConfigFile, address: Ipv4Addr, port: u16) -> AgentConfigFile {
    let mut config = rendered.clone();
    config
        .environment
        .get_or_insert_with(Default::default)
        .insert(NODE_ADDRESS_ENV.to_owned(), address.to_string());
    if let Some(commands) = config.commands.as_mut() {
        commands.user = None;
    }
    let agent = config.agent.get_or_insert_with(AgentSection::default);
    agent.listen = Some(SocketAddr::from((address, port)).to_string());
    agent.imds = Some(false);
    let steps = config.steps.get_or_insert_with(StepsSection::default);
    for step in [&mut steps.grow_root, &mut steps.install_efa] {
        step.get_or_insert_with(StepSection::default).enabled = Some(false);
    }
    config
}

/// The loopback address of a local node, in its commands' environment: what `ray start
/// --node-ip-address` needs when several Ray nodes share one machine.
pub(crate) const NODE_ADDRESS_ENV: &str = "RAYEFA_NODE_ADDRESS";

/// `path` made absolute against the current directory, with `.` and `..` resolved by name and
/// symbolic links in its existing ancestors resolved by the file system.
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for part in std::path::absolute(path)?.components() {
        match part {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    // The longest existing ancestor, canonicalised, then the rest as written.
    let mut existing = clean.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        let Some(parent) = existing.parent() else {
            return Ok(clean);
        };
        rest.push(existing.file_name().unwrap_or_default().to_owned());
        existing = parent;
    }
    let mut resolved = existing.canonicalize()?;
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}

/// `$RAYEFA_STATE_DIR`, else `$XDG_STATE_HOME/rayefa`, else `~/.local/state/rayefa`.
pub(crate) fn state_dir() -> Result<PathBuf, ProviderError> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = nonempty(STATE_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = nonempty("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("rayefa"));
    }
    if let Some(home) = nonempty("HOME") {
        return Ok(PathBuf::from(home).join(".local/state/rayefa"));
    }
    Err(ProviderError::Failed(format!(
        "no state directory: set {STATE_DIR_ENV}, XDG_STATE_HOME or HOME, or rayefa.local.cluster_dir"
    )))
}

/// An address in 127.0.0.0/8 that is not the network's first or last.
fn parse_loopback(text: &str) -> Result<Ipv4Addr, String> {
    let address: Ipv4Addr = text
        .parse()
        .map_err(|_| format!("`{text}` is not an IPv4 address"))?;
    if !address.is_loopback() || address.octets()[3] == 0 || address.octets()[3] == 255 {
        return Err(format!(
            "`{text}` is not a loopback host address (127.x.y.z, z from 1 to 254)"
        ));
    }
    Ok(address)
}

/// A first address derived from the cluster's name, so that two local clusters do not start
/// on the same addresses: `127.<a>.<b>.1`.
fn default_first_address(cluster_name: &str) -> Ipv4Addr {
    let mut hasher = DefaultHasher::new();
    cluster_name.hash(&mut hasher);
    let [a, b, ..] = hasher.finish().to_le_bytes();
    Ipv4Addr::new(127, a.max(1), b, 1)
}

/// `why` followed by the last lines of the agent's log, which say why it stopped.
fn with_log_tail(why: &str, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n    ");
    if tail.is_empty() {
        format!("{why} (its log {} is empty)", log.display())
    } else {
        format!("{why}; last lines of {}:\n    {tail}", log.display())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_only() {
        assert_eq!(
            parse_loopback("127.0.50.1"),
            Ok(Ipv4Addr::new(127, 0, 50, 1))
        );
        assert!(parse_loopback("10.0.0.1").is_err());
        assert!(parse_loopback("127.0.0.255").is_err());
        assert!(parse_loopback("localhost").is_err());
        let derived = default_first_address("ray-local");
        assert!(derived.is_loopback());
        assert_eq!(derived, default_first_address("ray-local"));
        assert_ne!(derived, default_first_address("another"));
    }

    #[test]
    fn the_local_configuration_turns_off_host_changes_and_metadata() {
        let rendered = AgentConfigFile {
            commands: Some(rayefa_wire::CommandsSection {
                user: Some("ubuntu".into()),
                ..Default::default()
            }),
            steps: Some(StepsSection {
                install_ray: Some(StepSection {
                    enabled: Some(false),
                    ..StepSection::default()
                }),
                ..StepsSection::default()
            }),
            ..AgentConfigFile::default()
        };
        let config = local_config(&rendered, Ipv4Addr::new(127, 0, 9, 3), 8700);
        let environment = config.environment.expect("environment");
        assert_eq!(environment[NODE_ADDRESS_ENV], "127.0.9.3");
        assert_eq!(config.commands.expect("commands").user, None);
        let agent = config.agent.expect("agent");
        assert_eq!(agent.listen.as_deref(), Some("127.0.9.3:8700"));
        assert_eq!(agent.imds, Some(false));
        let steps = config.steps.expect("steps");
        assert_eq!(steps.grow_root.and_then(|s| s.enabled), Some(false));
        assert_eq!(steps.install_efa.and_then(|s| s.enabled), Some(false));
        assert_eq!(steps.install_ray.and_then(|s| s.enabled), Some(false));
        assert_eq!(steps.probe_efa, None);
    }

    #[test]
    fn cluster_directories_get_one_absolute_spelling() {
        let scratch = tempfile::tempdir().expect("scratch");
        let real = scratch.path().canonicalize().expect("canonical");
        std::fs::create_dir(real.join("examples")).expect("examples");
        std::os::unix::fs::symlink(real.join("examples"), real.join("linked")).expect("link");
        let spelled = real.join("linked/./../examples/../target/ray");
        assert_eq!(
            absolute(&spelled).expect("absolute"),
            real.join("target/ray")
        );
        let through_link = real.join("linked/nodes");
        assert_eq!(
            absolute(&through_link).expect("absolute"),
            real.join("examples/nodes")
        );
        let relative = absolute(Path::new("some/dir")).expect("absolute");
        assert!(relative.is_absolute() && relative.ends_with("some/dir"));
    }
}
