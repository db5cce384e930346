//! The fleet: a simulated VPC of real systemd nodes. moto (through the project's proxy) holds a
//! VPC `169.254.0.0/16` with the subnet `169.254.100.0/24`; a host bridge sits at
//! `169.254.100.1/24`. For every instance `rayefa up` launches, a container boots with systemd
//! as PID 1 at the instance's private address, and cloud-init runs the instance's real user data
//! from the NoCloud seed: it downloads the real .deb through the presigned URL `rayefa up`
//! gave it, from moto's S3 (where `rayefa publish` put the packages), checks its SHA-256,
//! installs it with apt, writes the configuration and starts the real unit. The agents ask a
//! metadata stand-in on the bridge about their instance, run their steps, and `rayefa up` polls
//! them over the bridge.
//!
//! Run by `tests/fleet/run` (root, systemd-nspawn, the rootfs it builds, the packages
//! `packaging/build` makes); it sets `RAYEFA_FLEET_ROOTFS` and `RAYEFA_FLEET_PACKAGES`.
//! The tests share the bridge and fixed ports: run them with `--test-threads=1`.

#[allow(dead_code)]
mod support {
    pub mod aws_proxy;
    pub mod aws_world;
    pub mod fleet_services;
    pub mod imds;
    pub mod moto;
    pub mod nspawn_fleet;
    pub mod nspawn_node;
    pub mod test_efa_installer;
}

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::aws_world::{Omit, Run, World};
use support::fleet_services::{FileServer, PypiProxy, Relay};
use support::imds::Imds;
use support::nspawn_fleet::{Bridge, HOST_ADDRESS, NspawnFleet, leftovers, wait_for};
use support::nspawn_node::{Image, Node, Power};
use support::test_efa_installer::{TestEfaInstaller, sha256_of};

/// Every step, in the agent's order.
const STEPS: [&str; 6] = [
    "grow-root",
    "install-efa",
    "probe-efa",
    "install-ray",
    "setup-commands",
    "start-ray",
];
/// The agents' status port (the default).
const AGENT_PORT: u16 = 8700;
/// The host's file server on the bridge.
const FILES_PORT: u16 = 8776;
/// The host's PyPI proxy on the bridge.
const PYPI_PORT: u16 = 8777;
/// The host's relay to the S3 endpoint, on the bridge.
const S3_PORT: u16 = 8778;
/// The bucket `rayefa publish` puts the agent packages in, and the cluster file's store.
const BUCKET: &str = "rayefa-fleet";
const AGENT_STORE: &str = "s3://rayefa-fleet/agents";
/// The lifetime of the presigned URLs `up` hands the nodes: three hours.
const PRESIGNED_LIFETIME_SECS: &str = "10800";
/// Plain Ray (no dashboard extras), pinned so that every run installs the same thing.
const RAY_REQUIREMENT: &str = "ray==2.60.0";
/// The host's CA bundle (Debian's `ca-certificates`), which the nodes' pip trusts.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where every node sees the one shared pip cache.
const NODE_PIP_CACHE: &str = "/var/cache/rayefa-fleet-pip";

/// A folder named by an environment variable the run script sets.
fn env_dir(name: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{name} is not set: it names {what}; run the suite with tests/fleet/run")
        });
    assert!(
        path.is_dir(),
        "{name}={} is not a folder ({what})",
        path.display()
    );
    path
}

/// The metadata stand-in's port, as the image's drop-in for rayefa-agent.service has it.
fn imds_port(rootfs: &Path) -> u16 {
    let drop_in = rootfs.join("etc/systemd/system/rayefa-agent.service.d/50-fleet-metadata.conf");
    let text = std::fs::read_to_string(&drop_in)
        .unwrap_or_else(|e| panic!("reading {}: {e}", drop_in.display()));
    let prefix = format!("AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{HOST_ADDRESS}:");
    text.lines()
        .find_map(|l| l.strip_prefix("Environment=")?.strip_prefix(&prefix))
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("{} names no endpoint on {HOST_ADDRESS}", drop_in.display()))
}

/// The agent's packages from `packaging/build --out DIR` (the .deb and the .rpm), each with
/// its SHA-256 from `DIR/SHA256SUMS`, which they must match.
fn agent_packages(packages: &Path) -> Vec<(PathBuf, String)> {
    let sums = std::fs::read_to_string(packages.join("SHA256SUMS"))
        .unwrap_or_else(|e| panic!("{}/SHA256SUMS: {e}", packages.display()));
    let found: Vec<(PathBuf, String)> = sums
        .lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(sum, name)| {
            let file = packages.join(name.trim().trim_start_matches('*'));
            assert_eq!(
                sha256_of(&file),
                sum,
                "{} does not match SHA256SUMS",
                file.display()
            );
            (file, sum.to_owned())
        })
        .collect();
    assert!(
        found
            .iter()
            .any(|(f, _)| f.extension().is_some_and(|e| e == "deb")),
        "no .deb in {}/SHA256SUMS:\n{sums}",
        packages.display()
    );
    found
}

/// The longest a node may take to power off (issue 13.9: Ray used to hold it for 90 s).
const POWER_OFF_LIMIT: Duration = Duration::from_secs(15);

/// Reboots `node` (`systemctl reboot` inside) and answers how long it took to power off: from
/// the request until nspawn exited for the reboot.
fn reboot_timed(node: &Node) -> Duration {
    let ended = node.exits().len();
    let asked = Instant::now();
    node.reboot();
    wait_for(
        Duration::from_secs(120),
        &format!("{} to power off for the reboot", node.name),
        || (node.exits().len() > ended).then_some(()),
    );
    let took = asked.elapsed();
    println!(
        "fleet: {}: powered off for the reboot {:.1} s after it was asked to",
        node.name,
        took.as_secs_f64()
    );
    took
}

/// Which variant of the cluster a test launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Head and two workers without EFA interfaces; no Ray install (install-ray and start-ray
    /// off), a setup command that leaves a mark.
    Plain,
    /// Head without EFA, one worker whose node type has an EFA interface.
    EfaRequired,
    /// Head and two workers with Ray installed from PyPI and started.
    RealRay,
}

/// Everything one test's VPC is made of. Fields drop in order: nodes first, the host's
/// services, the bridge, and moto last.
struct Vpc {
    fleet: NspawnFleet,
    imds: Imds,
    files: FileServer,
    pypi: PypiProxy,
    s3: Relay,
    /// The .deb's SHA-256 as SHA256SUMS has it.
    deb_sha256: String,
    _efa: TestEfaInstaller,
    _bridge: Bridge,
    cluster_file: PathBuf,
    world: World,
}

impl Vpc {
    fn start(variant: Variant) -> Vpc {
        let rootfs = env_dir("RAYEFA_FLEET_ROOTFS", "the image tests/fleet/rootfs builds");
        let packages = env_dir(
            "RAYEFA_FLEET_PACKAGES",
            "the output of packaging/build --out",
        );
        let before = leftovers();
        assert!(
            before.is_empty(),
            "an earlier run left these behind (tests/fleet/run removes them):\n{before:#?}"
        );

        let mut world = World::build_in("169.254.0.0/16", "169.254.100.0/24", Omit::default());
        world.prepared();
        let bridge = Bridge::create();
        let on_bridge = |port| SocketAddr::V4(SocketAddrV4::new(HOST_ADDRESS, port));

        // The nodes reach S3 (moto behind the proxy, on loopback) through the bridge; the
        // orchestrator signs its URLs for the endpoint the nodes use.
        let proxy: SocketAddr = world
            .proxy
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .expect("the proxy's address");
        let s3 = Relay::start(on_bridge(S3_PORT), proxy);
        world.set_env("AWS_ENDPOINT_URL_S3", &s3.url());
        world.create_bucket(BUCKET);
        let packages = agent_packages(&packages);

        let files = FileServer::start(on_bridge(FILES_PORT));
        let efa = TestEfaInstaller::make(&world.dir.path().join("efa"));
        let installer_name = efa
            .tarball
            .file_name()
            .and_then(|n| n.to_str())
            .expect("tarball name")
            .to_owned();
        let installer_url = files.publish(&installer_name, efa.tarball.clone());
        files.publish(&format!("{installer_name}.sig"), efa.signature.clone());
        // Where AWS publishes its key: beside the tarballs. No node carries a key file.
        files.publish("aws-efa-installer.key", efa.public_key.clone());

        let pypi = PypiProxy::start(on_bridge(PYPI_PORT));
        let mut interface_types = BTreeMap::new();
        interface_types.insert("efa_worker_node".to_owned(), vec!["efa".to_owned()]);
        let imds = Imds::start(
            on_bridge(imds_port(&rootfs)),
            &world.moto.endpoint(),
            interface_types,
        );

        let site = world.dir.path().join("site");
        std::fs::create_dir_all(&site).expect("the site layer");
        let mut binds = Vec::new();
        if variant == Variant::RealRay {
            // The nodes reach PyPI through this machine, and trust what it trusts: where the
            // machine's egress re-signs TLS (a CI sandbox), its CA is in the host's bundle, as
            // a site's own CA would be in a site's image.
            let certs = site.join("etc/ssl/certs");
            std::fs::create_dir_all(&certs).expect("site /etc/ssl/certs");
            std::fs::copy(HOST_CA_BUNDLE, certs.join("ca-certificates.crt"))
                .unwrap_or_else(|e| panic!("copying {HOST_CA_BUNDLE}: {e}"));
            let cache = PathBuf::from("/var/cache/rayefa/fleet-pip");
            std::fs::create_dir_all(&cache).expect("the shared pip cache");
            binds.push((cache, NODE_PIP_CACHE.to_owned()));
        }
        let fleet = NspawnFleet::start(
            &world.moto.endpoint(),
            Image {
                rootfs,
                site,
                binds,
            },
        );

        let yaml = cluster_yaml(
            variant,
            &installer_url,
            &efa.sha256,
            &efa.fingerprint,
            &pypi.url(),
        );
        let cluster_file = world.write("fleet.yaml", &yaml);
        world.set_env("CLUSTER_NAME", "fleet");
        let mut publish = vec!["publish", cluster_file.to_str().expect("UTF-8 path")];
        publish.extend(
            packages
                .iter()
                .map(|(file, _)| file.to_str().expect("UTF-8 path")),
        );
        let published = world.run(&publish);
        assert_eq!(
            published.code, 0,
            "rayefa publish failed\n{}\n{}",
            published.stdout, published.stderr
        );
        let deb_sha256 = packages
            .iter()
            .find(|(file, _)| file.extension().is_some_and(|e| e == "deb"))
            .map(|(_, sum)| sum.clone())
            .expect("a .deb");
        Vpc {
            fleet,
            imds,
            files,
            pypi,
            s3,
            deb_sha256,
            _efa: efa,
            _bridge: bridge,
            cluster_file,
            world,
        }
    }

    /// `rayefa ARGS CLUSTER_FILE`.
    fn rayefa(&self, args: &[&str]) -> Run {
        self.world.run_on(args, &self.cluster_file)
    }

    /// `rayefa up`, timed.
    fn up(&self, timeout: &str) -> (Run, Duration) {
        let started = Instant::now();
        let run = self.rayefa(&["up", "--timeout", timeout]);
        (run, started.elapsed())
    }

    /// Panics with `message`, `run`'s output and every node's diagnostics unless `ok`.
    fn check(&self, ok: bool, message: &str, run: Option<&Run>) {
        if ok {
            return;
        }
        let output = run.map_or(String::new(), |r| {
            format!(
                "--- rayefa exit {}\n--- stdout\n{}\n--- stderr\n{}\n",
                r.code, r.stdout, r.stderr
            )
        });
        panic!(
            "{message}\n{output}--- file server\n{:#?}\n{}",
            self.files.served(),
            self.fleet.diagnostics()
        );
    }

    /// Every node installed its agent from the store through a presigned URL: its user data
    /// has a signed, three-hour URL of the published .deb on the bridge's S3 endpoint and the
    /// SHA-256 SHA256SUMS has, cloud-init downloaded from that URL, the node connected to the
    /// endpoint, and the proxy (which checks presigned URLs as S3 does) let one presigned GET
    /// of the .deb through per node.
    fn assert_agents_came_from_the_store(&self) {
        let nodes = self.fleet.nodes();
        let mut objects = Vec::new();
        for node in &nodes {
            let script = &node.user_data;
            assert_eq!(
                script_value(script, "url"),
                "",
                "{}: not the store's form",
                node.name
            );
            let url = script_value(script, "deb_url");
            let (object, query) = url
                .split_once('?')
                .unwrap_or_else(|| panic!("{}: deb_url is not presigned: {url}", node.name));
            let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            assert!(
                params.get("X-Amz-Signature").is_some_and(|s| s.len() == 64)
                    && params.get("X-Amz-Expires").map(String::as_str)
                        == Some(PRESIGNED_LIFETIME_SECS),
                "{}: deb_url is not presigned for three hours: {params:?}",
                node.name
            );
            assert!(
                object.starts_with(&format!("{}/{BUCKET}/agents/", self.s3.url()))
                    && object.ends_with(".deb"),
                "{}: deb_url is not the published .deb on the bridge's endpoint: {object}",
                node.name
            );
            assert_eq!(
                script_value(script, "deb_sha256"),
                self.deb_sha256,
                "{}: the pinned SHA-256 is not SHA256SUMS's",
                node.name
            );
            let console = node
                .read_file("/var/log/cloud-init-output.log")
                .unwrap_or_default();
            self.check(
                console.contains(&format!(
                    "rayefa: downloading the agent package from {object}\n"
                )) && !console.contains("X-Amz-Signature"),
                &format!(
                    "{}: cloud-init did not download from {object} (or printed the URL's \
                     query):\n{console}",
                    node.name
                ),
                None,
            );
            assert!(
                self.s3
                    .peers()
                    .iter()
                    .any(|p| p.ip() == std::net::IpAddr::V4(node.address)),
                "{} never connected to the S3 endpoint: {:?}",
                node.name,
                self.s3.peers()
            );
            objects.push(object.trim_start_matches(&self.s3.url()).to_owned());
        }
        let gets = self.world.proxy.requests("GetObject");
        for object in &objects {
            let presigned = gets
                .iter()
                .filter(|g| g.param("path") == Some(object.as_str()) && g.outcome == "presigned")
                .count();
            assert_eq!(
                presigned,
                objects.iter().filter(|o| *o == object).count(),
                "one presigned GET of {object} per node: {gets:#?}"
            );
        }
    }

    /// The one node of `node_type`, or all of them.
    fn nodes(&self, node_type: &str, count: usize) -> Vec<Arc<Node>> {
        let nodes = self.fleet.of_type(node_type);
        self.check(
            nodes.len() == count,
            &format!("expected {count} {node_type} nodes, booted {}", nodes.len()),
            None,
        );
        nodes
    }

    /// `rayefa down`, then every container stops and moto has no live instance.
    fn down(&self) {
        let down = self.rayefa(&["down"]);
        self.check(down.code == 0, "rayefa down failed", Some(&down));
        for node in self.fleet.nodes() {
            wait_for(
                Duration::from_secs(180),
                &format!("{} to shut down", node.name),
                || (node.power() == Power::Off).then_some(()),
            );
            self.check(
                node.exits().last() == Some(&0),
                &format!("{} did not power off cleanly", node.name),
                None,
            );
            println!("fleet: {}: {:?}", node.name, node.notes());
        }
        assert!(
            self.world.live_instances().is_empty(),
            "instances left after down"
        );
    }

    /// [`Vpc::down`], then the whole VPC is taken apart: nothing of the fleet may be left on
    /// the host (bridges, namespaces, cgroups, mounts, processes, files).
    fn down_and_leave_nothing_behind(self) {
        self.down();
        drop(self);
        let left = leftovers();
        assert!(left.is_empty(), "left behind:\n{left:#?}");
    }
}

/// Asserts that `up`'s table has a row for `node` with its type, address, `state` and `step`.
fn assert_table_row(up: &Run, node: &Node, state: &str, step: Option<&str>) {
    let address = node.address.to_string();
    let row = up
        .stdout
        .lines()
        .find(|l| l.contains(&format!(" {address} ")))
        .unwrap_or_else(|| panic!("no row for {address} in up's table:\n{}", up.stdout));
    let cells: Vec<&str> = row
        .split(['│', '┆'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert!(
        cells.contains(&node.node_type.as_str())
            && cells.contains(&state)
            && step.is_none_or(|s| cells.contains(&s)),
        "{}'s row should say {}, {state}, {step:?}: {row}\n{}",
        node.name,
        node.node_type,
        up.stdout
    );
}

/// The cluster file of a variant. `${VAR}` are the seed guide's variables the world sets.
fn cluster_yaml(
    variant: Variant,
    installer_url: &str,
    installer_sha256: &str,
    key_fingerprint: &str,
    pypi_proxy: &str,
) -> String {
    let node_config = |group: &str| {
        format!(
            "            InstanceType: m5.large\n\
             \x20           ImageId: ${{X86_AMI_ID}}\n\
             \x20           SubnetId: ${{PRIV_SUBNET_ID}}\n\
             \x20           SecurityGroupIds: [\"${{{group}}}\"]\n\
             \x20           IamInstanceProfile:\n\
             \x20               Name: ray-instance-profile\n"
        )
    };
    let mut text = format!(
        "cluster_name: ${{CLUSTER_NAME}}\n\
         provider:\n\
         \x20   type: aws\n\
         \x20   region: ${{AWS_REGION}}\n\
         \x20   availability_zone: ${{AWS_REGION}}a\n\
         \x20   use_internal_ips: true\n\
         \x20   cache_stopped_nodes: false\n\
         max_workers: 2\n\
         head_node_type: head_node\n\
         available_node_types:\n\
         \x20   head_node:\n\
         \x20       resources: {{\"CPU\": 1}}\n\
         \x20       min_workers: 0\n\
         \x20       max_workers: 0\n\
         \x20       node_config:\n{}",
        node_config("HEAD_SG_ID")
    );
    if variant == Variant::EfaRequired {
        text.push_str(
            "    efa_worker_node:\n\
             \x20       min_workers: 1\n\
             \x20       max_workers: 1\n\
             \x20       node_config:\n\
             \x20           InstanceType: c5n.18xlarge\n\
             \x20           ImageId: ${X86_AMI_ID}\n\
             \x20           NetworkInterfaces:\n\
             \x20               - DeviceIndex: 0\n\
             \x20                 InterfaceType: efa\n\
             \x20                 Groups: [\"${WORKER_SG_ID}\"]\n\
             \x20                 SubnetId: ${PRIV_SUBNET_ID}\n\
             \x20           Placement:\n\
             \x20               GroupName: ray-placement-group\n\
             \x20           IamInstanceProfile:\n\
             \x20               Name: ray-instance-profile\n",
        );
    } else {
        text.push_str(&format!(
            "    worker_node:\n\
             \x20       resources: {{\"CPU\": 1}}\n\
             \x20       min_workers: 2\n\
             \x20       max_workers: 2\n\
             \x20       node_config:\n{}",
            node_config("WORKER_SG_ID")
        ));
    }
    // A mark per node that the setup commands ran, and how often.
    text.push_str(
        "setup_commands:\n\
         \x20   - echo \"setup on $(hostname)\" >> /var/tmp/fleet-setup-ran\n",
    );
    if variant == Variant::RealRay {
        // The sandbox's hard NOFILE limit is below Ray's `ulimit -n 65536`; the unit's
        // LimitNOFILE already gives Ray its soft limit. Small object stores and one CPU each:
        // three nodes share two cores. The nodes have no default route, so Ray cannot find
        // its address by routing: it is the node's only one.
        text.push_str(
            "head_start_ray_commands:\n\
             \x20   - ray stop\n\
             \x20   - ray start --head --port=6379 --object-manager-port=8076 --node-ip-address=$(hostname -I | cut -d' ' -f1) --num-cpus=1 --object-store-memory=100000000 --include-dashboard=false --disable-usage-stats\n\
             worker_start_ray_commands:\n\
             \x20   - ray stop\n\
             \x20   - ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076 --node-ip-address=$(hostname -I | cut -d' ' -f1) --num-cpus=1 --object-store-memory=100000000 --disable-usage-stats\n",
        );
    }
    let steps = match variant {
        Variant::RealRay => String::new(),
        _ => "    steps:\n        install-ray: false\n        start-ray: false\n".to_owned(),
    };
    let packages = match variant {
        Variant::RealRay => format!(
            "    packages:\n\
             \x20       python: [\"{RAY_REQUIREMENT}\"]\n\
             \x20       pip_args: [\"--proxy\", \"{pypi_proxy}\", \"--cert\", \"{HOST_CA_BUNDLE}\", \"--cache-dir\", \"{NODE_PIP_CACHE}\"]\n\
             \x20   steps:\n\
             \x20       install-ray: {{timeout_secs: 1200}}\n"
        ),
        _ => String::new(),
    };
    text.push_str(&format!(
        "rayefa:\n\
         \x20   agent_store: {AGENT_STORE}\n\
         \x20   efa:\n\
         \x20       installer_url: {installer_url}\n\
         \x20       installer_sha256: {installer_sha256}\n\
         \x20       fingerprint: \"{key_fingerprint}\"\n\
         {steps}{packages}\
         \x20   poll:\n\
         \x20       interval: 500ms\n"
    ));
    text
}

/// Seconds from `origin` to `epoch_secs` (seconds since the Unix epoch).
fn since(origin: SystemTime, epoch_secs: f64) -> f64 {
    epoch_secs
        - origin
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
}

/// Where each node's time to ready went, in seconds after `up` began (`origin`), printed one
/// line per node: the container's first journal entry (boot), cloud-init's final stage
/// starting, the user data downloading the package and having installed it, the agent's
/// READY=1, and each step's start and end from `/v1/status`. install-ray is split by what its
/// parts leave on disk: uv's binary, the virtualenv's completion mark, and the `INSTALLER`
/// file uv writes into Ray's dist-info.
fn print_phases(vpc: &Vpc, origin: SystemTime) {
    let mut nodes = vpc.fleet.nodes();
    nodes.sort_by_key(|n| (n.node_type != "head_node", n.address));
    for node in &nodes {
        let journal = node.exec_ok(&[
            "journalctl",
            "--no-pager",
            "-q",
            "-b",
            "0",
            "-o",
            "short-unix",
        ]);
        let first = |needle: &str| {
            journal
                .lines()
                .find(|l| l.contains(needle))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|t| t.parse::<f64>().ok())
                .map_or("-".to_owned(), |t| format!("{:.1}", since(origin, t)))
        };
        let boot = journal
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|t| t.parse::<f64>().ok())
            .map_or("-".to_owned(), |t| format!("{:.1}", since(origin, t)));
        let doc = status_of(node);
        let span = |name: &str| {
            let entry = step(&doc, name);
            let at = |key: &str| {
                entry[key].as_u64().map_or("-".to_owned(), |ms| {
                    format!("{:.1}", since(origin, ms as f64 / 1000.0))
                })
            };
            // Only the latest attempt's start: an earlier one shows as more attempts.
            format!(
                "{}..{} ({} attempt{})",
                at("started_at_ms"),
                at("finished_at_ms"),
                entry["attempts"],
                if entry["attempts"] == 1 { "" } else { "s" }
            )
        };
        let marks = node.exec_text(&[
            "sh",
            "-c",
            "stat -c %.3Y /var/lib/rayefa/uv/bin/uv /opt/rayefa/venv/.rayefa-complete \
             /opt/rayefa/venv/lib/python3*/site-packages/ray-*.dist-info/INSTALLER",
        ]);
        let marks: Vec<String> = marks
            .lines()
            .map(|t| {
                t.trim()
                    .parse::<f64>()
                    .map_or("-".to_owned(), |t| format!("{:.1}", since(origin, t)))
            })
            .collect();
        println!(
            "fleet: phases of {} ({}), s after up began: boot {boot}, cloud-final {}, \
             package download {}, package installed {}, agent ready {}; grow-root {}; \
             install-ray {} (uv installed {}, virtualenv made {}, Ray installed {}); \
             setup-commands {}; start-ray {}",
            node.name,
            node.node_type,
            first("Starting cloud-final.service"),
            first("rayefa: downloading the agent package"),
            first("rayefa: wrote /etc/rayefa/agent.toml"),
            first("Started rayefa-agent.service"),
            span("grow-root"),
            span("install-ray"),
            marks.first().map_or("-", String::as_str),
            marks.get(1).map_or("-", String::as_str),
            marks.get(2).map_or("-", String::as_str),
            span("setup-commands"),
            span("start-ray"),
        );
    }
}

/// The value of `name='...'` in a user-data script.
fn script_value(script: &str, name: &str) -> String {
    let line = script
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no `{name}=` in the user data:\n{script}"));
    line[name.len() + 1..].trim_matches('\'').to_owned()
}

/// `GET /v1/status` from the host, over the bridge.
fn status_of(node: &Node) -> serde_json::Value {
    let addr = SocketAddr::V4(SocketAddrV4::new(node.address, AGENT_PORT));
    let body = http_get(addr, "/v1/status")
        .unwrap_or_else(|e| panic!("GET http://{addr}/v1/status: {e}\n{}", node.diagnostics()));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("status of {}: {e}: {body}", node.name))
}

/// The body of a 200 answer to `GET path`.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    Ok(body.to_owned())
}

/// A step's entry in a status document.
fn step<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {doc:#}"))
}

/// The node's state (`ready`, `failed`, ...).
fn state_of(doc: &serde_json::Value) -> String {
    doc["state"].as_str().unwrap_or_default().to_owned()
}

/// `journalctl -u rayefa-agent` inside the node (every boot).
fn agent_journal(node: &Node) -> String {
    node.exec_ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "rayefa-agent",
    ])
}

/// How many times each step started an attempt, from the agent's journal.
fn attempts_in_journal(journal: &str) -> BTreeMap<&'static str, usize> {
    STEPS
        .iter()
        .map(|step| {
            let marker = format!("{step}: attempt ");
            (
                *step,
                journal.lines().filter(|l| l.contains(&marker)).count(),
            )
        })
        .collect()
}

/// The steps that did their work (succeeded, or found it done), with (state, start, attempts).
/// A restarted agent keeps these and decides the others again (a skipped step's reason, such
/// as "no EFA interface", is looked at anew), so these are what must not change.
fn completed_steps(
    doc: &serde_json::Value,
) -> BTreeMap<String, (String, serde_json::Value, serde_json::Value)> {
    STEPS
        .iter()
        .map(|name| step(doc, name))
        .filter(|s| matches!(s["state"].as_str(), Some("succeeded" | "already-done")))
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                (
                    s["state"].as_str().unwrap_or_default().to_owned(),
                    s["started_at_ms"].clone(),
                    s["attempts"].clone(),
                ),
            )
        })
        .collect()
}

/// After `event` (the crash, the reboot) `node` is ready again and has redone nothing:
/// its completed steps are still `before`, the journal holds one attempt of each step that
/// ran, and the setup command ran once.
fn assert_resumed_without_rerun(
    vpc: &Vpc,
    node: &Node,
    skipped: &[&str],
    before: &BTreeMap<String, (String, serde_json::Value, serde_json::Value)>,
    event: &str,
) {
    assert_ready_node(vpc, node, skipped);
    assert_eq!(
        &completed_steps(&status_of(node)),
        before,
        "steps were run again after the {event}"
    );
    let attempts = attempts_in_journal(&agent_journal(node));
    for name in ["grow-root", "setup-commands"] {
        assert_eq!(
            attempts[name],
            1,
            "{name} ran again after the {event}: {attempts:?}\n{}",
            node.diagnostics()
        );
    }
    let setup_runs = node
        .exec_ok(&["cat", "/var/tmp/fleet-setup-ran"])
        .lines()
        .count();
    assert_eq!(
        setup_runs, 1,
        "the setup commands ran again after the {event}"
    );
}

/// The agent's main pid inside the node, 0 when it is not running.
fn main_pid(node: &Node) -> u32 {
    node.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "--value",
        "rayefa-agent",
    ])
    .trim()
    .parse()
    .unwrap_or(0)
}

/// Asserts what every ready node shows inside and from the host: the unit's Status line, a
/// journal with every step, and a status document that agrees with both.
fn assert_ready_node(vpc: &Vpc, node: &Node, skipped: &[&str]) {
    let status = node.exec_text(&["systemctl", "status", "--no-pager", "rayefa-agent"]);
    vpc.check(
        status.contains("Active: active (running)") && status.contains("Status: \"ready\""),
        &format!(
            "{}: systemctl status does not say active and ready:\n{status}",
            node.name
        ),
        None,
    );
    let journal = agent_journal(node);
    let doc = status_of(node);
    vpc.check(
        state_of(&doc) == "ready",
        &format!("{}: /v1/status is not ready: {doc:#}", node.name),
        None,
    );
    assert_eq!(doc["node"]["node_type"], node.node_type, "{doc:#}");
    assert_eq!(
        doc["facts"]["ec2"]["instance_id"],
        node.instance_id.as_str(),
        "{doc:#}"
    );
    assert_eq!(
        doc["facts"]["ec2"]["private_ip"],
        node.address.to_string(),
        "{doc:#}"
    );
    for name in STEPS {
        let entry = step(&doc, name);
        let state = entry["state"].as_str().unwrap_or_default();
        // The root file system of a container is an overlay: nothing to grow, which the step
        // finds in its check and reports as already done.
        let (wanted, logged) = if skipped.contains(&name) {
            ("skipped", vec![format!("{name}: skipped")])
        } else if name == "grow-root" {
            (
                "already-done",
                vec![
                    format!("{name}: attempt 1 of"),
                    format!("{name}: already done"),
                ],
            )
        } else {
            (
                "succeeded",
                vec![
                    format!("{name}: attempt 1 of"),
                    format!("{name}: succeeded"),
                ],
            )
        };
        vpc.check(
            state == wanted,
            &format!("{}: {name} is {state}, not {wanted}: {entry:#}", node.name),
            None,
        );
        let missing: Vec<_> = logged
            .iter()
            .filter(|l| !journal.contains(l.as_str()))
            .collect();
        vpc.check(
            missing.is_empty(),
            &format!(
                "{}: the agent's journal lacks {missing:?}:\n{journal}",
                node.name
            ),
            None,
        );
    }
    let grow = &step(&doc, "grow-root")["detail"];
    assert_eq!(grow["fs_type"], "overlay", "{}: {grow:#}", node.name);
    assert!(
        grow["nothing_to_grow"].is_string(),
        "{}: {grow:#}",
        node.name
    );
}

#[test]
#[ignore = "needs root, systemd-nspawn and the fleet rootfs; run by tests/fleet/run"]
fn fleet_three_nodes_boot_from_user_data_survive_a_crash_and_a_reboot_and_go_down() {
    let vpc = Vpc::start(Variant::Plain);
    let (up, took) = vpc.up("5m");
    println!(
        "fleet: `rayefa up` to all-ready, 3 nodes, no Ray install: {:.1} s",
        took.as_secs_f64()
    );
    vpc.check(up.code == 0, "rayefa up did not end all-ready", Some(&up));
    let head = vpc.nodes("head_node", 1);
    let workers = vpc.nodes("worker_node", 2);
    // No EFA interface and mode auto: both EFA steps skip; Ray is off in this variant.
    let skipped = ["install-efa", "probe-efa", "install-ray", "start-ray"];
    for node in head.iter().chain(&workers) {
        assert_table_row(&up, node, "ready", None);
    }
    for node in head.iter().chain(&workers) {
        assert_ready_node(&vpc, node, &skipped);
        let mark = node.exec_ok(&["cat", "/var/tmp/fleet-setup-ran"]);
        assert_eq!(
            mark.trim(),
            format!("setup on {}", node.name),
            "{}",
            node.name
        );
    }
    vpc.assert_agents_came_from_the_store();
    assert!(
        vpc.imds
            .asked()
            .iter()
            .any(|a| a.path == "/latest/api/token" && a.status == 200),
        "no node asked the metadata stand-in for a token"
    );
    let status = vpc.rayefa(&["status", "--output", "json"]);
    vpc.check(status.code == 0, "rayefa status failed", Some(&status));
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(doc["outcome"], "ready", "{doc:#}");

    // SIGKILL: systemd restarts the agent, which resumes without running a step again.
    let crashed = &workers[0];
    let before = completed_steps(&status_of(crashed));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["grow-root", "setup-commands"],
        "{before:?}"
    );
    let pid = main_pid(crashed);
    assert!(pid > 0, "{}: no agent running", crashed.name);
    crashed.exec_ok(&["kill", "-KILL", &pid.to_string()]);
    wait_for(
        Duration::from_secs(60),
        "systemd to restart the killed agent",
        || {
            let now = main_pid(crashed);
            (now != 0
                && now != pid
                && http_get(
                    SocketAddr::V4(SocketAddrV4::new(crashed.address, AGENT_PORT)),
                    "/readyz",
                )
                .is_ok())
            .then_some(())
        },
    );
    let restarts = crashed.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "NRestarts",
        "--value",
        "rayefa-agent",
    ]);
    assert_eq!(restarts.trim(), "1", "{}", crashed.diagnostics());
    assert_resumed_without_rerun(&vpc, crashed, &skipped, &before, "crash");

    // Reboot: the node comes back from its own disk; the agent resumes from its journal.
    let rebooted = &workers[1];
    let before = completed_steps(&status_of(rebooted));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["grow-root", "setup-commands"],
        "{before:?}"
    );
    let took = reboot_timed(rebooted);
    assert!(
        took < POWER_OFF_LIMIT,
        "{} took {took:?} to power off\n{}",
        rebooted.name,
        rebooted.diagnostics()
    );
    wait_for(
        Duration::from_secs(120),
        "the rebooted node to boot again",
        || (rebooted.boots() == 2 && rebooted.leader().is_some()).then_some(()),
    );
    assert_eq!(rebooted.exits(), [133], "nspawn did not exit for a reboot");
    wait_for(
        Duration::from_secs(120),
        "the rebooted node's agent to be ready",
        || {
            http_get(
                SocketAddr::V4(SocketAddrV4::new(rebooted.address, AGENT_PORT)),
                "/readyz",
            )
            .ok()
        },
    );
    let boots = rebooted.exec_ok(&["journalctl", "--no-pager", "--list-boots"]);
    assert_eq!(
        boots
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("BOOT ID"))
            .count(),
        2,
        "{boots}"
    );
    assert_resumed_without_rerun(&vpc, rebooted, &skipped, &before, "reboot");
    let status = vpc.rayefa(&["status", "--output", "json"]);
    vpc.check(
        status.code == 0,
        "rayefa status failed after the crash and the reboot",
        Some(&status),
    );

    vpc.down_and_leave_nothing_behind();
}

#[test]
#[ignore = "needs root, systemd-nspawn and the fleet rootfs; run by tests/fleet/run"]
fn fleet_a_node_type_with_efa_interfaces_fails_on_a_node_without_efa_and_says_why() {
    let vpc = Vpc::start(Variant::EfaRequired);
    let (up, _) = vpc.up("5m");
    vpc.check(
        up.code == 1,
        "rayefa up should end with a failed node (exit 1)",
        Some(&up),
    );
    let head = &vpc.nodes("head_node", 1)[0];
    let worker = &vpc.nodes("efa_worker_node", 1)[0];
    vpc.assert_agents_came_from_the_store();

    // The head has no EFA interface: mode auto skips both EFA steps.
    let doc = status_of(head);
    assert_eq!(
        doc["facts"]["ec2"]["interface_types"],
        serde_json::json!(["interface"]),
        "{doc:#}"
    );
    assert_eq!(state_of(&doc), "ready", "{doc:#}");
    for name in ["install-efa", "probe-efa"] {
        assert_eq!(step(&doc, name)["state"], "skipped", "{doc:#}");
    }

    // The worker's node type has an EFA interface: EFA is required. The signed installer is
    // verified and runs; the probe finds no EFA device and fails the node, saying so.
    let doc = status_of(worker);
    assert_eq!(
        doc["facts"]["ec2"]["interface_types"],
        serde_json::json!(["efa"]),
        "{doc:#}"
    );
    vpc.check(
        state_of(&doc) == "failed",
        &format!("the EFA worker is not failed: {doc:#}"),
        Some(&up),
    );
    assert_eq!(step(&doc, "install-efa")["state"], "succeeded", "{doc:#}");
    let probe = step(&doc, "probe-efa");
    assert_eq!(probe["state"], "failed", "{doc:#}");
    let error = probe["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no EFA PCI device") && error.contains("1 expected"),
        "probe-efa's error does not name the cause: {error}"
    );
    // Setup commands run beside the EFA steps; Ray is not started on a node whose EFA failed.
    let start = step(&doc, "start-ray");
    assert_eq!(start["state"], "blocked", "{doc:#}");
    assert_eq!(start["by"], "probe-efa", "{doc:#}");
    let status = worker.exec_text(&["systemctl", "status", "--no-pager", "rayefa-agent"]);
    assert!(status.contains("Status: \"failed: probe-efa: "), "{status}");
    let journal = agent_journal(worker);
    assert!(journal.contains("install-efa: succeeded"), "{journal}");
    assert!(journal.contains("no EFA PCI device"), "{journal}");
    assert_table_row(&up, head, "ready", None);
    assert_table_row(&up, worker, "failed", Some("probe-efa"));
    assert!(
        worker
            .read_file("/opt/amazon/efa_installed_packages")
            .is_some_and(|m| m.contains("1.45.1")),
        "the test installer did not run on the worker"
    );
    let fetched = |suffix: &str| {
        vpc.files
            .served()
            .iter()
            .any(|s| s.path.ends_with(suffix) && s.status == 200)
    };
    assert!(
        fetched(".tar.gz.sig"),
        "the worker did not fetch the installer's signature"
    );
    // The node had no key file: it fetched the key from beside the installer and trusted it
    // for the fingerprint the cluster file gave it.
    assert!(
        fetched("/aws-efa-installer.key"),
        "the worker did not fetch the signing key from beside the installer"
    );
    let install = step(&doc, "install-efa");
    assert_eq!(
        install["detail"]["public_key"],
        format!("http://{HOST_ADDRESS}:{FILES_PORT}/aws-efa-installer.key"),
        "{install:#}"
    );
    assert_eq!(
        worker.read_file("/etc/rayefa/aws-efa-installer.key"),
        None,
        "the node should carry no key file"
    );

    vpc.down_and_leave_nothing_behind();
}

#[test]
#[ignore = "needs root, systemd-nspawn and the fleet rootfs; run by tests/fleet/run"]
fn fleet_three_nodes_install_ray_from_pypi_and_form_one_cluster() {
    let vpc = Vpc::start(Variant::RealRay);
    let began = SystemTime::now();
    let (up, took) = vpc.up("25m");
    println!(
        "fleet: `rayefa up` to all-ready, 3 nodes, real Ray from PyPI: {:.1} s",
        took.as_secs_f64()
    );
    vpc.check(up.code == 0, "rayefa up did not end all-ready", Some(&up));
    print_phases(&vpc, began);
    let head = &vpc.nodes("head_node", 1)[0];
    let workers = vpc.nodes("worker_node", 2);
    for node in std::iter::once(head).chain(&workers) {
        assert_table_row(&up, node, "ready", None);
        assert_ready_node(&vpc, node, &["install-efa", "probe-efa"]);
        // uv made the virtualenv, with pip in it for the users' own installs.
        let doc = status_of(node);
        let made_with = &step(&doc, "install-ray")["detail"]["virtualenv_made_with"];
        assert!(
            made_with
                .as_str()
                .is_some_and(|m| m.ends_with("(uv venv --seed)")),
            "{}: virtualenv made with {made_with}",
            node.name
        );
        node.exec_ok(&["/opt/rayefa/venv/bin/python", "-m", "pip", "--version"]);
    }
    vpc.assert_agents_came_from_the_store();
    let tunnels = vpc.pypi.tunnels();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| t.allowed),
        "the nodes should reach PyPI, and only PyPI, through the proxy: {tunnels:#?}"
    );

    let expected_addresses: Vec<String> = std::iter::once(head)
        .chain(&workers)
        .map(|n| n.address.to_string())
        .collect();
    let listed = wait_for(
        Duration::from_secs(120),
        "ray status on the head to list every node",
        || {
            let out = head.exec(&["/opt/rayefa/venv/bin/ray", "status"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let active = text.split("Pending:").next().unwrap_or_default();
            (out.status.success() && active.matches(" node_").count() == 3).then_some(text)
        },
    );
    // Each node's address is in Ray's own view of the cluster.
    let nodes = head.exec_ok(&[
        "/opt/rayefa/venv/bin/python",
        "-c",
        "import ray; ray.init(address='auto', logging_level='ERROR'); print('\\n'.join(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))",
    ]);
    let mut expected = expected_addresses.clone();
    expected.sort();
    assert_eq!(
        nodes.lines().map(str::to_owned).collect::<Vec<_>>(),
        expected,
        "ray status:\n{listed}"
    );

    // Power-off with Ray running: rayefa-ray-stop.service stops it, so systemd's final
    // SIGTERM finds nothing to wait for. After the boot the agent starts Ray again.
    let rebooted = &workers[0];
    let took = reboot_timed(rebooted);
    vpc.check(
        took < POWER_OFF_LIMIT,
        &format!(
            "{} took {took:?} to power off with Ray running",
            rebooted.name
        ),
        None,
    );
    wait_for(
        Duration::from_secs(120),
        "the rebooted Ray worker to boot again",
        || (rebooted.boots() == 2 && rebooted.leader().is_some()).then_some(()),
    );
    wait_for(
        Duration::from_secs(300),
        "the rebooted Ray worker's agent to be ready",
        || {
            http_get(
                SocketAddr::V4(SocketAddrV4::new(rebooted.address, AGENT_PORT)),
                "/readyz",
            )
            .ok()
        },
    );
    // The journal of both boots: the unit was stopped (ray stop ran) at the power-off.
    let journal = rebooted.exec_ok(&["journalctl", "--no-pager", "-u", "rayefa-ray-stop"]);
    assert!(
        journal.contains("Stopping") || journal.contains("Stopped"),
        "rayefa-ray-stop did not run at power-off:\n{journal}"
    );
    // Every node reports the Ray it installed, and all the same one.
    for node in std::iter::once(head).chain(&workers) {
        let doc = status_of(node);
        assert_eq!(
            step(&doc, "install-ray")["detail"]["ray_version"],
            "2.60.0",
            "{}",
            node.name
        );
    }
    let verbose = vpc.rayefa(&["status", "-v"]);
    vpc.check(
        verbose.code == 0
            && verbose.stdout.contains("RAY")
            && verbose.stdout.matches("2.60.0").count() == 3,
        "rayefa status -v does not show each node's Ray version",
        Some(&verbose),
    );

    vpc.down_and_leave_nothing_behind();
}

/// `rayefa check` between fleet nodes over the bridge, through libfabric's tcp provider. The
/// image carries Debian's libfabric1 and libfabric-bin (tests/fleet/rootfs); on EC2 the EFA
/// installer provides libfabric (under /opt/amazon/efa) with its efa and tcp providers.
mod fabric_check {
    use super::support::nspawn_fleet::PREFIX_LEN;
    use super::*;

    /// The nftables table the test's firewall lives in, inside one node's network namespace.
    const FIREWALL_TABLE: &str = "rayefa_fleet_check";
    /// fi_pingpong's out-of-band port on the node that serves it.
    const FI_PINGPONG_PORT: &str = "47592";

    /// Inside `node`, drops everything the other nodes send it, and lets the host through (it
    /// runs `rayefa` and asks the agents over the bridge): the stand-in for a security group
    /// without its self-referencing rules, which stops node-to-node traffic but not the
    /// orchestrator's.
    fn drop_peers(vpc: &Vpc, node: &Node) {
        let rules = vpc.world.write(
            &format!("firewall-{}.nft", node.name),
            &format!(
                "table inet {FIREWALL_TABLE} {{\n\
                 \x20   chain input {{\n\
                 \x20       type filter hook input priority 0; policy accept;\n\
                 \x20       ip saddr {HOST_ADDRESS}/{PREFIX_LEN} ip saddr != {HOST_ADDRESS} drop\n\
                 \x20   }}\n\
                 }}\n"
            ),
        );
        node.in_netns(&["nft", "-f", rules.to_str().expect("UTF-8 path")]);
    }

    /// Removes [`drop_peers`]'s rule.
    fn allow_peers(node: &Node) {
        node.in_netns(&["nft", "delete", "table", "inet", FIREWALL_TABLE]);
    }

    /// `rayefa check --provider tcp --pairs all --output json`: its run and its document.
    fn check_all_pairs(vpc: &Vpc) -> (Run, serde_json::Value) {
        let run = vpc.rayefa(&[
            "check",
            "--provider",
            "tcp",
            "--pairs",
            "all",
            "--output",
            "json",
        ]);
        let doc = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
            panic!(
                "check's output is not JSON ({e}):\n{}\n{}",
                run.stdout, run.stderr
            )
        });
        (run, doc)
    }

    fn pairs(doc: &serde_json::Value) -> &Vec<serde_json::Value> {
        doc["pairs"]
            .as_array()
            .unwrap_or_else(|| panic!("no pairs in {doc:#}"))
    }

    fn involves(pair: &serde_json::Value, node: &Node) -> bool {
        pair["from"] == node.instance_id.as_str() || pair["to"] == node.instance_id.as_str()
    }

    /// A pair that passed measured every size with figures above zero.
    fn assert_measured(pair: &serde_json::Value, sizes: &[u64]) {
        assert_eq!(pair["outcome"], "passed", "{pair:#}");
        let results = pair["results"].as_array().expect("results");
        let measured: Vec<u64> = results.iter().filter_map(|r| r["size"].as_u64()).collect();
        assert_eq!(measured, sizes, "{pair:#}");
        for result in results {
            assert!(
                result["latency_us"].as_f64().is_some_and(|l| l > 0.0)
                    && result["bandwidth_mb_s"].as_f64().is_some_and(|b| b > 0.0),
                "{pair:#}"
            );
        }
    }

    /// One `fi_pingpong -p tcp -e rdm` run: the server in `server`, the client in `client`
    /// dialling the server's address on the bridge. Answers (µs per transfer, MB/s), as its
    /// result line has them.
    fn fi_pingpong(server: &Node, client: &Node, size: u64, iterations: u64) -> (f64, f64) {
        let (size, iterations) = (size.to_string(), iterations.to_string());
        let common = [
            "-p",
            "tcp",
            "-e",
            "rdm",
            "-S",
            size.as_str(),
            "-I",
            iterations.as_str(),
        ];
        let mut args = vec!["timeout", "120", "fi_pingpong", "-B", FI_PINGPONG_PORT];
        args.extend(common);
        let serving = server.spawn(&args);
        let port = format!(":{FI_PINGPONG_PORT}");
        wait_for(
            Duration::from_secs(30),
            &format!("fi_pingpong to listen in {}", server.name),
            || {
                (!server
                    .exec_text(&["ss", "-Hltn", "sport", "=", port.as_str()])
                    .trim()
                    .is_empty())
                .then_some(())
            },
        );
        let address = server.address.to_string();
        let mut args = vec!["timeout", "120", "fi_pingpong", "-P", FI_PINGPONG_PORT];
        args.extend(common);
        args.push(address.as_str());
        let out = client.exec_ok(&args);
        let served = serving.wait_with_output().expect("the fi_pingpong server");
        assert!(
            served.status.success(),
            "fi_pingpong server in {}: {}{}",
            server.name,
            String::from_utf8_lossy(&served.stdout),
            String::from_utf8_lossy(&served.stderr)
        );
        // The line under `bytes #sent #ack total time MB/sec usec/xfer Mxfers/sec` (its first
        // column is the size abbreviated: `1m`).
        let line: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.starts_with("bytes"))
            .nth(1)
            .unwrap_or_else(|| panic!("no result line in fi_pingpong's output:\n{out}"))
            .split_whitespace()
            .collect();
        let figure = |column: usize| -> f64 {
            line.get(column)
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("fi_pingpong's result line is not 1.17's:\n{out}"))
        };
        (figure(6), figure(5))
    }

    /// The median of a few runs.
    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    #[test]
    #[ignore = "needs root, systemd-nspawn and the fleet rootfs; run by tests/fleet/run"]
    fn fleet_check_finds_the_node_whose_firewall_drops_its_peers_and_measures_the_rest() {
        let vpc = Vpc::start(Variant::Plain);
        // `up` runs the check itself once every node is ready.
        let file = std::fs::read_to_string(&vpc.cluster_file).expect("the cluster file");
        assert_eq!(file.matches("\nrayefa:\n").count(), 1, "{file}");
        vpc.world.write(
            "fleet.yaml",
            &file.replace("\nrayefa:\n", "\nrayefa:\n    check: true\n"),
        );
        let up = vpc.rayefa(&["up", "--timeout", "5m", "--output", "json"]);
        vpc.check(
            up.code == 0,
            "rayefa up with rayefa.check should end ready and checked",
            Some(&up),
        );
        let doc: serde_json::Value = serde_json::from_str(&up.stdout).expect("up's JSON");
        let checked = &doc["check"];
        assert_eq!(checked["outcome"], "passed", "{doc:#}");
        assert_eq!(checked["provider"], "tcp", "{doc:#}");
        assert_eq!(checked["mode"], "ring", "{doc:#}");
        assert_eq!(pairs(checked).len(), 3, "{doc:#}");
        let sizes: Vec<u64> = checked["sizes"]
            .as_array()
            .expect("sizes")
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .collect();
        assert_eq!(sizes, [64, 1 << 20], "{doc:#}");
        for pair in pairs(checked) {
            assert_measured(pair, &sizes);
        }

        let head = &vpc.nodes("head_node", 1)[0];
        let workers = vpc.nodes("worker_node", 2);
        let walled = &workers[0];
        drop_peers(&vpc, walled);
        let (run, doc) = check_all_pairs(&vpc);
        vpc.check(
            run.code == 1,
            &format!("check should fail the pairs through {}", walled.name),
            Some(&run),
        );
        assert_eq!(doc["outcome"], "failed", "{doc:#}");
        assert_eq!(pairs(&doc).len(), 3, "{doc:#}");
        for pair in pairs(&doc) {
            if !involves(pair, walled) {
                assert_measured(pair, &sizes);
                continue;
            }
            assert_eq!(pair["outcome"], "no_answer", "{pair:#}");
            let cause = pair["cause"].as_str().unwrap_or_default();
            let names = format!(
                "{} to {}: ",
                pair["from"].as_str().unwrap_or_default(),
                pair["to"].as_str().unwrap_or_default()
            );
            assert!(
                cause.starts_with(&names)
                    && cause.contains("no completion in 5 s")
                    && cause.contains("security group's self-referencing rules")
                    && cause.contains("placement group"),
                "the cause should name the pair, the security group and the placement group: \
                 {pair:#}"
            );
        }
        println!(
            "fleet: check --pairs all with {} firewalled: {:.1} s",
            walled.name,
            doc["seconds"].as_f64().unwrap_or_default()
        );

        allow_peers(walled);
        let (run, doc) = check_all_pairs(&vpc);
        vpc.check(
            run.code == 0,
            "check should pass once the rule is gone",
            Some(&run),
        );
        for pair in pairs(&doc) {
            assert_measured(pair, &sizes);
        }
        println!(
            "fleet: check --pairs all, 3 nodes, every pair passed: {:.1} s",
            doc["seconds"].as_f64().unwrap_or_default()
        );

        // The pair without the firewalled node, beside fi_pingpong in the same direction: the
        // pinging node runs the client, the listening node the server.
        let pair = pairs(&doc)
            .iter()
            .find(|p| !involves(p, walled))
            .expect("the pair of the head and the other worker");
        let node = |id: &serde_json::Value| {
            [head, &workers[1]]
                .into_iter()
                .find(|n| *id == n.instance_id.as_str())
                .unwrap_or_else(|| panic!("{id} is not a node of the pair"))
        };
        let (pinger, listener) = (node(&pair["from"]), node(&pair["to"]));
        for result in pair["results"].as_array().expect("results") {
            let size = result["size"].as_u64().expect("size");
            let iterations = result["iterations"].as_u64().expect("iterations");
            let runs: Vec<(f64, f64)> = (0..3)
                .map(|_| fi_pingpong(listener, pinger, size, iterations))
                .collect();
            let latency = median(runs.iter().map(|r| r.0).collect());
            let bandwidth = median(runs.iter().map(|r| r.1).collect());
            let (ours_latency, ours_bandwidth) = (
                result["latency_us"].as_f64().expect("latency"),
                result["bandwidth_mb_s"].as_f64().expect("bandwidth"),
            );
            println!(
                "fleet: {} to {}, {size} B, {iterations} round trips: rayefa check {ours_latency:.1} µs, \
                 {ours_bandwidth:.1} MB/s; fi_pingpong (median of 3) {latency:.1} µs, \
                 {bandwidth:.1} MB/s; ratio (rayefa / fi_pingpong) latency {:.2}, bandwidth {:.2}",
                pinger.name,
                listener.name,
                ours_latency / latency,
                ours_bandwidth / bandwidth
            );
        }

        vpc.down_and_leave_nothing_behind();
    }
}
