//! Processes: signalling and waiting for a child, finding processes by their command line, the
//! processes a test's agents leave behind (found by an environment tag), and what `/proc` says
//! about one process.
//!
//! The agent's unit runs with `KillMode=process`, so when the agent dies systemd leaves its
//! commands running (Ray's daemons must outlive it). Tests that crash the agent therefore
//! leave the orphans alone while they look, and clean up with [`kill_tagged`] at the end: every
//! agent a test starts carries [`TAG`] in its environment, and the agent passes its environment
//! on to every command.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The environment variable that marks every process of one test's agents.
pub const TAG: &str = "RAYEFA_TEST_SCRATCH";

/// Tags `command` (an agent about to start) with `scratch`, the test's own folder.
pub fn tag(command: &mut Command, scratch: &Path) {
    command.env(TAG, scratch);
}

/// The ids of the processes running now, this one aside.
fn other_pids() -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// The processes (other than this one) whose environment carries [`TAG`] for `scratch`: the
/// agents of one test and every command they started.
pub fn tagged(scratch: &Path) -> Vec<i32> {
    let wanted = format!("{TAG}={}", scratch.display()).into_bytes();
    other_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_slice()))
        })
        .collect()
}

/// Kills every process [`tagged`] for `scratch` and waits (up to 10 s) until they are gone.
pub fn kill_tagged(scratch: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = tagged(scratch);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // A process may exit between the listing and the kill: nothing to do then.
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cleanup a test owes whatever it did (for a `Drop`): kills and reaps `agent` if there
/// is one, then kills every process [`tagged`] for `scratch`.
pub fn kill_agent_and_tagged(agent: Option<Child>, scratch: &Path) {
    if let Some(mut agent) = agent {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    kill_tagged(scratch);
}

/// The command line of `pid`, one string an argument; `None` once the process is gone.
fn argv(pid: i32) -> Option<Vec<String>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // Every argument ends in a NUL: the last one must not leave an empty argument behind.
    let cmdline = cmdline.strip_suffix(&[0]).unwrap_or(&cmdline);
    Some(
        cmdline
            .split(|b| *b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// Waits until a process whose command line satisfies `matches` exists, and answers its id.
/// Fails with `never_started()` once `within` has passed.
pub fn wait_for_process(
    matches: impl Fn(&[String]) -> bool,
    within: Duration,
    never_started: impl Fn() -> String,
) -> i32 {
    let started = Instant::now();
    loop {
        let found = other_pids()
            .into_iter()
            .find(|pid| argv(*pid).is_some_and(|argv| matches(&argv)));
        if let Some(pid) = found {
            return pid;
        }
        assert!(started.elapsed() < within, "{}", never_started());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `child` to exit, up to `deadline`.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sends `signal` (a number, `libc::SIGTERM`) to `child`; fails if it cannot be sent.
pub fn kill(child: &mut Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("pid");
    let sent = Signal::try_from(signal)
        .and_then(|signal| nix::sys::signal::kill(Pid::from_raw(pid), signal));
    assert!(sent.is_ok(), "signal {signal} to {pid}: {sent:?}");
}

/// Sends `signal` to `child` and waits (up to `deadline`) for it to exit; fails if it does not.
pub fn kill_and_wait(child: &mut Child, signal: i32, deadline: Duration) -> ExitStatus {
    kill(child, signal);
    wait_exit(child, deadline).expect("exits")
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`), if the process exists.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// How many file descriptors `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_child_is_found_by_its_command_line_and_its_tag_and_killed() {
        let scratch = tempfile::tempdir().expect("scratch");
        let mut command = Command::new("sleep");
        command.arg("300.25");
        tag(&mut command, scratch.path());
        let mut child = command.spawn().expect("sleep starts");
        let pid = wait_for_process(
            |argv| argv == ["sleep", "300.25"],
            Duration::from_secs(10),
            || "sleep never started".to_owned(),
        );
        assert_eq!(u32::try_from(pid).ok(), Some(child.id()));
        assert_eq!(tagged(scratch.path()), vec![pid]);
        assert!(status_kib(child.id(), "VmRSS").is_some());
        assert!(open_fds(child.id()) >= 3);
        kill_tagged(scratch.path());
        let status = wait_exit(&mut child, Duration::from_secs(10)).expect("killed");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(tagged(scratch.path()).is_empty());
    }
}
