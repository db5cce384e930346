//! Publishing the agent to S3 and handing nodes presigned URLs, against moto's S3 behind the
//! project's proxy: `rayefa publish` uploads an x86_64 and an aarch64 package and writes the
//! manifest, a second run skips both, the user data of each node type carries a presigned
//! URL of its architecture's package that downloads (through the proxy) bytes with the
//! pinned SHA-256, and a tampered URL is refused (by the proxy, which checks signatures and
//! expiry as S3 does; moto checks neither), and the x86_64 node's user data runs for real in
//! a scratch root (curl through the URL, sha256sum, a stand-in dnf). `up` sends every
//! launched node a URL that works, and the head of a cluster that autoscales also rayefa's
//! package, the cluster file and the control secret, which its user data writes. Then the
//! errors: no bucket, no manifest, no package for an architecture, no rayefa package for an
//! autoscaling head, a file that is not a package, S3 refusing an upload, and the cluster
//! file's mistakes.

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
use rayefa_test_support::files::write_executable;
use rayefa_test_support::sha256_hex;
use support::aws_fleet::{Fleet, Machine, run_as_user_data};
use support::aws_proxy::Fault;
use support::aws_world::{Omit, REGION, Run, SEED_CLUSTER_FILE, World};

const BUCKET: &str = "rayefa-agents";
const STORE: &str = "s3://rayefa-agents/builds/v1";

/// The seed's file with Graviton workers (two, so that it does not autoscale: its head needs
/// no rayefa) and the agent store.
fn cluster_file(world: &World, store: &str) -> PathBuf {
    let text = SEED_CLUSTER_FILE
        .replace("InstanceType: i7i.24xlarge", "InstanceType: m8g.24xlarge")
        .replacen("min_workers: 1", "min_workers: 2", 1);
    assert_ne!(text, SEED_CLUSTER_FILE, "the worker type was replaced");
    world.write(
        "cluster.yaml",
        &format!("{text}\nrayefa:\n    agent_store: {store}\n"),
    )
}

/// Stand-ins for what packaging/build makes, with contents of this test's own.
fn package(world: &World, name: &str) -> (PathBuf, String) {
    let content = format!("stand-in for {name}, {:016x}\n", fastrand::u64(..));
    (world.write(name, &content), sha256_hex(content.as_bytes()))
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 scratch path")
}

/// The value of `name='...'` in a user-data script.
fn script_value(script: &str, name: &str) -> String {
    let line = script
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("`{name}=` in the user data:\n{script}"));
    let quoted = &line[name.len() + 1..];
    quoted.trim_matches('\'').to_owned()
}

/// The user data `rayefa user-data` prints for `node_type`.
fn user_data(world: &World, file: &std::path::Path, node_type: &str) -> Run {
    world.run(&[
        "user-data",
        path(file),
        "--node-type",
        node_type,
        "--head-address",
        "127.0.1.4",
    ])
}

/// GET `url` (the proxy's address): status and body.
fn download(world: &World, url: &str) -> (u16, Vec<u8>) {
    let url = url.to_owned();
    world.block_on(async move {
        let response = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .expect("the proxy answers");
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap_or_default().to_vec())
    })
}

/// Runs user data `script` as cloud-init would on an Amazon Linux node, in a scratch root:
/// curl and sha256sum for real, stand-ins for dnf (which checks it got a file and "installs"
/// rayefa-agent) and systemctl. The console output and the stand-ins' calls.
fn boot(world: &World, script: &str) -> (std::process::Output, String) {
    let dir = world
        .dir
        .path()
        .join(format!("node-{:08x}", fastrand::u32(..)));
    let (root, bin, log) = (dir.join("root"), dir.join("bin"), dir.join("calls.log"));
    for d in [root.join("etc"), root.join("tmp"), bin.clone()] {
        std::fs::create_dir_all(d).expect("scratch node");
    }
    std::fs::write(
        root.join("etc/os-release"),
        "ID=\"amzn\"\nID_LIKE=\"fedora\"\n",
    )
    .expect("os-release");
    write_executable(
        &bin.join("dnf"),
        format!(
            "#!/bin/bash\necho \"dnf $*\" >> {log}\ntest -s \"${{@: -1}}\" || exit 1\n\
             name=$(basename \"${{@: -1}}\" .rpm)\n\
             printf '#!/bin/sh\\necho %s 0.1.0\\n' \"$name\" > {bin}/$name\n\
             chmod +x {bin}/$name\n",
            log = log.display(),
            bin = bin.display()
        ),
    );
    write_executable(
        &bin.join("systemctl"),
        format!("#!/bin/bash\necho \"systemctl $*\" >> {}\n", log.display()),
    );
    let output = run_as_user_data(script, &dir, &root, &bin);
    (output, std::fs::read_to_string(log).unwrap_or_default())
}

fn query(url: &str) -> BTreeMap<String, String> {
    let (_, query) = url.split_once('?').expect("a presigned URL has a query");
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

#[test]
fn published_packages_reach_each_node_through_a_presigned_url() {
    let world = World::seed();
    world.create_bucket(BUCKET);
    let file = cluster_file(&world, STORE);
    let (x86, x86_sha) = package(&world, "rayefa-agent-0.1.0-1.x86_64.rpm");
    let (arm, arm_sha) = package(&world, "rayefa-agent-0.1.0-1.aarch64.rpm");

    let first = world
        .run(&["publish", path(&file), path(&x86), path(&arm)])
        .expect_code(0);
    assert_eq!(
        first.stdout.matches("uploaded").count(),
        2,
        "{}",
        first.stdout
    );
    assert!(
        first
            .stdout
            .contains("manifest s3://rayefa-agents/builds/v1/manifest.json: written"),
        "{}",
        first.stdout
    );
    let puts = world.proxy.requests("PutObject").len();
    assert_eq!(puts, 3, "two packages and the manifest");
    let stored = world
        .s3_object(BUCKET, "builds/v1/rayefa-agent-0.1.0-1.aarch64.rpm")
        .expect("the aarch64 package is in moto");
    assert_eq!(sha256_hex(&stored), arm_sha);

    let again = world
        .run(&[
            "publish",
            "--output",
            "json",
            path(&file),
            path(&x86),
            path(&arm),
        ])
        .expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&again.stdout).expect("JSON");
    let outcomes: Vec<&str> = report["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, ["skipped", "skipped"]);
    assert_eq!(report["manifest_written"], false);
    assert_eq!(
        world.proxy.requests("PutObject").len(),
        puts,
        "a second publish uploads nothing"
    );

    let manifest = published_manifest(&world);
    assert_eq!(
        manifest["packages"]["x86_64"]["rpm"]["sha256"],
        x86_sha.as_str()
    );
    assert_eq!(
        manifest["packages"]["aarch64"]["rpm"]["key"],
        "builds/v1/rayefa-agent-0.1.0-1.aarch64.rpm"
    );

    for (node_type, machine, sha) in [
        ("head_node", "x86_64", &x86_sha),
        ("efa_worker_node", "aarch64", &arm_sha),
    ] {
        let script = user_data(&world, &file, node_type).expect_code(0).stdout;
        assert_eq!(script_value(&script, "machine"), machine);
        assert_eq!(script_value(&script, "url"), "", "no single package");
        assert_eq!(
            script_value(&script, "deb_url"),
            "",
            "no .deb was published"
        );
        assert_eq!(&script_value(&script, "rpm_sha256"), sha);
        let url = script_value(&script, "rpm_url");
        assert!(
            url.starts_with(&format!("{}/{BUCKET}/builds/v1/", world.proxy.endpoint())),
            "path-style through the proxy: {url}"
        );
        let params = query(&url);
        assert_eq!(params["X-Amz-Expires"], "10800", "three hours");
        assert_eq!(params["X-Amz-SignedHeaders"], "host");
        assert!(
            params["X-Amz-Credential"].ends_with(&format!("/{REGION}/s3/aws4_request")),
            "{params:?}"
        );
        let (status, body) = download(&world, &url);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(&sha256_hex(&body), sha, "{node_type} gets its own package");
        if machine == std::env::consts::ARCH {
            // The node's own path: curl through the presigned URL, sha256sum, dnf.
            let (output, calls) = boot(&world, &script);
            let console = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{console}");
            assert!(calls.contains("dnf install -y "), "{calls}");
            assert!(
                !console.contains("X-Amz-Signature"),
                "the URL's query stays off the console: {console}"
            );
        }

        let tampered = url.replace("X-Amz-Expires=10800", "X-Amz-Expires=604800");
        let (status, body) = download(&world, &tampered);
        assert_eq!(status, 403, "a longer lifetime than signed is refused");
        assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
        let other_key = if machine == "x86_64" {
            url.replace(".x86_64.rpm?", ".aarch64.rpm?")
        } else {
            url.replace(".aarch64.rpm?", ".x86_64.rpm?")
        };
        assert_ne!(other_key, url);
        let (status, _) = download(&world, &other_key);
        assert_eq!(status, 403, "the URL is good for its own key only");
    }
    let presigned: Vec<String> = world
        .proxy
        .requests("GetObject")
        .into_iter()
        .map(|r| r.outcome)
        .filter(|o| o == "presigned")
        .collect();
    assert_eq!(
        presigned.len(),
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            3
        } else {
            2
        },
        "the two good downloads, and the boot of the node of this machine's architecture"
    );
}

#[test]
fn a_missing_bucket_manifest_or_architecture_is_named() {
    let world = World::seed();
    let file = cluster_file(&world, STORE);
    let (x86, _) = package(&world, "rayefa-agent_0.1.0-1_amd64.deb");

    let run = world
        .run(&["publish", path(&file), path(&x86)])
        .expect_code(3);
    assert!(
        run.stderr
            .contains("the bucket rayefa-agents does not exist"),
        "{}",
        run.stderr
    );

    world.create_bucket(BUCKET);
    let run = user_data(&world, &file, "head_node").expect_code(3);
    assert!(
        run.stderr
            .contains("s3://rayefa-agents/builds/v1 has no manifest.json: publish the agent"),
        "{}",
        run.stderr
    );

    world
        .run(&["publish", path(&file), path(&x86)])
        .expect_code(0);
    let head = user_data(&world, &file, "head_node").expect_code(0).stdout;
    assert_eq!(script_value(&head, "rpm_url"), "");
    assert!(!script_value(&head, "deb_url").is_empty());
    let run = user_data(&world, &file, "efa_worker_node").expect_code(3);
    assert!(
        run.stderr.contains(
            "the instance type runs aarch64, and s3://rayefa-agents/builds/v1 has no agent \
             package for it (it has x86_64)"
        ),
        "{}",
        run.stderr
    );

    world.prepared();
    let run = world.run(&["validate", path(&file)]).expect_code(2);
    assert!(
        run.stdout
            .contains("available_node_types.efa_worker_node.node_config.InstanceType")
            && run.stdout.contains("runs aarch64"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn bad_packages_and_refused_uploads_fail_clearly() {
    let world = World::seed();
    world.create_bucket(BUCKET);
    let file = cluster_file(&world, STORE);
    let (noarch, _) = package(&world, "rayefa-agent-0.1.0-1.noarch.rpm");
    let run = world
        .run(&["publish", path(&file), path(&noarch)])
        .expect_code(2);
    assert!(
        run.stderr.contains("does not say the architecture"),
        "{}",
        run.stderr
    );

    let (one, _) = package(&world, "rayefa-agent-0.1.0-1.x86_64.rpm");
    let (two, _) = package(&world, "rayefa-agent-0.2.0-1.x86_64.rpm");
    let run = world
        .run(&["publish", path(&file), path(&one), path(&two)])
        .expect_code(2);
    assert!(
        run.stderr.contains("are both the x86_64 .rpm package"),
        "{}",
        run.stderr
    );

    let missing = world.dir.path().join("rayefa-agent-0.1.0-1.aarch64.rpm");
    let run = world
        .run(&["publish", path(&file), path(&missing)])
        .expect_code(2);
    assert!(run.stderr.contains("reading "), "{}", run.stderr);

    world.proxy.inject(
        "PutObject",
        Fault::Error {
            status: 403,
            code: "AccessDenied".into(),
            message: "User is not authorized to perform: s3:PutObject".into(),
        },
    );
    let run = world
        .run(&["publish", path(&file), path(&one)])
        .expect_code(3);
    assert!(
        run.stderr
            .contains("uploading s3://rayefa-agents/builds/v1/rayefa-agent-0.1.0-1.x86_64.rpm")
            && run.stderr.contains("403 Forbidden: AccessDenied"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_store_setting_is_checked_with_its_line() {
    let world = World::seed();
    for (store, words) in [
        ("s3://Rayefa_Agents/x", "lowercase letters"),
        ("https://rayefa-agents/x", "s3://BUCKET/PREFIX"),
    ] {
        let file = cluster_file(&world, store);
        let run = world
            .run(&["validate", "--offline", path(&file)])
            .expect_code(2);
        let line = SEED_CLUSTER_FILE.lines().count() + 3;
        let printed = format!("{}{}", run.stdout, run.stderr);
        assert!(
            printed.contains(&format!(
                "cluster.yaml:{line}:18: error: rayefa.agent_store: "
            )) && printed.contains(words),
            "{store}: {}\n{}",
            run.stdout,
            run.stderr
        );
    }
    let both = world.write(
        "both.yaml",
        &format!(
            "{SEED_CLUSTER_FILE}\nrayefa:\n    agent_store: {STORE}\n    agent_package: \
             {{url: 'https://example.invalid/a.rpm', sha256: '{}'}}\n",
            "a".repeat(64)
        ),
    );
    let run = world
        .run(&["validate", "--offline", path(&both)])
        .expect_code(2);
    assert!(
        run.stderr
            .contains("rayefa.agent_store: and rayefa.agent_package are both set"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );

    let without = world.write("plain.yaml", SEED_CLUSTER_FILE);
    let (x86, _) = package(&world, "rayefa-agent-0.1.0-1.x86_64.rpm");
    let run = world
        .run(&["publish", path(&without), path(&x86)])
        .expect_code(2);
    assert!(
        run.stderr.contains("rayefa.agent_store is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn up_gives_every_launched_node_a_working_url() {
    let world = World::build("127.0.51.0/24", Omit::default());
    world.prepared();
    world.create_bucket(BUCKET);
    let _fleet = Fleet::start(
        &world.moto.endpoint(),
        8700,
        Machine::StatusServer,
        world.dir.path().join("fleet"),
    );
    // The seed's cluster autoscales (one worker, at most two); Ray runs as root here, so that
    // the head's files can be given to its user in a scratch root.
    let seed = SEED_CLUSTER_FILE.replace("ssh_user: ec2-user", "ssh_user: root");
    let file = world.write(
        "cluster.yaml",
        &format!(
            "{seed}\nrayefa:\n    agent_store: {STORE}\n    poll:\n        \
             interval: 0.2s\n    timeouts:\n        head_agent: 30s\n        ready: 60s\n"
        ),
    );
    let (x86, x86_sha) = package(&world, "rayefa-agent-0.1.0-1.x86_64.rpm");
    world
        .run(&["publish", path(&file), path(&x86)])
        .expect_code(0);
    let refused = world.run(&["up", path(&file)]).expect_code(3);
    assert!(
        refused.stderr.contains(
            "s3://rayefa-agents/builds/v1 has no rayefa package for it (it has none); the head \
             of a cluster that autoscales runs rayefa"
        ),
        "{}",
        refused.stderr
    );
    assert!(world.proxy.requests("RunInstances").is_empty());

    let (rayefa, rayefa_sha) = package(&world, "rayefa-0.1.0-1.x86_64.rpm");
    let published = world
        .run(&["publish", "--output", "json", path(&file), path(&rayefa)])
        .expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&published.stdout).expect("JSON");
    assert_eq!(report["packages"][0]["package"], "rayefa", "{report:#}");
    let manifest = published_manifest(&world);
    assert_eq!(
        manifest["orchestrator"]["x86_64"]["rpm"]["sha256"],
        rayefa_sha.as_str(),
        "{manifest:#}"
    );
    assert_eq!(
        manifest["packages"]["x86_64"]["rpm"]["sha256"],
        x86_sha.as_str()
    );
    world.run(&["up", path(&file)]).expect_code(0);

    let launches = world.proxy.requests("RunInstances");
    assert_eq!(launches.len(), 2, "head and worker");
    let mut head_script = None;
    for launch in &launches {
        let encoded = launch.param("UserData").expect("user data sent");
        let script = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64"),
        )
        .expect("UTF-8");
        assert_eq!(script_value(&script, "rpm_sha256"), x86_sha);
        let (status, body) = download(&world, &script_value(&script, "rpm_url"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(sha256_hex(&body), x86_sha);
        if launch.param("InstanceType") == Some("m7i.xlarge") {
            head_script = Some(script);
        } else {
            assert!(
                !script.contains("rayefa_rpm_url") && !script.contains("cluster.yaml"),
                "a worker gets nothing of the head's share:\n{script}"
            );
        }
    }
    let head = head_script.expect("the head's launch");
    assert_eq!(script_value(&head, "rayefa_rpm_sha256"), rayefa_sha);
    let (status, body) = download(&world, &script_value(&head, "rayefa_rpm_url"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(sha256_hex(&body), rayefa_sha);

    // The head's own path: both packages installed, the files written for Ray's autoscaler.
    let (output, calls) = boot(&world, &head);
    let console = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{console}");
    assert_eq!(calls.matches("dnf install -y ").count(), 2, "{calls}");
    let root = std::fs::read_dir(world.dir.path())
        .expect("scratch")
        .filter_map(Result::ok)
        .map(|e| e.path().join("root"))
        .find(|r| r.join("etc/rayefa/cluster.yaml").exists())
        .expect("the booted root");
    let written = std::fs::read_to_string(root.join("etc/rayefa/cluster.yaml")).expect("file");
    assert!(
        written.contains("cluster_name: ray-on-aws-efa"),
        "{written}"
    );
    assert!(
        written.contains(&format!("ImageId: {}", world.x86_ami)),
        "the variables are filled in: {written}"
    );
    let secret_file = root.join(format!(
        "var/lib/rayefa-orchestrator/aws/{REGION}/ray-on-aws-efa/control-secret"
    ));
    let secret = std::fs::read_to_string(&secret_file).expect("the control secret");
    let kept = std::fs::read_to_string(world.dir.path().join(format!(
        ".local/state/rayefa/aws/{REGION}/ray-on-aws-efa/control-secret"
    )))
    .expect("the operator's secret");
    assert_eq!(
        secret.trim(),
        kept.trim(),
        "the head launches with the cluster's secret"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secret_file)
        .expect("mode")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "only its owner reads the secret: {mode:o}");
    assert!(
        !console.contains(secret.trim()),
        "the secret stays off the console"
    );

    // What Ray's autoscaler then runs on the head: rayefa with the written file and state
    // directory (credentials from the environment here, from the instance role on EC2).
    let head_file = root.join("etc/rayefa/cluster.yaml");
    let state_dir = root.join("var/lib/rayefa-orchestrator");
    let out = world
        .command(&[
            "nodes",
            "launch",
            path(&head_file),
            "--node-type",
            "efa_worker_node",
            "--tag",
            "ray-node-status=uninitialized",
        ])
        .env("RAYEFA_STATE_DIR", &state_dir)
        .output()
        .expect("rayefa runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let launches = world.proxy.requests("RunInstances");
    assert_eq!(launches.len(), 3, "Ray's worker");
    let encoded = launches[2].param("UserData").expect("user data sent");
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64"),
    )
    .expect("UTF-8");
    assert!(
        script.contains(&format!("control_secret = \"{}\"", secret.trim())),
        "the node Ray added answers `rayefa check` like the rest:\n{script}"
    );
    assert_eq!(script_value(&script, "rpm_sha256"), x86_sha);
}

/// The manifest `rayefa publish` wrote to the store `builds/v1`.
fn published_manifest(world: &World) -> serde_json::Value {
    serde_json::from_slice(
        &world
            .s3_object(BUCKET, "builds/v1/manifest.json")
            .expect("a manifest"),
    )
    .expect("the manifest is JSON")
}
