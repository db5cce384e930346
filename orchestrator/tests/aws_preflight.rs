//! Preflight against moto: one test per finding, each provoked the way it happens to a user
//! (a step of the guide skipped, a typo in the cluster file, a variable pointing at the wrong
//! thing), and `up` refusing to launch anything while a finding stands.

#[allow(dead_code)]
mod support {
    pub mod aws_proxy;
    pub mod aws_world;
    pub mod moto;
}

use serde_json::Value;
use support::aws_proxy::Fault;
use support::aws_world::{Omit, SEED_CLUSTER_FILE, World};

const WORKER: &str = "available_node_types.efa_worker_node.node_config";
const HEAD: &str = "available_node_types.head_node.node_config";

/// `rayefa validate --output json` on `text`: the exit code and the error findings.
fn errors(world: &World, text: &str) -> (i32, Vec<Value>) {
    let file = world.write("cluster.yaml", text);
    let run = world.run_on(&["validate", "--output", "json"], &file);
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}):\n{}\n{}", run.stdout, run.stderr));
    let errors = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "error")
        .cloned()
        .collect();
    (run.code, errors)
}

/// The one error finding, checked to be at `key` and to say `words`.
fn single(found: &[Value], key: &str, words: &[&str]) {
    assert_eq!(found.len(), 1, "one finding expected: {found:#?}");
    assert_eq!(found[0]["key"], key, "{found:#?}");
    let message = found[0]["message"].as_str().expect("message");
    for word in words {
        assert!(message.contains(word), "`{word}` not in: {message}");
    }
    assert!(found[0]["line"].as_u64().is_some(), "a line: {found:#?}");
}

#[test]
fn a_prepared_account_passes() {
    let world = World::seed();
    world.prepared();
    let (code, found) = errors(&world, SEED_CLUSTER_FILE);
    assert_eq!((code, found), (0, vec![]));
}

#[test]
fn a_missing_placement_group_says_to_run_prepare() {
    let world = World::seed();
    world.add_self_rule(&world.worker_sg, false);
    world.add_self_rule(&world.worker_sg, true);
    let (code, found) = errors(&world, SEED_CLUSTER_FILE);
    assert_eq!(code, 2);
    single(
        &found,
        &format!("{WORKER}.Placement.GroupName"),
        &["ray-placement-group does not exist", "rayefa prepare"],
    );
}

#[test]
fn a_missing_self_rule_is_found_in_each_direction() {
    let world = World::seed();
    world
        .proxy
        .add_placement_group("ray-placement-group", "cluster");
    let (code, found) = errors(&world, SEED_CLUSTER_FILE);
    assert_eq!(code, 2);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("ingress")
    );
    assert!(
        found[1]["message"]
            .as_str()
            .unwrap_or("")
            .contains("egress")
    );

    world.add_self_rule(&world.worker_sg, false);
    let (_, found) = errors(&world, SEED_CLUSTER_FILE);
    single(
        &found,
        WORKER,
        &[
            &world.worker_sg,
            "no all-traffic egress rule",
            "rayefa prepare",
        ],
    );
}

#[test]
fn an_unknown_instance_type_is_named() {
    let world = World::seed();
    world.prepared();
    let text = SEED_CLUSTER_FILE.replace("i7i.24xlarge", "i7i.99xlarge");
    let (_, found) = errors(&world, &text);
    single(
        &found,
        &format!("{WORKER}.InstanceType"),
        &[
            "i7i.99xlarge does not exist in ap-northeast-1",
            "rayefa instance-types",
        ],
    );
}

#[test]
fn a_type_that_could_not_be_looked_up_is_not_called_missing() {
    let world = World::seed();
    world.prepared();
    world.proxy.inject(
        "DescribeInstanceTypes",
        Fault::Error {
            status: 403,
            code: "UnauthorizedOperation".into(),
            message: "You are not authorized to perform this operation.".into(),
        },
    );
    let (code, found) = errors(&world, SEED_CLUSTER_FILE);
    assert_eq!(code, 2, "{found:#?}");
    let messages: Vec<&str> = found.iter().filter_map(|f| f["message"].as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("could not check") && m.contains("UnauthorizedOperation")),
        "{messages:#?}"
    );
    assert!(
        !messages.iter().any(|m| m.contains("does not exist")),
        "a denied lookup is not a missing type: {messages:#?}"
    );
}

#[test]
fn a_type_without_efa_cannot_take_an_efa_interface() {
    let world = World::seed();
    world.prepared();
    let text = SEED_CLUSTER_FILE.replace("i7i.24xlarge", "m7i.2xlarge");
    let (_, found) = errors(&world, &text);
    single(
        &found,
        &format!("{WORKER}.NetworkInterfaces"),
        &["m7i.2xlarge does not support EFA"],
    );
}

#[test]
fn more_efa_interfaces_than_the_type_takes_are_refused() {
    let world = World::seed();
    world.prepared();
    let second = "                - DeviceIndex: 1\n                  NetworkCardIndex: 1\n                  \
                  InterfaceType: efa\n                  Groups: [\"${WORKER_SG_ID}\"]\n                  \
                  SubnetId: ${PRIV_SUBNET_ID}\n            Placement:";
    let text = SEED_CLUSTER_FILE.replacen("            Placement:", second, 1);
    let (_, found) = errors(&world, &text);
    // The second EFA also asks for a network card i7i.24xlarge does not have.
    let messages: Vec<&str> = found
        .iter()
        .map(|f| {
            assert_eq!(f["key"], format!("{WORKER}.NetworkInterfaces"), "{f:#?}");
            f["message"].as_str().expect("message")
        })
        .collect();
    assert_eq!(messages.len(), 2, "{found:#?}");
    assert!(
        messages[0].contains("NetworkInterfaces[1] has NetworkCardIndex 1; i7i.24xlarge has 1"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains("2 EFA interfaces asked for; i7i.24xlarge takes at most 1"),
        "{messages:#?}"
    );
}

/// The seed's worker as a p4d.24xlarge (4 network cards, 4 EFA interfaces) with `interfaces`
/// as its NetworkInterfaces entries (each a YAML mapping's lines, indented as the seed's).
fn p4d_worker_with(interfaces: &[(&str, &str, &str)]) -> String {
    let entries: String = interfaces
        .iter()
        .map(|(card, device, kind)| {
            format!(
                "                - NetworkCardIndex: {card}\n                  DeviceIndex: \
                 {device}\n                  InterfaceType: {kind}\n                  Groups: \
                 [\"${{WORKER_SG_ID}}\"]\n                  SubnetId: ${{PRIV_SUBNET_ID}}\n"
            )
        })
        .collect();
    let seed_interface = "                - DeviceIndex: 0\n                  InterfaceType: efa\n                  Groups: [\"${WORKER_SG_ID}\"]                # SecurityGroupIds 대신 여기서 설정\n                  SubnetId: ${PRIV_SUBNET_ID}                # 프라이빗 서브넷 ID 입력\n";
    assert!(SEED_CLUSTER_FILE.contains(seed_interface));
    SEED_CLUSTER_FILE
        .replace(seed_interface, &entries)
        .replace("i7i.24xlarge", "p4d.24xlarge")
}

#[test]
fn efa_layouts_aws_refuses_are_found_before_launch() {
    let world = World::seed();
    world.prepared();
    // One EFA per card, on the cards the type has, with an IP-carrying primary: accepted.
    let good = p4d_worker_with(&[
        ("0", "0", "efa"),
        ("1", "1", "efa-only"),
        ("2", "1", "efa-only"),
        ("3", "1", "efa-only"),
    ]);
    let (code, found) = errors(&world, &good);
    assert_eq!((code, found), (0, vec![]));

    let bad = p4d_worker_with(&[
        ("0", "0", "efa-only"),
        ("1", "1", "efa-only"),
        ("1", "2", "efa"),
        ("4", "1", "efa-only"),
    ]);
    let (code, found) = errors(&world, &bad);
    assert_eq!(code, 2);
    let messages: Vec<&str> = found
        .iter()
        .map(|f| {
            assert_eq!(f["key"], format!("{WORKER}.NetworkInterfaces"), "{f:#?}");
            f["message"].as_str().expect("message")
        })
        .collect();
    assert_eq!(messages.len(), 3, "{found:#?}");
    for words in [
        "NetworkInterfaces[0] is the primary interface (network card 0, device 0) and is efa-only",
        "NetworkInterfaces[3] has NetworkCardIndex 4; p4d.24xlarge has 4 network card(s)",
        "NetworkInterfaces[1][2] are all EFA interfaces on network card 1",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(words)),
            "`{words}` in {messages:#?}"
        );
    }
    // `up` refuses the same layout with nothing launched.
    let file = world.write("bad-layout.yaml", &bad);
    let run = world.run_on(&["up"], &file).expect_code(3);
    assert!(
        run.stderr.contains("nothing was launched"),
        "{}",
        run.stderr
    );
    assert!(world.proxy.requests("RunInstances").is_empty());
}

#[test]
fn an_instance_profile_without_a_role_is_found() {
    let world = World::build(
        "127.0.1.0/24",
        Omit {
            profile_role: true,
            ..Omit::default()
        },
    );
    world.prepared();
    let (_, found) = errors(&world, SEED_CLUSTER_FILE);
    single(
        &found,
        &format!("{WORKER}.IamInstanceProfile"),
        &[
            "instance profile ray-instance-profile holds no role",
            "add-role-to-instance-profile",
        ],
    );
}

#[test]
fn an_image_of_the_other_architecture_is_found() {
    let mut world = World::seed();
    world.prepared();
    let arm = world.arm_ami.clone();
    world.set_env("X86_AMI_ID", &arm);
    let (_, found) = errors(&world, SEED_CLUSTER_FILE);
    assert_eq!(found.len(), 2, "head and worker: {found:#?}");
    // Node types in name order.
    for (finding, key, instance_type) in [
        (&found[0], WORKER, "i7i.24xlarge"),
        (&found[1], HEAD, "m7i.xlarge"),
    ] {
        assert_eq!(finding["key"], format!("{key}.ImageId"));
        let message = finding["message"].as_str().expect("message");
        assert!(
            message.contains(&format!(
                "image {arm} is arm64; {instance_type} runs x86_64"
            )),
            "{message}"
        );
    }
}

#[test]
fn a_subnet_outside_the_providers_zone_is_found() {
    let mut world = World::seed();
    world.prepared();
    let other = world.add_subnet("127.0.9.0/24", "ap-northeast-1c");
    world.set_env("PRIV_SUBNET_ID", &other);
    let (_, found) = errors(&world, SEED_CLUSTER_FILE);
    assert_eq!(found.len(), 2, "head and worker: {found:#?}");
    for finding in &found {
        let message = finding["message"].as_str().expect("message");
        assert!(
            message.contains(
                "a subnet is in ap-northeast-1c, but provider.availability_zone is ap-northeast-1a"
            ),
            "{message}"
        );
    }
}

#[test]
fn an_efa_node_type_spread_over_zones_is_found() {
    let world = World::seed();
    world.prepared();
    let other = world.add_subnet("127.0.9.0/24", "ap-northeast-1c");
    let second = format!(
        "                - DeviceIndex: 1\n                  InterfaceType: interface\n                  \
         Groups: [\"${{WORKER_SG_ID}}\"]\n                  SubnetId: {other}\n            Placement:"
    );
    let text = SEED_CLUSTER_FILE
        .replacen("            Placement:", &second, 1)
        .replace(
            "availability_zone: ${AWS_REGION}a",
            "availability_zone: ${AWS_REGION}a,${AWS_REGION}c",
        );
    let (_, found) = errors(&world, &text);
    single(
        &found,
        WORKER,
        &["different availability zones (ap-northeast-1a, ap-northeast-1c)"],
    );
}

#[test]
fn a_type_not_offered_in_the_zone_is_found() {
    let world = World::seed();
    world.prepared();
    // moto's data offers x8aedz.24xlarge (EFA, x86_64) in ap-northeast-1c only.
    let text = SEED_CLUSTER_FILE.replace("i7i.24xlarge", "x8aedz.24xlarge");
    let (_, found) = errors(&world, &text);
    single(
        &found,
        &format!("{WORKER}.InstanceType"),
        &["x8aedz.24xlarge is not offered in ap-northeast-1a"],
    );
}

#[test]
fn a_missing_instance_profile_says_how_to_create_it() {
    let world = World::build(
        "127.0.1.0/24",
        Omit {
            instance_profile: true,
            ..Omit::default()
        },
    );
    world.prepared();
    let (_, found) = errors(&world, SEED_CLUSTER_FILE);
    // Both node types name it; it is reported once, at the first.
    single(
        &found,
        &format!("{WORKER}.IamInstanceProfile"),
        &[
            "instance profile ray-instance-profile does not exist",
            "create-instance-profile",
        ],
    );
}

#[test]
fn user_data_over_16_kib_is_found() {
    let world = World::seed();
    world.prepared();
    let long: String = (0..300)
        .map(|i| format!("    - echo 'a setup command long enough to add up, number {i:03}'\n"))
        .collect();
    let text = SEED_CLUSTER_FILE.replace("setup_commands:\n", &format!("setup_commands:\n{long}"));
    let (_, found) = errors(&world, &text);
    assert_eq!(found.len(), 2, "head and worker: {found:#?}");
    for finding in &found {
        let message = finding["message"].as_str().expect("message");
        assert!(message.contains("EC2 takes at most 16384"), "{message}");
    }
}

#[test]
fn up_launches_nothing_while_preflight_finds_a_problem() {
    let world = World::seed();
    let run = world.run_on(&["up"], &world.seed_file());
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("preflight found 3 problem(s); nothing was launched"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("rayefa prepare"), "{}", run.stderr);
    assert!(world.proxy.requests("RunInstances").is_empty());
    assert!(world.live_instances().is_empty());
}
