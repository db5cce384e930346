//! The install-efa step's reader of `/opt/amazon/efa_installed_packages`, which anything
//! on the node (a person, a crash mid-write, another installer) may have left in any state.
//!
//! Properties: nothing panics; a version read is a plausible version string (the step
//! compares it and prints it); an error quotes a bounded part of the file.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rayefa_agent::harness::fuzz::read_efa_manifest;

static SCRATCH: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    tempfile::Builder::new()
        .prefix("rayefa-fuzz-manifest-")
        .tempdir()
        .expect("scratch directory")
});

fuzz_target!(|data: &[u8]| {
    let path = SCRATCH.path().join("efa_installed_packages");
    std::fs::write(&path, data).expect("scratch directory writable");
    match read_efa_manifest(&path) {
        Ok(Some(manifest)) => {
            let version = &manifest.version;
            assert!(
                !version.is_empty()
                    && version.len() <= 64
                    && version
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-_+~".contains(c)),
                "an implausible version was accepted: {version:?}"
            );
        }
        Ok(None) => panic!("the manifest file was written but read as absent"),
        Err(message) => assert!(
            message.chars().count() < 400,
            "an unbounded error message: {message}"
        ),
    }
});
