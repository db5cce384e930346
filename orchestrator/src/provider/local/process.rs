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

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

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
/// session's process group. Whatever the agent started in its group (Ray's processes) is
/// stopped after it the same way.
pub(crate) async fn stop(identity: &ProcessIdentity, config: &Path, grace: Duration) -> Stopped {
    if liveness(identity, config) != Liveness::Running {
        stop_group(identity.pid, grace).await;
        return Stopped::AlreadyGone;
    }
    let pid = Pid::from_raw(identity.pid);
    let started = Instant::now();
    let _ = kill(pid, Signal::SIGTERM);
    let outcome = if wait_gone(identity, config, grace).await {
        Stopped::Terminated(started.elapsed())
    } else {
        let _ = killpg(pid, Signal::SIGKILL);
        wait_gone(identity, config, Duration::from_secs(5)).await;
        Stopped::Killed
    };
    stop_group(identity.pid, grace).await;
    outcome
}

/// Stops what is left in the agent's process group (its pgid is its pid, from setsid).
async fn stop_group(pgid: i32, grace: Duration) {
    let group = Pid::from_raw(pgid);
    if killpg(group, None) == Err(Errno::ESRCH) {
        return;
    }
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if killpg(group, None) == Err(Errno::ESRCH) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
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
}
