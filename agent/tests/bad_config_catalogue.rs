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

const AGENT: &str = env!("CARGO_BIN_EXE_rayefa-agent");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-config")
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

/// Runs `rayefa-agent --config FILE --root ROOT COMMAND` with an environment that cannot
/// change the outcome; exit code and stderr.
fn agent(config: &Path, root: &Path, command: &str) -> (i32, String) {
    let output = Command::new(AGENT)
        .arg("--config")
        .arg(config)
        .arg("--root")
        .arg(root)
        .arg(command)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("rayefa-agent runs");
    (
        output.status.code().unwrap_or(-1),
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

/// Checks one configuration against what it must produce; a description of each mismatch.
fn check(name: &str, config: &Path, want: &Expected) -> Vec<String> {
    let mut failures = Vec::new();
    for command in ["plan", "run"] {
        let root = tempfile::tempdir().expect("root");
        let (code, stderr) = agent(config, root.path(), command);
        if code != want.code || stderr != want.stderr {
            failures.push(format!(
                "{name} ({command}): exit {code}, wanted {}\n{}",
                want.code,
                diff(&want.stderr, &stderr)
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
    let dir = fixtures();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 40, "the catalogue shrank: {}", names.len());
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
                        failures.extend(check(name, &dir.join(format!("{name}.toml")), &want));
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
                dir.join(format!("{stem}.toml")).exists(),
                "{name} has no {stem}.toml"
            );
        }
    }
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
