//! The catalogue of bad cluster files: every `tests/fixtures/bad-cluster/<name>.yaml` has a
//! `<name>.expected` holding the exit code on the first line (`exit 2`) and then the exact,
//! whole stderr of the real `rayefa`, with `{DIR}` standing for the fixture folder.
//!
//! Each file goes through `rayefa validate --offline` and then `rayefa up`: both must refuse
//! it with the same message and exit code, and print nothing on stdout. `${VAR}`s are filled
//! in from a fixed environment ([`ENVIRONMENT`]). A mismatch prints the file, the command and
//! a line-by-line diff. To see what rayefa says about a new fixture, run
//! `rayefa validate --offline FILE` and check the message before writing it down.

use std::path::Path;
use std::process::Command;

use rayefa_test_support::catalogue::{Catalogue, Expected, diff, run_in_clean_environment};

const RAYEFA: &str = env!("CARGO_BIN_EXE_rayefa");

/// The whole environment the binary sees, besides PATH.
const ENVIRONMENT: [(&str, &str); 2] = [
    ("CATALOGUE_EMPTY", ""),
    ("CATALOGUE_TWO_LINES", "first line\nsecond line"),
];

fn catalogue() -> Catalogue {
    Catalogue::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-cluster"),
        "yaml",
    )
}

/// Checks one file against what it must produce; a description of each mismatch. `up` runs
/// only once `validate` has refused the file, so that a fixture that became valid by mistake
/// launches nothing.
fn check(name: &str, file: &Path, want: &Expected) -> Vec<String> {
    let mut failures = Vec::new();
    for args in [&["validate", "--offline"][..], &["up"][..]] {
        let ran = run_in_clean_environment(Command::new(RAYEFA).args(args).arg(file), &ENVIRONMENT);
        if ran.code != want.code || ran.stderr != want.stderr || !ran.stdout.is_empty() {
            failures.push(format!(
                "{name} (rayefa {}): exit {}, wanted {}; stdout {:?}\n{}",
                args.join(" "),
                ran.code,
                want.code,
                ran.stdout,
                diff(&want.stderr, &ran.stderr)
            ));
            break;
        }
    }
    failures
}

#[test]
fn every_bad_cluster_file_in_the_catalogue_is_refused_with_its_exact_message() {
    catalogue().assert_every_case(70, check);
}

#[test]
fn every_expectation_has_its_fixture() {
    catalogue().assert_every_expectation_has_its_input();
}

/// Inputs that are not worth a file in the repository: too big, or endless.
#[test]
fn a_huge_file_and_an_endless_device_are_refused_without_reading_them_whole() {
    let scratch = tempfile::tempdir().expect("scratch");
    let huge = scratch.path().join("huge.yaml");
    let mut text = String::from(
        "cluster_name: huge\nprovider: {type: local}\nhead_node_type: head\n\
         available_node_types:\n  head: {node_config: {}}\nsetup_commands:\n",
    );
    let mut i = 0;
    while text.len() <= 1 << 20 {
        text.push_str(&format!("  - echo {i} a setup command among very many\n"));
        i += 1;
    }
    std::fs::write(&huge, text).expect("write");
    let too_large = |path: &Path| Expected {
        code: 2,
        stderr: format!(
            "{}: error: the file is larger than 1048576 bytes, too large for a cluster file\n",
            path.display()
        ),
    };
    let mut failures = check("huge", &huge, &too_large(&huge));
    let zero = Path::new("/dev/zero");
    failures.extend(check("/dev/zero", zero, &too_large(zero)));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
