use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::leftovers::{Announced, COMMAND_ID_ENV, GroupRecords};

/// Captured output kept in memory for a step to inspect; the whole stream also goes to the
/// step's log. Large outputs keep their end, where tools print their verdict.
const CAPTURE_LIMIT: usize = 1 << 20;

/// How long output is still read after a command has exited.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// A process to start: program, arguments, environment additions and working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandSpec {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<PathBuf>,
}

impl CommandSpec {
    pub(crate) fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
        }
    }

    /// `bash -c SCRIPT`, the way the cluster file's commands run.
    pub(crate) fn shell(script: impl Into<String>) -> Self {
        Self::new("bash").arg("-c").arg(script)
    }

    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub(crate) fn envs(mut self, vars: &BTreeMap<String, String>) -> Self {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    pub(crate) fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
}

impl fmt::Display for CommandSpec {
    /// The command as a person would type it, for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// `word` as one word of a POSIX shell command line.
pub(crate) fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How a command ended and what it printed (stdout and stderr interleaved as they came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandOutcome {
    /// The exit code, absent when a signal ended the process.
    pub(crate) code: Option<i32>,
    /// The signal that ended the process.
    pub(crate) signal: Option<i32>,
    /// Up to the last MiB of output.
    pub(crate) output: String,
}

impl CommandOutcome {
    pub(crate) fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exited 2" or "was killed by signal 9".
    pub(crate) fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exited {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "ended without a status".to_owned(),
        }
    }
}

/// Where a running command's output goes as it arrives.
pub(crate) trait OutputSink: Send + Sync {
    fn write(&self, bytes: &[u8]);
}

/// Starts processes. The system runner is the only place the agent spawns anything; tests
/// use a scripted runner that records what would have run.
#[async_trait]
pub(crate) trait CommandRunner: Send + Sync + fmt::Debug {
    /// Runs `spec` to completion, streaming its output into `sink`. An error means the process
    /// could not be started at all; a non-zero exit is an outcome, not an error. Dropping the
    /// returned future kills the process and everything it started.
    async fn run(&self, spec: &CommandSpec, sink: &dyn OutputSink) -> io::Result<CommandOutcome>;
}

/// Process groups of the commands running now, so that stopping the agent can stop them,
/// and, when recorded, so that the next agent can stop what a crashed one left running.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChildRegistry {
    groups: Arc<Mutex<BTreeSet<i32>>>,
    records: Option<GroupRecords>,
}

impl ChildRegistry {
    /// A registry that also keeps each running group in `records`.
    pub(crate) fn recorded(records: GroupRecords) -> Self {
        Self {
            groups: Arc::default(),
            records: Some(records),
        }
    }

    /// Notes, where groups are recorded, that a command is about to start.
    fn announce(&self) -> Option<Announced> {
        self.records.as_ref().and_then(GroupRecords::announce)
    }

    fn insert(&self, pgid: i32) {
        self.lock().insert(pgid);
        if let Some(records) = &self.records {
            records.add(pgid);
        }
    }

    fn remove(&self, pgid: i32) {
        self.lock().remove(&pgid);
        if let Some(records) = &self.records {
            records.remove(pgid);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many commands are running.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Sends `signal` to every running command's process group.
    pub(crate) fn signal_all(&self, signal: Signal) {
        for pgid in self.lock().iter() {
            // The group may have ended between the read and the signal; ESRCH is fine.
            let _ = killpg(Pid::from_raw(*pgid), signal);
        }
    }

    /// SIGTERM to every command, then SIGKILL to those still there after `grace`.
    pub(crate) async fn stop_all(&self, grace: Duration) {
        if self.len() == 0 {
            return;
        }
        self.signal_all(Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while self.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.signal_all(Signal::SIGKILL);
    }
}

/// Kills a command's process group unless it was disarmed after the command ended.
struct GroupGuard {
    pgid: i32,
    registry: ChildRegistry,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
        self.registry.remove(self.pgid);
    }
}

/// Runs commands on this machine, each in its own process group.
#[derive(Debug, Clone, Default)]
pub(crate) struct SystemRunner {
    registry: ChildRegistry,
}

impl SystemRunner {
    pub(crate) fn new(registry: ChildRegistry) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl CommandRunner for SystemRunner {
    async fn run(&self, spec: &CommandSpec, sink: &dyn OutputSink) -> io::Result<CommandOutcome> {
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(&spec.env)
            // Only the agent speaks for the service; a child must not send READY or STATUS.
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.cwd {
            command.current_dir(dir);
        }
        // Withdrawn once the group is recorded below, or when the command cannot start.
        let announced = self.registry.announce();
        if let Some(announced) = &announced {
            command.env(COMMAND_ID_ENV, announced.token());
        }
        let mut child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{spec}`: {e}")))?;
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| io::Error::other(format!("`{spec}` has no process id")))?;
        self.registry.insert(pgid);
        drop(announced);
        let mut guard = GroupGuard {
            pgid,
            registry: self.registry.clone(),
            armed: true,
        };

        let capture = Mutex::new(Vec::new());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut pumps = Box::pin(async {
            tokio::join!(pump(stdout, sink, &capture), pump(stderr, sink, &capture))
        });
        let mut drained = false;
        let status = tokio::select! {
            status = child.wait() => status,
            _ = &mut pumps => {
                drained = true;
                child.wait().await
            }
        }?;
        if !drained {
            // A daemon the command started may hold its output open for ever; what it prints
            // after the command has exited is not the command's output.
            let _ = tokio::time::timeout(OUTPUT_DRAIN, &mut pumps).await;
        }
        // The command ended by itself: what it started in the background (`ray start`'s
        // daemons) is meant to outlive it.
        guard.armed = false;
        drop(pumps);
        let output = capture.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(CommandOutcome {
            code: status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&status),
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }
}

async fn pump(
    stream: Option<impl AsyncRead + Unpin>,
    sink: &dyn OutputSink,
    capture: &Mutex<Vec<u8>>,
) {
    let Some(mut stream) = stream else { return };
    let mut buf = vec![0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                sink.write(&buf[..n]);
                let mut captured = capture.lock().unwrap_or_else(|p| p.into_inner());
                captured.extend_from_slice(&buf[..n]);
                if captured.len() > 2 * CAPTURE_LIMIT {
                    let excess = captured.len() - CAPTURE_LIMIT;
                    captured.drain(..excess);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<u8>>);
    impl OutputSink for Collect {
        fn write(&self, bytes: &[u8]) {
            self.0.lock().expect("lock").extend_from_slice(bytes);
        }
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let runner = SystemRunner::default();
        let sink = Collect::default();
        let outcome = runner
            .run(
                &CommandSpec::shell("echo out; echo err >&2; exit 3").env("X", "1"),
                &sink,
            )
            .await
            .expect("runs");
        assert_eq!(outcome.code, Some(3));
        assert!(outcome.output.contains("out") && outcome.output.contains("err"));
        assert_eq!(outcome.describe(), "exited 3");
        assert_eq!(runner.registry.len(), 0);
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_not_an_outcome() {
        let err = SystemRunner::default()
            .run(&CommandSpec::new("/nonexistent/tool"), &Collect::default())
            .await
            .expect_err("cannot start");
        assert!(err.to_string().contains("/nonexistent/tool"));
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_whole_group() {
        let runner = SystemRunner::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("survived");
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let sink = Collect::default();
        let spec = CommandSpec::shell(script);
        let run = runner.run(&spec, &sink);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), run)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !marker.exists(),
            "a grandchild outlived the cancelled command"
        );
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let spec = CommandSpec::new("pip").args(["install", "ray[default,data]", "a b"]);
        assert_eq!(spec.to_string(), "pip install 'ray[default,data]' 'a b'");
    }
}
