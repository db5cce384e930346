//! install-efa end to end on this machine: a real HTTP server on 127.0.0.1, tarballs signed
//! with real OpenPGP keys (GnuPG), the real command runner running the tarball's own
//! `efa_installer.sh`, all under a scratch root.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use rayefa_wire::Role;
use tempfile::TempDir;

use super::download::DownloadPolicy;
use super::testkit::{
    Behaviour, Entry, Gpg, Reply, TestServer, installer_entries, put, sha256, tarball,
};
use super::*;
use crate::host::{HostRoot, SystemRunner};
use crate::steps::testing::{TestContext, context, settings};

const VERSION: &str = "9.9.9";
const TARBALL: &str = "/aws-efa-installer-9.9.9.tar.gz";
const SIGNATURE: &str = "/aws-efa-installer-9.9.9.tar.gz.sig";
const KEY: &str = "/etc/rayefa/aws-efa-installer.key";
/// Where the key is fetched from when the node has no key file: beside the tarball.
const KEY_URL_PATH: &str = "/aws-efa-installer.key";

/// A node under a scratch root with a signing key, an HTTP server and a tarball to serve.
struct Fixture {
    root: TempDir,
    gpg: Gpg,
    fingerprint: String,
    server: TestServer,
    tarball: Vec<u8>,
}

impl Fixture {
    async fn new(entries: &[Entry]) -> Self {
        let root = tempfile::tempdir().expect("root");
        let gpg = Gpg::new();
        let fingerprint = gpg.generate(
            "EFA installer test <efa@example.invalid>",
            "ed25519",
            "sign",
        );
        put(root.path(), KEY, &gpg.export(&fingerprint));
        let fixture = Self {
            root,
            gpg,
            fingerprint,
            server: TestServer::start().await,
            tarball: tarball(entries),
        };
        fixture.serve(&[], &[]);
        fixture
    }

    async fn installer(behaviour: Behaviour) -> Self {
        Self::new(&installer_entries(VERSION, behaviour)).await
    }

    /// Serves the tarball and its signature by the test key, answering by the plans.
    fn serve(&self, tarball_plan: &[Reply], signature_plan: &[Reply]) {
        let signature = self.gpg.sign(&self.fingerprint, &self.tarball);
        self.server
            .route(TARBALL, self.tarball.clone(), tarball_plan);
        self.server.route(SIGNATURE, signature, signature_plan);
    }

    /// Configuration pinning the served tarball; `extra` lines go into `[efa]`, whose mode is
    /// `required` unless they set it.
    fn settings_with(
        &self,
        sha256: &str,
        fingerprint: &str,
        extra: &str,
    ) -> crate::config::Settings {
        settings(
            Role::Head,
            &format!(
                "[environment]\nEFA_TEST_ROOT = \"{root}\"\n\n\
                 [efa]\n{mode}installer_url = \"{url}\"\ninstaller_sha256 = \"{sha256}\"\n\
                 public_key = \"{KEY}\"\nfingerprint = \"{fingerprint}\"\ninstaller_version = \"{VERSION}\"\n{extra}",
                mode = if extra.contains("mode =") {
                    ""
                } else {
                    "mode = \"required\"\n"
                },
                root = self.root.path().display(),
                url = self.server.url(TARBALL),
            ),
        )
    }

    fn context(&self) -> TestContext {
        self.context_with(self.settings_with(&sha256(&self.tarball), &self.fingerprint, ""))
    }

    fn context_with(&self, settings: crate::config::Settings) -> TestContext {
        context(
            INSTALL_EFA,
            HostRoot::new(self.root.path()),
            Arc::new(SystemRunner::default()),
            settings,
        )
    }

    fn step() -> InstallEfa {
        InstallEfa::with_download_policy(DownloadPolicy {
            attempts: 3,
            backoff: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            system_proxy: false,
        })
    }

    /// Takes the key file off the node, as on a stock image, and serves `key` beside the
    /// tarball, answering by `plan`.
    fn serve_key_instead_of_file(&self, key: Vec<u8>, plan: &[Reply]) {
        std::fs::remove_file(self.root.path().join(KEY.trim_start_matches('/')))
            .expect("removing the key file");
        self.server.route(KEY_URL_PATH, key, plan);
    }

    fn manifest(&self) -> Option<String> {
        std::fs::read_to_string(self.root.path().join("opt/amazon/efa_installed_packages")).ok()
    }

    /// Files left under the state directory (downloads, unpacked trees).
    fn state_files(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![self.root.path().join("var/lib/rayefa")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    found.push(
                        path.strip_prefix(self.root.path())
                            .unwrap_or(&path)
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        found.sort();
        found
    }
}

fn detail_of(outcome: &Outcome) -> serde_json::Value {
    match outcome {
        Outcome::Done(Some(detail))
        | Outcome::RebootRequired {
            detail: Some(detail),
            ..
        } => detail.clone(),
        other => panic!("no detail in {other:?}"),
    }
}

#[tokio::test]
async fn installs_a_verified_installer_and_is_then_done() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let tc = fx.context();
    let step = Fixture::step();
    assert_eq!(step.check(&tc.ctx).await.expect("check"), Check::NotDone);

    let outcome = step.run(&tc.ctx).await.expect("installs");
    let detail = detail_of(&outcome);
    assert!(matches!(outcome, Outcome::Done(_)));
    assert_eq!(detail["version"], VERSION);
    assert_eq!(detail["sha256_verified"], sha256(&fx.tarball));
    assert_eq!(detail["signer_fingerprint"], fx.fingerprint);
    assert_eq!(detail["bytes"], fx.tarball.len());
    assert_eq!(detail["installer_exit"], 0);
    assert_eq!(detail["manifest_version"], VERSION);
    assert_eq!(detail["packages"], 2);
    assert_eq!(detail["flags"], serde_json::json!(["-y"]));

    let manifest = fx.manifest().expect("the installer wrote its manifest");
    assert!(manifest.starts_with("# EFA installer version: 9.9.9\n"));
    let log = tc.log_text();
    assert!(log.contains("efa_installer.sh -y"), "{log}");
    assert!(log.contains("= EFA Installer Version: 9.9.9 ="), "{log}");
    assert!(log.contains("flags: -y"), "{log}");
    let status = tc.board.snapshot();
    assert!(
        status.steps[0]
            .output_tail
            .contains("EFA installation complete.")
    );
    assert!(
        fx.state_files().is_empty(),
        "left behind: {:?}",
        fx.state_files()
    );
    assert_eq!(fx.server.seen_for(TARBALL).len(), 1);
    assert_eq!(fx.server.seen_for(SIGNATURE).len(), 1);

    let Check::Done(Some(done)) = step.check(&tc.ctx).await.expect("check") else {
        panic!("not done after installing");
    };
    assert_eq!(done["version"], VERSION);
}

#[tokio::test]
async fn already_installed_at_the_wanted_version_is_done_without_a_download() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let tc = fx.context();
    let step = Fixture::step();
    put(
        fx.root.path(),
        "/opt/amazon/efa_installed_packages",
        b"# EFA installer version: 9.9.9\n# Debug packages installed: no\n# Packages installed:\na b c\n",
    );
    let Check::Done(Some(done)) = step.check(&tc.ctx).await.expect("check") else {
        panic!("not done");
    };
    assert_eq!(done["packages"], 3);
    assert!(fx.server.seen().is_empty());

    put(
        fx.root.path(),
        "/opt/amazon/efa_installed_packages",
        b"# EFA installer version: 1.0.0\n",
    );
    assert_eq!(step.check(&tc.ctx).await.expect("check"), Check::NotDone);
    assert!(
        tc.log_text()
            .contains("EFA installer 1.0.0 is installed, 9.9.9 is wanted")
    );

    put(
        fx.root.path(),
        "/opt/amazon/efa_installed_packages",
        b"\x00\x01garbage",
    );
    assert_eq!(step.check(&tc.ctx).await.expect("check"), Check::NotDone);
}

/// Runs the step expecting a refusal: fatal, the download deleted, the installer not run.
async fn assert_refused(fx: &Fixture, tc: &TestContext, says: &str) -> String {
    let err = Fixture::step().run(&tc.ctx).await.expect_err("refused");
    let text = err.to_string();
    assert!(!err.is_retryable(), "{text}");
    assert!(matches!(err, StepError::Fatal(_)), "{text}");
    assert!(text.contains(says), "{text}");
    assert!(fx.manifest().is_none(), "the installer ran");
    assert!(
        fx.state_files().is_empty(),
        "left behind: {:?}",
        fx.state_files()
    );
    text
}

#[tokio::test]
async fn a_wrong_hash_is_refused_and_the_download_deleted() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let pinned = sha256(b"another tarball");
    let tc = fx.context_with(fx.settings_with(&pinned, &fx.fingerprint, ""));
    let text = assert_refused(&fx, &tc, "SHA-256 check failed").await;
    assert!(
        text.contains(&pinned) && text.contains(&sha256(&fx.tarball)),
        "{text}"
    );
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let mallory = fx
        .gpg
        .generate("Mallory <mallory@example.invalid>", "ed25519", "sign");
    fx.server
        .route(SIGNATURE, fx.gpg.sign(&mallory, &fx.tarball), &[]);
    let tc = fx.context();
    let text = assert_refused(&fx, &tc, "signature check failed").await;
    assert!(text.contains(&mallory), "{text}");

    // A signature by the right key over other bytes fails the same way.
    fx.server
        .route(SIGNATURE, fx.gpg.sign(&fx.fingerprint, b"other bytes"), &[]);
    assert_refused(&fx, &tc, "signature check failed").await;
}

#[tokio::test]
async fn a_key_with_another_fingerprint_is_refused() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let aws = "4E9091BCBB97A96B26B15E59A05480B1DD2D3CCC";
    let tc = fx.context_with(fx.settings_with(&sha256(&fx.tarball), aws, ""));
    let text = assert_refused(&fx, &tc, "public key check failed").await;
    assert!(
        text.contains(aws) && text.contains(&fx.fingerprint),
        "{text}"
    );
}

#[tokio::test]
async fn without_a_key_file_the_key_beside_the_installer_is_fetched_and_pinned() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    fx.serve_key_instead_of_file(fx.gpg.export(&fx.fingerprint), &[]);
    let tc = fx.context();
    let outcome = Fixture::step().run(&tc.ctx).await.expect("installs");
    let detail = detail_of(&outcome);
    assert_eq!(detail["public_key"], fx.server.url(KEY_URL_PATH));
    assert_eq!(detail["signer_fingerprint"], fx.fingerprint);
    assert_eq!(fx.server.seen_for(KEY_URL_PATH).len(), 1);
    assert!(fx.manifest().is_some(), "the installer did not run");
    assert!(
        tc.log_text().contains(&format!(
            "the key fetched from {}",
            fx.server.url(KEY_URL_PATH)
        )),
        "{}",
        tc.log_text()
    );
}

#[tokio::test]
async fn a_key_file_on_the_node_wins_over_the_key_beside_the_installer() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let mallory = fx
        .gpg
        .generate("Mallory <mallory@example.invalid>", "ed25519", "sign");
    fx.server.route(KEY_URL_PATH, fx.gpg.export(&mallory), &[]);
    let tc = fx.context();
    let outcome = Fixture::step().run(&tc.ctx).await.expect("installs");
    assert_eq!(detail_of(&outcome)["public_key"], KEY);
    assert!(
        fx.server.seen_for(KEY_URL_PATH).is_empty(),
        "the key was fetched although the node has one"
    );
}

#[tokio::test]
async fn a_fetched_key_with_another_fingerprint_is_refused() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let mallory = fx
        .gpg
        .generate("Mallory <mallory@example.invalid>", "ed25519", "sign");
    fx.serve_key_instead_of_file(fx.gpg.export(&mallory), &[]);
    // Mallory also signed the tarball: only the pin stops it.
    fx.server
        .route(SIGNATURE, fx.gpg.sign(&mallory, &fx.tarball), &[]);
    let tc = fx.context();
    let text = assert_refused(&fx, &tc, "public key check failed").await;
    assert!(
        text.contains(&format!(
            "the key fetched from {}",
            fx.server.url(KEY_URL_PATH)
        )) && text.contains(&mallory)
            && text.contains(&fx.fingerprint),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_key_fails_for_good_without_retrying() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    fx.serve_key_instead_of_file(Vec::new(), &[Reply::Status(404)]);
    let tc = fx.context();
    let err = Fixture::step().run(&tc.ctx).await.expect_err("no key");
    let text = err.to_string();
    assert!(matches!(err, StepError::Fatal(_)), "{text}");
    assert!(
        text.contains("signing key is missing") && text.contains("HTTP 404") && text.contains(KEY),
        "{text}"
    );
    assert_eq!(
        fx.server.seen_for(KEY_URL_PATH).len(),
        1,
        "a 404 is not retried"
    );
    assert!(fx.manifest().is_none(), "the installer ran");
}

#[tokio::test]
async fn a_key_server_that_keeps_failing_is_unreachable_and_worth_another_attempt() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    fx.serve_key_instead_of_file(Vec::new(), &[Reply::Status(503); 3]);
    let tc = fx.context();
    let step = Fixture::step();
    let err = step.run(&tc.ctx).await.expect_err("no key");
    let text = err.to_string();
    assert!(matches!(err, StepError::Transient(_)), "{text}");
    assert!(
        text.contains("key server is unreachable") && text.contains("503"),
        "{text}"
    );
    assert_eq!(
        fx.server.seen_for(KEY_URL_PATH).len(),
        3,
        "the policy's attempts"
    );
    assert!(fx.manifest().is_none(), "the installer ran");

    // The next attempt, with the server back, reuses the download and installs.
    fx.server
        .route(KEY_URL_PATH, fx.gpg.export(&fx.fingerprint), &[]);
    let outcome = step.run(&tc.ctx).await.expect("installs");
    assert_eq!(detail_of(&outcome)["reused_download"], true);
    assert_eq!(fx.server.seen_for(TARBALL).len(), 1);
}

#[tokio::test]
async fn a_truncated_download_resumes_with_a_range_request() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let half = fx.tarball.len() / 2;
    fx.serve(&[Reply::Truncate(half)], &[]);
    let tc = fx.context();
    let outcome = Fixture::step().run(&tc.ctx).await.expect("installs");
    assert_eq!(detail_of(&outcome)["resumed_from"], half);
    let seen = fx.server.seen_for(TARBALL);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range, Some(format!("bytes={half}-")));
    assert!(tc.log_text().contains("trying again"), "{}", tc.log_text());
}

#[tokio::test]
async fn a_server_that_ignores_range_gets_the_whole_file_again() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    fx.serve(&[Reply::Truncate(1000), Reply::IgnoreRange], &[]);
    let tc = fx.context();
    let outcome = Fixture::step().run(&tc.ctx).await.expect("installs");
    assert_eq!(detail_of(&outcome)["sha256_verified"], sha256(&fx.tarball));
    assert_eq!(
        fx.server.seen_for(TARBALL)[1].range,
        Some("bytes=1000-".to_owned())
    );
}

#[tokio::test]
async fn a_stale_partial_file_is_thrown_away_when_the_hash_fails() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let tc = fx.context();
    // A partial from an earlier run of a different file: resuming it yields the wrong bytes.
    let partial = partial_path(&Layout::new(&tc.ctx).tarball);
    std::fs::create_dir_all(partial.parent().expect("downloads dir")).expect("mkdir");
    std::fs::write(&partial, vec![0xAB; 512]).expect("stale partial");
    assert!(fx.tarball.len() > 512);
    let outcome = Fixture::step()
        .run(&tc.ctx)
        .await
        .expect("installs after a fresh download");
    assert!(matches!(outcome, Outcome::Done(_)));
    let seen = fx.server.seen_for(TARBALL);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, Some("bytes=512-".to_owned()));
    assert_eq!(seen[1].range, None);
    assert!(
        tc.log_text().contains("downloading it afresh"),
        "{}",
        tc.log_text()
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_a_missing_file_is_not() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    fx.serve(&[Reply::Status(500)], &[Reply::Status(503)]);
    let tc = fx.context();
    Fixture::step()
        .run(&tc.ctx)
        .await
        .expect("installs after the 5xx");
    assert_eq!(fx.server.seen_for(TARBALL).len(), 2);
    assert_eq!(fx.server.seen_for(SIGNATURE).len(), 2);

    let fx = Fixture::installer(Behaviour::Installs).await;
    fx.serve(&[Reply::Status(404)], &[]);
    let tc = fx.context();
    let err = Fixture::step().run(&tc.ctx).await.expect_err("404");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(fx.server.seen_for(TARBALL).len(), 1, "a 404 is not retried");

    let fx = Fixture::installer(Behaviour::Installs).await;
    fx.serve(&[Reply::Status(500); 5], &[]);
    let tc = fx.context();
    let err = Fixture::step().run(&tc.ctx).await.expect_err("500s");
    assert!(err.is_retryable(), "the engine may try again later: {err}");
    assert!(err.to_string().contains("500"), "{err}");
    assert_eq!(
        fx.server.seen_for(TARBALL).len(),
        3,
        "the policy's attempts"
    );
}

#[tokio::test]
async fn archives_with_entries_escaping_the_tree_are_refused() {
    let cases: [(&str, Entry); 4] = [
        ("../x", Entry::RawFile(b"aws-efa-installer/../../x")),
        (
            "absolute path",
            Entry::RawFile(b"/tmp/rayefa-install-efa-absolute"),
        ),
        (
            "symlink out",
            Entry::Symlink("aws-efa-installer/RPMS/out", "../../../../x"),
        ),
        (
            "hard link out",
            Entry::HardLink("aws-efa-installer/h", "/etc/passwd"),
        ),
    ];
    for (what, evil) in cases {
        let mut entries = installer_entries(VERSION, Behaviour::Installs);
        entries.insert(2, evil);
        let fx = Fixture::new(&entries).await;
        let tc = fx.context();
        let err = Fixture::step().run(&tc.ctx).await.expect_err(what);
        assert!(matches!(err, StepError::Fatal(_)), "{what}: {err}");
        assert!(err.to_string().contains("unsafe archive"), "{what}: {err}");
        assert!(fx.manifest().is_none(), "{what}: the installer ran");
        assert!(!fx.root.path().join("var/lib/rayefa/x").exists());
        assert!(!std::path::Path::new("/tmp/rayefa-install-efa-absolute").exists());
        let leftovers: Vec<String> = fx
            .state_files()
            .into_iter()
            .filter(|f| !f.contains("/downloads/"))
            .collect();
        assert!(leftovers.is_empty(), "{what}: half-unpacked {leftovers:?}");
    }
}

#[tokio::test]
async fn installer_exit_1_fails_with_its_output() {
    let fx = Fixture::installer(Behaviour::Fails).await;
    let tc = fx.context();
    let err = Fixture::step().run(&tc.ctx).await.expect_err("fails");
    assert_eq!(err.exit_code(), Some(1));
    assert!(
        err.is_retryable(),
        "nothing was installed; another attempt may work"
    );
    assert!(
        err.to_string().contains("efa_installer.sh -y` exited 1"),
        "{err}"
    );
    let StepError::Command { output_tail, .. } = &err else {
        panic!("not a command failure: {err}");
    };
    assert!(
        output_tail.contains("failed to install EFA packages"),
        "{output_tail}"
    );
    let status = tc.board.snapshot();
    assert!(
        status.steps[0]
            .output_tail
            .contains("Error: Failed to install packages.")
    );
    let detail = status.steps[0].detail.clone().expect("detail");
    assert_eq!(detail["installer_exit"], 1);
    assert!(
        fx.state_files().iter().all(|f| f.contains("/downloads/")),
        "{:?}",
        fx.state_files()
    );
    assert_eq!(
        fx.state_files().len(),
        1,
        "the verified tarball is kept for the retry"
    );
    for dir in ["var/lib/rayefa/downloads", "var/lib/rayefa/efa-installer"] {
        let mode = std::fs::metadata(fx.root.path().join(dir))
            .expect(dir)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{dir}");
    }

    // The retry uses the kept tarball.
    let _ = Fixture::step().run(&tc.ctx).await.expect_err("fails again");
    assert_eq!(fx.server.seen_for(TARBALL).len(), 1);
}

#[tokio::test]
async fn reboot_is_needed_asks_for_a_reboot_and_is_done_after_it() {
    let fx = Fixture::installer(Behaviour::NeedsReboot).await;
    let tc = fx.context();
    let step = Fixture::step();
    let outcome = step.run(&tc.ctx).await.expect("runs");
    let Outcome::RebootRequired { reason, detail } = &outcome else {
        panic!("no reboot asked: {outcome:?}");
    };
    assert!(reason.contains("reboot"), "{reason}");
    assert_eq!(detail.as_ref().expect("detail")["reboot_needed"], true);
    assert!(fx.state_files().is_empty(), "{:?}", fx.state_files());
    assert!(matches!(
        step.check(&tc.ctx).await.expect("check"),
        Check::Done(_)
    ));
}

#[tokio::test]
async fn exit_0_without_the_wanted_manifest_fails_with_the_cause() {
    let fx = Fixture::installer(Behaviour::InstallsNothing).await;
    let tc = fx.context();
    let err = Fixture::step()
        .run(&tc.ctx)
        .await
        .expect_err("nothing installed");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("exited 0") && text.contains("does not exist"),
        "{text}"
    );
}

#[tokio::test]
async fn the_installer_waits_for_the_package_manager_lock() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let tc = fx.context();
    let lock = tc.ctx.package_lock.clone();
    let held = lock.acquire().await;
    let ctx = tc.ctx.clone();
    let run = tokio::spawn(async move { Fixture::step().run(&ctx).await });
    let mut waited = false;
    for _ in 0..200 {
        if tc.activity().as_deref() == Some("waiting for the package-manager lock") {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(waited, "activity: {:?}", tc.activity());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fx.manifest().is_none(), "ran without the lock");
    drop(held);
    let outcome = run.await.expect("joins").expect("installs");
    assert!(matches!(outcome, Outcome::Done(_)));
}

#[tokio::test]
async fn configured_flags_reach_the_installer() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let tc = fx.context_with(fx.settings_with(
        &sha256(&fx.tarball),
        &fx.fingerprint,
        "installer_flags = [\"-y\", \"--skip-kmod\", \"--mpi=openmpi5\"]",
    ));
    Fixture::step().run(&tc.ctx).await.expect("installs");
    assert!(
        tc.log_text()
            .contains("flags: -y --skip-kmod --mpi=openmpi5"),
        "{}",
        tc.log_text()
    );
}

#[test]
fn file_names_come_from_the_url_when_they_are_plain() {
    assert_eq!(
        tarball_name("https://efa-installer.amazonaws.com/aws-efa-installer-1.45.1.tar.gz"),
        "aws-efa-installer-1.45.1.tar.gz"
    );
    assert_eq!(tarball_name("http://h/x.tar.gz?sig=1#f"), "x.tar.gz");
    for odd in [
        "http://h/",
        "http://h/..",
        "http://h/a%2Fb",
        "http://h/.hidden",
    ] {
        assert_eq!(tarball_name(odd), "aws-efa-installer.tar.gz", "{odd}");
    }
}

#[test]
fn progress_reads_in_mebibytes() {
    assert_eq!(mebibytes(12_897_484, Some(356_515_840)), "12.3/340.0 MiB");
    assert_eq!(mebibytes(1_048_576, None), "1.0 MiB");
}

#[tokio::test]
async fn wanted_follows_the_efa_mode_and_the_pci_bus() {
    let fx = Fixture::installer(Behaviour::Installs).await;
    let step = Fixture::step();
    let sha = sha256(&fx.tarball);
    let with_mode = |mode: &str| {
        fx.context_with(fx.settings_with(&sha, &fx.fingerprint, &format!("mode = \"{mode}\"")))
    };
    let tc = fx.context();
    assert_eq!(step.wanted(&tc.ctx).await, Wanted::Yes, "required");
    let tc = with_mode("off");
    assert!(matches!(step.wanted(&tc.ctx).await, Wanted::Skip(_)));
    let tc = with_mode("auto");
    assert_eq!(
        step.wanted(&tc.ctx).await,
        Wanted::Skip("no EFA interface".to_owned())
    );
    let device = "/sys/bus/pci/devices/0000:00:06.0";
    put(fx.root.path(), &format!("{device}/vendor"), b"0x1d0f\n");
    put(fx.root.path(), &format!("{device}/device"), b"0xefa1\n");
    assert_eq!(
        step.wanted(&tc.ctx).await,
        Wanted::Yes,
        "auto with an EFA device"
    );
}
