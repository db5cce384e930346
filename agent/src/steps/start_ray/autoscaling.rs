//! On the head of a cluster that scales: what Ray's autoscaler needs before `ray start
//! --head` runs. rayefa's node provider (a Python module kept in this repository) goes into
//! the virtualenv's `site-packages`, where the autoscaler's `import` finds it; Ray's
//! autoscaling configuration goes where the start command's `--autoscaling-config` points, and
//! when no start command names one the flag is added to `ray start --head`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::super::{cluster_commands, venv};
use crate::engine::{StepContext, StepError};

/// The provider's module; `provider.module` in the autoscaling configuration names it.
pub(crate) const PROVIDER_MODULE: &str = "rayefa_autoscaler.py";

/// The provider's source, the one copy that is tested with Python's unittest.
const PROVIDER_SOURCE: &str = include_str!("../../../python/rayefa_autoscaler.py");

/// The configuration's file name, Ray's own (`~/ray_bootstrap_config.yaml` for `ray up`).
const BOOTSTRAP_FILE: &str = "ray_bootstrap_config.yaml";

/// The flag of `ray start --head` that starts the autoscaler.
const FLAG: &str = "--autoscaling-config";

/// What [`prepare`] did, for the step's detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// The start commands to run: the configured ones, with the flag added where needed.
    pub(crate) commands: Vec<String>,
    /// Where the autoscaling configuration was written.
    pub(crate) config_path: PathBuf,
    /// Where the provider's module was written.
    pub(crate) modules: Vec<PathBuf>,
    /// Whether `--autoscaling-config` was added to `ray start --head`.
    pub(crate) flag_added: bool,
}

/// Writes the provider's module and Ray's autoscaling configuration, and returns the start
/// commands that run the autoscaler with it.
pub(crate) fn prepare(
    ctx: &StepContext,
    commands: &[String],
    config: &Map<String, Value>,
) -> Result<Prepared, StepError> {
    let modules = install_provider(&venv::dir(ctx))?;
    let (config_path, commands, flag_added) = match commands.iter().find_map(|c| named_path(c)) {
        Some(named) => {
            // Where the command's shell finds it: `~` is the commands' home, not a path
            // under the agent's root.
            let path = match named.strip_prefix("~/") {
                Some(rest) => Path::new(&cluster_commands::command_home(ctx)?).join(rest),
                None if Path::new(&named).is_absolute() => PathBuf::from(&named),
                None => {
                    return Err(StepError::Fatal(format!(
                        "the head's start commands pass `{FLAG}={named}`: the agent writes Ray's \
                         autoscaling configuration only to an absolute path or one under `~/`"
                    )));
                }
            };
            (path, commands.to_vec(), false)
        }
        None => {
            let path = ctx
                .root
                .path(&ctx.settings.agent.state_dir)
                .join(BOOTSTRAP_FILE);
            let with_flag = with_flag(commands, &path).ok_or_else(|| {
                StepError::Fatal(format!(
                    "the cluster scales, but no head start command runs `ray start --head` to \
                     which `{FLAG}` could be added; add `{FLAG}=~/{BOOTSTRAP_FILE}` to yours"
                ))
            })?;
            (path, with_flag, true)
        }
    };
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| StepError::Fatal(format!("serialising the autoscaling configuration: {e}")))?;
    write(&config_path, &text)?;
    Ok(Prepared {
        commands,
        config_path,
        modules,
        flag_added,
    })
}

/// Writes the provider's module into every `lib/python*/site-packages` of the virtualenv.
fn install_provider(virtualenv: &Path) -> Result<Vec<PathBuf>, StepError> {
    let lib = virtualenv.join("lib");
    let entries = std::fs::read_dir(&lib).map_err(|e| {
        StepError::Fatal(format!(
            "the autoscaler's node provider goes into the virtualenv, but {} cannot be read \
             ({e}): install-ray must make the virtualenv",
            lib.display()
        ))
    })?;
    let mut written = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StepError::Io(format!("reading {}: {e}", lib.display())))?;
        let site = entry.path().join("site-packages");
        if entry.file_name().to_string_lossy().starts_with("python") && site.is_dir() {
            let module = site.join(PROVIDER_MODULE);
            write(&module, PROVIDER_SOURCE)?;
            written.push(module);
        }
    }
    if written.is_empty() {
        return Err(StepError::Fatal(format!(
            "no lib/python*/site-packages in {} for the autoscaler's node provider",
            virtualenv.display()
        )));
    }
    written.sort();
    Ok(written)
}

/// Writes `text` whole: a reader (Ray's monitor, restarted) never sees half a file.
fn write(path: &Path, text: &str) -> Result<(), StepError> {
    let fail = |e: std::io::Error| StepError::Io(format!("writing {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

/// The path a command passes as `--autoscaling-config=PATH` or `--autoscaling-config PATH`.
fn named_path(command: &str) -> Option<String> {
    let mut words = command.split(|c: char| c.is_whitespace() || c == ';' || c == '&');
    while let Some(word) = words.next() {
        if let Some(value) = word.strip_prefix(FLAG) {
            let value = match value.strip_prefix('=') {
                Some(value) => value.to_owned(),
                None if value.is_empty() => words.find(|w| !w.is_empty())?.to_owned(),
                None => continue,
            };
            return Some(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
        }
    }
    None
}

/// `commands` with `--autoscaling-config=PATH` after the `--head` of the first command that
/// runs `ray start --head`; `None` when there is no such command.
fn with_flag(commands: &[String], path: &Path) -> Option<Vec<String>> {
    let position = commands
        .iter()
        .position(|c| c.contains("ray start") && head_flag_at(c).is_some())?;
    let mut commands = commands.to_vec();
    let command = &mut commands[position];
    let at = head_flag_at(command)? + "--head".len();
    command.insert_str(at, &format!(" {FLAG}={}", path.display()));
    Some(commands)
}

/// Where `--head` stands as a word of its own in `command`.
fn head_flag_at(command: &str) -> Option<usize> {
    command.match_indices("--head").map(|(i, _)| i).find(|&i| {
        let before = command[..i].chars().next_back();
        let after = command[i + "--head".len()..].chars().next();
        before.is_none_or(char::is_whitespace)
            && after.is_none_or(|c| c.is_whitespace() || c == ';' || c == '&')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_configuration_is_found_in_either_spelling() {
        assert_eq!(
            named_path(
                "ulimit -n 65536; ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml --port=6379"
            ),
            Some("~/ray_bootstrap_config.yaml".to_owned())
        );
        assert_eq!(
            named_path("ray start --head --autoscaling-config /etc/ray.yaml"),
            Some("/etc/ray.yaml".to_owned())
        );
        assert_eq!(named_path("ray start --head --port=6379"), None);
        assert_eq!(named_path("ray start --autoscaling-configuration=x"), None);
    }

    #[test]
    fn the_flag_goes_after_the_first_ray_start_head() {
        let commands = vec![
            "echo --headless".to_owned(),
            "ulimit -n 65536; ray start --head --port=6379; echo done".to_owned(),
        ];
        let added = with_flag(&commands, Path::new("/var/lib/rayefa/ray.yaml")).expect("added");
        assert_eq!(added[0], commands[0]);
        assert_eq!(
            added[1],
            "ulimit -n 65536; ray start --head --autoscaling-config=/var/lib/rayefa/ray.yaml \
             --port=6379; echo done"
        );
        assert_eq!(
            with_flag(&["ray start --address=h:6379".to_owned()], Path::new("/x")),
            None
        );
        assert_eq!(
            with_flag(&["ray start --head".to_owned()], Path::new("/x")).expect("at the end")[0],
            "ray start --head --autoscaling-config=/x"
        );
    }

    #[test]
    fn the_provider_goes_into_every_site_packages() {
        let venv = tempfile::tempdir().expect("venv");
        assert!(install_provider(venv.path()).is_err(), "no lib/");
        std::fs::create_dir_all(venv.path().join("lib/python3.12/site-packages")).expect("site");
        std::fs::create_dir_all(venv.path().join("lib/other")).expect("other");
        let written = install_provider(venv.path()).expect("written");
        assert_eq!(
            written,
            [venv
                .path()
                .join("lib/python3.12/site-packages/rayefa_autoscaler.py")]
        );
        assert_eq!(
            std::fs::read_to_string(&written[0]).expect("module"),
            PROVIDER_SOURCE
        );
    }
}
