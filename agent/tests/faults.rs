//! The fault suite: the real agent binary against faults of the world around it, each with
//! the outcome `docs/reliability.md` defines for it (node state, step, error text, retry or
//! not, `rayefa-agent status` exit code).
//!
//! Downloads and the instance metadata service are real HTTP servers on 127.0.0.1 (the fault
//! server of `rayefa_test_support::fault_http`, with plans of misbehaviours); the EFA
//! installer is a real tarball signed by a real OpenPGP key (GnuPG, Debian package `gnupg`)
//! whose `efa_installer.sh` writes the manifest under the scratch root; a full disk is a real
//! tmpfs (root only). The engine's `systemctl reboot` is a stand-in on `PATH` that records the
//! request; the boot id under the scratch root is changed to play the boot.
//!
//! Run: `cargo test -p rayefa-agent --test faults -- --include-ignored`

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use rayefa_test_support::fault_http::{Reply, Server};
use rayefa_test_support::files::{tar_gz, write_executable};
use rayefa_test_support::{Gpg, sha256_hex};
use support::{Node, get, kill_and_wait, procs};

const TARBALL: &str = "/aws-efa-installer-1.45.1.tar.gz";
const SIGNATURE: &str = "/aws-efa-installer-1.45.1.tar.gz.sig";
const VERSION: &str = "1.45.1";

/// The stand-in installer: its behaviour is read from `$MARKS/installer-mode` (`ok`, `fail`,
/// `reboot`), every run is counted in `$MARKS/installer`.
const INSTALLER: &str = r#"#!/bin/sh
echo run >> "$MARKS/installer"
mode=$(cat "$MARKS/installer-mode" 2>/dev/null || echo ok)
case "$mode" in
fail)
    echo "Error: Failed to install packages."
    exit 1
    ;;
esac
mkdir -p "$ROOT/opt/amazon"
printf '# EFA installer version: 1.45.1\n# Debug packages installed: No\n# Packages installed:\nlibfabric-aws\n' > "$ROOT/opt/amazon/efa_installed_packages"
if [ "$mode" = reboot ]; then
    echo "Reboot is needed!"
fi
echo "EFA installation complete."
"#;

/// The installer tarball, `aws-efa-installer/efa_installer.sh` inside, made with tar(1).
fn installer_tarball(dir: &Path) -> Vec<u8> {
    let tree = dir.join("tree/aws-efa-installer");
    std::fs::create_dir_all(&tree).expect("tree");
    write_executable(&tree.join("efa_installer.sh"), INSTALLER);
    let tarball = dir.join("installer.tar.gz");
    tar_gz(&dir.join("tree"), "aws-efa-installer", &tarball);
    std::fs::read(tarball).expect("tarball")
}

/// A node whose install-efa step downloads from a loopback server, and its agent.
struct EfaNode {
    node: Node,
    server: Server,
    gpg: Gpg,
    fingerprint: String,
    tarball: Vec<u8>,
    agent: Option<Child>,
    fake_bin: PathBuf,
}

impl EfaNode {
    /// `efa_extra` is added to `[efa]`; the tarball's SHA-256 and the key are the real ones
    /// unless it sets them.
    fn new(efa_extra: &str) -> Self {
        let node = Node::new("");
        let gpg = Gpg::new();
        let fingerprint = gpg.generate(
            "Installer Signer <signer@example.invalid>",
            "ed25519",
            "sign",
        );
        let tarball = installer_tarball(node.dir.path());
        let server = Server::start();
        server.route(TARBALL, tarball.clone(), &[]);
        server.route(SIGNATURE, gpg.sign(&fingerprint, &tarball), &[]);
        let root = node.path("root");
        std::fs::create_dir_all(root.join("etc/rayefa")).expect("etc");
        std::fs::write(
            root.join("etc/rayefa/installer.key"),
            gpg.export(&fingerprint),
        )
        .expect("key");
        std::fs::create_dir_all(root.join("proc/sys/kernel/random")).expect("proc");
        std::fs::write(root.join("proc/sys/kernel/random/boot_id"), "boot-1\n").expect("boot id");
        let fake_bin = node.path("bin");
        std::fs::create_dir_all(&fake_bin).expect("bin");
        write_executable(
            &fake_bin.join("systemctl"),
            format!(
                "#!/bin/sh\necho \"$*\" >> {}/systemctl\n",
                node.path("marks").display()
            ),
        );

        let set = |key: &str| efa_extra.lines().any(|l| l.trim_start().starts_with(key));
        let mut efa = format!(
            "mode = \"required\"\ninstaller_url = \"{}\"\nsignature_url = \"{}\"\n\
             public_key = \"/etc/rayefa/installer.key\"\ninstaller_version = \"{VERSION}\"\n",
            server.url(TARBALL),
            server.url(SIGNATURE)
        );
        if !set("installer_sha256") {
            efa.push_str(&format!(
                "installer_sha256 = \"{}\"\n",
                sha256_hex(&tarball)
            ));
        }
        if !set("fingerprint") {
            efa.push_str(&format!("fingerprint = \"{fingerprint}\"\n"));
        }
        efa.push_str(efa_extra);
        node.write_config(&format!(
            "[node]\ncluster_name = \"it\"\nrole = \"head\"\nnode_type = \"head_node\"\n\n\
             [agent]\nlisten = \"{address}\"\nimds = false\nstop_grace_secs = 2\n\n\
             [steps.grow-root]\nenabled = false\n[steps.probe-efa]\nenabled = false\n\
             [steps.install-ray]\nenabled = false\n\
             [steps.install-efa]\nattempts = 2\nbackoff_secs = 0.2\n\n\
             [efa]\n{efa}\n\
             [environment]\nMARKS = \"{marks}\"\nROOT = \"{root}\"\n\n\
             [commands]\nstart = [\"echo started >> $MARKS/start\"]\n",
            address = node.address,
            marks = node.path("marks").display(),
            root = root.display(),
        ));
        Self {
            node,
            server,
            gpg,
            fingerprint,
            tarball,
            agent: None,
            fake_bin,
        }
    }

    fn installer_mode(&self, mode: &str) {
        std::fs::write(self.node.path("marks/installer-mode"), mode).expect("mode");
    }

    fn spawn(&mut self) {
        let path = format!(
            "{}:{}",
            self.fake_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = self.node.spawn_with(|command| {
            procs::tag(command, self.node.dir.path());
            command.env("PATH", path);
        });
        self.agent = Some(child);
    }

    fn stop(&mut self) {
        let mut agent = self.agent.take().expect("agent");
        let exit = kill_and_wait(&mut agent, libc::SIGTERM, Duration::from_secs(15));
        assert_eq!(exit.code(), Some(0), "{}", self.node.log());
    }

    /// Serves the tarball answering by `plan`, starts the agent and waits for the node to
    /// settle, which must be ready; the status document.
    fn ready_despite(&mut self, plan: &[Reply]) -> Value {
        self.server.route(TARBALL, self.tarball.clone(), plan);
        self.spawn();
        let doc = self.settle();
        assert_eq!(doc["state"], "ready", "{doc:#}\n{}", self.node.log());
        doc
    }

    /// Waits for the node to be ready or failed; the status document.
    fn settle(&self) -> Value {
        self.node.wait_status(Duration::from_secs(60), |doc| {
            doc["state"] == "ready" || doc["state"] == "failed"
        })
    }

    fn status_exit(&self) -> Option<i32> {
        self.node.output(&["status"]).status.code()
    }
}

impl Drop for EfaNode {
    fn drop(&mut self) {
        procs::kill_agent_and_tagged(self.agent.take(), self.node.dir.path());
    }
}

fn step(doc: &Value, name: &str) -> Value {
    doc["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {doc:#}"))
        .clone()
}

/// The node failed at `step_name`; the reason it gives.
fn assert_failed_at<'a>(doc: &'a Value, step_name: &str) -> &'a str {
    assert_eq!(doc["state"], "failed", "{doc:#}");
    assert_eq!(doc["step"], step_name, "{doc:#}");
    doc["reason"].as_str().unwrap_or_default()
}

/// The node failed at install-efa after `attempts` attempts with an error saying `says`;
/// start-ray is blocked, `/readyz` answers 503 and `rayefa-agent status` exits 1.
fn assert_failed_at_install_efa(node: &EfaNode, doc: &Value, attempts: u64, says: &str) {
    let reason = assert_failed_at(doc, "install-efa");
    assert!(reason.contains(says), "{reason}");
    let efa = step(doc, "install-efa");
    assert_eq!(efa["attempts"], attempts, "{efa:#}");
    assert_eq!(step(doc, "start-ray")["state"], "blocked", "{doc:#}");
    let (code, body) = get(node.node.address, "/readyz").expect("readyz");
    assert_eq!(code, 503);
    assert!(body.contains("install-efa"), "{body}");
    assert_eq!(node.status_exit(), Some(1));
    assert_eq!(node.node.marks("start"), 0);
}

#[test]
fn a_download_reset_mid_body_is_resumed_with_a_range_request() {
    let mut node = EfaNode::new("");
    let half = node.tarball.len() / 2;
    let doc = node.ready_despite(&[Reply::ResetAfter(half)]);
    let efa = step(&doc, "install-efa");
    assert_eq!(
        efa["attempts"], 1,
        "the download retried within the attempt"
    );
    assert_eq!(efa["detail"]["resumed_from"], half, "{efa:#}");
    assert_eq!(
        node.server.ranges(TARBALL),
        vec![None, Some(format!("bytes={half}-"))]
    );
    assert_eq!(node.node.marks("installer"), 1);
    assert_eq!(node.status_exit(), Some(0));
    node.stop();
}

#[test]
fn server_errors_are_retried_and_the_install_then_succeeds() {
    let mut node = EfaNode::new("");
    let doc = node.ready_despite(&[Reply::Status(500), Reply::Status(503)]);
    assert_eq!(node.server.ranges(TARBALL).len(), 3);
    assert_eq!(step(&doc, "install-efa")["attempts"], 1);
    node.stop();
}

#[test]
fn a_truncated_download_is_resumed() {
    // A body cut short without a reset: the server closes after half of what it announced.
    let mut node = EfaNode::new("");
    let half = node.tarball.len() / 2;
    let doc = node.ready_despite(&[Reply::CloseAfter(half)]);
    assert_eq!(step(&doc, "install-efa")["detail"]["resumed_from"], half);
    node.stop();
}

#[test]
fn a_tarball_with_the_wrong_hash_fails_the_node_without_a_retry() {
    let pinned = sha256_hex(b"the tarball that was published");
    let mut node = EfaNode::new(&format!("installer_sha256 = \"{pinned}\"\n"));
    node.spawn();
    let doc = node.settle();
    assert_failed_at_install_efa(&node, &doc, 1, "SHA-256 check failed");
    assert!(doc["reason"].as_str().unwrap_or_default().contains(&pinned));
    assert_eq!(
        node.node.marks("installer"),
        0,
        "an unverified installer ran"
    );
    assert_eq!(node.server.ranges(TARBALL).len(), 1);
    node.stop();
}

#[test]
fn a_bad_signature_fails_the_node_without_a_retry() {
    let mut node = EfaNode::new("");
    let mallory = node
        .gpg
        .generate("Mallory <mallory@example.invalid>", "ed25519", "sign");
    node.server
        .route(SIGNATURE, node.gpg.sign(&mallory, &node.tarball), &[]);
    node.spawn();
    let doc = node.settle();
    assert_failed_at_install_efa(&node, &doc, 1, "signature check failed");
    assert_eq!(node.node.marks("installer"), 0);
    node.stop();
}

#[test]
fn a_key_with_another_fingerprint_fails_the_node_without_a_retry() {
    let aws = "4E9091BCBB97A96B26B15E59A05480B1DD2D3CCC";
    let mut node = EfaNode::new(&format!("fingerprint = \"{aws}\"\n"));
    node.spawn();
    let doc = node.settle();
    assert_failed_at_install_efa(&node, &doc, 1, "public key check failed");
    let reason = doc["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(aws) && reason.contains(&node.fingerprint),
        "{reason}"
    );
    assert_eq!(node.node.marks("installer"), 0);
    node.stop();
}

#[test]
fn installer_exit_1_is_retried_then_fails_the_node_with_its_output() {
    let mut node = EfaNode::new("");
    node.installer_mode("fail");
    node.spawn();
    let doc = node.settle();
    assert_failed_at_install_efa(&node, &doc, 2, "exited 1");
    let reason = doc["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Failed to install packages"), "{reason}");
    assert_eq!(node.node.marks("installer"), 2, "the policy's two attempts");
    node.stop();
}

#[test]
fn reboot_is_needed_reboots_and_the_step_is_done_after_the_boot() {
    let mut node = EfaNode::new("on_reboot = \"reboot\"\n");
    node.installer_mode("reboot");
    node.spawn();
    let doc = node.node.wait_status(Duration::from_secs(60), |doc| {
        doc["state"] == "rebooting" || doc["state"] == "failed"
    });
    assert_eq!(doc["step"], "install-efa", "{doc:#}");
    let (code, body) = get(node.node.address, "/readyz").expect("readyz");
    assert_eq!(code, 503);
    assert!(body.contains("rebooting to finish install-efa"), "{body}");
    // The state says "rebooting" before the agent asks systemd for the reboot.
    let asked = node.node.path("marks/systemctl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !asked.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(&asked).expect("systemctl ran"),
        "reboot\n"
    );
    assert_eq!(
        node.status_exit(),
        Some(4),
        "rebooting is still bootstrapping"
    );

    // The boot: the agent is stopped, the machine comes back with another boot id.
    node.stop();
    std::fs::write(
        node.node.path("root/proc/sys/kernel/random/boot_id"),
        "boot-2\n",
    )
    .expect("boot id");
    node.spawn();
    let doc = node.settle();
    assert_eq!(doc["state"], "ready", "{doc:#}\n{}", node.node.log());
    assert_eq!(
        node.node.marks("installer"),
        1,
        "installed once, before the boot"
    );
    let efa = step(&doc, "install-efa");
    // After the boot the step's check finds the manifest: already done, in its second attempt.
    assert_eq!(efa["state"], "already-done", "{efa:#}");
    assert_eq!(efa["attempts"], 2, "{efa:#}");
    assert_eq!(efa["detail"]["version"], VERSION, "{efa:#}");
    assert_eq!(node.node.marks("systemctl"), 1, "one reboot");
    node.stop();
}

#[test]
fn reboot_is_needed_with_on_reboot_fail_fails_the_node() {
    let mut node = EfaNode::new("on_reboot = \"fail\"\n");
    node.installer_mode("reboot");
    node.spawn();
    let doc = node.settle();
    assert_failed_at_install_efa(&node, &doc, 1, "needs a reboot");
    assert_eq!(
        node.node.marks("systemctl"),
        0,
        "rebooted against the configuration"
    );
    node.stop();
}

/// A node asking the metadata service at `endpoint`, with EFA on `auto` on a machine whose
/// PCI bus has no EFA device: whether to install EFA then depends on the metadata.
fn imds_node(endpoint: &str) -> Node {
    let node = Node::new("");
    let text = std::fs::read_to_string(node.config()).expect("config");
    node.write_config(
        &(text
            .replace(
                "imds = false",
                &format!("imds = true\nimds_endpoint = \"{endpoint}\""),
            )
            .replace(
                "[steps.install-efa]\nenabled = false\n[steps.probe-efa]\nenabled = false\n",
                "",
            )
            + "\n[efa]\nmode = \"auto\"\n\n[commands]\nstart = [\"true\"]\n"),
    );
    std::fs::create_dir_all(node.path("root/sys/bus/pci/devices")).expect("pci");
    node
}

#[test]
fn an_unreachable_metadata_service_means_not_on_ec2() {
    let closed = support::free_port();
    let node = imds_node(&format!("http://{closed}"));
    let started = Instant::now();
    let mut agent = node.spawn();
    let (code, body) = node.wait_ready(Duration::from_secs(20));
    let took = started.elapsed();
    assert_eq!(code, 200, "{body}\n{}", node.log());
    let doc = node.status();
    assert!(doc["facts"]["ec2"].is_null(), "{doc:#}");
    for efa in ["install-efa", "probe-efa"] {
        let s = step(&doc, efa);
        assert_eq!(s["state"], "skipped", "{s:#}");
        assert_eq!(s["reason"], "no EFA interface", "{s:#}");
    }
    eprintln!(
        "unreachable IMDS: ready in {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    kill_and_wait(&mut agent, libc::SIGTERM, Duration::from_secs(10));
}

#[test]
fn a_metadata_service_that_never_answers_holds_only_what_needs_it() {
    let imds = Server::start();
    imds.route("/latest/api/token", "token", &[Reply::Hang]);
    let node = imds_node(&imds.url(""));
    let started = Instant::now();
    let mut agent = node.spawn();
    // Serving does not wait for the metadata.
    node.wait_status(Duration::from_secs(5), |_| true);
    let serving = started.elapsed();
    let (code, body) = node.wait_ready(Duration::from_secs(30));
    let ready = started.elapsed();
    assert_eq!(code, 200, "{body}\n{}", node.log());
    let doc = node.status();
    assert!(doc["facts"]["ec2"].is_null(), "{doc:#}");
    assert_eq!(step(&doc, "install-efa")["reason"], "no EFA interface");
    assert!(
        serving < Duration::from_secs(3),
        "serving after {serving:?}"
    );
    // The lookup gives up after its 5 s request timeout; EFA's decision waited for it.
    assert!(ready >= Duration::from_secs(4), "ready after {ready:?}");
    assert!(ready < Duration::from_secs(20), "ready after {ready:?}");
    eprintln!(
        "silent IMDS: serving after {:.0} ms, ready after {:.1} s",
        serving.as_secs_f64() * 1e3,
        ready.as_secs_f64()
    );
    kill_and_wait(&mut agent, libc::SIGTERM, Duration::from_secs(10));
}

#[test]
fn a_slow_metadata_service_is_waited_for() {
    let imds = Server::start();
    let slow = Duration::from_millis(800);
    imds.route("/latest/api/token", "token", &[Reply::Slow(slow)]);
    for (path, body) in [
        ("/latest/meta-data/instance-id", "i-0123456789abcdef0"),
        ("/latest/meta-data/instance-type", "c7i.48xlarge"),
        (
            "/latest/meta-data/placement/availability-zone",
            "us-east-1a",
        ),
        ("/latest/meta-data/local-ipv4", "127.0.1.4"),
        (
            "/latest/meta-data/network/interfaces/macs/",
            "0e:00:00:00:00:01/\n",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/0e:00:00:00:00:01/interface-type",
            "interface",
        ),
    ] {
        imds.route(path, body, &[Reply::Slow(Duration::from_millis(200))]);
    }
    let node = imds_node(&imds.url(""));
    let mut agent = node.spawn();
    let (code, body) = node.wait_ready(Duration::from_secs(30));
    assert_eq!(code, 200, "{body}\n{}", node.log());
    let doc = node.status();
    assert_eq!(
        doc["facts"]["ec2"]["instance_id"], "i-0123456789abcdef0",
        "{doc:#}"
    );
    assert_eq!(doc["facts"]["ec2"]["instance_type"], "c7i.48xlarge");
    assert_eq!(step(&doc, "install-efa")["reason"], "no EFA interface");
    kill_and_wait(&mut agent, libc::SIGTERM, Duration::from_secs(10));
}

/// Mounts a tmpfs of `kib` KiB at `at`; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, kib: u64) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k"),
                "rayefa-faults",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs (needs root)");
        Self(at.to_owned())
    }

    /// Fills the file system to the last byte with `filler`.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&[0]).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root (mounts a tmpfs); run by tests/run"]
fn a_full_state_directory_is_reported_and_the_journal_catches_up() {
    let node = Node::new(
        "[commands]\nsetup = [\"seq 1 2000; echo setup >> $MARKS/setup\"]\n\
         start = [\"echo start >> $MARKS/start\"]\n",
    );
    let state = node.path("root/var/lib/rayefa");
    let disk = Tmpfs::mount(&state, 256);
    let filler = disk.fill();
    let mut agent = node.spawn();
    let doc = node.wait_status(Duration::from_secs(20), |doc| {
        doc["state"] == "ready" || doc["state"] == "failed"
    });
    // The node's work does not depend on its notes: it is ready, and says what it lost.
    assert_eq!(doc["state"], "ready", "{doc:#}\n{}", node.log());
    let warnings = doc["warnings"].to_string();
    assert!(
        warnings.contains("journal") && warnings.contains("No space left on device"),
        "{warnings}"
    );
    assert!(
        step(&doc, "setup-commands")["output_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("2000"),
        "the output still reaches status: {doc:#}"
    );
    assert_eq!(node.output(&["status"]).status.code(), Some(0));
    assert!(!state.join("journal.json").exists());
    assert!(
        !state.join(".journal.json.tmp").exists(),
        "a half-written journal is left taking space"
    );

    // Space comes back: the agent writes the journal it owes and drops the warning.
    std::fs::remove_file(filler).expect("free space");
    let doc = node.wait_status(Duration::from_secs(20), |doc| {
        doc["warnings"] == serde_json::json!([])
    });
    assert_eq!(doc["state"], "ready");
    let journal: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("journal.json")).expect("journal written"),
    )
    .expect("journal JSON");
    assert_eq!(step(&journal, "start-ray")["state"], "succeeded");
    kill_and_wait(&mut agent, libc::SIGTERM, Duration::from_secs(10));
    let mut agent = node.spawn();
    let (code, _) = node.wait_ready(Duration::from_secs(20));
    assert_eq!(code, 200);
    assert_eq!(node.marks("setup"), 1, "a finished step ran again");
    assert_eq!(node.marks("start"), 1);
    kill_and_wait(&mut agent, libc::SIGTERM, Duration::from_secs(10));
    drop(disk);
}

/// A node whose install-ray makes a real virtualenv and pip-installs `package` with
/// `pip_args`; two attempts a short wait apart.
fn pip_node(package: &str, pip_args: &str) -> Node {
    let node = Node::new("");
    let text = std::fs::read_to_string(node.config()).expect("config");
    node.write_config(
        &(text.replace(
            "[steps.install-ray]\nenabled = false\n",
            "[steps.install-ray]\nattempts = 2\nbackoff_secs = 0.2\n",
        ) + &format!(
            "\n[packages]\nos = []\npython = [\"{package}\"]\npip_args = [{pip_args}]\n\
             python_interpreter = \"/usr/bin/python3\"\n\n[commands]\nstart = [\"true\"]\n"
        )),
    );
    node
}

fn settle(node: &Node) -> Value {
    node.wait_status(Duration::from_secs(180), |doc| {
        doc["state"] == "ready" || doc["state"] == "failed"
    })
}

#[test]
#[ignore = "makes a real virtualenv (python3-venv), 10-30 s; run by tests/run"]
fn pip_that_cannot_reach_its_index_is_retried_then_fails_the_node() {
    let closed = support::free_port();
    let node = pip_node(
        "rayefa-fault-no-such-package",
        &format!("\"--index-url\", \"http://{closed}/simple\", \"--timeout\", \"2\""),
    );
    let mut agent = node.spawn();
    let doc = settle(&node);
    let reason = assert_failed_at(&doc, "install-ray");
    assert!(
        reason.contains("-m pip install") && reason.contains("exited 1"),
        "{reason}"
    );
    assert!(reason.contains("rayefa-fault-no-such-package"), "{reason}");
    let ray = step(&doc, "install-ray");
    assert_eq!(ray["attempts"], 2, "a network failure is retried: {ray:#}");
    assert_eq!(step(&doc, "start-ray")["state"], "blocked");
    assert_eq!(node.output(&["status"]).status.code(), Some(1));
    kill_and_wait(&mut agent, libc::SIGTERM, Duration::from_secs(10));
}

#[test]
#[ignore = "makes a real virtualenv (python3-venv), 10-30 s; run by tests/run"]
fn pip_that_finds_no_such_package_fails_the_node_without_a_retry() {
    let node = pip_node("rayefa-fault-no-such-package", "\"--no-index\"");
    let mut agent = node.spawn();
    let doc = settle(&node);
    let reason = assert_failed_at(&doc, "install-ray");
    assert!(
        reason.contains("No matching distribution found for rayefa-fault-no-such-package"),
        "{reason}"
    );
    assert_eq!(step(&doc, "install-ray")["attempts"], 1, "{doc:#}");
    assert_eq!(node.output(&["status"]).status.code(), Some(1));
    kill_and_wait(&mut agent, libc::SIGTERM, Duration::from_secs(10));
}
