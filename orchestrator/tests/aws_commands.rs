//! `rayefa env`, `rayefa instance-types` and `rayefa prepare` against moto, through the
//! recording proxy: the seed guide's steps 1 to 4.

// Each test binary uses part of the shared support.
#[allow(dead_code)]
mod support {
    pub mod aws_proxy;
    pub mod aws_world;
    pub mod moto;
}

use support::aws_world::{REGION, World};

#[test]
fn env_finds_what_the_seed_guide_exports_and_a_shell_can_eval_it() {
    let world = World::seed();
    let run = world.run(&["env", "--output", "env"]).expect_code(0);
    // The shell sees exactly what the account holds.
    let script = format!(
        "{}\necho \"$AWS_REGION $AWS_ACCOUNT_ID $VPC_ID $X86_AMI_ID $ARM_AMI_ID $PRIV_SUBNET_ID \
         $HEAD_SG_ID $WORKER_SG_ID\"",
        run.stdout
    );
    let out = std::process::Command::new("bash")
        .args(["-euc", &script])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "{REGION} 123456789012 {} {} {} {} {} {}\n",
        world.vpc_id, world.x86_ami, world.arm_ami, world.subnet_id, world.head_sg, world.worker_sg
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);

    let json = world.run(&["env", "--output", "json"]).expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(doc["values"]["VPC_ID"], world.vpc_id.as_str());
    assert_eq!(doc["values"]["WORKER_SG_ID"], world.worker_sg.as_str());

    let table = world.run(&["env"]).expect_code(0);
    assert!(
        table.stdout.contains("VPC tagged Name=RayVPC"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains(&world.subnet_id), "{}", table.stdout);
}

#[test]
fn env_names_what_it_searched_for_when_something_is_missing() {
    let world = World::seed();
    let run = world
        .run(&["env", "--worker-sg", "NoSuchGroup", "--output", "env"])
        .expect_code(3);
    assert!(run.stdout.contains("export HEAD_SG_ID="), "{}", run.stdout);
    assert!(!run.stdout.contains("WORKER_SG_ID"), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "WORKER_SG_ID not found: no security group named NoSuchGroup in {}",
            world.vpc_id
        )),
        "{}",
        run.stderr
    );

    // Without the VPC, what is searched in it cannot be found either, and says why.
    let run = world
        .run(&["env", "--vpc-tag", "Name=OtherVPC"])
        .expect_code(3);
    assert!(
        run.stdout
            .contains("NOT FOUND: no VPC tagged Name=OtherVPC"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("needs the VPC"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&world.x86_ami),
        "the AMIs do not need the VPC"
    );
}

#[test]
fn instance_types_follow_every_page_and_match_the_seed_guides_figures() {
    let world = World::seed();
    let args = [
        "instance-types",
        "--family",
        "7i,8g,7a",
        "--efa",
        "--output",
        "json",
    ];
    let whole = world.run(&args).expect_code(0);
    let whole: Vec<serde_json::Value> = serde_json::from_str(&whole.stdout).expect("JSON");
    assert!(
        whole.len() > 10,
        "moto knows many EFA types: {}",
        whole.len()
    );

    world
        .proxy
        .paginate("DescribeInstanceTypes", "instanceTypeSet", 25);
    let paged = world.run(&args).expect_code(0);
    let paged: Vec<serde_json::Value> = serde_json::from_str(&paged.stdout).expect("JSON");
    assert_eq!(paged, whole, "the same types, page after page");
    let requests = world.proxy.requests("DescribeInstanceTypes");
    let follow_ups = requests
        .iter()
        .filter(|r| r.param("NextToken").is_some())
        .count();
    assert_eq!(follow_ups, whole.len().div_ceil(25) - 1);
    assert!(follow_ups >= 2, "{} types make several pages", whole.len());

    // The seed guide's own table says i7i.24xlarge has 96 vCPUs, 48 cores and 768 GiB.
    let i7i = whole
        .iter()
        .find(|t| t["instance_type"] == "i7i.24xlarge")
        .expect("i7i.24xlarge is listed");
    assert_eq!(i7i["vcpus"], 96);
    assert_eq!(i7i["cores"], 48);
    assert_eq!(i7i["memory_gib"], 768.0);
    assert_eq!(i7i["architectures"], serde_json::json!(["x86_64"]));
    assert!(i7i["max_efa_interfaces"].as_i64() >= Some(1));
    assert!(whole.iter().all(|t| t["efa_supported"] == true));
    // Sorted by family, then size.
    let names: Vec<&str> = whole
        .iter()
        .filter_map(|t| t["instance_type"].as_str())
        .collect();
    let first_c8g = names
        .iter()
        .position(|n| n.starts_with("c8g."))
        .expect("c8g");
    let first_m7i = names
        .iter()
        .position(|n| n.starts_with("m7i."))
        .expect("m7i");
    assert!(first_c8g < first_m7i, "{names:?}");

    let table = world
        .run(&["instance-types", "--family", "8g", "--efa"])
        .expect_code(0);
    assert!(table.stdout.contains("arm64"), "{}", table.stdout);
    assert!(!table.stdout.contains("x86_64"), "{}", table.stdout);
}

#[test]
fn prepare_creates_the_placement_group_and_self_rules_once() {
    let world = World::seed();
    let file = world.seed_file();
    let first = world
        .run_on(&["prepare", "--output", "json"], &file)
        .expect_code(0);
    let first: Vec<serde_json::Value> = serde_json::from_str(&first.stdout).expect("JSON");
    let outcomes: Vec<(&str, &str)> = first
        .iter()
        .map(|i| {
            (
                i["thing"].as_str().unwrap_or(""),
                i["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("placement group", "created"),
            ("ingress rule", "created"),
            ("egress rule", "created")
        ]
    );
    let groups = world.proxy.placement_groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].name, "ray-placement-group");
    assert_eq!(groups[0].strategy, "cluster");

    let second = world.run_on(&["prepare"], &file).expect_code(0);
    assert_eq!(
        second.stdout.matches("already present").count(),
        3,
        "{}",
        second.stdout
    );
    assert!(!second.stdout.contains("created"), "{}", second.stdout);
    assert_eq!(world.proxy.requests("CreatePlacementGroup").len(), 1);

    // The rules are really there, both ways, referencing the group itself.
    let ec2 = world.ec2();
    let group = world
        .block_on(
            ec2.describe_security_groups()
                .group_ids(&world.worker_sg)
                .send(),
        )
        .expect("describing the worker group");
    let group = &group.security_groups()[0];
    for permissions in [group.ip_permissions(), group.ip_permissions_egress()] {
        assert!(permissions.iter().any(|p| {
            p.ip_protocol() == Some("-1")
                && p.user_id_group_pairs()
                    .iter()
                    .any(|pair| pair.group_id() == Some(world.worker_sg.as_str()))
        }));
    }
}

#[test]
fn prepare_reports_a_placement_group_of_the_wrong_strategy() {
    let world = World::seed();
    world
        .proxy
        .add_placement_group("ray-placement-group", "spread");
    let run = world
        .run_on(&["prepare"], &world.seed_file())
        .expect_code(3);
    assert!(run.stdout.contains("CONFLICT"), "{}", run.stdout);
    assert!(run.stdout.contains("strategy spread"), "{}", run.stdout);
}
