//! A step's output: the whole of it in `<state_dir>/logs/<step>.log`, the end of it in status.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::report::StepReporter;
use crate::host::OutputSink;

/// How much of a step's output the status document carries.
pub(crate) const STATUS_TAIL_BYTES: usize = 4096;

/// The log of one step. Cloning shares it.
#[derive(Clone)]
pub(crate) struct StepLog {
    inner: Arc<Mutex<LogInner>>,
    report: StepReporter,
}

struct LogInner {
    path: PathBuf,
    file: Option<File>,
    tail: Vec<u8>,
    /// False after output that did not end its line, so that the agent's own next line
    /// starts on a line of its own.
    at_line_start: bool,
}

impl StepLog {
    /// Opens (appending) the log file at `path`. A log that cannot be opened is reported in
    /// the step's output tail and the step still runs: losing the log must not lose the node.
    pub(crate) fn open(path: &Path, report: StepReporter) -> Self {
        let file = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(path));
        let log = Self {
            inner: Arc::new(Mutex::new(LogInner {
                path: path.to_owned(),
                file: None,
                tail: Vec::new(),
                at_line_start: true,
            })),
            report,
        };
        match file {
            Ok(file) => log.lock().file = Some(file),
            Err(err) => log.note(&format!("cannot open log {}: {err}", path.display())),
        }
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the whole log is.
    pub(crate) fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    /// Adds a line of the agent's own (a command line, an activity, an attempt header).
    pub(crate) fn note(&self, line: &str) {
        let mut text = if self.lock().at_line_start {
            String::new()
        } else {
            "\n".to_owned()
        };
        text.push_str(line);
        text.push('\n');
        self.write(text.as_bytes());
    }

    /// Forgets the tail shown in status (a new attempt starts), keeping the file.
    pub(crate) fn clear_tail(&self) {
        self.lock().tail.clear();
        self.report.output_tail(String::new());
    }
}

impl OutputSink for StepLog {
    fn write(&self, bytes: &[u8]) {
        let tail = {
            let mut inner = self.lock();
            if let Some(file) = inner.file.as_mut() {
                // A full disk must not stop the step; the tail still reaches status.
                let _ = file.write_all(bytes);
            }
            if let Some(last) = bytes.last() {
                inner.at_line_start = *last == b'\n';
            }
            inner.tail.extend_from_slice(bytes);
            if inner.tail.len() > STATUS_TAIL_BYTES {
                let excess = inner.tail.len() - STATUS_TAIL_BYTES;
                inner.tail.drain(..excess);
            }
            String::from_utf8_lossy(&inner.tail).into_owned()
        };
        self.report.output_tail(tail);
    }
}

#[cfg(test)]
mod tests {
    use rayefa_wire::{NodeFacts, NodeIdentity, NodeState, Role, StatusDocument};

    use super::*;
    use crate::engine::StatusBoard;

    #[test]
    fn the_agents_own_lines_never_run_into_a_commands_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let board = StatusBoard::new(StatusDocument {
            api: rayefa_wire::API_VERSION,
            node: NodeIdentity {
                cluster_name: "t".into(),
                role: Role::Head,
                node_type: "h".into(),
            },
            facts: NodeFacts::default(),
            state: NodeState::Starting,
            steps: vec![],
            warnings: vec![],
            generated_at_ms: 0,
        });
        let path = dir.path().join("logs/step.log");
        let log = StepLog::open(&path, board.reporter(0));
        log.write(b"install ok installed");
        log.note("# next");
        log.write(b"done\n");
        log.note("# last");
        assert_eq!(
            std::fs::read_to_string(&path).expect("log"),
            "install ok installed\n# next\ndone\n# last\n"
        );
    }
}
