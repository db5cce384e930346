//! Processes a test's agents leave behind, found by an environment tag, and what `/proc` says
//! about one process.
//!
//! The unit runs with `KillMode=process`, so when the agent dies systemd leaves its commands
//! running (Ray's daemons must outlive it). Tests that crash the agent therefore leave the
//! orphans alone while they look, and clean up with [`kill_tagged`] at the end: every agent a
//! test starts carries [`TAG`] in its environment, and the agent passes its environment on to
//! every command.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The environment variable that marks every process of one test's agents.
pub const TAG: &str = "RAYEFA_TEST_SCRATCH";

/// Tags `command` (an agent about to start) with `scratch`, the test's own folder.
pub fn tag(command: &mut Command, scratch: &Path) {
    command.env(TAG, scratch);
}

/// The processes (other than this one) whose environment carries [`TAG`] for `scratch`.
pub fn tagged(scratch: &Path) -> Vec<i32> {
    let wanted = format!("{TAG}={}", scratch.display()).into_bytes();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_slice()))
        })
        .filter_map(|pid| i32::try_from(pid).ok())
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
            // SAFETY: kill(2) on a process id just read from /proc whose environment carries
            // this test's own tag: a process this test's agent started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
