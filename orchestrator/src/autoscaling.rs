//! Ray's autoscaler on the head: the autoscaling configuration derived from the cluster file.
//!
//! Ray's monitor reads it from `--autoscaling-config` and loads rayefa's node provider
//! (`agent/python/rayefa_autoscaler.py`, installed by the head's agent) from its `provider`
//! section. The provider launches and removes nodes by running `rayefa nodes ...` with the
//! binary and cluster file named there, so every node it adds boots like `up`'s.

use std::path::Path;

use rayefa_cluster::Cluster;
use rayefa_wire::AutoscalingSection;
use serde_json::{Map, Value, json};

use crate::provider::{ProviderError, aws};

/// The node provider's class, as Ray's `provider.module` names it.
pub(crate) const PROVIDER_CLASS: &str = "rayefa_autoscaler.RayefaNodeProvider";

/// Ray's default `idle_timeout_minutes` and `upscaling_speed` (ray-schema.json).
const RAY_IDLE_TIMEOUT_MINUTES: f64 = 5.0;
const RAY_UPSCALING_SPEED: f64 = 1.0;

/// The head's `[autoscaling]` section, for a cluster that scales on a provider that can run
/// `rayefa nodes` on its head; `None` otherwise.
///
/// A local head is this machine, so the binary is this one and the cluster file this file. An
/// EC2 head gets rayefa, the cluster file and the control secret in its user data
/// (`provider/aws/head_share.rs`), which needs the agent store the `rayefa` package is
/// published to: without `rayefa.agent_store` the head starts Ray without the autoscaler, as
/// rayefa did before.
pub(crate) fn head_section(cluster: &Cluster) -> Result<Option<AutoscalingSection>, ProviderError> {
    if !cluster.spec.autoscales() {
        return Ok(None);
    }
    let config = match cluster.provider_type() {
        "local" => {
            let binary = std::env::current_exe().map_err(|source| ProviderError::Io {
                context: "finding this rayefa binary for the head's autoscaler".to_owned(),
                source,
            })?;
            let file = std::path::absolute(&cluster.path).map_err(|source| ProviderError::Io {
                context: format!("resolving {}", cluster.path.display()),
                source,
            })?;
            ray_config(cluster, &binary, &file)
        }
        "aws" if has_agent_store(cluster) => {
            let mut config = ray_config(
                cluster,
                Path::new(aws::HEAD_RAYEFA),
                Path::new(aws::HEAD_CLUSTER_FILE),
            );
            config["provider"]["state_dir"] = json!(aws::HEAD_STATE_DIR);
            config
        }
        // The AWS provider warns when it launches such a head.
        _ => return Ok(None),
    };
    Ok(Some(AutoscalingSection {
        ray_config: Some(config.to_string()),
    }))
}

/// Whether the file names an agent store (a malformed one is an error of the file already).
fn has_agent_store(cluster: &Cluster) -> bool {
    cluster
        .spec
        .rayefa
        .as_ref()
        .is_some_and(|r| r.value.agent_store.is_some())
}

/// Ray's autoscaling configuration of `cluster`: its scaling keys and node types, every other
/// key of Ray's schema empty (the agent runs the commands, not Ray), and rayefa's provider.
pub(crate) fn ray_config(cluster: &Cluster, binary: &Path, cluster_file: &Path) -> Value {
    let spec = &cluster.spec;
    let node_types: Map<String, Value> = spec
        .available_node_types
        .iter()
        .flat_map(|types| types.value.iter())
        .map(|(name, t)| {
            let resources: Map<String, Value> = t
                .resources
                .iter()
                .flat_map(|r| r.value.iter())
                .map(|(k, v)| (k.clone(), amount(v.value)))
                .collect();
            let mut entry = json!({
                // Ray hashes it into `ray-launch-config` only; the provider launches from the
                // cluster file, so it need not travel.
                "node_config": {},
                "resources": resources,
                "min_workers": t.min_workers.as_ref().map_or(0, |m| m.value),
                "max_workers": t.max_workers.as_ref().map_or(0, |m| m.value),
            });
            if let Some(idle) = &t.idle_timeout_s {
                entry["idle_timeout_s"] = amount(idle.value);
            }
            if let Some(labels) = t.labels.as_ref().filter(|l| !l.is_empty()) {
                entry["labels"] = json!(labels);
            }
            (name.clone(), entry)
        })
        .collect();
    let max_workers = spec.max_workers.as_ref().map_or_else(
        || {
            node_types
                .values()
                .filter_map(|t| t["max_workers"].as_u64())
                .sum()
        },
        |m| u64::from(m.value),
    );
    json!({
        "cluster_name": cluster.name(),
        "max_workers": max_workers,
        "upscaling_speed": amount(spec.upscaling_speed.as_ref().map_or(RAY_UPSCALING_SPEED, |s| s.value)),
        "idle_timeout_minutes": amount(
            spec.idle_timeout_minutes
                .as_ref()
                .map_or(RAY_IDLE_TIMEOUT_MINUTES, |m| m.value)
        ),
        "docker": {},
        "provider": {
            "type": "external",
            "module": PROVIDER_CLASS,
            "disable_node_updaters": true,
            "disable_launch_config_check": true,
            "rayefa_binary": binary,
            "cluster_file": cluster_file,
        },
        "auth": {},
        "available_node_types": node_types,
        "head_node_type": cluster.head_type(),
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": false,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    })
}

/// A number as Ray's YAML would have it: whole numbers as integers.
fn amount(value: f64) -> Value {
    // Whole amounts within ±2^53 are exactly representable as both f64 and i64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if value.fract() == 0.0 && value.abs() <= EXACT {
        json!(value as i64)
    } else {
        json!(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(text: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, text).expect("file");
        crate::provider::load_cluster(&path).expect("loads")
    }

    const SCALING: &str = "cluster_name: scaling\nprovider: {type: local}\nmax_workers: 3\n\
        idle_timeout_minutes: 0.5\nhead_node_type: head\navailable_node_types:\n  \
        head: {resources: {CPU: 0}, node_config: {}}\n  \
        worker: {resources: {CPU: 1, Intel: 1}, node_config: {a: b}, min_workers: 0, max_workers: 2, \
        idle_timeout_s: 20}\n";

    #[test]
    fn the_configuration_carries_the_scaling_keys_and_rayefas_provider() {
        let cluster = cluster(SCALING);
        assert!(cluster.spec.autoscales());
        let config = ray_config(&cluster, Path::new("/bin/rayefa"), Path::new("/c.yaml"));
        assert_eq!(config["cluster_name"], "scaling");
        assert_eq!(config["max_workers"], 3);
        assert_eq!(config["idle_timeout_minutes"], 0.5);
        assert_eq!(config["upscaling_speed"], 1);
        assert_eq!(config["head_node_type"], "head");
        let worker = &config["available_node_types"]["worker"];
        assert_eq!(worker["resources"], json!({"CPU": 1, "Intel": 1}));
        assert_eq!(worker["min_workers"], 0);
        assert_eq!(worker["max_workers"], 2);
        assert_eq!(worker["idle_timeout_s"], 20);
        assert_eq!(worker["node_config"], json!({}));
        assert_eq!(config["available_node_types"]["head"]["max_workers"], 0);
        let provider = &config["provider"];
        assert_eq!(provider["type"], "external");
        assert_eq!(provider["module"], PROVIDER_CLASS);
        assert_eq!(provider["disable_node_updaters"], true);
        assert_eq!(provider["rayefa_binary"], "/bin/rayefa");
        assert_eq!(provider["cluster_file"], "/c.yaml");
        assert_eq!(config["setup_commands"], json!([]));
        assert!(head_section(&cluster).expect("section").is_some());
    }

    #[test]
    fn an_ec2_head_runs_the_delivered_rayefa_when_the_store_can_deliver_it() {
        let aws = "cluster_name: scaling\nprovider: {type: aws, region: us-east-1}\n\
            head_node_type: head\navailable_node_types:\n  \
            head: {resources: {CPU: 0}, node_config: {InstanceType: m7i.xlarge}}\n  \
            worker: {resources: {CPU: 1}, node_config: {InstanceType: m7i.xlarge}, \
            min_workers: 0, max_workers: 2}\n";
        assert_eq!(
            head_section(&cluster(aws)).expect("section"),
            None,
            "no store"
        );
        let stored = format!("{aws}rayefa: {{agent_store: 's3://bucket/rayefa'}}\n");
        let section = head_section(&cluster(&stored))
            .expect("section")
            .expect("a store delivers rayefa");
        let config: Value =
            serde_json::from_str(section.ray_config.as_deref().expect("config")).expect("JSON");
        assert_eq!(config["provider"]["rayefa_binary"], aws::HEAD_RAYEFA);
        assert_eq!(config["provider"]["cluster_file"], aws::HEAD_CLUSTER_FILE);
        assert_eq!(config["provider"]["state_dir"], aws::HEAD_STATE_DIR);
    }

    #[test]
    fn a_cluster_of_fixed_size_gets_no_autoscaler() {
        let fixed = SCALING.replace("max_workers: 2", "max_workers: 0");
        let cluster = cluster(&fixed);
        assert!(!cluster.spec.autoscales());
        assert_eq!(head_section(&cluster).expect("section"), None);
    }
}
