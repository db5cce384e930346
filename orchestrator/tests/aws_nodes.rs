//! `rayefa nodes launch|list|set-tags|terminate` on the AWS provider against moto, through the
//! recording and fault-injecting proxy: EC2 keeps the tags Ray's autoscaler reads, a node Ray
//! asks for is launched as `up` launches one (same RunInstances arguments, its tags given at
//! launch), a tag set right after launch survives EC2 not knowing the instance yet, and
//! `status` and `down` see the autoscaled nodes.

#[allow(dead_code)]
mod support {
    pub mod aws_fleet;
    pub mod aws_proxy;
    pub mod aws_world;
    pub mod moto;
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use support::aws_fleet::{Fleet, Machine};
use support::aws_proxy::Recorded;
use support::aws_world::{Omit, SEED_CLUSTER_FILE, World};

/// Fast retries and polls, so failures show in seconds.
const FAST: &str = "
rayefa:
    aws:
        launch_attempts: 3
        launch_backoff: 0.2s
        address_timeout: 30s
    poll:
        interval: 0.2s
    timeouts:
        head_agent: 30s
        ready: 60s
";

const WORKER: &str = "efa_worker_node";

/// A prepared account on `127.0.<net>.0/24` whose instances answer as ready, and the seed's
/// cluster file (head, one worker of at most two) brought up.
fn up(net: u8) -> (World, Fleet, PathBuf) {
    let world = World::build(&format!("127.0.{net}.0/24"), Omit::default());
    world.prepared();
    let fleet = Fleet::start(
        &world.moto.endpoint(),
        8700,
        Machine::StatusServer,
        world.dir.path().join("fleet"),
    );
    let file = world.write("cluster-efa.yaml", &format!("{SEED_CLUSTER_FILE}{FAST}"));
    world.run_on(&["up"], &file).expect_code(0);
    (world, fleet, file)
}

/// `rayefa nodes ARGS...` with the cluster file at its place, as JSON.
fn nodes(world: &World, file: &Path, args: &[&str], code: i32) -> serde_json::Value {
    let file = file.to_str().expect("UTF-8 scratch path");
    let mut all = vec!["nodes", args[0], file];
    all.extend(&args[1..]);
    let run = world.run(&all).expect_code(code);
    if code != 0 {
        return serde_json::json!({ "stderr": run.stderr });
    }
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: not JSON:\n{}\n{}", run.stdout, run.stderr))
}

/// The tags moto holds for instance `id`.
fn moto_tags(world: &World, id: &str) -> BTreeMap<String, String> {
    let ec2 = world.ec2();
    let out = world
        .block_on(ec2.describe_instances().instance_ids(id).send())
        .expect("describe");
    out.reservations()[0].instances()[0]
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

fn worker_launches(world: &World) -> Vec<Recorded> {
    world
        .proxy
        .requests("RunInstances")
        .into_iter()
        .filter(|r| r.param("InstanceType") == Some("i7i.24xlarge"))
        .collect()
}

/// The RunInstances parameters that are not the launch's own (count, token, user data, tags).
fn launch_arguments(request: &Recorded) -> BTreeMap<String, String> {
    request
        .param_map()
        .into_iter()
        .filter(|(k, _)| {
            !["MinCount", "MaxCount", "ClientToken", "UserData"].contains(&k.as_str())
                && !k.starts_with("TagSpecification")
        })
        .collect()
}

#[test]
fn ec2_keeps_the_tags_of_a_node_launched_for_rays_autoscaler() {
    let (world, fleet, file) = up(71);
    let launched = nodes(
        &world,
        &file,
        &[
            "launch",
            "--node-type",
            WORKER,
            "--tag",
            "ray-launch-config=5f3a",
            "--tag",
            "ray-node-status=uninitialized",
            "--tag",
            "ray-node-type=worker",
        ],
        0,
    );
    let node = &launched["nodes"][0];
    let id = node["id"].as_str().expect("an instance id").to_owned();
    assert!(id.starts_with("i-"), "{launched:#}");
    assert_eq!(node["autoscaled"], true, "{launched:#}");

    // Launched exactly as `up` launched its worker, with the tags given at launch.
    let launches = worker_launches(&world);
    assert_eq!(launches.len(), 2, "up's worker and Ray's");
    assert_eq!(
        launch_arguments(&launches[1]),
        launch_arguments(&launches[0])
    );
    assert!(
        world.proxy.requests("CreateTags").is_empty(),
        "no tag is left for after the launch"
    );
    let kept = moto_tags(&world, &id);
    assert_eq!(kept["rayefa-autoscaled"], "true");
    assert_eq!(kept["ray-launch-config"], "5f3a");
    assert_eq!(kept["ray-node-status"], "uninitialized");
    assert_eq!(kept["ray-node-type"], "worker");
    assert_eq!(kept["rayefa-cluster"], "ray-on-aws-efa");

    // Ray moves the node along by tagging it; the listing shows what EC2 keeps.
    let set = nodes(
        &world,
        &file,
        &["set-tags", &id, "--tag", "ray-node-status=up-to-date"],
        0,
    );
    assert_eq!(set["tags"]["ray-node-status"], "up-to-date");
    assert_eq!(moto_tags(&world, &id)["ray-node-status"], "up-to-date");
    let listed = nodes(&world, &file, &["list"], 0);
    let all = listed["nodes"].as_array().expect("nodes");
    assert_eq!(all.len(), 3, "{listed:#}");
    let ours = all.iter().find(|n| n["id"] == id.as_str()).expect("listed");
    assert_eq!(ours["tags"]["ray-node-status"], "up-to-date", "{listed:#}");
    assert_eq!(ours["tags"]["ray-launch-config"], "5f3a", "{listed:#}");
    assert_eq!(ours["agent_state"], "ready", "{listed:#}");
    assert_eq!(ours["lifecycle"], "running", "{listed:#}");
    assert_eq!(
        all.iter().filter(|n| n["autoscaled"] == true).count(),
        1,
        "up's nodes are not autoscaled: {listed:#}"
    );
    assert_eq!(
        fleet.booted().len(),
        3,
        "the new instance booted from its user data"
    );

    let status = world.run_on(&["status"], &file).expect_code(0);
    assert!(
        status
            .stdout
            .contains(&format!("launched by Ray's autoscaler: {id}")),
        "{}",
        status.stdout
    );

    // rayefa's own tags and the ones it finds its instances by are not Ray's to change.
    // (`nodes` refuses the first kind for every provider, EC2's provider the second.)
    for (tag, code) in [("rayefa-state=ready", 2), ("ray-cluster-name=other", 3)] {
        let refused = nodes(&world, &file, &["set-tags", &id, "--tag", tag], code);
        let key = tag.split('=').next().expect("key");
        assert!(
            refused["stderr"].as_str().expect("text").contains(key),
            "{refused}"
        );
    }
    assert_eq!(moto_tags(&world, &id)["rayefa-cluster"], "ray-on-aws-efa");

    let ended = nodes(&world, &file, &["terminate", &id], 0);
    assert!(
        ended["terminated"][0]["outcome"]
            .as_str()
            .expect("outcome")
            .starts_with("terminated in"),
        "{ended:#}"
    );
    let again = nodes(&world, &file, &["terminate", &id], 0);
    assert_eq!(
        again["terminated"][0]["outcome"], "not found: already terminated",
        "{again:#}"
    );
    assert_eq!(
        world.live_instances().len(),
        2,
        "up's head and worker remain"
    );
}

#[test]
fn a_tag_set_before_ec2_knows_the_new_instance_is_retried() {
    let (world, _fleet, file) = up(72);
    // EC2's eventual consistency: for a while after RunInstances, neither DescribeInstances
    // by id nor CreateTags knows the new instance (moto knows it at once; the proxy plays EC2).
    world
        .proxy
        .hide_new_instances(std::time::Duration::from_secs(4));
    let launched = nodes(&world, &file, &["launch", "--node-type", WORKER], 0);
    let id = launched["nodes"][0]["id"]
        .as_str()
        .expect("an instance id")
        .to_owned();
    nodes(
        &world,
        &file,
        &["set-tags", &id, "--tag", "ray-node-status=setting-up"],
        0,
    );
    assert_eq!(moto_tags(&world, &id)["ray-node-status"], "setting-up");
    let hid = world
        .proxy
        .recorded()
        .into_iter()
        .filter(|r| r.action == "DescribeInstances" || r.action == "CreateTags")
        .any(|r| r.outcome == format!("hid {id}"));
    assert!(hid, "the proxy kept the instance from the first attempts");

    // An instance of no cluster of rayefa's is refused, not tagged.
    let ec2 = world.ec2();
    let stranger = world
        .block_on(
            ec2.run_instances()
                .image_id(&world.x86_ami)
                .instance_type(aws_sdk_ec2::types::InstanceType::M7iXlarge)
                .subnet_id(&world.subnet_id)
                .min_count(1)
                .max_count(1)
                .send(),
        )
        .expect("a stranger instance");
    let stranger = stranger.instances()[0]
        .instance_id()
        .expect("id")
        .to_owned();
    let refused = nodes(
        &world,
        &file,
        &["set-tags", &stranger, "--tag", "ray-node-status=up-to-date"],
        3,
    );
    assert!(
        refused["stderr"]
            .as_str()
            .expect("text")
            .contains("not a live instance of cluster ray-on-aws-efa"),
        "{refused}"
    );
    assert!(!moto_tags(&world, &stranger).contains_key("ray-node-status"));
}

#[test]
fn down_terminates_the_autoscaled_nodes_too() {
    let (world, _fleet, file) = up(73);
    nodes(&world, &file, &["launch", "--node-type", WORKER], 0);
    assert_eq!(world.live_instances().len(), 3);
    world.run_on(&["down"], &file).expect_code(0);
    assert!(world.live_instances().is_empty());
}
