//! The runner of a bad-input catalogue: a folder of inputs (`<name>.<extension>`), each with a
//! `<name>.expected` holding the exit code on the first line (`exit 2`) and then the exact,
//! whole stderr the real binary must print, with `{DIR}` standing for the folder.
//!
//! The runner reads the expectations, spreads the cases over the cores (each case is a few
//! independent processes), gathers every mismatch and fails once with all of them, each with a
//! line-by-line diff. What a case runs and compares is the suite's own `check`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one case must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The exit code.
    pub code: i32,
    /// The whole stderr, `{DIR}` already replaced.
    pub stderr: String,
}

impl Expected {
    /// Reads `<name>.expected` at `path`: `exit N` on the first line, then stderr, in which
    /// `{DIR}` stands for `dir`. Panics when the file is missing or malformed.
    pub fn read(path: &Path, dir: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: {e} (every fixture needs one)", path.display()));
        let (first, stderr) = text.split_once('\n').unwrap_or((&text, ""));
        let code = first
            .strip_prefix("exit ")
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: the first line must be `exit N`", path.display()));
        Self {
            code,
            stderr: stderr.replace("{DIR}", &dir.display().to_string()),
        }
    }
}

/// A folder of bad inputs `<name>.<extension>` and their `<name>.expected`.
#[derive(Debug, Clone)]
pub struct Catalogue {
    dir: PathBuf,
    extension: &'static str,
}

impl Catalogue {
    /// The catalogue in `dir`, whose inputs end in `.<extension>`.
    pub fn new(dir: PathBuf, extension: &'static str) -> Self {
        Self { dir, extension }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of the inputs (without their extension), sorted.
    pub fn names(&self) -> Vec<String> {
        let suffix = format!(".{}", self.extension);
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("fixtures")
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(&suffix).map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    /// Runs `check(name, input, expected)` for every case, spread over the cores, and fails
    /// with every mismatch `check` describes. Fails too when the catalogue has fewer than
    /// `at_least` cases, so that a lost folder cannot pass as an empty one.
    pub fn assert_every_case(
        &self,
        at_least: usize,
        check: impl Fn(&str, &Path, &Expected) -> Vec<String> + Sync,
    ) {
        let names = self.names();
        assert!(
            names.len() >= at_least,
            "the catalogue shrank: {}",
            names.len()
        );
        let check = &check;
        // Cases are independent processes: spread them over the cores.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let failures: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = names
                .chunks(names.len().div_ceil(workers))
                .map(|chunk| {
                    scope.spawn(move || {
                        let mut failures = Vec::new();
                        for name in chunk {
                            let want = Expected::read(
                                &self.dir.join(format!("{name}.expected")),
                                &self.dir,
                            );
                            let input = self.dir.join(format!("{name}.{}", self.extension));
                            failures.extend(check(name, &input, &want));
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

    /// Fails when a `<name>.expected` has no `<name>.<extension>` beside it (a case that would
    /// silently never run).
    pub fn assert_every_expectation_has_its_input(&self) {
        for entry in std::fs::read_dir(&self.dir).expect("fixtures").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".expected") {
                let input = format!("{stem}.{}", self.extension);
                assert!(self.dir.join(&input).exists(), "{name} has no {input}");
            }
        }
    }
}

/// What a finished process said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// Its exit code, -1 when a signal ended it.
    pub code: i32,
    /// Its stdout, lossily UTF-8.
    pub stdout: String,
    /// Its stderr, lossily UTF-8.
    pub stderr: String,
}

/// Runs `command` with an environment of `PATH` and `env` alone, so that nothing in the
/// caller's environment can change the outcome.
pub fn run_in_clean_environment(command: &mut Command, env: &[(&str, &str)]) -> Ran {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A readable difference between two texts, line by line (`-` expected, `+` actual).
pub fn diff(expected: &str, actual: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_missing_and_extra_lines_and_the_final_line_break() {
        assert_eq!(diff("a\nb\n", "a\nb\n"), "  a\n  b\n");
        assert_eq!(
            diff("a\nb\n", "a\nc\nd"),
            "  a\n- b\n+ c\n+ d\n(the texts differ in their final line break)\n"
        );
    }

    #[test]
    fn an_expectation_is_its_exit_code_and_stderr_with_the_folder_filled_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("case.expected");
        std::fs::write(&path, "exit 2\n{DIR}/case.toml: bad\n").expect("write");
        let want = Expected::read(&path, Path::new("/fixtures"));
        assert_eq!(want.code, 2);
        assert_eq!(want.stderr, "/fixtures/case.toml: bad\n");
    }
}
