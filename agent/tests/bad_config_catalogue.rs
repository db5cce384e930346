//! The catalogue of bad agent configurations: every file in `tests/fixtures/bad-config/` is
//! a main configuration file (with drop-ins in `<name>.d/` where the mistake is in one), and
//! its `<name>.expected` holds the exit code on the first line (`exit 2`) and then the exact,
//! whole stderr of the real `rayefa-agent`, with `{DIR}` standing for the fixture folder.
//!
//! Each file runs through `plan` and `run`: both must refuse it with the same message and exit
//! code, before anything is created under the root. A mismatch prints the file, the command
//! and a line-by-line diff. To see what the agent says about a new fixture, run
//! `rayefa-agent --config FILE --root /tmp/x plan` and check the message before writing it down.

use std::path::{Path, PathBuf};
use std::process::Command;

use rayefa_test_support::catalogue::{Catalogue, Expected, diff, run_in_clean_environment};

const AGENT: &str = env!("CARGO_BIN_EXE_rayefa-agent");

fn catalogue() -> Catalogue {
    Catalogue::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-config"),
        "toml",
    )
}

/// Checks one configuration against what it must produce; a description of each mismatch.
fn check(name: &str, config: &Path, want: &Expected) -> Vec<String> {
    let mut failures = Vec::new();
    for command in ["plan", "run"] {
        let root = tempfile::tempdir().expect("root");
        // `rayefa-agent --config FILE --root ROOT COMMAND`, in an environment that cannot
        // change the outcome.
        let ran = run_in_clean_environment(
            Command::new(AGENT)
                .arg("--config")
                .arg(config)
                .arg("--root")
                .arg(root.path())
                .arg(command),
            &[],
        );
        if ran.code != want.code || ran.stderr != want.stderr {
            failures.push(format!(
                "{name} ({command}): exit {}, wanted {}\n{}",
                ran.code,
                want.code,
                diff(&want.stderr, &ran.stderr)
            ));
        }
        let created: Vec<_> = std::fs::read_dir(root.path())
            .expect("root")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if !created.is_empty() {
            failures.push(format!(
                "{name} ({command}): refused, but created {created:?} under the root"
            ));
        }
    }
    failures
}

#[test]
fn every_bad_configuration_in_the_catalogue_is_refused_with_its_exact_message() {
    catalogue().assert_every_case(40, check);
}

#[test]
fn every_expectation_has_its_fixture() {
    catalogue().assert_every_expectation_has_its_input();
}

/// Inputs that are not worth a file in the repository: too big, or not a file at all.
#[test]
fn a_huge_file_a_directory_and_an_endless_device_are_refused_without_reading_them_whole() {
    let scratch = tempfile::tempdir().expect("scratch");
    let huge = scratch.path().join("huge.toml");
    let mut text = String::from("[node]\ncluster_name = \"it\"\nrole = \"head\"\n");
    while text.len() <= 1 << 20 {
        text.push_str("# a comment line that makes the file longer than any configuration\n");
    }
    std::fs::write(&huge, text).expect("write");
    let directory = scratch.path().join("directory.toml");
    std::fs::create_dir(&directory).expect("mkdir");
    let cases = [
        (
            huge.clone(),
            format!(
                "rayefa-agent: {}: the file is larger than 1048576 bytes, too large for a \
                 configuration file\n",
                huge.display()
            ),
        ),
        (
            directory.clone(),
            format!(
                "rayefa-agent: {}: cannot read: Is a directory (os error 21)\n",
                directory.display()
            ),
        ),
        (
            PathBuf::from("/dev/zero"),
            "rayefa-agent: /dev/zero: the file is larger than 1048576 bytes, too large for a \
             configuration file\n"
                .to_owned(),
        ),
    ];
    let mut failures = Vec::new();
    for (config, stderr) in cases {
        let name = config.display().to_string();
        failures.extend(check(&name, &config, &Expected { code: 2, stderr }));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
