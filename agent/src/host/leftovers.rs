//! Commands a dead agent left running.
//!
//! The unit runs with `KillMode=process` (Ray's daemons, started by a finished command, must
//! outlive the agent), so when the agent crashes systemd leaves the command it was running in
//! place, and the restarted agent would run the interrupted step again beside it: two
//! installers or two package managers at once. Every running command's process group is
//! therefore recorded in the state directory while it runs (a file per group, removed when the
//! command ends), and the next agent stops the groups it finds recorded before it schedules
//! anything.
//!
//! A record names the boot and the group leader's start time, so that a group id the kernel
//! has since given to another process is left alone. Process ids belong to the machine, not to
//! the host root, so `/proc` here is the real one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::HostRoot;

/// The records of running commands' process groups, in one folder.
#[derive(Debug, Clone)]
pub(crate) struct GroupRecords {
    dir: PathBuf,
    boot_id: String,
}

/// A process group found running from a record and stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leftover {
    pub(crate) pgid: i32,
    /// It ignored SIGTERM for the whole grace period and was killed.
    pub(crate) killed: bool,
}

impl GroupRecords {
    /// Records in `dir`, for the boot the machine under `root` is in.
    pub(crate) fn new(dir: PathBuf, root: &HostRoot) -> Self {
        let boot_id = std::fs::read_to_string(root.path("/proc/sys/kernel/random/boot_id"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self { dir, boot_id }
    }

    fn file(&self, pgid: i32) -> PathBuf {
        self.dir.join(pgid.to_string())
    }

    /// Notes that the group `pgid` (whose leader is the process `pgid`) runs. Best effort: a
    /// state directory that cannot be written must not stop the command.
    pub(crate) fn add(&self, pgid: i32) {
        let Some(started) = start_time(pgid) else {
            return;
        };
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| {
            std::fs::write(self.file(pgid), format!("{}\n{started}\n", self.boot_id))
        });
        if let Err(err) = written {
            tracing::warn!(
                "cannot record running command {pgid} in {}: {err}",
                self.dir.display()
            );
        }
    }

    /// The group `pgid` is over.
    pub(crate) fn remove(&self, pgid: i32) {
        let _ = std::fs::remove_file(self.file(pgid));
    }

    /// Stops every recorded group still running (SIGTERM, then SIGKILL after `grace`) and
    /// forgets every record.
    pub(crate) async fn stop_leftovers(&self, grace: Duration) -> Vec<Leftover> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut running = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let pgid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok());
            let record = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = std::fs::remove_file(&path);
            if let Some(pgid) = pgid
                && pgid > 1
                && self.still_ours(pgid, &record)
            {
                running.push(pgid);
            }
        }
        let mut stopped = Vec::new();
        for pgid in running {
            if killpg(Pid::from_raw(pgid), Signal::SIGTERM).is_ok() {
                stopped.push(Leftover {
                    pgid,
                    killed: false,
                });
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while stopped.iter().any(|l| group_exists(l.pgid)) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for leftover in &mut stopped {
            if group_exists(leftover.pgid) {
                let _ = killpg(Pid::from_raw(leftover.pgid), Signal::SIGKILL);
                leftover.killed = true;
            }
        }
        stopped
    }

    /// Whether the group `pgid` still is the one `record` describes: same boot, and its leader
    /// either gone (the kernel does not hand out an id still in use as a group id, so the
    /// remaining members are the recorded group's) or started when the record says.
    fn still_ours(&self, pgid: i32, record: &str) -> bool {
        // Two lines: the boot id (empty where the root has none) and the start time.
        let mut lines = record.lines();
        let (Some(boot), Some(started)) = (lines.next(), lines.next()) else {
            return false;
        };
        if boot != self.boot_id || !group_exists(pgid) {
            return false;
        }
        start_time(pgid).is_none_or(|now| now.to_string() == started)
    }
}

/// Whether any process is in the group `pgid`.
fn group_exists(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// The start time of process `pid` in clock ticks since boot (`/proc/PID/stat` field 22).
fn start_time(pid: i32) -> Option<u64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path) -> GroupRecords {
        GroupRecords::new(dir.join("running"), &HostRoot::new(dir))
    }

    /// Starts `script` as the leader of its own group, reaped as soon as it ends (as init
    /// reaps a dead agent's orphans); its process group id.
    fn spawn_group(script: &str) -> i32 {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .expect("sh");
        let pgid = i32::try_from(child.id()).expect("pid");
        std::thread::spawn(move || child.wait());
        pgid
    }

    #[tokio::test]
    async fn a_recorded_group_still_running_is_stopped_and_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = records(dir.path());
        let pgid = spawn_group("sleep 30 & sleep 30");
        records.add(pgid);
        assert!(records.file(pgid).exists());

        let stopped = records.stop_leftovers(Duration::from_secs(2)).await;
        assert_eq!(
            stopped,
            vec![Leftover {
                pgid,
                killed: false
            }]
        );
        assert!(!group_exists(pgid), "the background sleep survived");
        assert!(!records.file(pgid).exists());
        assert!(
            records
                .stop_leftovers(Duration::from_secs(1))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = records(dir.path());
        let pgid = spawn_group("trap '' TERM; sleep 30 & wait");
        std::thread::sleep(Duration::from_millis(100));
        records.add(pgid);
        let stopped = records.stop_leftovers(Duration::from_millis(300)).await;
        assert_eq!(stopped, vec![Leftover { pgid, killed: true }]);
        // The orphaned sleep is reaped by init, not by us: give it a moment.
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !group_exists(pgid)
        });
        assert!(gone, "the group survived SIGKILL");
    }

    #[tokio::test]
    async fn records_of_another_boot_or_another_process_are_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = records(dir.path());
        let pgid = spawn_group("sleep 30");
        std::fs::create_dir_all(&records.dir).expect("dir");
        let started = start_time(pgid).expect("start time");
        std::fs::write(records.file(pgid), format!("another-boot\n{started}\n")).expect("write");
        assert!(
            records
                .stop_leftovers(Duration::from_secs(1))
                .await
                .is_empty()
        );
        std::fs::write(records.file(pgid), format!("\n{}\n", started + 1)).expect("write");
        assert!(
            records
                .stop_leftovers(Duration::from_secs(1))
                .await
                .is_empty()
        );
        assert!(group_exists(pgid));
        assert!(!records.file(pgid).exists(), "a stale record is forgotten");
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}
