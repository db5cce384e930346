//! A command runner for unit tests: answers from a script and records every call.

use std::io;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{CommandOutcome, CommandRunner, CommandSpec, OutputSink};

/// One scripted answer: commands whose `program args...` line starts with `prefix` exit with
/// `code` after printing `output`.
#[derive(Debug, Clone)]
struct Rule {
    prefix: String,
    code: i32,
    output: String,
}

/// Answers commands from rules, first match wins; an unmatched command is an error, so a test
/// notices a command it did not expect.
#[derive(Debug, Default)]
pub(crate) struct ScriptedRunner {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<CommandSpec>>,
}

impl ScriptedRunner {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Commands starting with `prefix` print `output` and exit with `code`.
    pub(crate) fn answer(self, prefix: &str, code: i32, output: &str) -> Self {
        self.rules.lock().expect("rules").push(Rule {
            prefix: prefix.to_owned(),
            code,
            output: output.to_owned(),
        });
        self
    }

    /// Every command run so far, as display strings.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("calls")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Every command run so far, whole.
    pub(crate) fn specs(&self) -> Vec<CommandSpec> {
        self.calls.lock().expect("calls").clone()
    }
}

#[async_trait]
impl CommandRunner for ScriptedRunner {
    async fn run(&self, spec: &CommandSpec, sink: &dyn OutputSink) -> io::Result<CommandOutcome> {
        self.calls.lock().expect("calls").push(spec.clone());
        let line = spec.to_string();
        let rule = self
            .rules
            .lock()
            .expect("rules")
            .iter()
            .find(|rule| line.starts_with(&rule.prefix))
            .cloned()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("unscripted command `{line}`"),
                )
            })?;
        sink.write(rule.output.as_bytes());
        Ok(CommandOutcome {
            code: Some(rule.code),
            signal: None,
            output: rule.output,
        })
    }
}
