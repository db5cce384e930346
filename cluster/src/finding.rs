//! What `validate` (and every other command, before it acts) tells the user about a cluster
//! file: errors stop the command, warnings and notes do not.

use std::fmt;

use serde::Serialize;
use serde_saphyr::Location;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Something the user may want to know; shown by `validate` and with `-v`.
    Note,
    /// rayefa does something other than Ray would, or ignores a setting.
    Warning,
    /// The file cannot be used as it is.
    Error,
}

impl Severity {
    /// The word printed before the message.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing found in a cluster file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// The dotted key it is about, for example `available_node_types.head_node.resources`.
    pub key: String,
    /// What is wrong or worth knowing, and what to do.
    pub message: String,
}

impl Finding {
    /// A finding at `location` (unknown locations are left out).
    pub fn new(
        severity: Severity,
        location: Location,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let known = location != Location::UNKNOWN;
        Self {
            severity,
            line: known.then(|| location.line()),
            column: known.then(|| location.column()),
            key: key.into(),
            message: message.into(),
        }
    }

    /// An error at `location`.
    pub fn error(location: Location, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, location, key, message)
    }

    /// A warning at `location`.
    pub fn warning(location: Location, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, location, key, message)
    }

    /// A note at `location`.
    pub fn note(location: Location, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Note, location, key, message)
    }

    /// The finding as one line, `FILE:LINE:COLUMN: severity: key: message`.
    pub fn display<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        DisplayFinding {
            finding: self,
            file,
        }
    }
}

struct DisplayFinding<'a> {
    finding: &'a Finding,
    file: &'a str,
}

impl fmt::Display for DisplayFinding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Finding {
            severity,
            line,
            column,
            key,
            message,
        } = self.finding;
        write!(f, "{}", self.file)?;
        if let Some(line) = line {
            write!(f, ":{line}")?;
            if let Some(column) = column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}: {key}: {message}", severity.label())
    }
}
