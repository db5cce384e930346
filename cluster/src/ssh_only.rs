//! Keys of Ray's format that only mean something to a launcher that logs in over SSH.
//!
//! rayefa has no SSH: nodes bootstrap themselves and report over HTTP. Each such key is
//! either harmless to ignore (a warning says so) or would leave nodes without something the
//! user expects, such as files or a container (an error, so that nothing is launched that
//! cannot work). Empty values (`file_mounts: {}`, `rsync_exclude: []`, as in Ray's example
//! files) say nothing and are accepted silently. The table in docs/cluster-file.md mirrors
//! this module.

use serde_json::Value;
use serde_saphyr::Spanned;

use super::finding::Finding;
use super::schema::ClusterSpec;

/// Findings for every SSH-only key that is set.
pub fn check(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    if let Some(auth) = &spec.auth {
        let auth = &auth.value;
        if let Some(user) = &auth.ssh_user {
            out.push(Finding::note(
                user.referenced,
                "auth.ssh_user",
                format!(
                    "the cluster's setup and start commands run as `{}` in a login shell, as \
                     Ray runs them over SSH (the local provider runs them as you)",
                    user.value
                ),
            ));
        }
        let keys = [
            (
                "ssh_private_key",
                &auth.ssh_private_key,
                "nodes are not logged into; an EC2 key pair for your own logins goes in node_config.KeyName",
            ),
            (
                "ssh_public_key",
                &auth.ssh_public_key,
                "nodes are not logged into; an EC2 key pair for your own logins goes in node_config.KeyName",
            ),
            (
                "ssh_proxy_command",
                &auth.ssh_proxy_command,
                "there is no SSH connection to proxy; the orchestrator needs to reach each agent's port (or reads the state agents publish as EC2 tags)",
            ),
        ];
        for (key, value, why) in keys {
            if let Some(value) = value {
                out.push(Finding::warning(
                    value.referenced,
                    format!("auth.{key}"),
                    format!("ignored: rayefa does not use SSH, {why}"),
                ));
            }
        }
        if let Some(use_node_id) = auth.ssh_proxy_use_node_id.as_ref().filter(|v| v.value) {
            out.push(Finding::warning(
                use_node_id.referenced,
                "auth.ssh_proxy_use_node_id",
                "ignored: rayefa does not use SSH, so no proxy command is given a node's id",
            ));
        }
    }
    if let Some(mounts) = non_empty(&spec.file_mounts) {
        out.push(Finding::error(
            mounts.referenced,
            "file_mounts",
            "rayefa cannot copy files to nodes (there is no SSH); fetch them in setup_commands \
             (for example from S3), bake them into the image, or remove the key",
        ));
    }
    if let Some(synced) = non_empty(&spec.cluster_synced_files) {
        out.push(Finding::error(
            synced.referenced,
            "cluster_synced_files",
            "rayefa cannot copy files from the head to workers (there is no SSH); fetch them in \
             setup_commands or remove the key",
        ));
    }
    if let Some(sync) = non_empty(&spec.file_mounts_sync_continuously) {
        out.push(Finding::warning(
            sync.referenced,
            "file_mounts_sync_continuously",
            "ignored: rayefa does not sync files",
        ));
    }
    for (key, value) in [
        ("rsync_exclude", &spec.rsync_exclude),
        ("rsync_filter", &spec.rsync_filter),
    ] {
        if let Some(value) = non_empty(value) {
            out.push(Finding::warning(
                value.referenced,
                key,
                "ignored: it only filters file_mounts, which rayefa does not copy",
            ));
        }
    }
    docker(&spec.docker, "docker", out);
    if let Some(types) = &spec.available_node_types {
        for (name, node_type) in &types.value {
            docker(
                &node_type.docker,
                &format!("available_node_types.{name}.docker"),
                out,
            );
        }
    }
}

/// `docker:` with an image means "run every command in this container": running them on the
/// host instead would give a different environment than the user asked for.
fn docker(value: &Option<Spanned<Value>>, key: &str, out: &mut Vec<Finding>) {
    let Some(docker) = non_empty(value) else {
        return;
    };
    let has_image = ["image", "head_image", "worker_image"]
        .iter()
        .any(|k| docker.value.get(k).is_some_and(|v| !is_empty(v)));
    if has_image {
        out.push(Finding::error(
            docker.referenced,
            key,
            "rayefa runs setup and start commands on the host; it cannot run them in a \
             container yet: remove the docker section, or start the container in your own \
             setup_commands",
        ));
    } else {
        out.push(Finding::warning(
            docker.referenced,
            key,
            "ignored: no image is named, and rayefa runs commands on the host",
        ));
    }
}

/// The value unless it is absent, null, false, empty text, an empty list or an empty map.
fn non_empty(value: &Option<Spanned<Value>>) -> Option<&Spanned<Value>> {
    value.as_ref().filter(|v| !is_empty(&v.value))
}

/// Whether a value says nothing: null, false, empty text, an empty list or map.
pub(crate) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(true) | Value::Number(_) => false,
    }
}
