//! Who owns the virtualenv. When the cluster commands run as a user (`commands.user`, the
//! cluster file's `auth.ssh_user`), a `pip install X` among them writes into the virtualenv, as
//! it does in Ray's launcher, so the virtualenv must be that user's.
//!
//! The agent makes and fills the virtualenv as root and then hands the whole tree to the user
//! with `chown -R USER:` (the user's login group), after every install. The other way, making
//! it as the user, was weighed and left: uv lives in the agent's state directory, which only
//! root may enter (`StateDirectoryMode=0700`), its cache is there too, and any later install
//! by the agent as root (a changed package list, a repair) would still leave root's files
//! behind in the user's tree. Root can write into a tree the user owns, so the agent's own
//! installs keep working, and one `chown` after them settles ownership whoever wrote last.
//!
//! The step's check counts a virtualenv holding anything the user does not own as not done,
//! so an agent stopped between the install and the `chown`, or a root install since, is
//! repaired when the step runs again.

use crate::engine::{Retry, StepContext, StepError};
use crate::host::CommandSpec;
use crate::steps::venv;

/// Whether everything in the virtualenv belongs to `user`. A check that cannot be made (no
/// such user yet, `find` failing) answers no: [`hand_over`] then says what is wrong.
pub(super) async fn owned_by(ctx: &StepContext, user: &str) -> Result<bool, StepError> {
    let dir = venv::dir(ctx);
    let spec = CommandSpec::new("find")
        .arg(dir.display().to_string())
        .args(["!", "-user", user, "-print", "-quit"]);
    let outcome = ctx.run(spec).await?;
    if !outcome.success() {
        ctx.log.note(&format!(
            "# the virtualenv's owner cannot be checked: find {}",
            outcome.describe()
        ));
        return Ok(false);
    }
    let first_other = outcome.output.lines().find(|line| !line.trim().is_empty());
    if let Some(path) = first_other {
        ctx.log
            .note(&format!("# not yet {user}'s: {path} (and maybe more)"));
    }
    Ok(first_other.is_none())
}

/// Gives the whole virtualenv to `user` and the user's login group.
pub(super) async fn hand_over(ctx: &StepContext, user: &str) -> Result<(), StepError> {
    let dir = venv::dir(ctx);
    ctx.activity(format!(
        "giving the virtualenv {} to {user}, who runs the cluster commands",
        dir.display()
    ));
    // `-R` alone never follows a symbolic link (the interpreter links point out of the tree).
    let spec = CommandSpec::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(dir.display().to_string());
    ctx.run_checked(spec, Retry::Never)
        .await
        .map(drop)
        .map_err(|error| {
            StepError::Fatal(format!(
                "the virtualenv cannot be given to commands.user (auth.ssh_user) `{user}`, who \
                 runs the cluster commands: {error}"
            ))
        })
}
