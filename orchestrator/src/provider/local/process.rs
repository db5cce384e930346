//! Starting an agent as a detached process and finding it again through `/proc`.
//!
//! A pid alone is not proof: after the agent exits the kernel may give its pid to an
//! unrelated process. A node's record therefore keeps the pid together with the process's
//! start time (field 22 of `/proc/<pid>/stat`), and a live process must also carry the node's
//! configuration path on its command line before `status` or `down` treat it as the node.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Set in every agent's environment to its node directory, and inherited by everything the
/// agent starts: with the agent's session, how `down` finds the processes a node left running
/// (Ray's daemons, which `ray start` leaves in process groups of their own) without touching
/// anything else.
pub(crate) const NODE_MARKER_ENV: &str = "RAYEFA_LOCAL_NODE";

/// What a process looks like in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessIdentity {
    /// The process id.
    pub(crate) pid: i32,
    /// Clock ticks after boot at which it started.
    pub(crate) start_time: u64,
}

/// Whether the process of a record still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Running, and it is the node's agent.
    Running,
    /// Gone; the words say what is known.
    Gone(String),
}

/// The files an agent process is started with.
#[derive(Debug)]
pub(crate) struct AgentCommand<'a> {
    /// The `rayefa-agent` binary.
    pub(crate) binary: &'a Path,
    /// The node's `agent.toml`.
    pub(crate) config: &'a Path,
    /// The node's root directory.
    pub(crate) root: &'a Path,
    /// Where its stdout and stderr go.
    pub(crate) log: &'a Path,
    /// Its working directory.
    pub(crate) dir: &'a Path,
}

/// Starts `rayefa-agent run` in a session of its own, so that it outlives this process and a
/// terminal's hang-up does not reach it.
pub(crate) fn spawn_agent(command: &AgentCommand<'_>) -> io::Result<ProcessIdentity> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(command.log)?;
    let mut process = Command::new(command.binary);
    process
        .arg("run")
        .arg("--config")
        .arg(command.config)
        .arg("--root")
        .arg(command.root)
        .current_dir(command.dir)
        .env(NODE_MARKER_ENV, command.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        process.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    let child = process.spawn()?;
    let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    // The child is waited for through its pid (see `liveness`), not through `Child`, so that a
    // later run of the orchestrator, which has no `Child`, sees the same thing.
    drop(child);
    let start_time = start_time(pid).ok_or_else(|| {
        io::Error::other(format!("process {pid} exited before it could be recorded"))
    })?;
    Ok(ProcessIdentity { pid, start_time })
}

/// Whether `identity` is still the agent started with `config`.
pub(crate) fn liveness(identity: &ProcessIdentity, config: &Path) -> Liveness {
    let pid = identity.pid;
    // Our own exited children stay zombies until reaped; reaping here gives their status.
    if let Some(status) = reap(pid) {
        return Liveness::Gone(status);
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Liveness::Gone(format!("agent process {pid} has exited"));
    };
    let Some((state, started)) = parse_stat(&stat) else {
        return Liveness::Gone(format!("agent process {pid} has exited"));
    };
    if started != identity.start_time {
        return Liveness::Gone(format!(
            "agent process {pid} has exited (the pid now belongs to another process)"
        ));
    }
    if state == 'Z' {
        return Liveness::Gone(format!("agent process {pid} has exited"));
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let wanted = config.as_os_str().as_encoded_bytes();
    if !cmdline.split(|b| *b == 0).any(|arg| arg == wanted) {
        return Liveness::Gone(format!(
            "agent process {pid} has exited (the pid now runs something else)"
        ));
    }
    Liveness::Running
}

/// The exit status of `pid` if it is an exited child of this process.
fn reap(pid: i32) -> Option<String> {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => {
            Some(format!("agent process {pid} exited with status {code}"))
        }
        Ok(WaitStatus::Signaled(_, signal, _)) => {
            Some(format!("agent process {pid} was killed by {signal}"))
        }
        _ => None,
    }
}

/// The process start time of `pid`, if it exists.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, started)| started)
}

/// State letter and start time from a `/proc/<pid>/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from its last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the name: field 3 (state) is the first; field 22 (starttime) the 20th.
    let started = fields.nth(18)?.parse().ok()?;
    Some((state, started))
}

/// The session id (field 6) of a `/proc/<pid>/stat` line.
fn session_of(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(3)?.parse().ok()
}

/// How stopping one agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It had already exited.
    AlreadyGone,
    /// It exited after SIGTERM, in this time.
    Terminated(Duration),
    /// It did not exit within the grace period and was killed.
    Killed,
}

/// Stops the agent: SIGTERM, up to `grace` for it to exit, then SIGKILL to its whole
/// session's process group. Whatever the agent started (the processes carrying the node's
/// marker, Ray's among them) is stopped after it the same way; [`stop_marked`] says how many.
pub(crate) async fn stop(identity: &ProcessIdentity, config: &Path, grace: Duration) -> Stopped {
    if liveness(identity, config) != Liveness::Running {
        return Stopped::AlreadyGone;
    }
    let pid = Pid::from_raw(identity.pid);
    let started = Instant::now();
    let _ = kill(pid, Signal::SIGTERM);
    if wait_gone(identity, config, grace).await {
        Stopped::Terminated(started.elapsed())
    } else {
        let _ = killpg(pid, Signal::SIGKILL);
        wait_gone(identity, config, Duration::from_secs(5)).await;
        Stopped::Killed
    }
}

/// Stops every process of a node: those that carry `node_dir` as their [`NODE_MARKER_ENV`],
/// and those in the agent's `session` (a process that renames itself, as Ray's do with
/// setproctitle, may overwrite its environment; it cannot leave its session without
/// `setsid`). SIGTERM, up to `grace` for them to exit, then SIGKILL; processes started
/// meanwhile are found by the next look and get the same.
///
/// A session id cannot name another session while any process of ours is in it: Linux does
/// not reuse a pid that is still some process's session id.
pub(crate) async fn stop_marked(
    node_dir: &Path,
    session: Option<i32>,
    grace: Duration,
) -> StoppedProcesses {
    /// How long SIGKILL is given to empty the process table of marked processes.
    const KILL_LIMIT: Duration = Duration::from_secs(5);
    let mut signalled = std::collections::BTreeSet::new();
    let mut killed = std::collections::BTreeSet::new();
    let deadline = Instant::now() + grace;
    loop {
        let live = marked_processes(node_dir, session);
        if live.is_empty() {
            break;
        }
        let now = Instant::now();
        for pid in live {
            if now >= deadline {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                signalled.insert(pid);
                killed.insert(pid);
            } else if signalled.insert(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        if now >= deadline + KILL_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    StoppedProcesses {
        stopped: signalled.len(),
        killed: killed.len(),
    }
}

/// What [`stop_marked`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoppedProcesses {
    /// Processes signalled.
    pub(crate) stopped: usize,
    /// Of those, the ones still there after the grace period and killed with SIGKILL.
    pub(crate) killed: usize,
}

impl StoppedProcesses {
    /// `; 7 processes it had started stopped too (2 with SIGKILL)`, or nothing.
    pub(crate) fn describe(self) -> String {
        let killed = match self.killed {
            0 => String::new(),
            n => format!(" ({n} with SIGKILL, after the grace period)"),
        };
        match self.stopped {
            0 => String::new(),
            1 => format!("; 1 process it had started stopped too{killed}"),
            n => format!("; {n} processes it had started stopped too{killed}"),
        }
    }
}

/// The live processes (not zombies, not this one) whose environment marks them as started
/// for `node_dir`, or that are in `session`.
fn marked_processes(node_dir: &Path, session: Option<i32>) -> Vec<i32> {
    let mut wanted = format!("{NODE_MARKER_ENV}=").into_bytes();
    wanted.extend_from_slice(node_dir.as_os_str().as_encoded_bytes());
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            // A process that exits meanwhile, or another user's, cannot be read: not ours.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            if parse_stat(&stat).is_none_or(|(state, _)| state == 'Z') {
                return false;
            }
            session.is_some_and(|s| session_of(&stat) == Some(s))
                || std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted))
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// Waits up to `limit` for the agent to be gone; true if it is.
async fn wait_gone(identity: &ProcessIdentity, config: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if liveness(identity, config) != Liveness::Running {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `rayefa-agent` binary: `explicit` (from `rayefa.local.agent_binary`), else
/// `RAYEFA_AGENT`, else the one next to this executable (both are built into the same
/// `target/<profile>/`, and a package installs them side by side), else one on `PATH`.
pub(crate) fn find_agent_binary(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return executable(path).ok_or_else(|| {
            format!(
                "rayefa.local.agent_binary: {} is not an executable file",
                path.display()
            )
        });
    }
    if let Some(path) = std::env::var_os("RAYEFA_AGENT") {
        let path = PathBuf::from(path);
        return executable(&path)
            .ok_or_else(|| format!("RAYEFA_AGENT: {} is not an executable file", path.display()));
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("rayefa-agent")));
    if let Some(path) = sibling.as_deref().and_then(executable) {
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .find_map(|dir| executable(&dir.join("rayefa-agent")));
    on_path.ok_or_else(|| {
        format!(
            "rayefa-agent was not found: not next to this executable ({}), not in RAYEFA_AGENT, \
             not on PATH; build it with `cargo build -p rayefa-agent` or set RAYEFA_AGENT",
            sibling.map_or_else(|| "unknown".to_owned(), |p| p.display().to_string())
        )
    })
}

fn executable(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat =
            "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 987_654)));
        assert_eq!(session_of(stat), Some(4242));
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = i32::try_from(std::process::id()).expect("pid");
        let started = start_time(pid).expect("own stat");
        let exe = std::env::args().next().expect("argv0");
        let me = ProcessIdentity {
            pid,
            start_time: started,
        };
        assert_eq!(liveness(&me, Path::new(&exe)), Liveness::Running);
        let reused = ProcessIdentity {
            pid,
            start_time: started + 1,
        };
        assert!(matches!(
            liveness(&reused, Path::new(&exe)),
            Liveness::Gone(_)
        ));
        assert!(matches!(
            liveness(&me, Path::new("/not/this/config.toml")),
            Liveness::Gone(_)
        ));
    }

    #[tokio::test]
    async fn only_the_processes_marked_for_the_node_are_stopped() {
        let node = tempfile::tempdir().expect("node dir");
        let other = tempfile::tempdir().expect("another node's dir");
        let spawn = |marker: &Path, script: &str| {
            let mut command = Command::new("bash");
            command
                .args(["-c", script])
                .env(NODE_MARKER_ENV, marker)
                .process_group(0);
            command.spawn().expect("spawn")
        };
        // One that leaves on SIGTERM, one that must be killed, one of another node.
        let mut polite = spawn(node.path(), "exec sleep 30");
        let mut stubborn = spawn(node.path(), "trap '' TERM; while :; do sleep 0.05; done");
        let mut bystander = spawn(other.path(), "exec sleep 30");
        // Let bash install its trap before the signal comes.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let stopped = stop_marked(node.path(), None, Duration::from_millis(500)).await;

        assert!(stopped.stopped >= 2 && stopped.killed >= 1, "{stopped:?}");
        assert!(polite.wait().expect("wait").code().is_none(), "by a signal");
        assert!(
            stubborn.wait().expect("wait").code().is_none(),
            "by a signal"
        );
        assert_eq!(bystander.try_wait().expect("try_wait"), None, "still runs");
        assert!(marked_processes(node.path(), None).is_empty());
        assert_eq!(
            stop_marked(node.path(), None, Duration::from_millis(100))
                .await
                .describe(),
            ""
        );
        bystander.kill().expect("kill");
        bystander.wait().expect("wait");
    }

    #[tokio::test]
    async fn the_agents_session_is_stopped_even_where_the_marker_was_erased() {
        let node = tempfile::tempdir().expect("node dir");
        // A session leader without the marker stands in for the agent, and its child for a
        // Ray daemon whose setproctitle overwrote its environment.
        let mut command = Command::new("bash");
        command
            .args(["-c", "sleep 30 & wait"])
            .env_remove(NODE_MARKER_ENV);
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
        }
        let mut leader = command.spawn().expect("spawn");
        let session = i32::try_from(leader.id()).expect("pid");
        let mut bystander = Command::new("sleep").arg("30").spawn().expect("spawn");
        tokio::time::sleep(Duration::from_millis(200)).await;

        let stopped = stop_marked(node.path(), Some(session), Duration::from_secs(2)).await;

        assert_eq!(
            stopped.describe(),
            "; 2 processes it had started stopped too",
            "bash and its sleep"
        );
        assert!(leader.wait().expect("wait").code().is_none(), "by a signal");
        assert_eq!(bystander.try_wait().expect("try_wait"), None, "still runs");
        bystander.kill().expect("kill");
        bystander.wait().expect("wait");
    }
}
