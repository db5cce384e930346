//! Ray's own cluster files read the way Ray reads them: the whole of Ray 2.60's schema, its
//! defaults, EC2's `$` values, and what rayefa does instead said as findings.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Cluster, ClusterError, Severity, no_provider_checks};

fn parse(text: &str) -> Result<Cluster, ClusterError> {
    crate::parse(
        Path::new("ray.yaml"),
        text,
        &BTreeMap::new(),
        &no_provider_checks,
    )
}

fn valid(text: &str) -> Cluster {
    parse(text).unwrap_or_else(|e| panic!("valid: {e}"))
}

/// Every finding as `LINE: severity: key`.
fn found(cluster: &Cluster) -> Vec<String> {
    cluster
        .findings
        .iter()
        .map(|f| format!("{}: {}: {}", f.line.unwrap_or(0), f.severity.label(), f.key))
        .collect()
}

const HEAD: &str = "cluster_name: c\nprovider: {type: local}\navailable_node_types:\n  \
                    ray.head.default:\n    node_config: {}\n";

#[test]
fn rays_newer_node_type_and_auth_keys_are_known_and_said_to_be_unused() {
    let cluster = valid(&format!(
        "{HEAD}    idle_timeout_s: 30\n    priority: -1\nauth:\n  ssh_proxy_use_node_id: true\n"
    ));
    assert_eq!(
        found(&cluster),
        [
            "9: warning: auth.ssh_proxy_use_node_id",
            "5: note: head_node_type",
            "6: note: available_node_types.ray.head.default.idle_timeout_s",
            "7: note: available_node_types.ray.head.default.priority",
        ]
    );
}

#[test]
fn the_autoscaler_keys_count_only_when_a_worker_type_can_grow() {
    let file = |max: u32| {
        format!(
            "cluster_name: c\nprovider: {{type: local}}\nupscaling_speed: 2\n\
             idle_timeout_minutes: 0.5\nhead_node_type: head\navailable_node_types:\n  \
             head:\n    node_config: {{}}\n  worker:\n    node_config: {{}}\n    \
             resources: {{CPU: 1}}\n    min_workers: 1\n    max_workers: {max}\n    \
             idle_timeout_s: 30\nhead_start_ray_commands:\n  \
             - ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml\n"
        )
    };
    // Fixed at min_workers: Ray's autoscaler does not run, and nothing writes its file.
    let fixed = valid(&file(1));
    assert_eq!(
        found(&fixed),
        [
            "16: warning: head_start_ray_commands",
            "3: note: upscaling_speed",
            "4: note: idle_timeout_minutes",
            "14: note: available_node_types.worker.idle_timeout_s",
        ]
    );
    let unused = &fixed.findings[1].message;
    assert!(
        unused.contains("not used") && unused.contains("Ray's autoscaler does not run"),
        "{unused}"
    );
    // It can grow: the head runs Ray's autoscaler with both keys and its file. The type's
    // idle_timeout_s is ignored either way, and the note says what works instead.
    let scaling = valid(&file(3));
    assert_eq!(
        found(&scaling),
        ["14: note: available_node_types.worker.idle_timeout_s"]
    );
    let ignored = &scaling.findings[0].message;
    assert!(
        ignored.contains("idle_timeout_minutes") && ignored.contains("0.5 is 30 s"),
        "{ignored}"
    );
}

#[test]
fn a_value_of_the_wrong_kind_names_its_key_path_and_the_file() {
    let error = parse(&format!("{HEAD}    min_workers: -1\n")).expect_err("refused");
    let text = error.to_string();
    let headline = text.lines().next().unwrap_or_default();
    assert_eq!(
        headline,
        "ray.yaml:6:18: error: available_node_types.ray.head.default.min_workers: `-1` is not a \
         whole number from 0 to 4294967295"
    );
    assert!(text.contains("--> ray.yaml:6:18"), "{text}");
    assert!(!text.contains("<input>") && !text.contains("u32"), "{text}");
    let error = parse(&format!("{HEAD}auth:\n  ssh_pasword: x\n")).expect_err("refused");
    assert!(
        error
            .to_string()
            .starts_with("ray.yaml:7:3: error: auth.ssh_pasword: `ssh_pasword` is not a key here"),
        "{error}"
    );
}

#[test]
fn the_head_defaults_to_ray_head_default_as_in_ray() {
    let cluster = valid(HEAD);
    assert_eq!(cluster.head_type(), "ray.head.default");
    let error = parse(&HEAD.replace("ray.head.default", "head")).expect_err("no head");
    let ClusterError::Invalid { findings, .. } = error else {
        panic!("not a finding: {error}");
    };
    assert_eq!(findings[0].key, "head_node_type");
    assert_eq!(
        findings[0].line,
        Some(4),
        "the line of available_node_types"
    );
    assert!(
        findings[0].message.contains("ray.head.default"),
        "{findings:?}"
    );
}

#[test]
fn ec2_launch_template_versions_reach_the_provider_as_written() {
    let text = "cluster_name: c\nprovider: {type: local}\nhead_node_type: h\n\
                available_node_types:\n  h:\n    node_config:\n      LaunchTemplate:\n        \
                LaunchTemplateName: t\n        Version: $Latest\n  w:\n    node_config:\n      \
                LaunchTemplate: {LaunchTemplateId: lt-1, Version: \"$Default\"}\n";
    let cluster = valid(text);
    let version = |t: &str| {
        cluster.node_type(t).expect("type").node_config.value["LaunchTemplate"]["Version"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(version("h").as_deref(), Some("$Latest"));
    assert_eq!(version("w").as_deref(), Some("$Default"));
}

#[test]
fn the_head_types_min_workers_are_workers_of_its_type() {
    let cluster = valid(&format!("{HEAD}    min_workers: 2\nmax_workers: 2\n"));
    assert_eq!(cluster.worker_counts(), [("ray.head.default", 2)]);
    let error = parse(&format!("{HEAD}    min_workers: 2\nmax_workers: 1\n")).expect_err("over");
    assert!(
        error
            .to_string()
            .contains("min_workers add up to 2 workers"),
        "{error}"
    );
}

#[test]
fn rays_aws_provider_keys_that_rayefa_does_not_act_on_are_warnings() {
    let text = "cluster_name: c\nprovider:\n  type: aws\n  cache_stopped_nodes: true\n  \
                key_pair: {key_name: k}\n  security_group: {GroupName: g}\n  \
                cloudwatch: {agent: {config: a.json}}\navailable_node_types:\n  \
                ray.head.default: {node_config: {}}\n";
    let cluster = valid(text);
    let warnings: Vec<&str> = cluster
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(|f| f.key.as_str())
        .collect();
    assert_eq!(
        warnings,
        [
            "rayefa.agent_package",
            "provider.cache_stopped_nodes",
            "provider.key_pair",
            "provider.security_group",
            "provider.cloudwatch",
        ]
    );
    let quiet = valid(
        "cluster_name: c\nprovider:\n  type: aws\n  cache_stopped_nodes: false\n  \
         key_pair: {}\navailable_node_types:\n  ray.head.default: {node_config: {}}\n\
         rayefa: {agent_on_image: true}\n",
    );
    assert_eq!(found(&quiet), ["7: note: head_node_type"]);
}
