//! Everything printed for a person or a script: progress, tables, findings, JSON.

pub(crate) mod progress;
pub(crate) mod report;

use std::io::Write;

pub(crate) use self::progress::Progress;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::cluster::{Cluster, Severity};

/// How this run prints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    /// Table or JSON.
    pub(crate) format: OutputFormat,
    /// `-v` count.
    pub(crate) verbose: u8,
    /// `-q`.
    pub(crate) quiet: bool,
}

impl Output {
    /// The output settings of the command line.
    pub(crate) fn new(global: &GlobalArgs) -> Self {
        Self {
            format: global.output,
            verbose: global.verbose,
            quiet: global.quiet,
        }
    }

    /// True when stdout carries one JSON document.
    pub(crate) fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Progress for a wait: silent with `--quiet` or `--output json` (stdout is for the
    /// document; progress goes to stderr, and scripts want it quiet).
    pub(crate) fn progress(&self) -> Box<dyn Progress> {
        progress::for_terminal(self.quiet || self.json())
    }

    /// Prints the cluster file's warnings (and notes with `-v`) to stderr.
    pub(crate) fn findings(&self, cluster: &Cluster) {
        if self.quiet || self.json() {
            return;
        }
        let file = cluster.display_path();
        let mut err = std::io::stderr().lock();
        for finding in &cluster.findings {
            if finding.severity >= Severity::Warning || self.verbose > 0 {
                let _ = writeln!(err, "{}", finding.display(&file));
            }
        }
    }

    /// A line for a person on stderr, unless quiet.
    pub(crate) fn say(&self, text: &str) {
        if !self.quiet && !self.json() {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }

    /// The JSON document on stdout.
    pub(crate) fn print_json<T: serde::Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot write JSON: {e}"),
        }
    }
}
