//! An EFA installer for the fleet: AWS's real one cannot be fetched here, and there is no EFA
//! device to install for. This one has the real tarball's shape (`aws-efa-installer/` with
//! `env.sh`, `common.sh` and `efa_installer.sh`), is signed with a test key made here with
//! GnuPG, and its `efa_installer.sh` does what the real one does on a machine without an EFA
//! device once its packages are in: records the manifest `/opt/amazon/efa_installed_packages`
//! and says that no device was found. The agent's checks (SHA-256, signature, safe unpacking,
//! the manifest's version) all run for real against it.
//!
//! The node trusts the test key the way a stock node trusts AWS's: it has no key file, fetches
//! `aws-efa-installer.key` from beside the tarball (the fleet's file server publishes
//! [`TestEfaInstaller::public_key`] there) and checks it against the fingerprint the cluster
//! file's `rayefa.efa.fingerprint` hands it.

use std::path::{Path, PathBuf};
use std::process::Command;

use rayefa_test_support::Gpg;
use rayefa_test_support::files::{tar_gz, write_executable};

/// The installer version the tarball says it is (the agent's default).
pub const VERSION: &str = "1.45.1";

/// A signed installer tarball and the key that signed it.
#[derive(Debug)]
pub struct TestEfaInstaller {
    /// `aws-efa-installer-<VERSION>.tar.gz`
    pub tarball: PathBuf,
    /// Its detached binary signature.
    pub signature: PathBuf,
    /// The armoured public key.
    pub public_key: PathBuf,
    /// The key's fingerprint, upper-case hex.
    pub fingerprint: String,
    /// The tarball's SHA-256, lower-case hex.
    pub sha256: String,
    /// The GnuPG home holding the key, removed (its agent stopped) with the installer.
    gpg: Gpg,
}

impl TestEfaInstaller {
    /// Makes the key, the tarball and its signature in `dir`.
    pub fn make(dir: &Path) -> TestEfaInstaller {
        std::fs::create_dir_all(dir).expect("installer directory");
        let gpg = Gpg::new();
        let fingerprint = gpg.generate(
            "rayefa fleet test EFA installer key <fleet@rayefa.invalid>",
            "ed25519",
            "sign",
        );
        let public_key = dir.join("aws-efa-installer.key");
        std::fs::write(&public_key, gpg.export(&fingerprint)).expect("writing the public key");

        let tree = dir.join("tree/aws-efa-installer");
        std::fs::create_dir_all(&tree).expect("installer tree");
        std::fs::write(
            tree.join("env.sh"),
            format!("EFA_INSTALLER_VERSION={VERSION}\n"),
        )
        .expect("env.sh");
        std::fs::write(
            tree.join("common.sh"),
            "is_root() { [ \"$(id -u)\" = 0 ]; }\n",
        )
        .expect("common.sh");
        write_executable(&tree.join("efa_installer.sh"), INSTALLER_SCRIPT);
        let tarball = dir.join(format!("aws-efa-installer-{VERSION}.tar.gz"));
        tar_gz(&dir.join("tree"), "aws-efa-installer", &tarball);
        let signature = dir.join(format!("aws-efa-installer-{VERSION}.tar.gz.sig"));
        let signed = gpg.sign(&fingerprint, &std::fs::read(&tarball).expect("the tarball"));
        std::fs::write(&signature, signed).expect("writing the signature");
        let sha256 = sha256_of(&tarball);
        TestEfaInstaller {
            tarball,
            signature,
            public_key,
            fingerprint,
            sha256,
            gpg,
        }
    }
}

/// What `efa_installer.sh` does on a node: the real installer's messages and manifest, with no
/// packages to install and no device to find.
const INSTALLER_SCRIPT: &str = r#"#!/bin/bash
# rayefa fleet test: a stand-in for AWS's efa_installer.sh (no EFA device exists here).
set -euo pipefail
source ./env.sh
[ -e common.sh ] || { echo 'Please cd into the installer directory.' >&2; exit 1; }
source ./common.sh
is_root || { echo 'This script must be run as root.' >&2; exit 1; }
echo "= Starting Amazon Elastic Fabric Adapter Installation Script ="
echo "= EFA Installer Version: ${EFA_INSTALLER_VERSION} ="
echo "flags: $*"
mkdir -p /opt/amazon
printf '# EFA installer version: %s\n# Debug packages installed: no\n# Packages installed:\n' \
  "$EFA_INSTALLER_VERSION" > /opt/amazon/efa_installed_packages
echo 'EFA device not detected, skipping test.'
echo '===================================================='
echo 'EFA installation complete.'
"#;

/// The SHA-256 of a file, lower-case hex.
pub fn sha256_of(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("running sha256sum");
    assert!(output.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}
