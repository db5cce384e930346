//! `setup-commands`: the cluster file's initialization and setup commands, verbatim, in order.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
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
///
/// Within the step, each command's completion is recorded as it happens
/// (`<state_dir>/setup-commands.progress.json`), so that a step interrupted by a crash, a
/// restart or a reboot resumes at the command that was running: that one command runs again
/// (commands run at least once, never concurrently), the ones before it do not. The record
/// holds the commands themselves and counts only for the same list.
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

/// How far the step got: the first `completed` of `commands` have completed.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Progress {
    commands: Vec<String>,
    completed: usize,
}

/// The file that records the step's progress.
fn progress_path(ctx: &StepContext) -> PathBuf {
    ctx.root
        .path(&ctx.settings.agent.state_dir)
        .join("setup-commands.progress.json")
}

/// How many of `commands` completed before, by the record at `path`: 0 without a record, with
/// an unreadable one, or with one for another list of commands.
fn completed_before(path: &Path, commands: &[String]) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Progress>(&bytes).ok())
        .filter(|progress| progress.commands == commands)
        .map_or(0, |progress| progress.completed.min(commands.len()))
}

/// Records that the first `completed` of `commands` have completed: written beside, synced,
/// then renamed over the record, so that a crash leaves the old record or the new one.
fn record(path: &Path, commands: &[String], completed: usize) -> Result<(), StepError> {
    use std::io::Write;
    let text = serde_json::to_vec(&Progress {
        commands: commands.to_vec(),
        completed,
    })
    .map_err(|e| StepError::io("recording the setup commands' progress", e))?;
    let partial = path.with_extension("json.new");
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    };
    write().map_err(|e| StepError::io(format!("writing {}", path.display()), e))
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
        let texts: Vec<String> = commands.iter().map(|c| c.text.to_owned()).collect();
        let path = progress_path(ctx);
        let start = completed_before(&path, &texts);
        if start > 0 {
            ctx.activity(format!(
                "resuming at command {} of {}: the ones before it completed before the agent \
                 stopped",
                start + 1,
                texts.len()
            ));
        }
        let mut completed = |n: usize| {
            // Without the record a restart only runs finished commands again (at least once
            // still holds); a full state directory must not fail the node's work, as it does
            // not for the journal.
            if let Err(err) = record(&path, &texts, n) {
                ctx.log.note(&format!(
                    "# progress not recorded ({err}); after a restart the commands before \
                     command {} would run again",
                    n + 1
                ));
            }
            Ok(())
        };
        let ran =
            cluster_commands::run_from(ctx, &commands, start, &env, false, &mut completed).await?;
        Ok(Outcome::Done(Some(
            json!({ "commands": ran, "resumed_after": start }),
        )))
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
        // The step records its progress under the root's state directory.
        let root = tempfile::tempdir().expect("root");
        let t = context(
            SETUP_COMMANDS,
            HostRoot::new(root.path()),
            runner.clone(),
            settings(Role::Head, &commands_toml(&["a && b"], &["cd /tmp; c"])),
        );
        SetupCommands.run(&t.ctx).await.expect("runs");
        assert_eq!(runner.calls(), ["bash -c 'a && b'", "bash -c 'cd /tmp; c'"]);
        let spec = &runner.specs()[1];
        let venv_bin = root.path().join("opt/rayefa/venv/bin");
        assert_eq!(
            spec.env["PATH"].split(':').next(),
            Some(venv_bin.to_str().expect("UTF-8"))
        );
    }

    #[tokio::test]
    async fn an_interrupted_list_resumes_at_the_command_that_was_running() {
        let root = tempfile::tempdir().expect("root");
        let log = root.path().join("log");
        let append = |n: u32| format!("echo {n} >> {}", log.display());
        // The third command fails the first time (as if the agent died while it ran) and
        // succeeds the second time.
        let flaky = format!(
            "if [ -e {0}.once ]; then echo 3 >> {0}; else touch {0}.once; exit 1; fi",
            log.display()
        );
        let toml = commands_toml(&[&append(1)], &[&append(2), &flaky, &append(4)]);
        let t = context(
            SETUP_COMMANDS,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(Role::Head, &toml),
        );
        SetupCommands
            .run(&t.ctx)
            .await
            .expect_err("the third fails");
        let again = context(
            SETUP_COMMANDS,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(Role::Head, &toml),
        );
        let Outcome::Done(Some(detail)) = SetupCommands.run(&again.ctx).await.expect("resumes")
        else {
            panic!("no detail");
        };
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "1\n2\n3\n4\n",
            "commands 1 and 2 ran once"
        );
        assert_eq!(detail["resumed_after"], 2);
        assert_eq!(detail["commands"][0]["index"], 3);

        // Another list of commands starts from its first.
        let other = commands_toml(&[&append(1)], &[&append(5)]);
        let changed = context(
            SETUP_COMMANDS,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(Role::Head, &other),
        );
        SetupCommands.run(&changed.ctx).await.expect("runs");
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "1\n2\n3\n4\n1\n5\n"
        );
    }

    #[test]
    fn a_record_for_another_list_or_a_broken_one_counts_for_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("p.json");
        let list = ["a".to_owned(), "b".to_owned()];
        assert_eq!(completed_before(&path, &list), 0);
        record(&path, &list, 1).expect("records");
        assert_eq!(completed_before(&path, &list), 1);
        assert_eq!(completed_before(&path, &["a".to_owned()]), 0);
        std::fs::write(&path, "{not json").expect("write");
        assert_eq!(completed_before(&path, &list), 0);
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
