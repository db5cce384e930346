//! OS packages with dnf or apt: which manager, what is already there, installing the rest.

use std::fmt;

use crate::config::{PackageManagerChoice, Settings};
use crate::engine::{Retry, StepContext, StepError};
use crate::host::{CommandSpec, os_release_value};

const OS_RELEASE: &str = "/etc/os-release";
const APT_LISTS: &str = "/var/lib/apt/lists";

/// How long apt waits for a dpkg lock held by someone else (cloud-init, unattended-upgrades on
/// a fresh Ubuntu) before giving up; without it apt fails at once.
const APT_LOCK_TIMEOUT_SECS: u32 = 300;

/// The package manager of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Manager {
    Dnf,
    Apt,
}

impl fmt::Display for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Manager::Dnf => "dnf",
            Manager::Apt => "apt",
        })
    }
}

impl Manager {
    /// What a node needs for a virtualenv with pip when the configuration names nothing:
    /// Debian and Ubuntu ship `venv` separately from Python.
    pub(super) fn default_packages(self) -> &'static [&'static str] {
        match self {
            Manager::Dnf => &["python3-pip"],
            Manager::Apt => &["python3-venv", "python3-pip"],
        }
    }
}

/// The manager and the packages it should have installed (the configured ones or the
/// manager's defaults, then `interpreter`'s); `None` when the configuration asks for no OS
/// packages, so that no manager needs to be found.
pub(super) fn requested(
    ctx: &StepContext,
    interpreter: &[String],
) -> Result<Option<(Manager, Vec<String>)>, StepError> {
    let settings: &Settings = &ctx.settings;
    if settings.packages.os.as_ref().is_some_and(Vec::is_empty) {
        return Ok(None);
    }
    let manager = match settings.packages.manager {
        PackageManagerChoice::Dnf => Manager::Dnf,
        PackageManagerChoice::Apt => Manager::Apt,
        PackageManagerChoice::Auto => detect(ctx)?,
    };
    let mut packages = settings.packages.os.clone().unwrap_or_else(|| {
        manager
            .default_packages()
            .iter()
            .map(|p| (*p).to_owned())
            .collect()
    });
    for package in interpreter {
        if !packages.contains(package) {
            packages.push(package.clone());
        }
    }
    Ok(Some((manager, packages)))
}

/// The manager named by `/etc/os-release` under the root.
fn detect(ctx: &StepContext) -> Result<Manager, StepError> {
    let path = ctx.root.path(OS_RELEASE);
    let text = std::fs::read_to_string(&path).map_err(|err| {
        StepError::Fatal(format!(
            "cannot read {}: {err}; set packages.manager to dnf or apt",
            path.display()
        ))
    })?;
    manager_of(&text).ok_or_else(|| {
        let id = os_release_value(&text, "ID").unwrap_or_default();
        let like = os_release_value(&text, "ID_LIKE").unwrap_or_default();
        StepError::Fatal(format!(
            "{}: ID={id:?} ID_LIKE={like:?} is neither a Red Hat nor a Debian family system; \
             set packages.manager to dnf or apt",
            path.display()
        ))
    })
}

/// The manager of an os-release text: its ID first, then its ID_LIKE families.
fn manager_of(os_release: &str) -> Option<Manager> {
    let family = |word: &str| match word {
        "amzn" | "rhel" | "fedora" | "centos" => Some(Manager::Dnf),
        "debian" | "ubuntu" => Some(Manager::Apt),
        _ => None,
    };
    let id = os_release_value(os_release, "ID").unwrap_or_default();
    let like = os_release_value(os_release, "ID_LIKE").unwrap_or_default();
    family(&id).or_else(|| like.split_whitespace().find_map(family))
}

/// The packages of `packages` that are not installed. Queries the package database only, so it
/// needs no lock.
pub(super) async fn missing(
    ctx: &StepContext,
    manager: Manager,
    packages: &[String],
) -> Result<Vec<String>, StepError> {
    let mut missing = Vec::new();
    for package in packages {
        if !installed(ctx, manager, package).await? {
            missing.push(package.clone());
        }
    }
    Ok(missing)
}

async fn installed(ctx: &StepContext, manager: Manager, package: &str) -> Result<bool, StepError> {
    match manager {
        // `--whatprovides` also answers for capabilities dnf accepts (`/usr/bin/pip3`,
        // `python3dist(boto3)`), not only package names.
        Manager::Dnf => {
            let spec = CommandSpec::new("rpm").args(["-q", "--whatprovides", package]);
            Ok(ctx.run(spec).await?.success())
        }
        Manager::Apt => {
            // `name=version` installs a version; the database knows the name.
            let name = package.split('=').next().unwrap_or(package);
            let spec = CommandSpec::new("dpkg-query").args(["-W", "-f=${Status}", name]);
            let outcome = ctx.run(spec).await?;
            // "install ok installed", "hold ok installed"; not "deinstall ok config-files".
            Ok(outcome.success()
                && outcome
                    .output
                    .lines()
                    .any(|line| line.trim_end().ends_with(" installed")))
        }
    }
}

/// Installs `packages`. The caller holds the package-manager lock.
pub(super) async fn install(
    ctx: &StepContext,
    manager: Manager,
    packages: &[String],
) -> Result<(), StepError> {
    ctx.activity(format!("installing with {manager}: {}", packages.join(" ")));
    match manager {
        Manager::Dnf => {
            let spec = CommandSpec::new("dnf")
                .args(["install", "-y"])
                .args(packages);
            ctx.run_checked(spec, Retry::IfOutput(dnf_retryable))
                .await
                .map(drop)
        }
        Manager::Apt => apt_install(ctx, packages).await,
    }
}

/// `apt-get install`, with `apt-get update` first when the node has no package lists (fresh
/// images often ship without), and once more when the lists turn out to be stale (a package
/// unknown to them, or a version the mirror no longer has). Updating only then keeps a node
/// whose packages are all there from touching the network at all.
async fn apt_install(ctx: &StepContext, packages: &[String]) -> Result<(), StepError> {
    let mut updated = false;
    if !has_apt_lists(ctx) {
        apt_update(ctx).await?;
        updated = true;
    }
    loop {
        let spec = apt_get().args(["install", "-y"]).args(packages);
        let outcome = ctx.run(spec.clone()).await?;
        if !outcome.success() && !updated && apt_lists_stale(&outcome.output) {
            ctx.log
                .note("# the package lists look stale; updating them and trying again");
            apt_update(ctx).await?;
            updated = true;
            continue;
        }
        return APT_RETRY.check(&spec, outcome).map(drop);
    }
}

async fn apt_update(ctx: &StepContext) -> Result<(), StepError> {
    ctx.activity("updating the apt package lists");
    ctx.run_checked(apt_get().arg("update"), APT_RETRY)
        .await
        .map(drop)
}

fn apt_get() -> CommandSpec {
    CommandSpec::new("apt-get")
        .arg("-o")
        .arg(format!("DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_SECS}"))
        .env("DEBIAN_FRONTEND", "noninteractive")
}

/// Whether apt has any package lists to install from.
fn has_apt_lists(ctx: &StepContext) -> bool {
    std::fs::read_dir(ctx.root.path(APT_LISTS)).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
    })
}

/// apt's words for lists that do not know a package or point at files the mirror has dropped.
fn apt_lists_stale(output: &str) -> bool {
    output.contains("Unable to locate package")
        || output.contains("has no installation candidate")
        || (output.contains("Failed to fetch") && output.contains("404"))
}

/// The verdict on a failed `apt-get`.
const APT_RETRY: Retry = Retry::IfOutput(apt_retryable);

/// apt failures that another attempt may get past: the network, a mirror in the middle of a
/// sync, a lock someone else held for longer than apt waited.
fn apt_retryable(output: &str) -> bool {
    const TRANSIENT: &[&str] = &[
        "Temporary failure resolving",
        "Could not resolve",
        "Could not connect",
        "Connection failed",
        "Connection timed out",
        "Failed to fetch",
        "Some index files failed to download",
        "Hash Sum mismatch",
        "Could not get lock",
        "Unable to acquire the dpkg frontend lock",
        "Unable to lock directory",
    ];
    TRANSIENT.iter().any(|t| output.contains(t))
}

/// dnf failures that another attempt may get past: repositories that could not be reached.
/// A package no repository has ("Unable to find a match") is final.
fn dnf_retryable(output: &str) -> bool {
    const TRANSIENT: &[&str] = &[
        "Curl error",
        "Cannot download",
        "Failed to download",
        "Errors during downloading metadata",
        "Cannot prepare internal mirrorlist",
        "Cannot find a valid baseurl",
        "Could not resolve host",
        "Timeout was reached",
        "Librepo error",
    ];
    !output.contains("Unable to find a match")
        && !output.contains("No match for argument")
        && TRANSIENT.iter().any(|t| output.contains(t))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rayefa_wire::Role;

    use super::*;
    use crate::host::HostRoot;
    use crate::host::scripted::ScriptedRunner;
    use crate::steps::testing::{context, settings};

    const AL2023: &str = "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\n";
    const UBUNTU: &str = "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n";
    const ROCKY: &str = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n";

    #[test]
    fn the_manager_follows_id_then_id_like() {
        assert_eq!(manager_of(AL2023), Some(Manager::Dnf));
        assert_eq!(manager_of(UBUNTU), Some(Manager::Apt));
        assert_eq!(manager_of(ROCKY), Some(Manager::Dnf));
        assert_eq!(manager_of("ID=debian\n"), Some(Manager::Apt));
        assert_eq!(manager_of("ID=arch\n"), None);
    }

    fn root_with_os_release(text: Option<&str>) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("root");
        if let Some(text) = text {
            std::fs::create_dir_all(root.path().join("etc")).expect("etc");
            std::fs::write(root.path().join("etc/os-release"), text).expect("os-release");
        }
        root
    }

    #[test]
    fn defaults_depend_on_the_manager_and_configuration_wins() {
        let root = root_with_os_release(Some(UBUNTU));
        let runner = Arc::new(ScriptedRunner::new());
        let t = context(
            "install-ray",
            HostRoot::new(root.path()),
            runner.clone(),
            settings(Role::Head, ""),
        );
        assert_eq!(
            requested(&t.ctx, &[]).expect("requested"),
            Some((
                Manager::Apt,
                vec!["python3-venv".to_owned(), "python3-pip".to_owned()]
            ))
        );
        let forced = context(
            "install-ray",
            HostRoot::new(root.path()),
            runner.clone(),
            settings(
                Role::Head,
                "[packages]\nmanager = \"dnf\"\nos = [\"git\"]\n",
            ),
        );
        assert_eq!(
            requested(&forced.ctx, &[]).expect("requested"),
            Some((Manager::Dnf, vec!["git".to_owned()]))
        );
        let none = context(
            "install-ray",
            HostRoot::new("/nonexistent"),
            runner,
            settings(Role::Head, "[packages]\nos = []\n"),
        );
        assert_eq!(requested(&none.ctx, &[]).expect("nothing requested"), None);
    }

    #[test]
    fn an_unknown_system_asks_for_the_manager_by_name() {
        let runner = Arc::new(ScriptedRunner::new());
        for (text, words) in [
            (Some("ID=arch\n"), "ID=\"arch\" ID_LIKE=\"\""),
            (None, "cannot read"),
        ] {
            let root = root_with_os_release(text);
            let t = context(
                "install-ray",
                HostRoot::new(root.path()),
                runner.clone(),
                settings(Role::Head, ""),
            );
            let err = requested(&t.ctx, &[]).expect_err("unknown");
            assert!(!err.is_retryable());
            let message = err.to_string();
            assert!(
                message.contains(words) && message.contains("set packages.manager"),
                "{message}"
            );
        }
    }

    #[tokio::test]
    async fn installed_packages_are_told_apart_from_missing_and_removed_ones() {
        let runner = Arc::new(
            ScriptedRunner::new()
                .answer(
                    "dpkg-query -W '-f=${Status}' python3-pip",
                    0,
                    "install ok installed",
                )
                .answer(
                    "dpkg-query -W '-f=${Status}' python3-venv",
                    0,
                    "deinstall ok config-files",
                )
                .answer(
                    "dpkg-query -W '-f=${Status}' git",
                    1,
                    "dpkg-query: no packages found matching git\n",
                )
                .answer(
                    "rpm -q --whatprovides /usr/bin/pip3",
                    0,
                    "python3-pip-21.3.1-2.amzn2023.0.11.noarch\n",
                )
                .answer("rpm -q --whatprovides git", 1, "no package provides git\n"),
        );
        let t = context(
            "install-ray",
            HostRoot::new("/scratch"),
            runner,
            settings(Role::Head, ""),
        );
        let apt = ["python3-pip", "python3-venv", "git=1:2.39"].map(String::from);
        assert_eq!(
            missing(&t.ctx, Manager::Apt, &apt).await.expect("query"),
            ["python3-venv", "git=1:2.39"]
        );
        let dnf = ["/usr/bin/pip3", "git"].map(String::from);
        assert_eq!(
            missing(&t.ctx, Manager::Dnf, &dnf).await.expect("query"),
            ["git"]
        );
    }

    #[tokio::test]
    async fn apt_updates_first_when_the_node_has_no_lists() {
        let root = tempfile::tempdir().expect("root");
        let runner = Arc::new(ScriptedRunner::new().answer("apt-get", 0, ""));
        let t = context(
            "install-ray",
            HostRoot::new(root.path()),
            runner.clone(),
            settings(Role::Head, ""),
        );
        install(&t.ctx, Manager::Apt, &["python3-pip".to_owned()])
            .await
            .expect("installs");
        assert_eq!(
            runner.calls(),
            [
                "apt-get -o DPkg::Lock::Timeout=300 update",
                "apt-get -o DPkg::Lock::Timeout=300 install -y python3-pip"
            ]
        );
        assert!(
            runner
                .specs()
                .iter()
                .all(|s| s.env["DEBIAN_FRONTEND"] == "noninteractive")
        );
    }

    fn root_with_apt_lists() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("root");
        let lists = root.path().join("var/lib/apt/lists");
        std::fs::create_dir_all(&lists).expect("lists");
        std::fs::write(
            lists.join("deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"),
            "",
        )
        .expect("list");
        root
    }

    #[tokio::test]
    async fn apt_with_lists_installs_at_once() {
        let root = root_with_apt_lists();
        let runner = Arc::new(ScriptedRunner::new().answer("apt-get", 0, ""));
        let t = context(
            "install-ray",
            HostRoot::new(root.path()),
            runner.clone(),
            settings(Role::Head, ""),
        );
        install(&t.ctx, Manager::Apt, &["git".to_owned()])
            .await
            .expect("installs");
        assert_eq!(
            runner.calls(),
            ["apt-get -o DPkg::Lock::Timeout=300 install -y git"]
        );
        assert_eq!(t.activity().as_deref(), Some("installing with apt: git"));
    }

    /// Answers `apt-get install` from a list of (exit code, output), one per call.
    #[derive(Debug)]
    struct AptSequence(std::sync::Mutex<Vec<(i32, &'static str)>>, ScriptedRunner);

    #[async_trait::async_trait]
    impl crate::host::CommandRunner for AptSequence {
        async fn run(
            &self,
            spec: &CommandSpec,
            sink: &dyn crate::host::OutputSink,
        ) -> std::io::Result<crate::host::CommandOutcome> {
            let recorded = self.1.run(spec, sink).await?;
            if !spec.args.contains(&"install".to_owned()) {
                return Ok(recorded);
            }
            let (code, output) = self.0.lock().expect("answers").remove(0);
            Ok(crate::host::CommandOutcome {
                code: Some(code),
                signal: None,
                output: output.to_owned(),
            })
        }
    }

    #[tokio::test]
    async fn stale_lists_are_updated_once_and_the_install_retried() {
        let root = root_with_apt_lists();
        let stale = "E: Unable to locate package python3-venv\n";
        let runner = Arc::new(AptSequence(
            std::sync::Mutex::new(vec![(100, stale), (0, "")]),
            ScriptedRunner::new().answer("apt-get", 0, ""),
        ));
        let t = context(
            "install-ray",
            HostRoot::new(root.path()),
            runner.clone(),
            settings(Role::Head, ""),
        );
        install(&t.ctx, Manager::Apt, &["python3-venv".to_owned()])
            .await
            .expect("installs");
        assert_eq!(
            runner.1.calls(),
            [
                "apt-get -o DPkg::Lock::Timeout=300 install -y python3-venv",
                "apt-get -o DPkg::Lock::Timeout=300 update",
                "apt-get -o DPkg::Lock::Timeout=300 install -y python3-venv"
            ]
        );

        let runner = Arc::new(AptSequence(
            std::sync::Mutex::new(vec![(100, stale), (100, stale)]),
            ScriptedRunner::new().answer("apt-get", 0, ""),
        ));
        let t = context(
            "install-ray",
            HostRoot::new(root.path()),
            runner.clone(),
            settings(Role::Head, ""),
        );
        let err = install(&t.ctx, Manager::Apt, &["python3-venv".to_owned()])
            .await
            .expect_err("a package the updated lists do not know");
        assert!(!err.is_retryable());
        assert_eq!(err.exit_code(), Some(100));
        assert_eq!(runner.1.calls().len(), 3, "updated once, not in a loop");
    }

    #[tokio::test]
    async fn dnf_network_failures_are_retryable_and_unknown_packages_are_not() {
        let offline = "Curl error (6): Couldn't resolve host name for https://cdn.amazonlinux.com/...\n\
                       Error: Failed to download metadata for repo 'amazonlinux'\n";
        let unknown = "Last metadata expiration check: 0:01:02 ago.\nNo match for argument: python3-nope\n\
                       Error: Unable to find a match: python3-nope\n";
        for (output, retryable) in [(offline, true), (unknown, false)] {
            let runner = Arc::new(ScriptedRunner::new().answer("dnf install -y", 1, output));
            let t = context(
                "install-ray",
                HostRoot::new("/scratch"),
                runner.clone(),
                settings(Role::Head, ""),
            );
            let err = install(&t.ctx, Manager::Dnf, &["python3-nope".to_owned()])
                .await
                .expect_err("fails");
            assert_eq!(err.is_retryable(), retryable, "{output}");
            assert!(
                err.to_string()
                    .starts_with("`dnf install -y python3-nope` exited 1: ")
            );
        }
    }

    #[test]
    fn apt_failures_are_classified() {
        assert!(apt_retryable(
            "E: Failed to fetch http://deb.debian.org/... Temporary failure resolving 'deb.debian.org'"
        ));
        assert!(apt_retryable(
            "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 812 (unattended-upgr)"
        ));
        assert!(!apt_retryable("E: Unable to locate package nope"));
        assert!(!apt_retryable(
            "E: Sub-process /usr/bin/dpkg returned an error code (1)"
        ));
        assert!(apt_lists_stale(
            "E: Failed to fetch http://x/pool/a.deb  404  Not Found [IP: 1.2.3.4 80]"
        ));
        assert!(!apt_lists_stale(
            "E: Failed to fetch http://x/pool/a.deb  Connection failed"
        ));
    }
}
