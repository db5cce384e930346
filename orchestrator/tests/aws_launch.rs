//! `up`, `status` and `down` on the AWS provider against moto, through the recording and
//! fault-injecting proxy: the exact RunInstances requests, retries on capacity, throttling and
//! server errors, a lost answer that must not launch twice, partial launches, and `down`
//! leaving other clusters' instances alone. Each test has its own subnet, so the status
//! servers standing in for its instances listen at addresses of its own.

#[allow(dead_code)]
mod support {
    pub mod aws_fleet;
    pub mod aws_proxy;
    pub mod aws_world;
    pub mod moto;
}

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use rayefa_wire::AgentConfigFile;
use support::aws_fleet::{Fleet, Machine, run_as_user_data};
use support::aws_proxy::{Fault, Recorded};
use support::aws_world::{Omit, SEED_CLUSTER_FILE, World};

/// Fast retries and polls, so failures show in seconds.
const FAST: &str = "
rayefa:
    aws:
        launch_attempts: 3
        launch_backoff: 0.1s
    poll:
        interval: 0.2s
    timeouts:
        head_agent: 30s
        ready: 60s
";

/// A prepared account on `127.0.<net>.0/24` with status servers booting its instances, and the
/// seed's cluster file with fast retries (plus `extra` text replacements).
fn setup(net: u8, replace: &[(&str, &str)]) -> (World, Fleet, PathBuf) {
    let world = World::build(&format!("127.0.{net}.0/24"), Omit::default());
    world.prepared();
    let fleet = Fleet::start(
        &world.moto.endpoint(),
        8700,
        Machine::StatusServer,
        world.dir.path().join("fleet"),
    );
    let mut text = format!("{SEED_CLUSTER_FILE}{FAST}");
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    let file = world.write("cluster-efa.yaml", &text);
    (world, fleet, file)
}

fn worker_launches(world: &World) -> Vec<Recorded> {
    world
        .proxy
        .requests("RunInstances")
        .into_iter()
        .filter(|r| r.param("InstanceType") == Some("i7i.24xlarge"))
        .collect()
}

fn decoded_user_data(request: &Recorded) -> String {
    let encoded = request.param("UserData").expect("user data sent");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    String::from_utf8(bytes).expect("UTF-8")
}

/// The agent configuration inside a user data script.
fn embedded_config(script: &str) -> AgentConfigFile {
    let start = script
        .find("<<'RAYEFA_AGENT_TOML'\n")
        .expect("here-document")
        + 22;
    let end = script
        .find("\nRAYEFA_AGENT_TOML\n")
        .expect("end of here-document");
    toml::from_str(&script[start..=end]).expect("TOML")
}

#[test]
fn up_sends_the_seed_node_configs_as_run_instances_arguments_and_is_idempotent() {
    let (world, _fleet, file) = setup(11, &[]);
    world.run_on(&["up"], &file).expect_code(0);

    let launches = world.proxy.requests("RunInstances");
    assert_eq!(launches.len(), 2, "{launches:#?}");
    let head = launches[0].param_map();
    let worker = launches[1].param_map();
    let expect = |map: &BTreeMap<String, String>, key: &str, value: &str| {
        assert_eq!(
            map.get(key).map(String::as_str),
            Some(value),
            "{key} in {map:#?}"
        );
    };
    // The head: SubnetId and SecurityGroupIds as written.
    expect(&head, "InstanceType", "m7i.xlarge");
    expect(&head, "ImageId", &world.x86_ami);
    expect(&head, "SubnetId", &world.subnet_id);
    expect(&head, "SecurityGroupId.1", &world.head_sg);
    expect(&head, "IamInstanceProfile.Name", "ray-instance-profile");
    expect(&head, "MetadataOptions.HttpTokens", "required");
    expect(&head, "MinCount", "1");
    expect(&head, "MaxCount", "1");
    // The worker: the EFA interface, the placement group and the root volume.
    expect(&worker, "InstanceType", "i7i.24xlarge");
    expect(&worker, "NetworkInterface.1.DeviceIndex", "0");
    expect(&worker, "NetworkInterface.1.InterfaceType", "efa");
    expect(
        &worker,
        "NetworkInterface.1.SecurityGroupId.1",
        &world.worker_sg,
    );
    expect(&worker, "NetworkInterface.1.SubnetId", &world.subnet_id);
    expect(&worker, "Placement.GroupName", "ray-placement-group");
    expect(&worker, "BlockDeviceMapping.1.DeviceName", "/dev/xvda");
    expect(&worker, "BlockDeviceMapping.1.Ebs.VolumeSize", "300");
    expect(&worker, "BlockDeviceMapping.1.Ebs.VolumeType", "gp3");
    expect(&worker, "MetadataOptions.HttpTokens", "required");
    assert!(!worker.contains_key("SubnetId") && !worker.contains_key("SecurityGroupId.1"));
    for request in [&head, &worker] {
        expect(request, "TagSpecification.1.ResourceType", "instance");
        assert!(
            request
                .get("ClientToken")
                .is_some_and(|t| t.starts_with("rayefa-"))
        );
    }
    assert_ne!(head.get("ClientToken"), worker.get("ClientToken"));
    let tags = |map: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        (1..)
            .map_while(|i| {
                let key = map.get(&format!("TagSpecification.1.Tag.{i}.Key"))?;
                let value = map.get(&format!("TagSpecification.1.Tag.{i}.Value"))?;
                Some((key.clone(), value.clone()))
            })
            .collect()
    };
    let worker_tags = tags(&worker);
    assert_eq!(worker_tags["ray-cluster-name"], "ray-on-aws-efa");
    assert_eq!(worker_tags["ray-node-type"], "worker");
    assert_eq!(worker_tags["ray-user-node-type"], "efa_worker_node");
    assert_eq!(worker_tags["Name"], "ray-ray-on-aws-efa-worker");
    assert_eq!(worker_tags["rayefa-cluster"], "ray-on-aws-efa");
    assert_eq!(tags(&head)["ray-node-type"], "head");

    // The head's user data is what `rayefa user-data` prints, but for the cluster's control
    // secret, which the printed copy leaves out; the worker's names the head.
    let printed = world
        .run_on(&["user-data", "--node-type", "head_node"], &file)
        .expect_code(0);
    let launched = decoded_user_data(&launches[0]);
    let (secret_lines, rest): (Vec<&str>, Vec<&str>) = launched
        .split_inclusive('\n')
        .partition(|line| line.starts_with("control_secret = "));
    assert!(
        matches!(secret_lines.as_slice(), [line] if line.trim_end().len() == "control_secret = \"\"".len() + 64),
        "one 64-digit control secret in the launched user data: {secret_lines:?}"
    );
    assert!(!printed.stdout.contains("control_secret"));
    assert_eq!(rest.concat(), printed.stdout);
    let head_ip = world
        .live_instances()
        .iter()
        .find(|i| i.instance_type().map(|t| t.as_str()) == Some("m7i.xlarge"))
        .and_then(|i| i.private_ip_address().map(str::to_owned))
        .expect("the head runs");
    let worker_config = embedded_config(&decoded_user_data(&launches[1]));
    assert_eq!(
        worker_config.node.and_then(|n| n.head_address),
        Some(head_ip.clone())
    );

    // Again: nothing more is launched.
    world.run_on(&["up"], &file).expect_code(0);
    assert_eq!(world.proxy.requests("RunInstances").len(), 2);

    let status = world
        .run_on(&["status", "--output", "json"], &file)
        .expect_code(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("JSON");
    assert_eq!(status["outcome"], "ready", "{status:#}");
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(2),
        "{status:#}"
    );
}

#[test]
fn capacity_errors_are_retried_with_a_new_token_then_the_launch_succeeds() {
    let (world, _fleet, file) = setup(12, &[]);
    for _ in 0..2 {
        world.proxy.inject_if(
            "RunInstances",
            "InstanceType",
            "i7i.24xlarge",
            Fault::insufficient_capacity(),
        );
    }
    let run = world.run_on(&["up"], &file).expect_code(0);
    let attempts = worker_launches(&world);
    let outcomes: Vec<&str> = attempts.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "injected InsufficientInstanceCapacity",
            "injected InsufficientInstanceCapacity",
            "forwarded"
        ]
    );
    let tokens: Vec<&str> = attempts
        .iter()
        .filter_map(|r| r.param("ClientToken"))
        .collect();
    assert_eq!(tokens.len(), 3);
    assert!(
        tokens[0] != tokens[1] && tokens[1] != tokens[2],
        "{tokens:?}"
    );
    assert!(
        run.stderr.contains("trying again"),
        "each retry is reported: {}",
        run.stderr
    );
}

#[test]
fn capacity_that_does_not_come_is_reported_with_type_zone_and_placement_group() {
    let (world, _fleet, file) = setup(13, &[]);
    for _ in 0..3 {
        world.proxy.inject_if(
            "RunInstances",
            "InstanceType",
            "i7i.24xlarge",
            Fault::insufficient_capacity(),
        );
    }
    let run = world.run_on(&["up"], &file).expect_code(3);
    for words in [
        "launching 1 × i7i.24xlarge for efa_worker_node in ap-northeast-1a",
        "placement group ray-placement-group",
        "InsufficientInstanceCapacity",
        "gave up after 3 attempt(s)",
    ] {
        assert!(run.stderr.contains(words), "`{words}` in:\n{}", run.stderr);
    }
    assert_eq!(worker_launches(&world).len(), 3);
    // The head stays, tagged; `down` removes it.
    assert_eq!(world.live_instances().len(), 1);
    world.run_on(&["down"], &file).expect_code(0);
    assert!(world.live_instances().is_empty());
}

#[test]
fn throttling_and_server_errors_are_retried_with_the_same_token() {
    let (world, _fleet, file) = setup(14, &[]);
    world.proxy.inject_if(
        "RunInstances",
        "InstanceType",
        "i7i.24xlarge",
        Fault::throttled(),
    );
    world.proxy.inject_if(
        "RunInstances",
        "InstanceType",
        "i7i.24xlarge",
        Fault::internal_error(),
    );
    world.run_on(&["up"], &file).expect_code(0);
    let attempts = worker_launches(&world);
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    let tokens: Vec<&str> = attempts
        .iter()
        .filter_map(|r| r.param("ClientToken"))
        .collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
}

#[test]
fn a_lost_answer_does_not_launch_a_second_instance() {
    let (world, _fleet, file) = setup(15, &[]);
    world.proxy.inject_if(
        "RunInstances",
        "InstanceType",
        "i7i.24xlarge",
        Fault::LoseResponse,
    );
    world.run_on(&["up"], &file).expect_code(0);
    let outcomes: Vec<String> = worker_launches(&world)
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes, ["lost", "idempotent"]);
    let workers = world
        .live_instances()
        .into_iter()
        .filter(|i| i.instance_type().map(|t| t.as_str()) == Some("i7i.24xlarge"))
        .count();
    assert_eq!(
        workers, 1,
        "one worker, although RunInstances was sent twice"
    );
}

/// A cluster wanting two workers (on `127.0.<net>.0/24`) whose first worker launch EC2
/// answers with only one instance.
fn two_workers_whose_first_launch_starts_one(net: u8) -> (World, Fleet, PathBuf) {
    let two = [("        min_workers: 1 ", "        min_workers: 2 ")];
    let (world, fleet, file) = setup(net, &two);
    world.proxy.inject_if(
        "RunInstances",
        "InstanceType",
        "i7i.24xlarge",
        Fault::LaunchOnly(1),
    );
    (world, fleet, file)
}

#[test]
fn a_partial_launch_asks_again_for_the_rest() {
    let (world, _fleet, file) = two_workers_whose_first_launch_starts_one(16);
    world.run_on(&["up"], &file).expect_code(0);
    let attempts = worker_launches(&world);
    let counts: Vec<&str> = attempts
        .iter()
        .filter_map(|r| r.param("MaxCount"))
        .collect();
    assert_eq!(
        counts,
        ["2", "1"],
        "the second launch asks only for the missing one"
    );
}

#[test]
fn a_partial_launch_whose_rest_never_comes_names_what_is_left_running() {
    let (world, _fleet, file) = two_workers_whose_first_launch_starts_one(17);
    for _ in 0..2 {
        world.proxy.inject_if(
            "RunInstances",
            "InstanceType",
            "i7i.24xlarge",
            Fault::insufficient_capacity(),
        );
    }
    let run = world.run_on(&["up"], &file).expect_code(3);
    let started = world
        .live_instances()
        .into_iter()
        .find(|i| i.instance_type().map(|t| t.as_str()) == Some("i7i.24xlarge"))
        .and_then(|i| i.instance_id().map(str::to_owned))
        .expect("one worker started");
    assert!(
        run.stderr.contains(&format!(
            "1 instance(s) did start and are left running ({started})"
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("rayefa down FILE"), "{}", run.stderr);
}

#[test]
fn down_terminates_only_this_clusters_instances_and_waits_for_them() {
    let (world, _fleet, file) = setup(18, &[]);
    world.run_on(&["up"], &file).expect_code(0);
    // A node of a Ray-launched cluster of the same name, and one of another rayefa cluster.
    let ec2 = world.ec2();
    let mut strangers = Vec::new();
    for (key, value) in [
        ("ray-cluster-name", "ray-on-aws-efa"),
        ("rayefa-cluster", "someone-else"),
    ] {
        let out = world
            .block_on(
                ec2.run_instances()
                    .image_id(&world.x86_ami)
                    .instance_type(aws_sdk_ec2::types::InstanceType::M7iXlarge)
                    .subnet_id(&world.subnet_id)
                    .min_count(1)
                    .max_count(1)
                    .tag_specifications(
                        aws_sdk_ec2::types::TagSpecification::builder()
                            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                            .tags(
                                aws_sdk_ec2::types::Tag::builder()
                                    .key(key)
                                    .value(value)
                                    .build(),
                            )
                            .build(),
                    )
                    .send(),
            )
            .expect("a stranger instance");
        strangers.push(out.instances()[0].instance_id().expect("id").to_owned());
    }
    let run = world
        .run_on(&["down", "--output", "json"], &file)
        .expect_code(0);
    let left: Vec<String> = world
        .live_instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    assert_eq!(left, strangers, "{}", run.stdout);
    let terminated: Vec<Recorded> = world.proxy.requests("TerminateInstances");
    assert_eq!(terminated.len(), 1);
    assert!(
        terminated[0]
            .params
            .iter()
            .filter(|(k, _)| k.starts_with("InstanceId."))
            .all(|(_, id)| !strangers.contains(id))
    );
    let after = world.run_on(&["status"], &file).expect_code(0);
    assert!(after.stdout.contains("has no nodes"), "{}", after.stdout);
}

/// A fleet whose agents cannot be reached at their addresses but publish their state as tags.
fn unreachable_setup(
    net: u8,
    state: &'static str,
    step: &'static str,
    error: Option<&'static str>,
) -> (World, Fleet, PathBuf) {
    let world = World::build(&format!("127.0.{net}.0/24"), Omit::default());
    world.prepared();
    let fleet = Fleet::start(
        &world.moto.endpoint(),
        8700,
        Machine::Publisher { state, step, error },
        world.dir.path().join("fleet"),
    );
    let file = world.write("cluster-efa.yaml", &format!("{SEED_CLUSTER_FILE}{FAST}"));
    (world, fleet, file)
}

#[test]
fn nodes_out_of_network_reach_are_followed_through_their_tags() {
    let (world, _fleet, file) = unreachable_setup(19, "ready", "start-ray:succeeded", None);
    world.run_on(&["up"], &file).expect_code(0);
    let status = world
        .run_on(&["status", "--output", "json"], &file)
        .expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("JSON");
    assert_eq!(doc["outcome"], "ready", "{doc:#}");
    let nodes = doc["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n["via"] == "tags"), "{doc:#}");
    let table = world.run_on(&["status"], &file).expect_code(0);
    assert!(table.stdout.contains("VIA"), "{}", table.stdout);
    assert!(table.stdout.contains("tags"), "{}", table.stdout);
}

#[test]
fn a_failure_published_in_tags_fails_up_with_the_step_and_error() {
    let (world, _fleet, file) = unreachable_setup(
        20,
        "failed",
        "install-efa:failed",
        Some("efa_installer.sh exited 1"),
    );
    let run = world.run_on(&["up"], &file).expect_code(1);
    assert!(run.stdout.contains("install-efa"), "{}", run.stdout);
    assert!(
        run.stdout.contains("efa_installer.sh exited 1"),
        "{}",
        run.stdout
    );
}

#[test]
fn up_watches_launched_instances_that_ec2_does_not_list_yet() {
    let (world, fleet, file) = setup(31, &[]);
    // EC2's eventual consistency: for a while after RunInstances, DescribeInstances does not
    // show the new instances (moto shows them at once; the proxy plays EC2).
    world
        .proxy
        .hide_new_instances(std::time::Duration::from_secs(8));
    let run = world.run_on(&["up"], &file).expect_code(0);
    assert!(
        run.stdout.contains("cluster ray-on-aws-efa: 2 nodes ready"),
        "both launched nodes are watched and ready:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(fleet.booted().len(), 2);
    let hidden: Vec<String> = world
        .proxy
        .requests("DescribeInstances")
        .into_iter()
        .map(|r| r.outcome)
        .filter(|o| o.starts_with("hid "))
        .collect();
    assert!(
        !hidden.is_empty(),
        "the listings `up` made left the new instances out"
    );
}

#[test]
fn a_refused_new_instance_profile_is_retried_with_the_reason() {
    let (world, _fleet, file) = setup(32, &[]);
    for _ in 0..2 {
        world.proxy.inject(
            "RunInstances",
            Fault::instance_profile_not_ready("ray-instance-profile"),
        );
    }
    let run = world.run_on(&["up"], &file).expect_code(0);
    let outcomes: Vec<String> = world
        .proxy
        .requests("RunInstances")
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            "injected InvalidParameterValue",
            "injected InvalidParameterValue",
            "forwarded",
            "forwarded"
        ]
    );
    assert_eq!(
        run.stderr.matches("IAM is eventually consistent").count(),
        2,
        "each retry says why:\n{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("2 nodes ready"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// The seed's file with Graviton workers (c7gn.16xlarge: arm64, one EFA) on the ARM image and
/// `agent_package` as given.
fn graviton_workers_with(agent_package: &str) -> Vec<(&'static str, String)> {
    vec![
        ("i7i.24xlarge", "c7gn.16xlarge".to_owned()),
        (
            "            ImageId: ${X86_AMI_ID}                     # 헤드 노드와",
            "            ImageId: ${ARM_AMI_ID}                     # 헤드 노드와".to_owned(),
        ),
        (
            "rayefa:\n",
            format!("rayefa:\n    agent_package:\n{agent_package}"),
        ),
    ]
}

const AMD: &str = "https://packages.example.invalid/rayefa-agent.x86_64.rpm";
const ARM: &str = "https://packages.example.invalid/rayefa-agent.aarch64.rpm";

#[test]
fn each_node_gets_the_agent_package_of_its_architecture() {
    let both = format!(
        "        x86_64: {{url: '{AMD}', sha256: '{}'}}\n        aarch64: {{url: '{ARM}', sha256: '{}'}}\n",
        "a".repeat(64),
        "b".repeat(64)
    );
    let replacements = graviton_workers_with(&both);
    let pairs: Vec<(&str, &str)> = replacements.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let (world, _fleet, file) = setup(33, &pairs);
    world.run_on(&["up"], &file).expect_code(0);
    let launches = world.proxy.requests("RunInstances");
    assert_eq!(launches.len(), 2, "{launches:#?}");
    let head = decoded_user_data(&launches[0]);
    let worker = decoded_user_data(&launches[1]);
    assert_eq!(launches[1].param("InstanceType"), Some("c7gn.16xlarge"));
    assert!(head.contains(&format!("url='{AMD}'")) && head.contains("machine='x86_64'"));
    assert!(worker.contains(&format!("url='{ARM}'")) && worker.contains("machine='aarch64'"));

    // `rayefa user-data` asks EC2 for the type's architecture and prints the same choice.
    let printed = world
        .run_on(&["user-data", "--node-type", "efa_worker_node"], &file)
        .expect_code(0);
    assert!(
        printed.stdout.contains(&format!("url='{ARM}'")),
        "{}",
        printed.stdout
    );

    // Booted on a node of the other architecture, the user data stops in one line.
    let dir = tempfile::tempdir().expect("scratch");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    rayefa_test_support::files::write_executable(&bin.join("uname"), "#!/bin/sh\necho x86_64\n");
    let out = run_as_user_data(&worker, dir.path(), dir.path(), &bin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "rayefa: FAILED: this node is x86_64, but its agent package ({ARM}) is the aarch64 one"
        )),
        "{stderr}"
    );
}

#[test]
fn a_node_type_whose_architecture_has_no_package_is_refused_before_launch() {
    let x86_only = format!(
        "        x86_64: {{url: '{AMD}', sha256: '{}'}}\n",
        "a".repeat(64)
    );
    let replacements = graviton_workers_with(&x86_only);
    let pairs: Vec<(&str, &str)> = replacements.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let (world, _fleet, file) = setup(34, &pairs);
    let validate = world
        .run_on(&["validate", "--output", "json"], &file)
        .expect_code(2);
    let doc: serde_json::Value = serde_json::from_str(&validate.stdout).expect("JSON");
    let errors: Vec<&serde_json::Value> = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{doc:#}");
    assert_eq!(
        errors[0]["key"],
        "available_node_types.efa_worker_node.node_config"
    );
    let message = errors[0]["message"].as_str().expect("message");
    assert!(
        message.contains(
            "c7gn.16xlarge: the instance type runs aarch64, and rayefa.agent_package has no \
             package for it (it has x86_64)"
        ) && message.contains("add rayefa.agent_package.aarch64"),
        "{message}"
    );
    world.run_on(&["up"], &file).expect_code(3);
    assert!(world.proxy.requests("RunInstances").is_empty());
}
