//! The engine's memory across crashes and reboots: every step's record, written atomically
//! after transitions (`run.rs` decides when: in the background, several at a time).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rayefa_wire::StepStatus;
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;

const JOURNAL_VERSION: u32 = 1;
const FILE_NAME: &str = "journal.json";

/// What the journal holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JournalDoc {
    pub(crate) version: u32,
    /// Every step as it was at the last transition.
    pub(crate) steps: Vec<StepStatus>,
    /// The boot (`/proc/sys/kernel/random/boot_id`) the journal was last written in, so that
    /// work that does not survive a reboot is done again after one.
    #[serde(default)]
    pub(crate) boot_id: String,
    /// Set when a step asked for a reboot: the step's name and the boot it was asked in.
    pub(crate) pending_reboot: Option<PendingReboot>,
}

/// A reboot asked for by a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingReboot {
    pub(crate) step: String,
    /// `/proc/sys/kernel/random/boot_id` when the reboot was asked for.
    pub(crate) boot_id: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error("journal {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot {doing} journal {path}: {source}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The journal file in a state directory.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub(crate) fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.to_owned(),
        }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The journal, `None` when there is none yet.
    pub(crate) fn load(&self) -> Result<Option<JournalDoc>, JournalError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(JournalError::Io {
                    doing: "read",
                    path,
                    source,
                });
            }
        };
        let doc: JournalDoc =
            serde_json::from_slice(&bytes).map_err(|err| JournalError::Corrupt {
                path: path.clone(),
                reason: err.to_string(),
            })?;
        if doc.version != JOURNAL_VERSION {
            return Err(JournalError::Corrupt {
                path,
                reason: format!("version {} is not {JOURNAL_VERSION}", doc.version),
            });
        }
        Ok(Some(doc))
    }

    /// Moves an unreadable journal out of the way, keeping it for a person to read.
    pub(crate) fn set_aside(&self) -> Result<PathBuf, JournalError> {
        let from = self.path();
        let to = self.dir.join(format!("{FILE_NAME}.corrupt-{}", now_ms()));
        fs::rename(&from, &to).map_err(|source| JournalError::Io {
            doing: "set aside",
            path: from,
            source,
        })?;
        Ok(to)
    }

    /// Replaces the journal with `doc`: temporary file, fsync, rename, fsync of the directory,
    /// so a crash leaves either the old journal or the new one.
    pub(crate) fn save(&self, doc: &JournalDoc) -> Result<(), JournalError> {
        let path = self.path();
        let io_err = |doing, source| JournalError::Io {
            doing,
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(|e| io_err("create the directory of", e))?;
        let tmp = self.dir.join(format!(".{FILE_NAME}.tmp"));
        let doc = JournalDoc {
            version: JOURNAL_VERSION,
            ..doc.clone()
        };
        let bytes = serde_json::to_vec_pretty(&doc)
            .map_err(|e| io_err("serialise", io::Error::other(e)))?;
        let written = File::create(&tmp)
            .map_err(|e| io_err("create", e))
            .and_then(|mut file| {
                file.write_all(&bytes).map_err(|e| io_err("write", e))?;
                file.sync_all().map_err(|e| io_err("sync", e))
            })
            .and_then(|()| fs::rename(&tmp, &path).map_err(|e| io_err("replace", e)));
        if let Err(err) = written {
            // A half-written copy on a full disk would only keep the space the next save needs.
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_err("sync the directory of", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayefa_wire::StepState;

    fn record(name: &str, state: StepState) -> StepStatus {
        StepStatus {
            state,
            started_at_ms: Some(1),
            finished_at_ms: Some(2),
            attempts: 1,
            exit_code: Some(0),
            output_tail: "ok\n".into(),
            ..StepStatus::pending(name, vec![])
        }
    }

    #[test]
    fn saves_and_loads_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::new(&dir.path().join("state"));
        assert_eq!(journal.load().expect("no journal is fine"), None);
        let doc = JournalDoc {
            version: JOURNAL_VERSION,
            steps: vec![record("grow-root", StepState::Succeeded)],
            boot_id: "boot-1".into(),
            pending_reboot: None,
        };
        journal.save(&doc).expect("saves");
        assert_eq!(journal.load().expect("loads"), Some(doc));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("state"))
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_corrupt_journal_is_reported_and_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::new(dir.path());
        fs::write(journal.path(), b"{\"version\": 1, \"steps\": [tru").expect("write");
        let err = journal.load().expect_err("corrupt");
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
        let aside = journal.set_aside().expect("set aside");
        assert!(aside.exists());
        assert!(!journal.path().exists());
        assert_eq!(
            fs::read(aside).expect("kept"),
            b"{\"version\": 1, \"steps\": [tru"
        );
    }
}
