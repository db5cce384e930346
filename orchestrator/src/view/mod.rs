//! Everything printed for a person or a script: progress, tables, findings, JSON.

pub(crate) mod progress;
pub(crate) mod report;

use std::io::Write;

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

use crate::wait::Progress;
use rayefa_cluster::{Cluster, Severity};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// Tables and progress for a person.
    Table,
    /// One JSON document on stdout.
    Json,
    /// `export NAME='value'` lines a shell can `eval` (`rayefa env`; other commands print
    /// their table).
    Env,
}

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
    /// Prints as `format` says, with `verbose` detail, or only errors and results if `quiet`.
    pub(crate) fn new(format: OutputFormat, verbose: u8, quiet: bool) -> Self {
        Self {
            format,
            verbose,
            quiet,
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

/// An empty table with `header`, in the style of every table rayefa prints.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}
