//! `setup-commands`: the cluster file's initialization and setup commands, verbatim, in order.

use async_trait::async_trait;
use serde_json::json;

use super::cluster_commands::{self, Listed};
use super::{INSTALL_RAY, SETUP_COMMANDS};
use crate::config::Settings;
use crate::engine::{Check, Outcome, Step, StepContext, StepError, Wanted};

/// Runs `initialization_commands` and then the setup commands (the cluster file's common and
/// role-specific ones, already merged by the orchestrator) with `bash -c`, each with the
/// configured environment, the virtualenv first on `PATH` and `RAY_HEAD_IP` on workers.
///
/// These are arbitrary commands, so nothing can tell whether they have run; Ray's launcher
/// runs them again on every `ray up`. Here the engine's journal already keeps a finished step
/// from running twice, so the step's check never claims the work is done.
#[derive(Debug, Default)]
pub(crate) struct SetupCommands;

/// The step's commands with the list each came from.
fn listed(settings: &Settings) -> Vec<Listed<'_>> {
    let commands = &settings.commands;
    let initialization = commands.initialization.iter().map(|text| Listed {
        kind: "initialization",
        text,
    });
    let setup = commands.setup.iter().map(|text| Listed {
        kind: "setup",
        text,
    });
    initialization.chain(setup).collect()
}

#[async_trait]
impl Step for SetupCommands {
    fn name(&self) -> &str {
        SETUP_COMMANDS
    }

    fn depends_on(&self) -> &[&str] {
        &[INSTALL_RAY]
    }

    fn plan(&self, settings: &Settings) -> Vec<String> {
        let commands = listed(settings);
        if commands.is_empty() {
            return vec!["nothing: no initialization or setup commands are configured".to_owned()];
        }
        let count = commands.len();
        commands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{} command {} of {count}: bash -c {:?}",
                    c.kind,
                    i + 1,
                    c.text
                )
            })
            .collect()
    }

    /// Skipped when the cluster file has no such commands: "skipped: none configured" says in
    /// status what happened, where "already done" would claim work that never existed.
    async fn wanted(&self, ctx: &StepContext) -> Wanted {
        if listed(&ctx.settings).is_empty() {
            Wanted::Skip("no initialization or setup commands are configured".to_owned())
        } else {
            Wanted::Yes
        }
    }

    async fn check(&self, _ctx: &StepContext) -> Result<Check, StepError> {
        Ok(Check::NotDone)
    }

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        let commands = listed(&ctx.settings);
        let env = cluster_commands::environment(ctx);
        // A failed user command rarely passes on a second try, and re-running the ones before
        // it may not be harmless; the step's policy can still ask for more attempts.
        let ran = cluster_commands::run_in_order(ctx, &commands, &env, false).await?;
        Ok(Outcome::Done(Some(json!({ "commands": ran }))))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use rayefa_wire::Role;

    use super::*;
    use crate::host::scripted::ScriptedRunner;
    use crate::host::{HostRoot, SystemRunner};
    use crate::steps::testing::{context, settings};

    fn commands_toml(initialization: &[&str], setup: &[&str]) -> String {
        let list = |items: &[&str]| {
            items
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "[commands]\ninitialization = [{}]\nsetup = [{}]\n",
            list(initialization),
            list(setup)
        )
    }

    /// A scratch root whose virtualenv has a `pip` that says where it is.
    fn root_with_venv_pip() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("root");
        let bin = root.path().join("opt/rayefa/venv/bin");
        std::fs::create_dir_all(&bin).expect("bin");
        write_script(&bin.join("pip"), "#!/bin/sh\necho \"venv pip $*\"\n");
        root
    }

    fn write_script(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("script");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[tokio::test]
    async fn nothing_configured_is_skipped_with_a_reason() {
        let t = context(
            SETUP_COMMANDS,
            HostRoot::new("/scratch"),
            Arc::new(ScriptedRunner::new()),
            settings(Role::Head, ""),
        );
        assert_eq!(
            SetupCommands.wanted(&t.ctx).await,
            Wanted::Skip("no initialization or setup commands are configured".to_owned())
        );
    }

    #[tokio::test]
    async fn commands_run_in_order_with_the_virtualenv_and_head_ip() {
        let root = root_with_venv_pip();
        let out = root.path().join("out");
        let append = |what: &str| format!("echo {what} >> {}", out.display());
        let init = append("init-$RAY_HEAD_IP");
        let first = format!("pip install x >> {}", out.display());
        let second = append("\"$EXTRA\"");
        let t = context(
            SETUP_COMMANDS,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Worker,
                &format!(
                    "[environment]\nEXTRA = \"configured\"\n{}",
                    commands_toml(&[&init], &[&first, &second])
                ),
            ),
        );
        assert_eq!(SetupCommands.wanted(&t.ctx).await, Wanted::Yes);
        assert_eq!(
            SetupCommands.check(&t.ctx).await.expect("check"),
            Check::NotDone
        );
        let Outcome::Done(Some(detail)) = SetupCommands.run(&t.ctx).await.expect("runs") else {
            panic!("no detail");
        };
        assert_eq!(
            std::fs::read_to_string(&out).expect("out"),
            "init-127.0.0.2\nvenv pip install x\nconfigured\n"
        );
        let commands = detail["commands"].as_array().expect("list");
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[0]["kind"], "initialization");
        assert_eq!(commands[2]["index"], 3);
        assert_eq!(commands[2]["command"], second.as_str());
        let log = t.log_text();
        assert!(
            log.contains(&format!("# running setup command 2 of 3: {first}\n")),
            "{log}"
        );
    }

    #[tokio::test]
    async fn a_failing_command_stops_the_list_and_is_named() {
        let root = tempfile::tempdir().expect("root");
        let marker = |n: u32| root.path().join(format!("ran-{n}"));
        let touch = |n: u32| format!("touch {}", marker(n).display());
        let failing = "echo 'disk is full' >&2; exit 3";
        let t = context(
            SETUP_COMMANDS,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Head,
                &commands_toml(&[&touch(1)], &[&touch(2), failing, &touch(4)]),
            ),
        );
        let err = SetupCommands.run(&t.ctx).await.expect_err("fails");
        assert!(marker(1).exists() && marker(2).exists());
        assert!(!marker(4).exists(), "the list went on after a failure");
        assert_eq!(err.exit_code(), Some(3));
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            format!("`{failing}` (setup command 3 of 4) exited 3: disk is full")
        );
        let detail = t.board.snapshot().steps[0]
            .detail
            .clone()
            .expect("detail so far");
        assert_eq!(detail["commands"].as_array().map(Vec::len), Some(2));
    }

    #[tokio::test]
    async fn each_command_is_its_own_bash_c() {
        let runner = Arc::new(ScriptedRunner::new().answer("bash -c", 0, ""));
        let t = context(
            SETUP_COMMANDS,
            HostRoot::new("/scratch"),
            runner.clone(),
            settings(Role::Head, &commands_toml(&["a && b"], &["cd /tmp; c"])),
        );
        SetupCommands.run(&t.ctx).await.expect("runs");
        assert_eq!(runner.calls(), ["bash -c 'a && b'", "bash -c 'cd /tmp; c'"]);
        let spec = &runner.specs()[1];
        assert_eq!(
            spec.env["PATH"].split(':').next(),
            Some("/scratch/opt/rayefa/venv/bin")
        );
    }

    #[test]
    fn the_plan_lists_every_command() {
        let plan = SetupCommands.plan(&settings(Role::Head, &commands_toml(&["i"], &["s1", "s2"])));
        assert_eq!(
            plan,
            [
                "initialization command 1 of 3: bash -c \"i\"",
                "setup command 2 of 3: bash -c \"s1\"",
                "setup command 3 of 3: bash -c \"s2\""
            ]
        );
    }
}
