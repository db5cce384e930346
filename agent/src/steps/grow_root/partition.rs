//! Growing a partition to the end of its disk with cloud-utils' `growpart`.

use crate::engine::{StepContext, StepError};
use crate::host::{CommandOutcome, CommandSpec};

/// What growpart did or, in a dry run, would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Growth {
    /// The partition grew (or would grow).
    Grows,
    /// The partition already reaches as far as it can ("NOCHANGE").
    AlreadyFull,
}

/// Runs `growpart /dev/<disk> <number>`, with `--dry-run` to only ask.
pub(super) async fn growpart(
    ctx: &StepContext,
    disk: &str,
    number: u32,
    dry_run: bool,
) -> Result<Growth, StepError> {
    let mut spec = CommandSpec::new("growpart");
    if dry_run {
        spec = spec.arg("--dry-run");
    }
    let spec = spec.arg(format!("/dev/{disk}")).arg(number.to_string());
    let outcome = ctx.run(spec.clone()).await?;
    verdict(&outcome).ok_or_else(|| StepError::command(&spec, &outcome, false))
}

/// growpart exits 0 with "CHANGE:"/"CHANGED:" when it grows the partition and 1 with
/// "NOCHANGE:" when there is nothing to grow; exit 1 without that word, or 2, is a failure.
fn verdict(outcome: &CommandOutcome) -> Option<Growth> {
    let said = |word: &str| {
        outcome
            .output
            .lines()
            .any(|l| l.trim_start().starts_with(word))
    };
    match outcome.code {
        Some(0) if said("CHANGE") => Some(Growth::Grows),
        Some(1) if said("NOCHANGE:") => Some(Growth::AlreadyFull),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(code: i32, output: &str) -> CommandOutcome {
        CommandOutcome {
            code: Some(code),
            signal: None,
            output: output.to_owned(),
        }
    }

    #[test]
    fn growparts_words_decide_not_only_its_exit_code() {
        let changed = "CHANGED: partition=1 start=2048 old: size=817152 end=819199 new: size=1431519 end=1433566\n";
        assert_eq!(verdict(&outcome(0, changed)), Some(Growth::Grows));
        let dry = "CHANGE: partition=1 start=2048 old: size=817152 end=819199 new: size=1431519 end=1433566\n\
                   # === old sfdisk -d ===\nlabel: dos\n";
        assert_eq!(verdict(&outcome(0, dry)), Some(Growth::Grows));
        let full = "NOCHANGE: partition 1 is size 1431519. it cannot be grown\n";
        assert_eq!(verdict(&outcome(1, full)), Some(Growth::AlreadyFull));
        assert_eq!(
            verdict(&outcome(1, "FAILED: /dev/nvme0n1: does not exist\n")),
            None
        );
        assert_eq!(verdict(&outcome(2, "FAILED: failed to resize\n")), None);
        assert_eq!(verdict(&outcome(0, "")), None, "silence is not success");
    }
}
