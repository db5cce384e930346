//! The tags rayefa puts on instances, and reads back.
//!
//! Ray's own tags are set so that Ray's tools recognise the nodes; the `rayefa-` tags mark the
//! instances rayefa launched (only those are ever terminated) and carry the state an agent
//! publishes when the orchestrator cannot reach it over the network.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Tag;
use rayefa_wire::Role;

/// Ray's tag for the cluster name.
pub(crate) const RAY_CLUSTER_NAME: &str = "ray-cluster-name";
/// Ray's tag for the node kind, `head` or `worker`.
pub(crate) const RAY_NODE_KIND: &str = "ray-node-type";
/// Ray's tag for the key in `available_node_types`.
pub(crate) const RAY_USER_NODE_TYPE: &str = "ray-user-node-type";
/// The console's name column.
pub(crate) const NAME: &str = "Name";
/// rayefa's own cluster tag: present only on instances rayefa launched.
pub(crate) const RAYEFA_CLUSTER: &str = "rayefa-cluster";
/// The `rayefa up` run that launched the instance.
pub(crate) const RAYEFA_LAUNCH: &str = "rayefa-launch";
/// The version of the orchestrator that launched the instance.
pub(crate) const RAYEFA_VERSION: &str = "rayefa-version";
/// Published by the agent: the node state (`starting`, `bootstrapping`, `ready`, `failed`,
/// `rebooting`).
pub(crate) const RAYEFA_STATE: &str = "rayefa-state";
/// Published by the agent: the current step and its state, `install-efa:running`.
pub(crate) const RAYEFA_STEP: &str = "rayefa-step";
/// Published by the agent: the first failure, shortened to fit a tag.
pub(crate) const RAYEFA_ERROR: &str = "rayefa-error";
/// Published by the agent: when it last wrote its tags, seconds since the Unix epoch.
pub(crate) const RAYEFA_UPDATED: &str = "rayefa-updated";

/// Tags that belong to rayefa; a cluster file may not set them.
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with("rayefa-")
        || [RAY_CLUSTER_NAME, RAY_NODE_KIND, RAY_USER_NODE_TYPE].contains(&key)
}

/// The tags of a new instance.
pub(crate) fn launch_tags(cluster: &str, node_type: &str, role: Role, launch: &str) -> Vec<Tag> {
    [
        (RAY_CLUSTER_NAME, cluster.to_owned()),
        (RAY_NODE_KIND, role.as_str().to_owned()),
        (RAY_USER_NODE_TYPE, node_type.to_owned()),
        (NAME, format!("ray-{cluster}-{role}")),
        (RAYEFA_CLUSTER, cluster.to_owned()),
        (RAYEFA_LAUNCH, launch.to_owned()),
        (RAYEFA_VERSION, env!("CARGO_PKG_VERSION").to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| Tag::builder().key(key).value(value).build())
    .collect()
}

/// What an agent last published about its node through tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishedState {
    /// The node state.
    pub(crate) state: String,
    /// The current step and its state, when the agent gave one.
    pub(crate) step: Option<String>,
    /// The first failure, when there was one.
    pub(crate) error: Option<String>,
    /// When the agent wrote it, seconds since the Unix epoch.
    pub(crate) updated_at: Option<u64>,
}

impl PublishedState {
    /// Reads the published state from an instance's tags; `None` until the agent wrote one.
    pub(crate) fn from_tags(tags: &BTreeMap<String, String>) -> Option<PublishedState> {
        Some(PublishedState {
            state: tags.get(RAYEFA_STATE)?.clone(),
            step: tags.get(RAYEFA_STEP).cloned(),
            error: tags.get(RAYEFA_ERROR).cloned(),
            updated_at: tags.get(RAYEFA_UPDATED).and_then(|t| t.parse().ok()),
        })
    }
}

impl From<PublishedState> for crate::provider::Published {
    fn from(state: PublishedState) -> Self {
        crate::provider::Published {
            state: state.state,
            step: state.step,
            error: state.error,
            updated_at_ms: state.updated_at.map(|secs| secs.saturating_mul(1000)),
        }
    }
}

/// An instance's tags as a map.
pub(crate) fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_tags_are_the_ones_ray_and_rayefa_read() {
        let tags = tag_map(&launch_tags("c1", "efa_worker_node", Role::Worker, "run1"));
        assert_eq!(tags[RAY_CLUSTER_NAME], "c1");
        assert_eq!(tags[RAY_NODE_KIND], "worker");
        assert_eq!(tags[RAY_USER_NODE_TYPE], "efa_worker_node");
        assert_eq!(tags[NAME], "ray-c1-worker");
        assert_eq!(tags[RAYEFA_CLUSTER], "c1");
        assert_eq!(tags[RAYEFA_LAUNCH], "run1");
        assert!(tags.keys().all(|k| k == NAME || is_reserved(k)));
    }

    #[test]
    fn published_state_needs_the_state_tag() {
        let mut tags = BTreeMap::new();
        assert_eq!(PublishedState::from_tags(&tags), None);
        tags.insert(RAYEFA_STATE.to_owned(), "bootstrapping".to_owned());
        tags.insert(RAYEFA_STEP.to_owned(), "install-efa:running".to_owned());
        tags.insert(RAYEFA_UPDATED.to_owned(), "1700000000".to_owned());
        let published = PublishedState::from_tags(&tags).expect("published");
        assert_eq!(published.state, "bootstrapping");
        assert_eq!(published.step.as_deref(), Some("install-efa:running"));
        assert_eq!(published.updated_at, Some(1_700_000_000));
    }
}
