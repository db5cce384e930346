//! Reading the configuration files and merging them into one layer.

use std::fmt;
use std::path::{Path, PathBuf};

use rayefa_wire::{
    AgentConfigFile, AgentSection, AutoscalingSection, CommandsSection, EfaSection, NodeSection,
    PackagesSection, StepSection, StepsSection,
};

use super::{DEFAULT_CONFIG, Settings, validate};
use crate::host::HostRoot;

/// A configuration mistake, naming the file, the key and the line where there is one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    // Not `source`: the message already says it, and a source would be printed twice by
    // `{:#}`.
    #[error("{path}: cannot read: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path}: the file is larger than {limit} bytes, too large for a configuration file")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: {message}", Location { path, line: *line, key: key.as_deref() })]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    #[error("{}: {message}", Location { path, line: *line, key: Some(key) })]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
    #[error("missing required value `{key}` ({why}); read {}", list(.files))]
    Missing {
        key: String,
        why: String,
        files: Vec<PathBuf>,
    },
}

struct Location<'a> {
    path: &'a Path,
    line: Option<usize>,
    key: Option<&'a str>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = self.key {
            write!(f, ": key `{key}`")?;
        }
        Ok(())
    }
}

fn list(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "no files".to_owned();
    }
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One file that was read, kept so that validation can point at the line of a value.
#[derive(Debug, Clone)]
pub(crate) struct ConfigSource {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    pub(crate) layer: AgentConfigFile,
}

impl ConfigSource {
    /// The line where `key` is set in table `[table]` (dotted, `""` for the top), if it is.
    pub(crate) fn line_of(&self, table: &str, key: &str) -> Option<usize> {
        let mut current = String::new();
        for (index, raw) in self.text.lines().enumerate() {
            let line = raw.trim();
            if let Some(header) = line.strip_prefix('[') {
                current = header
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .replace(['"', ' '], "");
                continue;
            }
            if current == table
                && let Some((name, _)) = line.split_once('=')
                && name.trim().trim_matches('"') == key
            {
                return Some(index + 1);
            }
        }
        None
    }
}

/// Reads the main file and its drop-ins (`<name>.d/*.toml`, in name order) and validates the
/// merged result. `explicit` is a path on this machine; otherwise the default file under the
/// root is read.
pub(crate) fn load(
    root: &HostRoot,
    explicit: Option<&Path>,
) -> Result<(Settings, Vec<PathBuf>), ConfigError> {
    let main = explicit.map_or_else(|| root.path(DEFAULT_CONFIG), Path::to_path_buf);
    let mut sources = vec![read(&main)?];
    for dropin in dropins(&main)? {
        sources.push(read(&dropin)?);
    }
    let files = sources.iter().map(|s| s.path.clone()).collect();
    let settings = validate::validate(&sources)?;
    Ok((settings, files))
}

fn dropins(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let stem = main
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = main.with_file_name(format!("{stem}.d"));
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(reason) => return Err(ConfigError::Read { path: dir, reason }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|reason| ConfigError::Read {
            path: dir.clone(),
            reason,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The largest configuration file read: `rayefa up` writes a few KiB; the limit keeps a
/// wrong `--config` (a log, /dev/zero) from being read without end.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn read(path: &Path) -> Result<ConfigSource, ConfigError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|reason| ConfigError::Read {
            path: path.to_owned(),
            reason,
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        ConfigError::Parse {
            path: path.to_owned(),
            line: Some(valid.iter().filter(|b| **b == b'\n').count() + 1),
            key: None,
            message: format!(
                "byte 0x{:02X} is not UTF-8 text, which a TOML file must be",
                error.as_bytes()[valid.len()]
            ),
        }
    })?;
    let layer = parse(path, &text)?;
    Ok(ConfigSource {
        path: path.to_owned(),
        text,
        layer,
    })
}

/// Parses one file, turning toml's error into one that names the line and the key.
pub(crate) fn parse(path: &Path, text: &str) -> Result<AgentConfigFile, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let line_index = err
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count());
        let key = line_index.and_then(|i| key_at(text, i));
        ConfigError::Parse {
            path: path.to_owned(),
            line: line_index.map(|i| i + 1),
            key,
            message: plain_types(err.message().trim()),
        }
    })
}

/// serde's message with Rust's type names (`expected u64`, `struct StepSection`) said in
/// words.
fn plain_types(message: &str) -> String {
    let mut message = message.replace("` as i128,", "`,");
    if let Some(at) = message.find("expected struct ") {
        message.replace_range(at.., "expected a table");
    }
    for (rust, words) in [
        ("expected u64", "expected a whole number of at least 0"),
        ("expected usize", "expected a whole number of at least 0"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected f64", "expected a number"),
    ] {
        if let Some(rest) = message.strip_suffix(rust) {
            message = format!("{rest}{words}");
        }
    }
    message
}

/// The dotted key set on line `index` (0-based), with the table it is in.
fn key_at(text: &str, index: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(index)?.trim();
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned(),
        );
    }
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches('"');
    let table = lines[..index].iter().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{name}"),
        _ => name.to_owned(),
    })
}

/// Lays `over` on top of `base`: values in `over` win; maps merge key by key; lists replace.
pub(crate) fn merge(base: AgentConfigFile, over: AgentConfigFile) -> AgentConfigFile {
    AgentConfigFile {
        node: merge_opt(base.node, over.node, |b, o| NodeSection {
            cluster_name: o.cluster_name.or(b.cluster_name),
            role: o.role.or(b.role),
            node_type: o.node_type.or(b.node_type),
            head_address: o.head_address.or(b.head_address),
            resources: merge_maps(b.resources, o.resources),
            labels: merge_maps(b.labels, o.labels),
        }),
        agent: merge_opt(base.agent, over.agent, |b, o| AgentSection {
            listen: o.listen.or(b.listen),
            state_dir: o.state_dir.or(b.state_dir),
            imds: o.imds.or(b.imds),
            imds_endpoint: o.imds_endpoint.or(b.imds_endpoint),
            stop_grace_secs: o.stop_grace_secs.or(b.stop_grace_secs),
            max_connections: o.max_connections.or(b.max_connections),
            publish_tags: o.publish_tags.or(b.publish_tags),
            ec2_endpoint: o.ec2_endpoint.or(b.ec2_endpoint),
            control_secret: o.control_secret.or(b.control_secret),
        }),
        environment: merge_maps(base.environment, over.environment),
        steps: merge_opt(base.steps, over.steps, |b, o| StepsSection {
            grow_root: merge_opt(b.grow_root, o.grow_root, merge_step),
            install_efa: merge_opt(b.install_efa, o.install_efa, merge_step),
            probe_efa: merge_opt(b.probe_efa, o.probe_efa, merge_step),
            install_ray: merge_opt(b.install_ray, o.install_ray, merge_step),
            setup_commands: merge_opt(b.setup_commands, o.setup_commands, merge_step),
            start_ray: merge_opt(b.start_ray, o.start_ray, merge_step),
        }),
        packages: merge_opt(base.packages, over.packages, |b, o| PackagesSection {
            manager: o.manager.or(b.manager),
            os: o.os.or(b.os),
            python: o.python.or(b.python),
            virtualenv: o.virtualenv.or(b.virtualenv),
            python_interpreter: o.python_interpreter.or(b.python_interpreter),
            pip_args: o.pip_args.or(b.pip_args),
        }),
        commands: merge_opt(base.commands, over.commands, |b, o| CommandsSection {
            initialization: o.initialization.or(b.initialization),
            setup: o.setup.or(b.setup),
            start: o.start.or(b.start),
            user: o.user.or(b.user),
        }),
        efa: merge_opt(base.efa, over.efa, |b, o| EfaSection {
            mode: o.mode.or(b.mode),
            installer_url: o.installer_url.or(b.installer_url),
            installer_sha256: o.installer_sha256.or(b.installer_sha256),
            signature_url: o.signature_url.or(b.signature_url),
            public_key: o.public_key.or(b.public_key),
            fingerprint: o.fingerprint.or(b.fingerprint),
            installer_flags: o.installer_flags.or(b.installer_flags),
            installer_version: o.installer_version.or(b.installer_version),
            on_reboot: o.on_reboot.or(b.on_reboot),
            expected_interfaces: o.expected_interfaces.or(b.expected_interfaces),
            libfabric: o.libfabric.or(b.libfabric),
        }),
        autoscaling: merge_opt(base.autoscaling, over.autoscaling, |b, o| {
            AutoscalingSection {
                ray_config: o.ray_config.or(b.ray_config),
            }
        }),
    }
}

fn merge_step(b: StepSection, o: StepSection) -> StepSection {
    StepSection {
        enabled: o.enabled.or(b.enabled),
        timeout_secs: o.timeout_secs.or(b.timeout_secs),
        attempts: o.attempts.or(b.attempts),
        backoff_secs: o.backoff_secs.or(b.backoff_secs),
    }
}

fn merge_opt<T>(base: Option<T>, over: Option<T>, both: impl FnOnce(T, T) -> T) -> Option<T> {
    match (base, over) {
        (Some(b), Some(o)) => Some(both(b, o)),
        (b, o) => o.or(b),
    }
}

fn merge_maps<K: Ord, V>(
    base: Option<std::collections::BTreeMap<K, V>>,
    over: Option<std::collections::BTreeMap<K, V>>,
) -> Option<std::collections::BTreeMap<K, V>> {
    merge_opt(base, over, |mut b, o| {
        b.extend(o);
        b
    })
}
