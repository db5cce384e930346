//! The catalogue of bad cluster files: every `tests/fixtures/bad-cluster/<name>.yaml` has a
//! `<name>.expected` holding the exit code on the first line (`exit 2`) and then the exact,
//! whole stderr of the real `rayefa`, with `{DIR}` standing for the fixture folder.
//!
//! Each file goes through `rayefa validate --offline` and then `rayefa up`: both must refuse
//! it with the same message and exit code, and print nothing on stdout. `${VAR}`s are filled
//! in from a fixed environment ([`ENVIRONMENT`]). A mismatch prints the file, the command and
//! a line-by-line diff. To see what rayefa says about a new fixture, run
//! `rayefa validate --offline FILE` and check the message before writing it down.

use std::path::{Path, PathBuf};
use std::process::Command;

const RAYEFA: &str = env!("CARGO_BIN_EXE_rayefa");

/// The whole environment the binary sees, besides PATH.
const ENVIRONMENT: [(&str, &str); 2] = [
    ("CATALOGUE_EMPTY", ""),
    ("CATALOGUE_TWO_LINES", "first line\nsecond line"),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-cluster")
}

/// What a case must produce.
struct Expected {
    code: i32,
    stderr: String,
}

/// Reads `<name>.expected`: `exit N` on the first line, then stderr.
fn expected(path: &Path, dir: &Path) -> Expected {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (every fixture needs one)", path.display()));
    let (first, stderr) = text.split_once('\n').unwrap_or((&text, ""));
    let code = first
        .strip_prefix("exit ")
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: the first line must be `exit N`", path.display()));
    Expected {
        code,
        stderr: stderr.replace("{DIR}", &dir.display().to_string()),
    }
}

/// Runs `rayefa ARGS FILE`; exit code, stdout and stderr.
fn rayefa(args: &[&str], file: &Path) -> (i32, String, String) {
    let output = Command::new(RAYEFA)
        .args(args)
        .arg(file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(ENVIRONMENT)
        .output()
        .expect("rayefa runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A readable difference between two texts, line by line (`-` expected, `+` actual).
fn diff(expected: &str, actual: &str) -> String {
    let want: Vec<&str> = expected.lines().collect();
    let got: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for i in 0..want.len().max(got.len()) {
        match (want.get(i), got.get(i)) {
            (Some(w), Some(g)) if w == g => out.push_str(&format!("  {w}\n")),
            (w, g) => {
                if let Some(w) = w {
                    out.push_str(&format!("- {w}\n"));
                }
                if let Some(g) = g {
                    out.push_str(&format!("+ {g}\n"));
                }
            }
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the texts differ in their final line break)\n");
    }
    out
}

/// Checks one file against what it must produce; a description of each mismatch. `up` runs
/// only once `validate` has refused the file, so that a fixture that became valid by mistake
/// launches nothing.
fn check(name: &str, file: &Path, want: &Expected) -> Vec<String> {
    let mut failures = Vec::new();
    for args in [&["validate", "--offline"][..], &["up"][..]] {
        let (code, stdout, stderr) = rayefa(args, file);
        if code != want.code || stderr != want.stderr || !stdout.is_empty() {
            failures.push(format!(
                "{name} (rayefa {}): exit {code}, wanted {}; stdout {stdout:?}\n{}",
                args.join(" "),
                want.code,
                diff(&want.stderr, &stderr)
            ));
            break;
        }
    }
    failures
}

#[test]
fn every_bad_cluster_file_in_the_catalogue_is_refused_with_its_exact_message() {
    let dir = fixtures();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yaml").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 50, "the catalogue shrank: {}", names.len());
    // Cases are independent processes: spread them over the cores.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .chunks(names.len().div_ceil(workers))
            .map(|chunk| {
                let dir = &dir;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for name in chunk {
                        let want = expected(&dir.join(format!("{name}.expected")), dir);
                        failures.extend(check(name, &dir.join(format!("{name}.yaml")), &want));
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a checking thread panicked"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expectation_has_its_fixture() {
    let dir = fixtures();
    for entry in std::fs::read_dir(&dir).expect("fixtures").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".expected") {
            assert!(
                dir.join(format!("{stem}.yaml")).exists(),
                "{name} has no {stem}.yaml"
            );
        }
    }
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
