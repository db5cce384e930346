//! Images looked up at launch, against moto through the recording proxy: a node type without
//! `ImageId` boots the region's latest Amazon Linux 2023 image for its instance type's
//! architecture, `ImageId: latest_dlami` the latest Deep Learning Base OSS Nvidia Driver GPU
//! AMI (Amazon Linux 2023), both read from SSM once per run; a parameter the region lacks
//! stops the run before anything launches, and a launch template keeps its own image.
//!
//! moto serves the Amazon Linux parameters but not the Deep Learning ones (and refuses
//! PutParameter under `/aws`), so the proxy answers those, for an image registered in moto.

#[allow(dead_code)]
mod support {
    pub mod aws_fleet;
    pub mod aws_proxy;
    pub mod aws_world;
    pub mod moto;
}

use std::path::PathBuf;

use serde_json::Value;
use support::aws_fleet::{Fleet, Machine};
use support::aws_proxy::Recorded;
use support::aws_world::{Omit, SEED_CLUSTER_FILE, World};

const AL2023_X86_64: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
const AL2023_ARM64: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64";
const DLAMI_X86_64: &str = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id";
const DLAMI_ARM64: &str = "/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id";

/// The seed file's two `ImageId` lines.
const HEAD_IMAGE: &str =
    "            ImageId: ${X86_AMI_ID}                     # amazon linux 2023\n";
const WORKER_IMAGE: &str = "            ImageId: ${X86_AMI_ID}                     # 헤드 노드와 동일한 이미지 사용         \n";

/// Fast polls, so that `up` ends in seconds.
const FAST: &str = "
rayefa:
    aws:
        launch_attempts: 2
        launch_backoff: 0.1s
    poll:
        interval: 0.2s
    timeouts:
        head_agent: 30s
        ready: 60s
";

/// A prepared account on `127.0.<net>.0/24` whose instances answer as ready, and the seed's
/// file with `replace` applied and Graviton workers (c7gn.16xlarge: arm64, one EFA).
fn setup(net: u8, replace: &[(&str, &str)]) -> (World, Fleet, PathBuf) {
    let world = World::build(&format!("127.0.{net}.0/24"), Omit::default());
    world.prepared();
    let fleet = Fleet::start(
        &world.moto.endpoint(),
        8700,
        Machine::StatusServer,
        world.dir.path().join("fleet"),
    );
    let mut text = format!("{SEED_CLUSTER_FILE}{FAST}").replace("i7i.24xlarge", "c7gn.16xlarge");
    for (from, to) in replace {
        assert!(text.contains(from), "the seed file has {from:?}");
        text = text.replace(from, to);
    }
    let file = world.write("cluster.yaml", &text);
    (world, fleet, file)
}

/// The RunInstances request of the instance type `instance_type`.
fn launch_of(world: &World, instance_type: &str) -> Recorded {
    let launches: Vec<Recorded> = world
        .proxy
        .requests("RunInstances")
        .into_iter()
        .filter(|r| r.param("InstanceType") == Some(instance_type))
        .collect();
    assert_eq!(launches.len(), 1, "{launches:#?}");
    launches[0].clone()
}

/// The image moto launched the live instance of `instance_type` from.
fn launched_image(world: &World, instance_type: &str) -> String {
    world
        .live_instances()
        .iter()
        .find(|i| i.instance_type().map(|t| t.as_str()) == Some(instance_type))
        .and_then(|i| i.image_id().map(str::to_owned))
        .unwrap_or_else(|| panic!("a live {instance_type}"))
}

/// The SSM GetParameters requests so far, each as its list of names.
fn parameter_reads(world: &World) -> Vec<Vec<String>> {
    world
        .proxy
        .requests("GetParameters")
        .iter()
        .map(|r| r.params.iter().map(|(_, name)| name.clone()).collect())
        .collect()
}

/// `validate --output json`: the exit code and the findings.
fn validate_json(world: &World, file: &std::path::Path, offline: bool) -> (i32, Vec<Value>) {
    let mut args = vec!["validate", "--output", "json"];
    if offline {
        args.push("--offline");
    }
    let run = world.run_on(&args, file);
    let doc: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}):\n{}\n{}", run.stdout, run.stderr));
    (
        run.code,
        doc["findings"].as_array().expect("findings").clone(),
    )
}

/// The findings of `severity` keyed `key`, by message.
fn messages(findings: &[Value], severity: &str, key: &str) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f["severity"] == severity && f["key"] == key)
        .map(|f| f["message"].as_str().expect("message").to_owned())
        .collect()
}

#[test]
fn missing_image_ids_launch_the_regions_latest_al2023_image_of_each_types_architecture() {
    let (world, _fleet, file) = setup(61, &[(HEAD_IMAGE, ""), (WORKER_IMAGE, "")]);
    let head_key = "available_node_types.head_node.node_config.ImageId";
    let worker_key = "available_node_types.efa_worker_node.node_config.ImageId";

    // Offline: said to be looked up at launch, nothing asked.
    let (code, offline) = validate_json(&world, &file, true);
    assert_eq!(code, 0, "{offline:#?}");
    let said = messages(&offline, "note", head_key);
    assert_eq!(said.len(), 1, "{offline:#?}");
    assert!(
        said[0].starts_with("not given: the latest AL2023 image for the instance type's architecture is looked up when `up` runs")
            && said[0].contains(AL2023_X86_64)
            && said[0].contains(AL2023_ARM64),
        "{}",
        said[0]
    );
    assert!(parameter_reads(&world).is_empty());

    // Online: the image each node type will get, from one SSM call.
    let (code, online) = validate_json(&world, &file, false);
    assert_eq!(code, 0, "{online:#?}");
    let head_note = format!(
        "node type head_node: ImageId missing; will use {} (AL2023 x86_64, from {AL2023_X86_64})",
        world.x86_ami
    );
    let worker_note = format!(
        "node type efa_worker_node: ImageId missing; will use {} (AL2023 arm64, from {AL2023_ARM64})",
        world.arm_ami
    );
    assert!(
        messages(&online, "note", head_key).contains(&head_note),
        "{online:#?}"
    );
    assert!(
        messages(&online, "note", worker_key).contains(&worker_note),
        "{online:#?}"
    );
    let text = world.run_on(&["validate"], &file).expect_code(0);
    assert!(
        text.stdout
            .contains(&format!("note: {head_key}: {head_note}")),
        "{}",
        text.stdout
    );

    // `up` reads the parameters once for both launches and sends each type its image.
    let before = parameter_reads(&world).len();
    world.run_on(&["up"], &file).expect_code(0);
    let reads = parameter_reads(&world);
    assert_eq!(reads.len(), before + 1, "one read per run: {reads:?}");
    let mut asked = reads.last().cloned().expect("read");
    asked.sort();
    assert_eq!(asked, [AL2023_ARM64, AL2023_X86_64]);
    assert_eq!(
        launch_of(&world, "m7i.xlarge").param("ImageId"),
        Some(world.x86_ami.as_str())
    );
    assert_eq!(
        launch_of(&world, "c7gn.16xlarge").param("ImageId"),
        Some(world.arm_ami.as_str())
    );
    assert_eq!(launched_image(&world, "m7i.xlarge"), world.x86_ami);
    assert_eq!(launched_image(&world, "c7gn.16xlarge"), world.arm_ami);
}

/// Registers an image in moto standing for the Deep Learning AMI and has the proxy serve its
/// x86_64 parameter.
fn publish_dlami(world: &World) -> String {
    let ec2 = world.ec2();
    let image = world
        .block_on(
            ec2.register_image()
                .name("Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023) 20261201")
                .send(),
        )
        .expect("registering an image in moto")
        .image_id()
        .expect("image id")
        .to_owned();
    world.proxy.add_public_parameter(DLAMI_X86_64, &image);
    image
}

#[test]
fn latest_dlami_launches_the_deep_learning_base_image_and_a_given_image_passes_as_written() {
    let (world, _fleet, file) = setup(
        62,
        &[
            (HEAD_IMAGE, "            ImageId: latest_dlami\n"),
            (
                "${X86_AMI_ID}                     # 헤드 노드와",
                "${ARM_AMI_ID}                     # 헤드 노드와",
            ),
        ],
    );
    let dlami = publish_dlami(&world);
    let key = "available_node_types.head_node.node_config.ImageId";
    let (code, online) = validate_json(&world, &file, false);
    assert_eq!(code, 0, "{online:#?}");
    assert!(
        messages(&online, "note", key).contains(&format!(
            "node type head_node: ImageId latest_dlami; will use {dlami} (Deep Learning Base OSS \
             Nvidia Driver GPU AMI, AL2023 x86_64, from {DLAMI_X86_64})"
        )),
        "{online:#?}"
    );
    // The worker names its image (the ARM one, for its Graviton type): nothing to look up.
    let worker_key = "available_node_types.efa_worker_node.node_config.ImageId";
    assert!(online.iter().all(|f| f["key"] != worker_key), "{online:#?}");

    world.run_on(&["up"], &file).expect_code(0);
    assert_eq!(
        launch_of(&world, "m7i.xlarge").param("ImageId"),
        Some(dlami.as_str())
    );
    assert_eq!(launched_image(&world, "m7i.xlarge"), dlami);
    // Only the head's parameter was read.
    assert!(
        parameter_reads(&world)
            .iter()
            .all(|names| names == &[DLAMI_X86_64]),
        "{:?}",
        parameter_reads(&world)
    );
}

#[test]
fn an_image_parameter_the_region_lacks_stops_the_run_naming_the_node_type_and_parameter() {
    // The worker's Graviton type needs the arm64 Deep Learning parameter, which this region
    // (moto, without the proxy's help) does not have.
    let (world, _fleet, file) = setup(63, &[(WORKER_IMAGE, "            ImageId: LATEST_DLAMI\n")]);
    let key = "available_node_types.efa_worker_node.node_config.ImageId";
    let (code, online) = validate_json(&world, &file, false);
    assert_eq!(code, 2, "{online:#?}");
    let errors = messages(&online, "error", key);
    assert_eq!(errors.len(), 1, "{online:#?}");
    assert!(
        errors[0].contains(&format!(
            "ImageId is latest_dlami, and SSM has no parameter {DLAMI_ARM64} in ap-northeast-1"
        )) && errors[0].contains("fix: set ImageId"),
        "{}",
        errors[0]
    );

    let up = world.run_on(&["up"], &file).expect_code(3);
    assert!(
        up.stderr.contains(key) && up.stderr.contains(DLAMI_ARM64),
        "{}",
        up.stderr
    );
    assert!(world.proxy.requests("RunInstances").is_empty());
}

#[test]
fn a_launch_template_without_image_id_keeps_the_templates_image() {
    let (world, _fleet, file) = setup(
        64,
        &[
            (
                HEAD_IMAGE,
                "            LaunchTemplate:\n                LaunchTemplateName: ray-head\n                Version: $Latest\n",
            ),
            (
                "${X86_AMI_ID}                     # 헤드 노드와",
                "${ARM_AMI_ID}                     # 헤드 노드와",
            ),
        ],
    );
    let ec2 = world.ec2();
    let golden = world
        .block_on(ec2.register_image().name("golden").send())
        .expect("registering an image in moto")
        .image_id()
        .expect("image id")
        .to_owned();
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
        .image_id(&golden)
        .build();
    world
        .block_on(
            ec2.create_launch_template()
                .launch_template_name("ray-head")
                .launch_template_data(data)
                .send(),
        )
        .expect("creating a launch template in moto");
    let (code, online) = validate_json(&world, &file, false);
    assert_eq!(code, 0, "{online:#?}");
    let key = "available_node_types.head_node.node_config.ImageId";
    assert!(online.iter().all(|f| f["key"] != key), "{online:#?}");

    world.run_on(&["up"], &file).expect_code(0);
    let head = launch_of(&world, "m7i.xlarge");
    assert_eq!(head.param("ImageId"), None, "{head:#?}");
    assert_eq!(
        head.param("LaunchTemplate.LaunchTemplateName"),
        Some("ray-head")
    );
    assert_eq!(head.param("LaunchTemplate.Version"), Some("$Latest"));
    assert_eq!(launched_image(&world, "m7i.xlarge"), golden);
    assert!(parameter_reads(&world).is_empty(), "nothing to look up");
}
