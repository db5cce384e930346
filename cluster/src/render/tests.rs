use std::collections::BTreeMap;
use std::path::Path;

use rayefa_wire::{AgentConfigFile, Role};

use super::{render_agent_config, to_toml};
use crate::{Cluster, no_provider_checks};

/// The variables the seed guide's shell session sets.
fn seed_env() -> BTreeMap<String, String> {
    [
        ("CLUSTER_NAME", "ray-on-aws"),
        ("AWS_REGION", "ap-northeast-1"),
        ("X86_AMI_ID", "ami-0123456789abcdef0"),
        ("PRIV_SUBNET_ID", "subnet-0123456789abcdef0"),
        ("HEAD_SG_ID", "sg-0aaaaaaaaaaaaaaaa"),
        ("WORKER_SG_ID", "sg-0bbbbbbbbbbbbbbbb"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn seed() -> Cluster {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster-efa.yaml");
    crate::load_with_env(&path, &seed_env(), &no_provider_checks).expect("the seed's file is valid")
}

fn parse(text: &str) -> Cluster {
    crate::parse(
        Path::new("test.yaml"),
        text,
        &BTreeMap::new(),
        &no_provider_checks,
    )
    .expect("valid")
}

#[test]
fn the_seed_head_gets_its_resources_and_no_replaced_commands() {
    let config = render_agent_config(&seed(), "head_node", Role::Head, None);
    let node = config.node.as_ref().expect("node");
    assert_eq!(node.cluster_name.as_deref(), Some("ray-on-aws-efa"));
    assert_eq!(node.role, Some(Role::Head));
    assert_eq!(node.head_address, None);
    let resources = node.resources.as_ref().expect("resources");
    assert_eq!(resources.get("CPU"), Some(&0.0));
    assert_eq!(resources.get("Intel"), Some(&1.0));
    let commands = config.commands.as_ref().expect("commands");
    // Every seed setup command is work of a step: none is left to run verbatim.
    assert_eq!(commands.setup, None);
    assert_eq!(
        commands.start, None,
        "Ray's default start commands are the agent's"
    );
    let efa = config.efa.as_ref().expect("efa");
    assert_eq!(efa.mode.as_deref(), Some("auto"));
    assert_eq!(efa.expected_interfaces, None);
    let packages = config.packages.as_ref().expect("packages");
    assert_eq!(
        packages.python.as_deref(),
        Some(&["ray[default,data]", "pandas", "pyarrow", "boto3"].map(String::from)[..])
    );
    assert_eq!(
        packages.os.as_deref(),
        Some(&["python3-pip", "python-unversioned-command"].map(String::from)[..])
    );
}

#[test]
fn the_seed_efa_worker_requires_efa_and_knows_its_head() {
    let config = render_agent_config(&seed(), "efa_worker_node", Role::Worker, Some("10.0.1.5"));
    let node = config.node.as_ref().expect("node");
    assert_eq!(node.head_address.as_deref(), Some("10.0.1.5"));
    assert_eq!(node.resources, None);
    let efa = config.efa.as_ref().expect("efa");
    assert_eq!(efa.mode.as_deref(), Some("required"));
    assert_eq!(efa.expected_interfaces, Some(1));
}

#[test]
fn the_rendered_toml_reads_back_as_the_same_document() {
    let config = render_agent_config(&seed(), "efa_worker_node", Role::Worker, Some("10.0.1.5"));
    let text = to_toml(&config).expect("serialises");
    let back: AgentConfigFile = toml::from_str(&text).expect("parses");
    assert_eq!(back, config);
}

const MULTI: &str = r#"
cluster_name: multi
provider: {type: aws, region: us-east-1}
max_workers: 10
initialization_commands: [echo init-all]
setup_commands: [echo setup-all]
head_setup_commands: [echo setup-head]
worker_setup_commands: [echo setup-worker]
head_start_ray_commands: [ray stop, "ray start --head"]
worker_start_ray_commands: [ray stop, "ray start --address=$RAY_HEAD_IP:6379"]
available_node_types:
  head:
    resources: {CPU: 0}
    node_config: {InstanceType: m7i.xlarge}
  cpu:
    resources: {CPU: 8}
    labels: {tier: cpu}
    min_workers: 2
    node_config: {InstanceType: c7i.2xlarge}
  gpu:
    resources: {CPU: 96, GPU: 8}
    min_workers: 1
    initialization_commands: [echo init-gpu]
    worker_setup_commands: [echo setup-gpu-only]
    node_config:
      InstanceType: p5.48xlarge
      NetworkInterfaces:
        - {DeviceIndex: 0, NetworkCardIndex: 0, InterfaceType: efa}
        - {DeviceIndex: 1, NetworkCardIndex: 1, InterfaceType: efa-only}
        - {DeviceIndex: 2, NetworkCardIndex: 2, InterfaceType: interface}
head_node_type: head
rayefa:
  efa: {mode: off}
  steps: {grow-root: false, start-ray: {timeout_secs: 60}}
  environment: {REGION: us-east-1}
"#;

#[test]
fn command_lists_follow_rays_rules_per_role_and_type() {
    let cluster = parse(MULTI);
    let head = render_agent_config(&cluster, "head", Role::Head, None);
    let cpu = render_agent_config(&cluster, "cpu", Role::Worker, Some("127.0.0.1"));
    let gpu = render_agent_config(&cluster, "gpu", Role::Worker, Some("127.0.0.1"));
    let commands = |c: &AgentConfigFile| c.commands.clone().expect("commands");

    assert_eq!(
        commands(&head).initialization,
        Some(vec!["echo init-all".into()])
    );
    assert_eq!(
        commands(&head).setup,
        Some(vec!["echo setup-all".into(), "echo setup-head".into()])
    );
    assert_eq!(
        commands(&head).start,
        Some(vec!["ray stop".into(), "ray start --head".into()])
    );
    assert_eq!(
        commands(&cpu).setup,
        Some(vec!["echo setup-all".into(), "echo setup-worker".into()])
    );
    assert_eq!(
        commands(&cpu).start,
        Some(vec![
            "ray stop".into(),
            "ray start --address=$RAY_HEAD_IP:6379".into()
        ])
    );
    // A type's own lists replace the top-level ones, as in Ray.
    assert_eq!(
        commands(&gpu).initialization,
        Some(vec!["echo init-gpu".into()])
    );
    assert_eq!(
        commands(&gpu).setup,
        Some(vec!["echo setup-gpu-only".into()])
    );
}

#[test]
fn efa_mode_comes_from_the_interfaces_else_the_rayefa_section() {
    let cluster = parse(MULTI);
    let efa = |t: &str| {
        render_agent_config(&cluster, t, Role::Worker, Some("127.0.0.1"))
            .efa
            .expect("efa")
    };
    assert_eq!(efa("gpu").mode.as_deref(), Some("required"));
    assert_eq!(efa("gpu").expected_interfaces, Some(2));
    assert_eq!(efa("cpu").mode.as_deref(), Some("off"));
    assert_eq!(efa("cpu").expected_interfaces, None);
}

#[test]
fn labels_environment_and_steps_reach_the_agent() {
    let cluster = parse(MULTI);
    let cpu = render_agent_config(&cluster, "cpu", Role::Worker, Some("127.0.0.1"));
    let labels = cpu
        .node
        .as_ref()
        .and_then(|n| n.labels.clone())
        .expect("labels");
    assert_eq!(labels.get("tier").map(String::as_str), Some("cpu"));
    assert_eq!(
        cpu.environment
            .as_ref()
            .and_then(|e| e.get("REGION"))
            .map(String::as_str),
        Some("us-east-1")
    );
    let steps = cpu.steps.expect("steps");
    assert_eq!(steps.grow_root.and_then(|s| s.enabled), Some(false));
    let start = steps.start_ray.expect("start-ray");
    assert_eq!((start.enabled, start.timeout_secs), (None, Some(60)));
    assert_eq!(steps.install_ray, None);
    assert_eq!(
        cpu.agent.and_then(|a| a.listen).as_deref(),
        Some("0.0.0.0:8700")
    );
}

#[test]
fn replaced_commands_stay_when_replacing_is_turned_off() {
    let text = "cluster_name: k\nprovider: {type: local}\nsetup_commands: ['sudo growpart /dev/xvda 1 || true', 'echo hi']\navailable_node_types:\n  h: {resources: {}, node_config: {}}\nhead_node_type: h\nrayefa: {replace_setup_commands: false}\n";
    let config = render_agent_config(&parse(text), "h", Role::Head, None);
    assert_eq!(
        config.commands.and_then(|c| c.setup),
        Some(vec![
            "sudo growpart /dev/xvda 1 || true".into(),
            "echo hi".into()
        ])
    );
    let replaced = render_agent_config(
        &parse(&text.replace("rayefa: {replace_setup_commands: false}\n", "")),
        "h",
        Role::Head,
        None,
    );
    assert_eq!(
        replaced.commands.and_then(|c| c.setup),
        Some(vec!["echo hi".into()])
    );
}

#[test]
fn the_signing_key_fingerprint_reaches_the_agent_only_when_set() {
    let text = "cluster_name: k\nprovider: {type: local}\navailable_node_types:\n  h: {resources: {}, node_config: {}}\nhead_node_type: h\nrayefa: {efa: {fingerprint: 'AAAA BBBB CCCC DDDD EEEE FFFF 0000 1111 2222 3333'}}\n";
    let efa = render_agent_config(&parse(text), "h", Role::Head, None)
        .efa
        .expect("efa");
    assert_eq!(
        efa.fingerprint.as_deref(),
        Some("AAAA BBBB CCCC DDDD EEEE FFFF 0000 1111 2222 3333")
    );
    let efa = render_agent_config(&parse(MULTI), "cpu", Role::Worker, None)
        .efa
        .expect("efa");
    assert_eq!(
        efa.fingerprint, None,
        "the agent's default (AWS's key) applies"
    );
}
