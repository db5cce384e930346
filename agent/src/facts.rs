//! What the agent knows about its machine: local facts from sysinfo and os-release, EC2 facts
//! from the instance metadata service (IMDSv2), looked up in the background so that a machine
//! off EC2 starts without waiting.

use rayefa_wire::{Ec2Facts, NodeFacts};
use tokio::sync::watch;

use crate::host::{HostRoot, Imds};

/// Machine facts that need no network.
pub(crate) fn local_facts(root: &HostRoot) -> NodeFacts {
    use sysinfo::{Disks, System};
    let mut system = System::new();
    system.refresh_memory();
    let disks = Disks::new_with_refreshed_list();
    let root_disk_bytes = disks
        .list()
        .iter()
        .find(|d| d.mount_point() == root.as_path())
        .map(sysinfo::Disk::total_space);
    NodeFacts {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: System::host_name(),
        os: os_pretty_name(root).or_else(System::long_os_version),
        kernel: System::kernel_version(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        memory_bytes: system.total_memory(),
        root_disk_bytes,
        ec2: None,
    }
}

fn os_pretty_name(root: &HostRoot) -> Option<String> {
    let text = std::fs::read_to_string(root.path("/etc/os-release")).ok()?;
    crate::host::os_release_value(&text, "PRETTY_NAME")
}

/// The state of the background metadata lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LookupState {
    Pending,
    Done(Option<Ec2Facts>),
}

/// A handle on the metadata lookup; cloning shares it.
#[derive(Debug, Clone)]
pub(crate) struct Ec2Lookup(watch::Receiver<LookupState>);

impl Ec2Lookup {
    /// A lookup that already knows the answer (metadata turned off, tests).
    pub(crate) fn known(facts: Option<Ec2Facts>) -> Self {
        let (_tx, rx) = watch::channel(LookupState::Done(facts));
        Self(rx)
    }

    /// Starts asking the metadata service at `endpoint`; `on_done` sees the answer once.
    pub(crate) fn start(
        endpoint: String,
        on_done: impl FnOnce(Option<Ec2Facts>) + Send + 'static,
    ) -> Self {
        let (tx, rx) = watch::channel(LookupState::Pending);
        tokio::spawn(async move {
            let facts = match fetch(&endpoint).await {
                Ok(facts) => Some(facts),
                Err(err) => {
                    tracing::info!(
                        endpoint,
                        "instance metadata unavailable, assuming not on EC2: {err}"
                    );
                    None
                }
            };
            on_done(facts.clone());
            let _ = tx.send(LookupState::Done(facts));
        });
        Self(rx)
    }

    /// The answer, waiting for it if the lookup is still under way.
    pub(crate) async fn wait(&self) -> Option<Ec2Facts> {
        let mut rx = self.0.clone();
        match rx.wait_for(|s| matches!(s, LookupState::Done(_))).await {
            Ok(state) => match &*state {
                LookupState::Done(facts) => facts.clone(),
                LookupState::Pending => None,
            },
            Err(_) => None,
        }
    }
}

async fn fetch(endpoint: &str) -> Result<Ec2Facts, reqwest::Error> {
    let imds = Imds::new(endpoint)?.session().await?;
    let instance_id = imds.get("instance-id").await?;
    let instance_type = imds.get("instance-type").await?;
    let availability_zone = imds.get("placement/availability-zone").await?;
    let region = imds.get("placement/region").await.ok();
    let partition = imds.get("services/partition").await.ok();
    let domain = imds.get("services/domain").await.ok();
    let private_ip = imds.get("local-ipv4").await.ok();
    let mut interface_types = Vec::new();
    if let Ok(macs) = imds.get("network/interfaces/macs/").await {
        for mac in macs
            .lines()
            .map(|m| m.trim().trim_end_matches('/'))
            .filter(|m| !m.is_empty())
        {
            let kind = imds
                .get(&format!("network/interfaces/macs/{mac}/interface-type"))
                .await
                .unwrap_or_else(|_| "interface".to_owned());
            interface_types.push(kind);
        }
    }
    Ok(Ec2Facts {
        instance_id,
        instance_type,
        availability_zone,
        region,
        partition,
        domain,
        private_ip,
        interface_types,
    })
}
