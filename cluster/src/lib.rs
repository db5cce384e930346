//! The cluster file: Ray's cluster-launcher YAML, read with `${VAR}` expansion, parsed with
//! positions, then checked into a [`Cluster`] plus a list of [`Finding`]s; and the agent
//! configuration each node type's nodes receive ([`render`]).
//!
//! Provider-neutral: what only one provider reads (an EC2 `node_config`, `rayefa.aws`) is
//! checked by that provider, through the [`ProviderChecks`] the caller passes in.

mod check;
pub mod duration;
pub mod expand;
mod finding;
mod key_path;
pub mod rayefa;
pub mod render;
pub mod replaced;
pub mod schema;
pub mod settings;
mod ssh_only;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use serde_saphyr::Location;

pub use self::finding::{Finding, Severity};
use self::rayefa::RayefaSection;
use self::schema::{ClusterSpec, NodeTypeSpec};
pub use self::settings::Settings;

/// A cluster file that parsed and passed every check that is an error.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents, variables filled in.
    pub spec: ClusterSpec,
    /// The orchestrator's settings from the `rayefa:` section.
    pub settings: Settings,
    /// Warnings and notes (errors make [`load`] fail).
    pub findings: Vec<Finding>,
}

impl Cluster {
    /// `provider.type`.
    pub fn provider_type(&self) -> &str {
        &self.spec.provider.value.kind
    }

    /// `cluster_name`.
    pub fn name(&self) -> &str {
        &self.spec.cluster_name.value
    }

    /// `head_node_type` (checked to be a node type).
    pub fn head_type(&self) -> &str {
        self.spec
            .head_node_type
            .as_ref()
            .map_or("", |h| h.value.as_str())
    }

    /// The node type called `name`.
    pub fn node_type(&self, name: &str) -> Option<&NodeTypeSpec> {
        self.spec
            .available_node_types
            .as_ref()
            .and_then(|types| types.value.get(name))
    }

    /// Every node type's name, in file order of the sorted map.
    pub fn node_type_names(&self) -> Vec<&str> {
        self.spec
            .available_node_types
            .iter()
            .flat_map(|types| types.value.keys())
            .map(String::as_str)
            .collect()
    }

    /// How many workers of each node type `up` launches (`min_workers`). As in Ray, the head's
    /// type is among them: its `min_workers` are workers of the head's type, beside the head.
    pub fn worker_counts(&self) -> Vec<(&str, usize)> {
        self.spec
            .available_node_types
            .iter()
            .flat_map(|types| types.value.iter())
            .map(|(name, t)| {
                let count = t.min_workers.as_ref().map_or(0, |m| m.value);
                (name.as_str(), usize::try_from(count).unwrap_or(usize::MAX))
            })
            .collect()
    }

    /// The `rayefa:` section, if the file has one.
    pub fn rayefa(&self) -> Option<&RayefaSection> {
        self.spec.rayefa.as_ref().map(|r| &r.value)
    }

    /// The file name used in messages.
    pub fn display_path(&self) -> String {
        self.path.display().to_string()
    }
}

/// How many EFA interfaces (`InterfaceType: efa` or `efa-only`) a `node_config` asks for.
pub fn efa_interfaces(node_config: &Value) -> u32 {
    node_config
        .get("NetworkInterfaces")
        .and_then(Value::as_array)
        .map_or(0, |interfaces| {
            let count = interfaces
                .iter()
                .filter(|i| {
                    matches!(
                        i.get("InterfaceType").and_then(Value::as_str),
                        Some("efa" | "efa-only")
                    )
                })
                .count();
            u32::try_from(count).unwrap_or(u32::MAX)
        })
}

/// Why a cluster file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any cluster file (see [`MAX_FILE_BYTES`]).
    #[error("{path}: error: the file is larger than {limit} bytes, too large for a cluster file")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A `${VAR}` reference could not be filled in.
    #[error("{path}:{}:{}: error: {}", .error.line, .error.column, .error.message)]
    Variable {
        /// The file.
        path: PathBuf,
        /// Where and what.
        error: expand::ExpandError,
    },
    /// The YAML does not parse or does not fit Ray's schema.
    #[error("{path}:{line}:{column}: error: {}{message}{snippet}", key_prefix(key))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// The dotted key path the mistake is at, empty for the document itself.
        key: String,
        /// What was expected.
        message: String,
        /// The lines around the mistake, each on its own line, or nothing.
        snippet: String,
    },
    /// The file parsed, but checks found errors; `findings` holds every finding, errors first.
    #[error("{}", render_findings(path, findings))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Errors, warnings and notes.
        findings: Vec<Finding>,
    },
}

impl ClusterError {
    /// Every finding the error carries, as findings (for `--output json`).
    pub fn findings(&self) -> Vec<Finding> {
        match self {
            ClusterError::Invalid { findings, .. } => findings.clone(),
            ClusterError::Read { source, .. } => {
                vec![Finding::error(Location::UNKNOWN, "", source.to_string())]
            }
            ClusterError::TooLarge { limit, .. } => vec![Finding::error(
                Location::UNKNOWN,
                "",
                format!("the file is larger than {limit} bytes, too large for a cluster file"),
            )],
            ClusterError::Variable { error, .. } => vec![Finding {
                severity: Severity::Error,
                line: u64::try_from(error.line).ok(),
                column: u64::try_from(error.column).ok(),
                key: String::new(),
                message: error.message.clone(),
            }],
            ClusterError::Syntax {
                line,
                column,
                key,
                message,
                ..
            } => vec![Finding {
                severity: Severity::Error,
                line: Some(*line),
                column: Some(*column),
                key: key.clone(),
                message: message.clone(),
            }],
        }
    }
}

/// `key: ` before a message about `key`, nothing for the document itself.
fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

fn render_findings(path: &Path, findings: &[Finding]) -> String {
    let file = path.display().to_string();
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let mut lines: Vec<String> = findings
        .iter()
        .map(|f| f.display(&file).to_string())
        .collect();
    lines.push(format!(
        "{file}: {errors} error{} found",
        if errors == 1 { "" } else { "s" }
    ));
    lines.join("\n")
}

/// What a provider adds to the checks of a file: findings about the parts only it reads.
pub type ProviderChecks = dyn Fn(&ClusterSpec, &mut Vec<Finding>);

/// The checks of a caller that knows no provider (tests, the fuzz targets): none.
pub fn no_provider_checks(_spec: &ClusterSpec, _out: &mut Vec<Finding>) {}

/// Reads and checks `path`, filling in `${VAR}` references from this process's environment.
pub fn load(path: &Path, provider_checks: &ProviderChecks) -> Result<Cluster, ClusterError> {
    load_with_env(path, &process_env(), provider_checks)
}

/// This process's environment (variables whose name or value is not UTF-8 are left out: a
/// reference to one reads as unset).
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Reads and checks `path`, filling in `${VAR}` references from `env`.
pub fn load_with_env(
    path: &Path,
    env: &BTreeMap<String, String>,
    provider_checks: &ProviderChecks,
) -> Result<Cluster, ClusterError> {
    let text = read_text(path)?;
    parse(path, &text, env, provider_checks)
}

/// The largest cluster file read. Ray's own files are a few KiB; the limit keeps a wrong
/// path (a log, a device such as /dev/zero) from being read without end.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The file's text: at most [`MAX_FILE_BYTES`], and UTF-8 (a bad byte is named by position).
fn read_text(path: &Path) -> Result<String, ClusterError> {
    use std::io::Read;
    let read_error = |source| ClusterError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ClusterError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        let byte = error.as_bytes()[valid.len()];
        ClusterError::Syntax {
            path: path.to_owned(),
            line: line as u64,
            column: column as u64,
            key: String::new(),
            message: format!("byte 0x{byte:02X} is not UTF-8 text, which a cluster file must be"),
            snippet: String::new(),
        }
    })
}

/// Checks `text`, the contents of `path`.
pub fn parse(
    path: &Path,
    text: &str,
    env: &BTreeMap<String, String>,
    provider_checks: &ProviderChecks,
) -> Result<Cluster, ClusterError> {
    let expanded = expand::expand(text, env).map_err(|error| ClusterError::Variable {
        path: path.to_owned(),
        error,
    })?;
    let mut spec: ClusterSpec =
        serde_saphyr::from_str(&expanded).map_err(|e| syntax_error(path, &expanded, &e))?;

    let mut findings = Vec::new();
    // `metadata.rayefa` keeps the file acceptable to `ray up`; from here on it is the section.
    if let Some(in_metadata) = spec.metadata.as_mut().and_then(|m| m.rayefa.take()) {
        match &spec.rayefa {
            Some(top) => findings.push(Finding::error(
                top.referenced,
                "rayefa",
                format!(
                    "the file has both a rayefa section and metadata.rayefa (line {}); keep one",
                    in_metadata.referenced.line()
                ),
            )),
            None => spec.rayefa = Some(in_metadata),
        }
    }
    check::default_head_node_type(&mut spec, &mut findings);
    let section = spec.rayefa.as_ref().map(|r| &r.value);
    let settings = settings::resolve(section, &mut findings);
    if let Some(section) = section {
        settings::check_section(section, &mut findings);
    }
    ssh_only::check(&spec, &mut findings);
    check::check(&spec, &settings, &mut findings);
    provider_checks(&spec, &mut findings);

    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.line.cmp(&b.line))
            .then(a.column.cmp(&b.column))
    });
    if findings.iter().any(|f| f.severity == Severity::Error) {
        return Err(ClusterError::Invalid {
            path: path.to_owned(),
            findings,
        });
    }
    Ok(Cluster {
        path: path.to_owned(),
        spec,
        settings,
        findings,
    })
}

/// A deserializer error as `FILE:LINE:COLUMN: error: KEY: message` plus the lines around it,
/// headed by the file's name.
fn syntax_error(path: &Path, text: &str, error: &serde_saphyr::Error) -> ClusterError {
    use serde_saphyr::{Error, MessageFormatter, RenderOptions};
    let location = error.location().unwrap_or(Location::UNKNOWN);
    let inner = innermost(error);
    let prefer = match inner {
        Error::SerdeUnknownField { .. } => key_path::Prefer::Inner,
        _ => key_path::Prefer::Outer,
    };
    let node = (location != Location::UNKNOWN)
        .then(|| key_path::at(text, location.line(), location.column(), prefer))
        .flatten();
    let key = match (inner, &node) {
        // A missing key is the mapping's mistake, wherever in the mapping the parser stopped.
        (Error::SerdeMissingField { .. }, Some(node)) => node.container(),
        (_, Some(node)) => node.path.clone(),
        (_, None) => String::new(),
    };
    let messages = ClusterMessages {
        text,
        scalar: node.as_ref().and_then(|n| n.scalar.clone()),
    };
    let message = messages.format_message(inner);
    let file = path.display().to_string();
    let snippet: String = if message == NO_CONTENT {
        String::new()
    } else {
        let mut options = RenderOptions::new(&messages);
        options.source_name = Some(&file);
        error
            .render_with_options(options)
            .lines()
            .skip(1)
            .map(|line| format!("\n    {line}"))
            .collect()
    };
    // Called directly, the formatter's text is not sanitised as rendering sanitises it: a
    // control character from the file must not reach the terminal as one.
    let clean = |text: &str| {
        let mut clean = String::with_capacity(text.len());
        for c in text.chars() {
            if c.is_control() {
                clean.extend(c.escape_debug());
            } else {
                clean.push(c);
            }
        }
        clean
    };
    ClusterError::Syntax {
        path: path.to_owned(),
        line: location.line(),
        column: location.column(),
        key: clean(&key),
        message: clean(&message),
        snippet,
    }
}

/// The error an alias or a snippet wraps: the one that says what is wrong.
fn innermost(mut error: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        match error {
            serde_saphyr::Error::WithSnippet { error: inner, .. }
            | serde_saphyr::Error::AliasError { error: inner, .. } => error = inner,
            other => return other,
        }
    }
}

/// What a file without a YAML document is told.
const NO_CONTENT: &str = "the file has no YAML content: a cluster file needs at least \
                          cluster_name, provider, available_node_types and head_node_type";

/// The deserializer's messages in the user's terms, for the headline and the snippet: the
/// library's user-facing wording, and rayefa's own where that still speaks of Rust types or
/// of the library's API.
struct ClusterMessages<'t> {
    /// The text that was parsed.
    text: &'t str,
    /// The scalar the error is at, as written, when it is at one.
    scalar: Option<String>,
}

impl serde_saphyr::MessageFormatter for ClusterMessages<'_> {
    fn format_message<'a>(&self, error: &'a serde_saphyr::Error) -> Cow<'a, str> {
        use serde_saphyr::{Error, UserMessageFormatter};
        let owned = match error {
            Error::Eof { .. }
                if self
                    .text
                    .lines()
                    .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#')) =>
            {
                NO_CONTENT.to_owned()
            }
            Error::Budget { breach, .. } => format!(
                "the YAML exceeds rayefa's limits for a cluster file: {} (an alias counts \
                 again each time it is used)",
                describe_breach(breach)
            ),
            Error::InvalidScalar { ty, .. } => {
                let wanted = match *ty {
                    "u16" => "a whole number from 0 to 65535",
                    "u32" => "a whole number from 0 to 4294967295",
                    "u64" | "usize" => "a whole number of at least 0",
                    "i64" | "i32" => "a whole number",
                    "f64" | "f32" | "floating point" => "a number",
                    "bool" | "boolean" => "true or false",
                    _ => "a value of another kind",
                };
                match &self.scalar {
                    Some(scalar) => format!("`{scalar}` is not {wanted}"),
                    None => format!("expected {wanted}"),
                }
            }
            Error::SerdeUnknownField {
                field, expected, ..
            } => format!(
                "`{field}` is not a key here; the keys here are {}",
                expected.join(", ")
            ),
            Error::SerdeMissingField { field, .. } => format!("`{field}` is missing"),
            Error::Unexpected { expected, .. } if *expected == "mapping start" => {
                "expected a mapping (`key: value` entries)".to_owned()
            }
            Error::Unexpected { expected, .. } if *expected == "sequence start" => {
                "expected a list (`- item` entries or `[a, b]`)".to_owned()
            }
            Error::MultipleDocuments { .. } => "a second YAML document starts here (after \
                 `---`); a cluster file is one document"
                .to_owned(),
            Error::UnknownAnchor { .. } => "this alias (`*name`) refers to no anchor \
                 (`&name`) defined before it"
                .to_owned(),
            other => return UserMessageFormatter.format_message(other),
        };
        Cow::Owned(owned)
    }
}

/// A budget breach in words.
fn describe_breach(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach;
    match breach {
        BudgetBreach::Events { events } => {
            format!("more than {} parser events", events.saturating_sub(1))
        }
        BudgetBreach::Aliases { aliases } => {
            format!("more than {} aliases", aliases.saturating_sub(1))
        }
        BudgetBreach::Anchors { anchors } => {
            format!("more than {} anchors", anchors.saturating_sub(1))
        }
        BudgetBreach::Depth { depth } => {
            format!("nested more than {} levels deep", depth.saturating_sub(1))
        }
        BudgetBreach::Documents { documents } => {
            format!("more than {} documents", documents.saturating_sub(1))
        }
        BudgetBreach::Nodes { nodes } => format!("more than {} values", nodes.saturating_sub(1)),
        BudgetBreach::ScalarBytes { total_scalar_bytes } => {
            format!(
                "more than {} bytes of text",
                total_scalar_bytes.saturating_sub(1)
            )
        }
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => {
            format!("{aliases} aliases of only {anchors} anchors")
        }
        other => format!("{other:?}"),
    }
}
