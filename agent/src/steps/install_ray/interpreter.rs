//! Which Python makes the virtualenv. Amazon Linux 2023's `python3` is 3.9 for the life of the
//! distribution, and current Ray ships no wheels for 3.9 (pip quietly picks an old Ray), so
//! there the virtualenv is made with `python3.12` from the distribution's own packages.
//! Elsewhere it is `python3`. `packages.python_interpreter` overrides the choice.

use crate::engine::StepContext;
use crate::host::os_release_value;

const OS_RELEASE: &str = "/etc/os-release";

/// The interpreter, and the OS packages that bring it (none when the configuration names the
/// interpreter: the operator then knows where it comes from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Interpreter {
    /// The command that runs it (`python3.12`, `/usr/bin/python3`).
    pub(super) command: String,
    /// OS packages to install for it, beside the configured ones.
    pub(super) packages: Vec<String>,
    /// Why this one, for the log and the detail.
    pub(super) reason: &'static str,
}

/// The interpreter for this node: the configured one, else the default for its os-release.
pub(super) fn choose(ctx: &StepContext) -> Interpreter {
    if let Some(command) = &ctx.settings.packages.python_interpreter {
        return Interpreter {
            command: command.clone(),
            packages: Vec::new(),
            reason: "packages.python_interpreter",
        };
    }
    let os_release = std::fs::read_to_string(ctx.root.path(OS_RELEASE)).ok();
    default_for(os_release.as_deref())
}

/// The default interpreter for a node whose os-release is `os_release` (`None`: unreadable).
pub(super) fn default_for(os_release: Option<&str>) -> Interpreter {
    if os_release.is_some_and(is_amazon_linux_2023) {
        Interpreter {
            command: "python3.12".to_owned(),
            packages: vec!["python3.12".to_owned(), "python3.12-pip".to_owned()],
            reason: "Amazon Linux 2023's python3 is 3.9, too old for current Ray",
        }
    } else {
        Interpreter {
            command: "python3".to_owned(),
            packages: Vec::new(),
            reason: "the system's python3",
        }
    }
}

fn is_amazon_linux_2023(os_release: &str) -> bool {
    os_release_value(os_release, "ID").as_deref() == Some("amzn")
        && os_release_value(os_release, "VERSION_ID").is_some_and(|v| v.starts_with("2023"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Amazon Linux 2023's os-release, as the AMI has it.
    const AL2023: &str = "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\n\
        VERSION_ID=\"2023\"\nPLATFORM_ID=\"platform:al2023\"\nPRETTY_NAME=\"Amazon Linux 2023.9.20251117\"\n";
    const AL2: &str = "NAME=\"Amazon Linux\"\nVERSION=\"2\"\nID=\"amzn\"\nID_LIKE=\"centos rhel fedora\"\nVERSION_ID=\"2\"\n";
    const UBUNTU: &str = "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n";

    #[test]
    fn amazon_linux_2023_gets_python_3_12_from_its_own_packages() {
        let chosen = default_for(Some(AL2023));
        assert_eq!(chosen.command, "python3.12");
        assert_eq!(chosen.packages, ["python3.12", "python3.12-pip"]);
    }

    #[test]
    fn other_systems_keep_python3() {
        for os_release in [Some(AL2), Some(UBUNTU), None] {
            let chosen = default_for(os_release);
            assert_eq!(chosen.command, "python3", "{os_release:?}");
            assert!(chosen.packages.is_empty(), "{os_release:?}");
        }
    }
}
