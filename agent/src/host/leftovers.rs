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
//!
//! A group id is only known once the command runs, so an agent killed between starting a
//! command and recording it would leave a command nobody knows of. Before it starts a command
//! the agent therefore writes a `starting-TOKEN` record and gives the command the token in
//! `RAYEFA_COMMAND_ID`; the record is removed once the group's own record is written. The next
//! agent finds the processes of a `starting-` record left behind by their environment.

use std::collections::BTreeSet;
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

/// The variable that carries a `starting-` record's token into the command it announces.
pub(crate) const COMMAND_ID_ENV: &str = "RAYEFA_COMMAND_ID";

const STARTING_PREFIX: &str = "starting-";

/// A command about to start: its `starting-` record, removed when this is dropped (once the
/// command's group is recorded, or when it could not start).
#[derive(Debug)]
pub(crate) struct Announced {
    token: String,
    file: PathBuf,
}

impl Announced {
    /// The value for [`COMMAND_ID_ENV`] in the command's environment.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
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

    /// Notes that a command is about to start; `None` when the note cannot be written (best
    /// effort, as [`GroupRecords::add`]).
    pub(crate) fn announce(&self) -> Option<Announced> {
        let token = format!("{:016x}", fastrand::u64(..));
        let file = self.dir.join(format!("{STARTING_PREFIX}{token}"));
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&file, format!("{}\n", self.boot_id)));
        match written {
            Ok(()) => Some(Announced { token, file }),
            Err(err) => {
                tracing::warn!(
                    "cannot record a starting command in {}: {err}",
                    self.dir.display()
                );
                None
            }
        }
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
            let token = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(STARTING_PREFIX))
                .map(str::to_owned);
            if let Some(token) = token {
                if record.lines().next() == Some(self.boot_id.as_str()) {
                    running.extend(find_command_groups(&token).await);
                }
            } else if let Some(pgid) = pgid
                && pgid > 1
                && self.still_ours(pgid, &record)
            {
                running.push(pgid);
            }
        }
        running.sort_unstable();
        running.dedup();
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

/// How often the processes of a `starting-` record are looked for before concluding that
/// the command never ran or has ended: a process in the middle of `execve` shows an empty
/// environment for a moment.
const SCANS: u32 = 3;

/// The groups of a command announced as `token`, looked for [`SCANS`] times 50 ms apart until
/// found.
async fn find_command_groups(token: &str) -> BTreeSet<i32> {
    for scan in 1..=SCANS {
        let found = groups_with_command_id(token);
        if !found.is_empty() || scan == SCANS {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    BTreeSet::new()
}

/// The process groups of every process whose environment holds `RAYEFA_COMMAND_ID=token`.
fn groups_with_command_id(token: &str) -> BTreeSet<i32> {
    let wanted = format!("{COMMAND_ID_ENV}={token}");
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    processes
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|byte| *byte == 0)
                    .any(|variable| variable == wanted.as_bytes())
            })
        })
        .filter_map(process_group)
        .filter(|pgid| *pgid > 1)
        .collect()
}

/// The process group of process `pid` (`/proc/PID/stat` field 5).
fn process_group(pid: i32) -> Option<i32> {
    stat_field(pid, 2)
}

/// Whether any process is in the group `pgid`.
fn group_exists(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// The start time of process `pid` in clock ticks since boot (`/proc/PID/stat` field 22).
fn start_time(pid: i32) -> Option<u64> {
    stat_field(pid, 19)
}

/// Field `index + 3` of `/proc/PID/stat`, counting from 1.
fn stat_field<T: std::str::FromStr>(pid: i32, index: usize) -> Option<T> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(index)?.parse().ok()
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
        spawn_group_with(script, &[])
    }

    fn spawn_group_with(script: &str, env: &[(&str, &str)]) -> i32 {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .envs(env.iter().copied())
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

        assert_stops_exactly(&records, pgid).await;
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

    /// The next agent's clean-up stops the group `pgid` with SIGTERM, its background
    /// process included, and nothing else.
    async fn assert_stops_exactly(records: &GroupRecords, pgid: i32) {
        let stopped = records.stop_leftovers(Duration::from_secs(2)).await;
        assert_eq!(
            stopped,
            vec![Leftover {
                pgid,
                killed: false
            }]
        );
        assert!(!group_exists(pgid), "the background sleep survived");
    }

    fn processes_in_group(pgid: i32) -> usize {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| process_group(*pid) == Some(pgid))
            .count()
    }

    #[tokio::test]
    async fn a_command_started_but_not_yet_recorded_is_found_by_its_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = records(dir.path());
        let announced = records.announce().expect("announce");
        let pgid = spawn_group_with("sleep 30 & wait", &[(COMMAND_ID_ENV, announced.token())]);
        // The shell and its sleep both running, so that no scan below meets one in the middle
        // of `execve`.
        let settled = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            processes_in_group(pgid) == 2
        });
        assert!(settled, "the command's sleep did not start");
        // The agent dies here, before `add`: only the announcement is on disk.
        assert_stops_exactly(&records, pgid).await;
        let left: Vec<_> = std::fs::read_dir(&records.dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "records left: {left:?}");
    }

    #[tokio::test]
    async fn an_announcement_is_withdrawn_once_dropped_and_other_boots_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = records(dir.path());
        let announced = records.announce().expect("announce");
        let file = announced.file.clone();
        assert!(file.exists());
        drop(announced);
        assert!(!file.exists());

        let token = "0123456789abcdef";
        let pgid = spawn_group_with("sleep 30", &[(COMMAND_ID_ENV, token)]);
        std::fs::write(
            records.dir.join(format!("{STARTING_PREFIX}{token}")),
            "another-boot\n",
        )
        .expect("write");
        assert!(
            records
                .stop_leftovers(Duration::from_secs(1))
                .await
                .is_empty()
        );
        assert!(
            group_exists(pgid),
            "a process of another boot's record was stopped"
        );
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}
