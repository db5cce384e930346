//! `rayefa validate` and `rayefa user-data` on real files, through the real binary: the seed
//! file and Ray-style files validate, with a warning for each key rayefa ignores, and every
//! command refuses a bad file with exit 2. What each bad file must make rayefa say is in the
//! catalogue of bad cluster files (`bad_cluster_catalogue.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// The variables the seed guide's shell session sets before its heredoc.
const SEED_ENV: [(&str, &str); 6] = [
    ("CLUSTER_NAME", "ray-on-aws"),
    ("AWS_REGION", "ap-northeast-1"),
    ("X86_AMI_ID", "ami-0123456789abcdef0"),
    ("PRIV_SUBNET_ID", "subnet-0123456789abcdef0"),
    ("HEAD_SG_ID", "sg-0aaaaaaaaaaaaaaaa"),
    ("WORKER_SG_ID", "sg-0bbbbbbbbbbbbbbbb"),
];

fn rayefa(args: &[&str], file: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rayefa"));
    command.args(args).arg(file);
    for (name, _) in SEED_ENV {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("rayefa runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_seed_file_validates_as_written() {
    let file = example("cluster-efa.yaml");
    let output = rayefa(&["validate", "--offline"], &file, &SEED_ENV);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains("cluster ray-on-aws-efa on provider aws"),
        "{all}"
    );
    assert!(
        all.contains("up launches 1 head_node (head), 1 efa_worker_node (worker)"),
        "{all}"
    );
    // auth.ssh_user is used (commands run as ec2-user), so no warning; the note says so.
    assert!(!all.contains("warning: auth.ssh_user"), "{all}");
    assert!(
        all.contains("cluster-efa.yaml:12:15: note: auth.ssh_user: the cluster's setup and start commands run as `ec2-user` in a login shell"),
        "{all}"
    );
    // What rayefa does differently is said, with the line of each command.
    assert!(
        all.contains("cluster-efa.yaml:16:7: warning: setup_commands[0]: `sudo growpart /dev/xvda 1 || true` is replaced by step grow-root"),
        "{all}"
    );
    assert!(all.contains("setup_commands[4]: `cd aws-efa-installer && sudo ./efa_installer.sh -y` is replaced by step install-efa"), "{all}");
    assert!(all.contains("setup_commands[7]: `pip install -U \"ray[default,data]\" pandas pyarrow boto3` is replaced by step install-ray"), "{all}");
}

#[test]
fn the_seed_file_without_its_variables_names_the_first_one_and_its_line() {
    let output = rayefa(
        &["validate", "--offline"],
        &example("cluster-efa.yaml"),
        &[],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(
        all.contains("cluster-efa.yaml:1:15: error: environment variable CLUSTER_NAME is not set"),
        "{all}"
    );
}

#[test]
fn validate_json_lists_the_plan_and_findings() {
    let output = rayefa(
        &["validate", "--offline", "--output", "json"],
        &example("cluster-efa.yaml"),
        &SEED_ENV,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["cluster"], "ray-on-aws-efa");
    assert_eq!(doc["launch"][1]["node_type"], "efa_worker_node");
    assert_eq!(doc["launch"][1]["count"], 1);
    let findings = doc["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|f| f["key"] == "setup_commands[0]" && f["line"] == 16)
    );
}

#[test]
fn a_multi_type_ray_file_with_several_interfaces_validates() {
    let output = rayefa(
        &["validate", "--offline"],
        &fixture("valid/multi-type-efa.yaml"),
        &[],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        all.contains(
            "up launches 1 ray.head.default (head), 2 cpu_worker (worker), 1 gpu_worker (worker)"
        ),
        "{all}"
    );
    // Empty SSH-only keys (as in Ray's example files) say nothing.
    assert!(!all.contains("file_mounts"), "{all}");
}

#[test]
fn ssh_only_keys_that_can_be_ignored_are_warnings() {
    let output = rayefa(
        &["validate", "--offline"],
        &fixture("valid/ssh-only-keys.yaml"),
        &[],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    for key in [
        "auth.ssh_private_key",
        "auth.ssh_proxy_command",
        "rsync_exclude",
        "file_mounts_sync_continuously",
    ] {
        assert!(
            all.contains(&format!("warning: {key}: ignored")),
            "{key}: {all}"
        );
    }
    assert!(all.contains("valid (4 warnings)"), "{all}");
    assert!(
        !all.contains("warning: auth.ssh_user"),
        "used, not ignored: {all}"
    );
}

#[test]
fn every_command_refuses_a_bad_file_with_exit_2() {
    for command in ["up", "status", "down"] {
        let output = rayefa(&[command], &fixture("bad-cluster/file-mounts.yaml"), &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command}: {}",
            text(&output)
        );
    }
    let output = rayefa(&["validate"], &fixture("does-not-exist.yaml"), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("does-not-exist.yaml: No such file"),
        "{}",
        text(&output)
    );
}

#[test]
fn user_data_prints_the_agent_configuration_of_a_node_type() {
    let file = example("local-cluster.yaml");
    let output = rayefa(&["user-data", "--node-type", "worker"], &file, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let config: toml::Value =
        toml::from_str(&String::from_utf8_lossy(&output.stdout)).expect("toml");
    assert_eq!(config["node"]["role"].as_str(), Some("worker"));
    assert_eq!(
        config["node"]["head_address"].as_str(),
        Some("HEAD_PRIVATE_IP")
    );
    assert_eq!(config["node"]["labels"]["tier"].as_str(), Some("local"));
    assert_eq!(
        config["steps"]["install-ray"]["enabled"].as_bool(),
        Some(false)
    );
    assert_eq!(
        config["commands"]["setup"].as_array().map(Vec::len),
        Some(3)
    );

    let output = rayefa(&["user-data", "--node-type", "nope"], &file, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output)
            .contains("node type `nope` is not in available_node_types (which has head, worker)")
    );
}

#[test]
fn the_rayefa_section_may_live_under_metadata_to_keep_the_file_ray_compatible() {
    let file = fixture("valid/rayefa-in-metadata.yaml");
    let output = rayefa(&["user-data", "--node-type", "head"], &file, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let config: toml::Value =
        toml::from_str(&String::from_utf8_lossy(&output.stdout)).expect("toml");
    assert_eq!(config["agent"]["listen"].as_str(), Some("0.0.0.0:9100"));
    assert_eq!(
        config["steps"]["install-ray"]["enabled"].as_bool(),
        Some(false)
    );
}
