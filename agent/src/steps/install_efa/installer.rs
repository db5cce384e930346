//! Running `efa_installer.sh` and judging what it did. Its exit status alone proves little:
//! it exits 0 on a machine without an EFA device and 1 for anything from a bad flag to a failed
//! ping test, so the verdict also reads the manifest it writes.

use std::path::Path;

use super::manifest::{MANIFEST_PATH, Manifest, ManifestReadError};
use crate::engine::{StepContext, StepError};
use crate::host::{CommandOutcome, CommandSpec};

/// The folder the tarball unpacks to.
pub(crate) const INSTALLER_DIR: &str = "aws-efa-installer";
/// The script in it; it must run from that folder (it sources `./env.sh` and `common.sh`).
pub(crate) const INSTALLER_SCRIPT: &str = "efa_installer.sh";

/// A finished run of the installer.
#[derive(Debug, Clone)]
pub(crate) struct InstallerRun {
    pub(crate) spec: CommandSpec,
    pub(crate) outcome: CommandOutcome,
    /// The installer said the new kernel module needs a reboot.
    pub(crate) reboot_needed: bool,
}

/// Runs the installer unpacked under `tree` with `flags`, holding the package-manager lock
/// (it runs dnf or apt itself).
pub(crate) async fn run_installer(
    ctx: &StepContext,
    tree: &Path,
    flags: &[String],
) -> Result<InstallerRun, StepError> {
    let dir = tree.join(INSTALLER_DIR);
    let script = dir.join(INSTALLER_SCRIPT);
    if !script.is_file() {
        return Err(StepError::Fatal(format!(
            "the installer tarball has no {INSTALLER_DIR}/{INSTALLER_SCRIPT}"
        )));
    }
    let spec = CommandSpec::new(script.display().to_string())
        .args(flags.iter().cloned())
        .cwd(&dir);
    ctx.activity("waiting for the package-manager lock");
    let _lock = ctx.package_lock.acquire().await;
    ctx.activity(format!("running {INSTALLER_SCRIPT} {}", flags.join(" ")));
    let outcome = ctx.run(spec.clone()).await?;
    Ok(InstallerRun {
        reboot_needed: asks_for_reboot(&outcome.output),
        spec,
        outcome,
    })
}

/// Whether the installer's output asks for a reboot: "Reboot is needed!" when the old module
/// could not be unloaded, and "Please reboot to complete the installation." at its end.
pub(crate) fn asks_for_reboot(output: &str) -> bool {
    let output = output.to_ascii_lowercase();
    output.contains("reboot is needed") || output.contains("please reboot")
}

/// What a run of the installer amounts to.
#[derive(Debug)]
pub(crate) enum Verdict {
    Installed,
    RebootRequired,
    Failed(StepError),
}

/// Judges a run by its exit, its output and the manifest read after it.
///
/// The manifest decides whether the packages are in: a reboot is asked for only when they
/// are (otherwise the node would reboot, find nothing installed and run again for ever); a
/// failure after they are in (a failed ping test) is not retried, because the next attempt's
/// check would find the manifest and wrongly call the step done.
pub(crate) fn judge(
    run: &InstallerRun,
    after: &Result<Option<Manifest>, ManifestReadError>,
    wanted: &str,
) -> Verdict {
    let installed = matches!(after, Ok(Some(m)) if m.version == wanted);
    if installed && run.reboot_needed {
        return Verdict::RebootRequired;
    }
    if !run.outcome.success() {
        return Verdict::Failed(StepError::command(&run.spec, &run.outcome, !installed));
    }
    if installed {
        return Verdict::Installed;
    }
    let found = match after {
        Ok(None) => format!("{MANIFEST_PATH} does not exist"),
        Ok(Some(m)) => format!("{MANIFEST_PATH} reports version {}", m.version),
        Err(err) => err.to_string(),
    };
    let reboot = if run.reboot_needed {
        " (it also asked for a reboot, which cannot help while nothing is installed)"
    } else {
        ""
    };
    Verdict::Failed(StepError::Fatal(format!(
        "`{}` {} but did not install EFA installer {wanted}: {found}{reboot}; \
         check that efa.installer_version matches the tarball",
        run.spec,
        run.outcome.describe(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: i32, output: &str) -> InstallerRun {
        InstallerRun {
            spec: CommandSpec::new("/s/aws-efa-installer/efa_installer.sh").arg("-y"),
            outcome: CommandOutcome {
                code: Some(code),
                signal: None,
                output: output.to_owned(),
            },
            reboot_needed: asks_for_reboot(output),
        }
    }

    fn manifest(version: &str) -> Result<Option<Manifest>, ManifestReadError> {
        Ok(Some(
            Manifest::parse(&format!("# EFA installer version: {version}\n")).expect("parses"),
        ))
    }

    #[test]
    fn recognises_both_reboot_messages() {
        assert!(asks_for_reboot(
            "Failed to unload EFA kernel module.\nReboot is needed!\n"
        ));
        assert!(asks_for_reboot(
            "EFA installation complete.\n- Please reboot to complete the installation.\n"
        ));
        assert!(!asks_for_reboot(
            "- Please logout/login to complete the installation.\n"
        ));
    }

    #[test]
    fn exit_zero_with_the_wanted_manifest_is_installed() {
        assert!(matches!(
            judge(
                &run(0, "EFA installation complete."),
                &manifest("1.45.1"),
                "1.45.1"
            ),
            Verdict::Installed
        ));
    }

    #[test]
    fn exit_zero_without_the_manifest_is_a_fatal_failure_naming_the_cause() {
        let Verdict::Failed(err) = judge(&run(0, "EFA device not detected"), &Ok(None), "1.45.1")
        else {
            panic!("not a failure");
        };
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("exited 0") && text.contains("does not exist"),
            "{text}"
        );

        let Verdict::Failed(err) = judge(&run(0, ""), &manifest("1.44.0"), "1.45.1") else {
            panic!("not a failure");
        };
        assert!(err.to_string().contains("reports version 1.44.0"));
    }

    #[test]
    fn exit_one_is_a_command_failure_retried_only_while_nothing_is_installed() {
        let Verdict::Failed(err) = judge(
            &run(1, "Error: Failed to install packages."),
            &Ok(None),
            "1.45.1",
        ) else {
            panic!("not a failure");
        };
        assert_eq!(err.exit_code(), Some(1));
        assert!(err.is_retryable());
        assert!(err.to_string().contains("Failed to install packages"));

        let Verdict::Failed(err) =
            judge(&run(1, "ping test failed"), &manifest("1.45.1"), "1.45.1")
        else {
            panic!("not a failure");
        };
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_reboot_is_asked_for_only_once_the_packages_are_in() {
        assert!(matches!(
            judge(&run(0, "Reboot is needed!"), &manifest("1.45.1"), "1.45.1"),
            Verdict::RebootRequired
        ));
        assert!(matches!(
            judge(
                &run(1, "Reboot is needed!\nping test failed"),
                &manifest("1.45.1"),
                "1.45.1"
            ),
            Verdict::RebootRequired
        ));
        let Verdict::Failed(err) = judge(&run(0, "Reboot is needed!"), &Ok(None), "1.45.1") else {
            panic!("not a failure");
        };
        assert!(err.to_string().contains("cannot help"));
    }
}
