//! The user data `rayefa user-data` prints, executed for real by bash in a scratch root: the
//! package is downloaded over loopback HTTP with curl and checked with sha256sum; the package
//! manager and systemctl, which cannot run here, are stand-ins on PATH that record their
//! arguments (the stand-in dnf/apt-get "installs" a rayefa-agent that prints a version).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rayefa_test_support::fault_http::Server;
use rayefa_test_support::files::write_executable;
use rayefa_test_support::sha256_hex;
use rayefa_wire::{AgentConfigFile, Role};

/// The seed guide's cluster file.
const SEED: &str = include_str!("fixtures/aws/cluster-efa.yaml");

/// What the stand-in package is made of.
const PACKAGE: &[u8] = b"not really an RPM, but bytes whose SHA-256 is pinned";

/// Serves `PACKAGE` at `/rayefa-agent.rpm` on a loopback port, 404 elsewhere, until dropped.
fn serve_package() -> Server {
    let server = Server::start();
    server.route("/rayefa-agent.rpm", PACKAGE, &[]);
    server
}

/// A node's scratch root with os-release, and stand-ins for the package manager and systemctl.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new(os_release: &str) -> Node {
        let dir = tempfile::tempdir().expect("scratch root");
        let node = Node { dir };
        std::fs::create_dir_all(node.root().join("etc")).expect("etc");
        std::fs::create_dir_all(node.root().join("tmp")).expect("tmp");
        std::fs::create_dir_all(node.stubs()).expect("stubs");
        std::fs::write(node.root().join("etc/os-release"), os_release).expect("os-release");
        let log = node.log_path();
        // Installing "puts" rayefa-agent on PATH, as the real package puts it in /usr/bin.
        let installer = format!(
            "#!/bin/bash\necho \"$(basename \"$0\") $*\" >> {log}\n\
             test -s \"${{@: -1}}\" || {{ echo 'no package file' >&2; exit 1; }}\n\
             printf '#!/bin/sh\\necho rayefa-agent 0.1.0\\n' > {stubs}/rayefa-agent\n\
             chmod +x {stubs}/rayefa-agent\n",
            log = log.display(),
            stubs = node.stubs().display()
        );
        node.stub("dnf", &installer);
        node.stub("apt-get", &installer);
        node.stub(
            "systemctl",
            &format!("#!/bin/bash\necho \"systemctl $*\" >> {}\n", log.display()),
        );
        node
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn stubs(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    fn stub(&self, name: &str, script: &str) {
        write_executable(&self.stubs().join(name), script);
    }

    /// What the stand-ins were asked to do, one line per call.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Boots a head node whose user data installs the package at `url`, pinned to `sha256`.
    fn boot_head_node(&self, url: &str, sha256: &str) -> Output {
        self.boot(&user_data(
            self.dir.path(),
            Some((url, sha256)),
            "head_node",
        ))
    }

    /// Runs `script` as cloud-init would, with this node's root and stand-ins.
    fn boot(&self, script: &str) -> Output {
        let path = format!(
            "{}:{}",
            self.stubs().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let file = self.dir.path().join("user-data");
        std::fs::write(&file, script).expect("writing the user data");
        Command::new("bash")
            .arg(&file)
            .env("RAYEFA_ROOT", self.root())
            .env("TMPDIR", self.root().join("tmp"))
            .env("PATH", path)
            .output()
            .expect("running bash")
    }

    fn agent_toml(&self) -> Option<String> {
        std::fs::read_to_string(self.root().join("etc/rayefa/agent.toml")).ok()
    }
}

const AMAZON_LINUX: &str =
    "NAME=\"Amazon Linux\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\n";
const UBUNTU: &str = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n";

/// `rayefa user-data` for the seed's file with `rayefa.agent_package` added.
fn user_data(dir: &Path, package: Option<(&str, &str)>, node_type: &str) -> String {
    let mut text = SEED.to_owned();
    if let Some((url, sha256)) = package {
        text.push_str(&format!(
            "\nrayefa:\n    agent_package:\n        url: {url}\n        sha256: {sha256}\n"
        ));
    }
    let file = dir.join("cluster-efa.yaml");
    std::fs::write(&file, text).expect("writing the cluster file");
    let out = Command::new(env!("CARGO_BIN_EXE_rayefa"))
        .arg("user-data")
        .arg(&file)
        .args(["--node-type", node_type])
        .env("CLUSTER_NAME", "ray-on-aws")
        .env("AWS_REGION", "ap-northeast-1")
        .env("X86_AMI_ID", "ami-0x86")
        .env("PRIV_SUBNET_ID", "subnet-0private")
        .env("HEAD_SG_ID", "sg-0head")
        .env("WORKER_SG_ID", "sg-0worker")
        .output()
        .expect("running rayefa user-data");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 user data")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_seed_workers_user_data_installs_configures_and_starts_the_agent() {
    let host = serve_package();
    let node = Node::new(AMAZON_LINUX);
    let url = host.url("/rayefa-agent.rpm");
    let script = user_data(
        node.dir.path(),
        Some((&url, &sha256_hex(PACKAGE))),
        "efa_worker_node",
    );
    assert!(script.len() <= 4096, "{} bytes", script.len());

    let out = node.boot(&script);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = node.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].starts_with("dnf install -y "), "{calls:?}");
    assert!(calls[0].ends_with("/rayefa-agent.rpm"), "{calls:?}");
    assert_eq!(calls[1], "systemctl enable rayefa-agent.service");
    assert_eq!(
        calls[2],
        "systemctl restart --no-block rayefa-agent.service"
    );

    let config: AgentConfigFile =
        toml::from_str(&node.agent_toml().expect("agent.toml written")).expect("valid TOML");
    let section = config.node.expect("[node]");
    assert_eq!(section.role, Some(Role::Worker));
    assert_eq!(section.node_type.as_deref(), Some("efa_worker_node"));
    assert_eq!(section.cluster_name.as_deref(), Some("ray-on-aws-efa"));
    assert!(
        stderr(&out).contains("rayefa-agent 0.1.0"),
        "the installed agent ran"
    );
    // Nothing is left behind in the download directory.
    let leftovers = std::fs::read_dir(node.root().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn a_package_that_does_not_match_its_pin_is_refused_before_anything_changes() {
    let host = serve_package();
    let node = Node::new(AMAZON_LINUX);
    let url = host.url("/rayefa-agent.rpm");
    let wrong = "0".repeat(64);
    let out = node.boot_head_node(&url, &wrong);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "rayefa: FAILED: the agent package from {url} has SHA-256 {}, not the pinned {wrong}",
            sha256_hex(PACKAGE)
        )),
        "{message}"
    );
    assert!(node.calls().is_empty(), "{:?}", node.calls());
    assert!(node.agent_toml().is_none());
}

#[test]
fn a_download_that_fails_says_which_url() {
    let host = serve_package();
    let node = Node::new(AMAZON_LINUX);
    let url = host.url("/missing.rpm");
    let out = node.boot_head_node(&url, &sha256_hex(PACKAGE));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("could not download the agent package from {url}")),
        "{}",
        stderr(&out)
    );
    assert!(node.calls().is_empty());
}

#[test]
fn debian_family_systems_install_with_apt() {
    let host = serve_package();
    let node = Node::new(UBUNTU);
    let url = host.url("/rayefa-agent.rpm");
    let out = node.boot_head_node(&url, &sha256_hex(PACKAGE));
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = node.calls();
    // apt-get waits for the dpkg lock (held by cloud-init or unattended-upgrades at first
    // boot), as the agent's own apt-get calls do.
    assert!(
        calls[0].starts_with("apt-get -o DPkg::Lock::Timeout=300 install -y "),
        "{calls:?}"
    );
    assert!(calls[0].ends_with("/rayefa-agent.deb"), "{calls:?}");
    let config: AgentConfigFile =
        toml::from_str(&node.agent_toml().expect("written")).expect("valid TOML");
    assert_eq!(config.node.and_then(|n| n.role), Some(Role::Head));
}

#[test]
fn an_unknown_os_is_named() {
    let host = serve_package();
    let node = Node::new("NAME=Plan9\nID=plan9\n");
    let url = host.url("/rayefa-agent.rpm");
    let out = node.boot_head_node(&url, &sha256_hex(PACKAGE));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no way to install a package on this OS (os-release says plan9"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn without_a_package_the_agent_must_be_on_the_image() {
    let node = Node::new(AMAZON_LINUX);
    let script = user_data(node.dir.path(), None, "head_node");
    let out = node.boot(&script);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rayefa-agent is not on this image and no rayefa.agent_package"),
        "{}",
        stderr(&out)
    );

    node.stub("rayefa-agent", "#!/bin/sh\necho rayefa-agent 0.1.0\n");
    let out = node.boot(&script);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        node.calls(),
        [
            "systemctl enable rayefa-agent.service",
            "systemctl restart --no-block rayefa-agent.service"
        ]
    );
    assert!(node.agent_toml().is_some());
}
