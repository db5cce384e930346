//! Ray's cluster-launcher YAML as serde types, plus rayefa's optional `rayefa:` section.
//!
//! The shape follows Ray's `ray-schema.json`: unknown top-level keys, unknown `auth` keys and
//! unknown node-type keys are refused (as Ray refuses them); `provider` and `node_config`
//! are open (Ray passes them to the cloud). Values whose position matters for later checks
//! are [`Spanned`], so an error can name their line.

use std::collections::BTreeMap;

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use super::rayefa::RayefaSection;

/// A whole cluster file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// A unique name for the cluster's nodes.
    pub cluster_name: Spanned<String>,
    /// Where the nodes run.
    pub provider: Spanned<ProviderSpec>,
    /// The most workers Ray's autoscaler may run; rayefa checks `min_workers` against it.
    pub max_workers: Option<Spanned<u32>>,
    /// How many launches Ray's autoscaler may have pending, as a multiple of the running
    /// workers (at least 5). Passed to it when the cluster autoscales (some worker type's
    /// `max_workers` above its `min_workers`); unused otherwise.
    pub upscaling_speed: Option<Spanned<f64>>,
    /// Minutes a worker may idle before Ray's autoscaler removes it; fractions work (0.5 is
    /// 30 s). Passed to it when the cluster autoscales; unused otherwise.
    pub idle_timeout_minutes: Option<Spanned<f64>>,
    /// Ray runs the commands in this container; rayefa cannot (no SSH, no docker step).
    pub docker: Option<Spanned<Value>>,
    /// SSH settings; rayefa has no SSH.
    pub auth: Option<Spanned<AuthSpec>>,
    /// The node types, by name.
    pub available_node_types: Option<Spanned<BTreeMap<String, NodeTypeSpec>>>,
    /// Which node type is the head.
    pub head_node_type: Option<Spanned<String>>,
    /// Files Ray copies to nodes over SSH.
    pub file_mounts: Option<Spanned<Value>>,
    /// Head paths Ray copies to workers over SSH.
    pub cluster_synced_files: Option<Spanned<Value>>,
    /// Whether Ray keeps copying `file_mounts`.
    pub file_mounts_sync_continuously: Option<Spanned<Value>>,
    /// rsync patterns for `file_mounts`.
    pub rsync_exclude: Option<Spanned<Value>>,
    /// rsync filter files for `file_mounts`.
    pub rsync_filter: Option<Spanned<Value>>,
    /// Free-form user data that Ray does not interpret; rayefa reads only `metadata.rayefa`,
    /// the Ray-compatible place for its section.
    pub metadata: Option<Metadata>,
    /// Commands run before the setup commands on every node.
    pub initialization_commands: Option<Vec<Spanned<String>>>,
    /// Commands run on every node.
    pub setup_commands: Option<Vec<Spanned<String>>>,
    /// Commands run on the head after `setup_commands`.
    pub head_setup_commands: Option<Vec<Spanned<String>>>,
    /// Commands run on workers after `setup_commands`.
    pub worker_setup_commands: Option<Vec<Spanned<String>>>,
    /// Commands that start Ray on the head.
    pub head_start_ray_commands: Option<Vec<Spanned<String>>>,
    /// Commands that start Ray on workers.
    pub worker_start_ray_commands: Option<Vec<Spanned<String>>>,
    /// Deprecated by Ray (`available_node_types.*.min_workers` replaces it).
    pub min_workers: Option<Spanned<Value>>,
    /// Deprecated by Ray.
    pub initial_workers: Option<Spanned<Value>>,
    /// Deprecated by Ray (`upscaling_speed` replaces it).
    pub autoscaling_mode: Option<Spanned<Value>>,
    /// Deprecated by Ray (`upscaling_speed` replaces it).
    pub target_utilization_fraction: Option<Spanned<Value>>,
    /// Deprecated by Ray.
    pub worker_default_node_type: Option<Spanned<Value>>,
    /// Ray's legacy single head configuration (`available_node_types` replaces it).
    pub head_node: Option<Spanned<Value>>,
    /// Ray's legacy single worker configuration (`available_node_types` replaces it).
    pub worker_nodes: Option<Spanned<Value>>,
    /// Set by `ray up --no-restart`; users may not set it.
    pub no_restart: Option<Spanned<Value>>,
    /// rayefa's own settings; Ray refuses this key, see docs/cluster-file.md. After
    /// [`crate::parse`] it also holds a section written as `metadata.rayefa`.
    pub rayefa: Option<Spanned<RayefaSection>>,
}

/// `metadata:`: any keys; `rayefa` among them is rayefa's section.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// `metadata.rayefa`
    pub rayefa: Option<Spanned<RayefaSection>>,
}

impl ClusterSpec {
    /// Whether Ray's autoscaler has anything to do: some node type may have more workers than
    /// its `min_workers`. Then the head runs Ray's autoscaler, fed from this file
    /// (docs/autoscaling.md).
    pub fn autoscales(&self) -> bool {
        self.available_node_types
            .iter()
            .flat_map(|types| types.value.values())
            .any(|t| {
                let min = t.min_workers.as_ref().map_or(0, |m| m.value);
                t.max_workers.as_ref().is_some_and(|m| m.value > min)
            })
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;
        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Metadata, E> {
                Ok(Metadata::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut metadata = Metadata::default();
                // Read value by value (not through `flatten`), so that positions inside the
                // section survive for error messages.
                while let Some(key) = map.next_key::<String>()? {
                    if key == "rayefa" {
                        metadata.rayefa = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(metadata)
            }
        }
        deserializer.deserialize_any(MetadataVisitor)
    }
}

/// `provider:`. Open like Ray's: keys other providers use are kept for them.
#[derive(Debug, Clone, Deserialize)]
#[allow(
    dead_code,
    reason = "the cloud providers read the fields they understand"
)]
pub struct ProviderSpec {
    /// `local`, `aws`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The cloud region.
    pub region: Option<String>,
    /// Comma-separated availability zones, tried in order.
    pub availability_zone: Option<String>,
    /// Whether to use private addresses only.
    pub use_internal_ips: Option<bool>,
    /// Whether Ray stops nodes instead of terminating them and reuses them (Ray's default
    /// true); rayefa terminates.
    pub cache_stopped_nodes: Option<Spanned<bool>>,
    /// The security group Ray creates or reuses (Ray's AWS provider); rayefa creates none.
    pub security_group: Option<Spanned<Value>>,
    /// Ray's CloudWatch agent, dashboard and alarms (Ray's AWS provider); rayefa sets up none.
    pub cloudwatch: Option<Spanned<Value>>,
    /// The EC2 key pair Ray creates or reuses for SSH; rayefa has no SSH.
    pub key_pair: Option<Spanned<Value>>,
    /// Every other key, for the provider that understands it.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `auth:`; every key is about SSH.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// The SSH login.
    pub ssh_user: Option<Spanned<String>>,
    /// The SSH private key file.
    pub ssh_private_key: Option<Spanned<String>>,
    /// The SSH public key file.
    pub ssh_public_key: Option<Spanned<String>>,
    /// An SSH `ProxyCommand`.
    pub ssh_proxy_command: Option<Spanned<String>>,
    /// Whether Ray hands the proxy command the node's id instead of its address (Ray 2.60).
    pub ssh_proxy_use_node_id: Option<Spanned<bool>>,
}

/// `available_node_types.<name>:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTypeSpec {
    /// The provider's launch arguments (RunInstances for AWS), passed through.
    pub node_config: Spanned<Value>,
    /// Ray resources this node type offers (`RAY_OVERRIDE_RESOURCES`). Ray's schema requires
    /// it, but Ray fills it in from the instance type on AWS before validating, so files for
    /// AWS (the seed's worker type) leave it out; without it, `ray start` detects the node's
    /// resources itself.
    pub resources: Option<Spanned<BTreeMap<String, Spanned<f64>>>>,
    /// Workers of this type to launch (ignored for the head type).
    pub min_workers: Option<Spanned<u32>>,
    /// The most workers of this type.
    pub max_workers: Option<Spanned<u32>>,
    /// Seconds a worker of this type may idle before Ray's v2 autoscaler removes it (it
    /// overrides `idle_timeout_minutes` there). Passed on when the cluster autoscales, but Ray
    /// 2.60's v1 autoscaler, the one `ray start --head` runs, ignores it: the top-level
    /// `idle_timeout_minutes` is what takes effect.
    pub idle_timeout_s: Option<Spanned<f64>>,
    /// Which type Ray's v2 autoscaler prefers when several fit a request. Ray 2.60's v1
    /// autoscaler, the one `ray start --head` runs, does not read it (it picks the type whose
    /// resources fit the demand best), and rayefa does not pass it on.
    pub priority: Option<Spanned<i64>>,
    /// Ray labels of this node type (`RAY_OVERRIDE_LABELS`).
    pub labels: Option<BTreeMap<String, String>>,
    /// Replaces the top-level `initialization_commands` for this type.
    pub initialization_commands: Option<Vec<Spanned<String>>>,
    /// Replaces `setup_commands` + `worker_setup_commands` for workers of this type.
    pub worker_setup_commands: Option<Vec<Spanned<String>>>,
    /// Per-type docker settings; rayefa cannot honour them.
    pub docker: Option<Spanned<Value>>,
}
