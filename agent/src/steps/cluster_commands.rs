//! How the cluster file's commands run: each verbatim, in order, with the virtualenv first on
//! `PATH` and the variables Ray's launcher sets for them. As root (the agent's user) a command
//! is `bash -c COMMAND`; with a configured user (the cluster file's `auth.ssh_user`) it is what
//! Ray's launcher runs over SSH: `bash --login -c -i COMMAND` as that user, in its home, so
//! that `~/.bashrc`, `source activate` and `$HOME` work as in Ray.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rayefa_wire::Role;
use serde::Serialize;

use super::venv;
use crate::engine::{StepContext, StepError, tail_of};
use crate::host::{CommandSpec, quote};

/// `PATH` when neither the configuration nor the agent's own environment has one.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment of every cluster-file command, on top of the configured one: `PATH` with
/// the virtualenv's `bin` first (so that `pip` and `ray` are the virtualenv's), `VIRTUAL_ENV`,
/// `RAY_HEAD_IP` on workers, and `HOME` where nothing else sets it.
pub(crate) fn environment(ctx: &StepContext) -> BTreeMap<String, String> {
    environment_with(ctx, std::env::var("PATH").ok(), std::env::var("HOME").ok())
}

/// [`environment`] given the agent's own `PATH` and `HOME`.
fn environment_with(
    ctx: &StepContext,
    agent_path: Option<String>,
    agent_home: Option<String>,
) -> BTreeMap<String, String> {
    let configured = &ctx.settings.environment;
    let base_path = configured
        .get("PATH")
        .cloned()
        .or(agent_path)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| FALLBACK_PATH.to_owned());
    let bin = venv::bin_dir(ctx);
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), format!("{}:{base_path}", bin.display()));
    env.insert(
        "VIRTUAL_ENV".to_owned(),
        venv::dir(ctx).display().to_string(),
    );
    // Under systemd the agent has no HOME, and Ray and pip write below `~`. A configured HOME
    // reaches the command through the configured environment already.
    if !configured.contains_key("HOME") && agent_home.as_deref().is_none_or(str::is_empty) {
        env.insert("HOME".to_owned(), home_of_agent_user(ctx));
    }
    if ctx.settings.node.role == Role::Worker
        && let Some(head) = &ctx.settings.node.head_address
    {
        env.insert("RAY_HEAD_IP".to_owned(), head.clone());
    }
    env
}

/// The home folder of the user the agent runs as, from the passwd file under the root; `/root`
/// for root when the file does not say.
fn home_of_agent_user(ctx: &StepContext) -> String {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::fs::read_to_string(ctx.root.path("/etc/passwd"))
        .ok()
        .and_then(|text| home_in_passwd(&text, uid))
        .unwrap_or_else(|| if uid == 0 { "/root" } else { "/" }.to_owned())
}

/// The home field of the passwd line of `uid`.
fn home_in_passwd(text: &str, uid: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let line_uid: u32 = fields.get(2)?.parse().ok()?;
        let home = fields.get(5)?;
        (line_uid == uid && Path::new(home).is_absolute()).then(|| (*home).to_owned())
    })
}

/// The home folder the cluster commands see as `~`: a configured `HOME`, else the configured
/// user's (from the passwd file under the root), else the agent's own.
pub(crate) fn command_home(ctx: &StepContext) -> Result<String, StepError> {
    if let Some(home) = ctx.settings.environment.get("HOME") {
        return Ok(home.clone());
    }
    if let Some(name) = &ctx.settings.commands.user {
        return Ok(RunAs::look_up(ctx, name)?.home);
    }
    Ok(environment(ctx)
        .remove("HOME")
        .or_else(|| std::env::var("HOME").ok())
        .unwrap_or_else(|| home_of_agent_user(ctx)))
}

/// The user cluster commands run as, from the passwd file under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunAs {
    name: String,
    home: String,
}

impl RunAs {
    fn look_up(ctx: &StepContext, name: &str) -> Result<Self, StepError> {
        let passwd = ctx.root.path("/etc/passwd");
        let text = std::fs::read_to_string(&passwd)
            .map_err(|e| StepError::Io(format!("reading {}: {e}", passwd.display())))?;
        let home = text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name))
                .then(|| fields.get(5).filter(|h| Path::new(h).is_absolute()))
                .flatten()
                .map(|h| (*h).to_owned())
        });
        match home {
            Some(home) => Ok(Self {
                name: name.to_owned(),
                home,
            }),
            None => Err(StepError::Fatal(format!(
                "commands.user (auth.ssh_user) `{name}` has no entry with a home folder in \
                 {}: the image's own user differs (ec2-user on Amazon Linux, ubuntu on Ubuntu); \
                 name that one, or remove auth.ssh_user to run the commands as root",
                passwd.display()
            ))),
        }
    }

    /// `text` as Ray's launcher runs it over SSH, with `env` and the user's own `HOME`,
    /// `USER` and `LOGNAME` (a configured `HOME` still wins). A login shell may reset `PATH`
    /// (Debian's /etc/profile does), so the virtualenv is put first again inside it.
    fn command(
        &self,
        ctx: &StepContext,
        text: &str,
        env: &BTreeMap<String, String>,
    ) -> CommandSpec {
        let mut env = env.clone();
        if !ctx.settings.environment.contains_key("HOME") {
            env.insert("HOME".to_owned(), self.home.clone());
        }
        env.insert("USER".to_owned(), self.name.clone());
        env.insert("LOGNAME".to_owned(), self.name.clone());
        let bin = venv::bin_dir(ctx);
        let script = format!(
            "export PATH={}:\"$PATH\"\n{text}",
            quote(&bin.display().to_string())
        );
        CommandSpec::new("runuser")
            .args(["-u", &self.name, "--", "bash", "--login", "-c", "-i"])
            .arg(script)
            .envs(&env)
            .cwd(&env["HOME"])
    }
}

/// One command of a list, with the kind of list it came from (`setup`, `start`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listed<'a> {
    pub(crate) kind: &'a str,
    pub(crate) text: &'a str,
}

/// A command that ran to success, for the step's detail.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Ran {
    pub(crate) kind: String,
    /// 1-based position among all the commands of the step.
    pub(crate) index: usize,
    pub(crate) command: String,
    pub(crate) seconds: f64,
}

/// Runs `commands` in order with `env`, stopping at the first that fails; the error names the
/// command, its place ("setup command 3 of 8") and how it ended. The step's detail lists the
/// commands that ran as they finish, so a failure still shows what came before it.
pub(crate) async fn run_in_order(
    ctx: &StepContext,
    commands: &[Listed<'_>],
    env: &BTreeMap<String, String>,
    retryable: bool,
) -> Result<Vec<Ran>, StepError> {
    run_from(ctx, commands, 0, env, retryable, &mut |_| Ok(())).await
}

/// [`run_in_order`] for the commands from position `start` (0-based) on, the ones before it
/// having completed earlier; `completed(n)` is told after each success that the first `n`
/// commands have completed, before the next one starts.
pub(crate) async fn run_from(
    ctx: &StepContext,
    commands: &[Listed<'_>],
    start: usize,
    env: &BTreeMap<String, String>,
    retryable: bool,
    completed: &mut (dyn FnMut(usize) -> Result<(), StepError> + Send),
) -> Result<Vec<Ran>, StepError> {
    let run_as = match &ctx.settings.commands.user {
        Some(name) => Some(RunAs::look_up(ctx, name)?),
        None => None,
    };
    let count = commands.len();
    let mut ran = Vec::with_capacity(count);
    for (position, command) in commands.iter().enumerate().skip(start) {
        let index = position + 1;
        let place = format!("{} command {index} of {count}", command.kind);
        ctx.activity(format!("running {place}: {}", first_line(command.text)));
        let started = Instant::now();
        let spec = match &run_as {
            Some(user) => user.command(ctx, command.text, env),
            None => CommandSpec::shell(command.text).envs(env),
        };
        let outcome = ctx.run(spec).await?;
        if !outcome.success() {
            return Err(StepError::Command {
                command: command.text.to_owned(),
                status: format!("({place}) {}", outcome.describe()),
                exit_code: outcome.code,
                output_tail: tail_of(&outcome.output, 1024),
                retryable,
            });
        }
        completed(index)?;
        ran.push(Ran {
            kind: command.kind.to_owned(),
            index,
            command: command.text.to_owned(),
            seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        });
        ctx.report.detail(serde_json::json!({ "commands": &ran }));
    }
    Ok(ran)
}

/// The first line of a command, shortened for an activity line.
fn first_line(text: &str) -> String {
    const MAX: usize = 80;
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() > MAX || text.trim().contains('\n') {
        let short: String = line.chars().take(MAX).collect();
        format!("{short}…")
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::host::{HostRoot, SystemRunner};
    use crate::steps::testing::{context, settings};

    #[test]
    fn the_virtualenv_comes_first_on_the_agents_path() {
        let t = context(
            "setup-commands",
            HostRoot::new("/scratch"),
            Arc::new(SystemRunner::default()),
            settings(Role::Worker, ""),
        );
        let env = environment_with(&t.ctx, Some("/usr/bin:/bin".into()), Some("/root".into()));
        assert_eq!(env["PATH"], "/scratch/opt/rayefa/venv/bin:/usr/bin:/bin");
        assert_eq!(env["VIRTUAL_ENV"], "/scratch/opt/rayefa/venv");
        assert_eq!(env["RAY_HEAD_IP"], "127.0.0.2");
        assert!(
            !env.contains_key("HOME"),
            "the agent's HOME is inherited as it is"
        );
    }

    #[test]
    fn a_configured_path_is_the_base_and_heads_get_no_head_ip() {
        let t = context(
            "start-ray",
            HostRoot::system(),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Head,
                "[environment]\nPATH = \"/opt/tools/bin:/usr/bin\"\n[packages]\nvirtualenv = \"/srv/ray\"\n",
            ),
        );
        let env = environment_with(&t.ctx, Some("/ignored".into()), Some("/root".into()));
        assert_eq!(env["PATH"], "/srv/ray/bin:/opt/tools/bin:/usr/bin");
        assert!(!env.contains_key("RAY_HEAD_IP"));
    }

    #[test]
    fn without_home_the_passwd_entry_of_the_agents_user_is_used() {
        let root = tempfile::tempdir().expect("root");
        std::fs::create_dir_all(root.path().join("etc")).expect("etc");
        // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
        let uid = unsafe { libc::geteuid() };
        std::fs::write(
            root.path().join("etc/passwd"),
            format!("daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nme:x:{uid}:0:me:/home/agent-user:/bin/bash\n"),
        )
        .expect("passwd");
        let t = context(
            "start-ray",
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(Role::Head, ""),
        );
        let env = environment_with(&t.ctx, None, None);
        assert_eq!(env["HOME"], "/home/agent-user");
        assert_eq!(
            env["PATH"],
            format!(
                "{}/opt/rayefa/venv/bin:{FALLBACK_PATH}",
                root.path().display()
            )
        );

        let configured = context(
            "start-ray",
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(Role::Head, "[environment]\nHOME = \"/data/home\"\n"),
        );
        assert!(!environment_with(&configured.ctx, None, None).contains_key("HOME"));
    }

    #[test]
    fn passwd_lookup_needs_the_right_uid_and_an_absolute_home() {
        let text = "root:x:0:0:root:/root:/bin/bash\nodd:x:7:7::relative:/bin/sh\n";
        assert_eq!(home_in_passwd(text, 0).as_deref(), Some("/root"));
        assert_eq!(home_in_passwd(text, 7), None);
        assert_eq!(home_in_passwd(text, 99), None);
    }

    #[test]
    fn activity_lines_show_the_start_of_long_commands() {
        assert_eq!(first_line("ray stop"), "ray stop");
        assert_eq!(first_line("set -e\nmake"), "set -e…");
        assert_eq!(first_line(&"x".repeat(100)).chars().count(), 81);
    }

    fn as_user(
        passwd: &str,
    ) -> (
        tempfile::TempDir,
        Arc<crate::host::scripted::ScriptedRunner>,
    ) {
        let root = tempfile::tempdir().expect("root");
        std::fs::create_dir_all(root.path().join("etc")).expect("etc");
        std::fs::write(root.path().join("etc/passwd"), passwd).expect("passwd");
        let runner =
            Arc::new(crate::host::scripted::ScriptedRunner::new().answer("runuser", 0, ""));
        (root, runner)
    }

    #[tokio::test]
    async fn with_a_user_commands_run_as_ray_runs_them_over_ssh() {
        let (root, runner) = as_user(
            "root:x:0:0:root:/root:/bin/bash\nec2-user:x:1000:1000::/home/ec2-user:/bin/bash\n",
        );
        let t = context(
            "setup-commands",
            HostRoot::new(root.path()),
            runner.clone(),
            settings(Role::Worker, "[commands]\nuser = \"ec2-user\"\n"),
        );
        let listed = [Listed {
            kind: "setup",
            text: "echo 'export PATH=$HOME/bin:$PATH' >> ~/.bashrc",
        }];
        let env = environment_with(&t.ctx, Some("/usr/bin".into()), None);
        run_in_order(&t.ctx, &listed, &env, true)
            .await
            .expect("the command ran");

        let specs = runner.specs();
        assert_eq!(specs.len(), 1);
        let spec = &specs[0];
        assert_eq!(spec.program, "runuser");
        let venv_bin = root.path().join("opt/rayefa/venv/bin");
        assert_eq!(
            spec.args,
            [
                "-u",
                "ec2-user",
                "--",
                "bash",
                "--login",
                "-c",
                "-i",
                &format!(
                    "export PATH={}:\"$PATH\"\necho 'export PATH=$HOME/bin:$PATH' >> ~/.bashrc",
                    venv_bin.display()
                ),
            ]
        );
        assert_eq!(spec.env["HOME"], "/home/ec2-user");
        assert_eq!(spec.env["USER"], "ec2-user");
        assert_eq!(spec.env["LOGNAME"], "ec2-user");
        assert_eq!(spec.env["RAY_HEAD_IP"], "127.0.0.2");
        assert_eq!(spec.cwd.as_deref(), Some(Path::new("/home/ec2-user")));
    }

    #[tokio::test]
    async fn a_user_the_image_does_not_have_is_a_fatal_error_naming_the_fix() {
        let (root, runner) = as_user("root:x:0:0:root:/root:/bin/bash\n");
        let t = context(
            "setup-commands",
            HostRoot::new(root.path()),
            runner.clone(),
            settings(Role::Head, "[commands]\nuser = \"ubuntu\"\n"),
        );
        let listed = [Listed {
            kind: "setup",
            text: "true",
        }];
        let err = run_in_order(&t.ctx, &listed, &BTreeMap::new(), true)
            .await
            .expect_err("no such user");
        assert!(matches!(err, StepError::Fatal(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("`ubuntu` has no entry"), "{message}");
        assert!(message.contains("ec2-user on Amazon Linux"), "{message}");
        assert!(runner.specs().is_empty(), "nothing ran");
    }

    /// A real user, `runuser` and bash: what `~/.bashrc` gets in one command, the next sees,
    /// as with Ray's own first default setup command.
    #[tokio::test]
    #[ignore = "needs root: creates a user"]
    async fn a_real_user_runs_the_commands_with_its_own_login_shell() {
        const USER: &str = "rayefa-cmd-test";
        let run = |args: &[&str]| {
            std::process::Command::new(args[0])
                .args(&args[1..])
                .status()
                .expect("runs")
        };
        let _ = run(&["userdel", "-r", USER]);
        assert!(run(&["useradd", "-m", "-s", "/bin/bash", USER]).success());
        let out = tempfile::tempdir().expect("out");
        let report = out.path().join("seen");
        std::fs::set_permissions(
            out.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        let t = context(
            "setup-commands",
            HostRoot::system(),
            Arc::new(SystemRunner::default()),
            settings(Role::Head, &format!("[commands]\nuser = \"{USER}\"\n")),
        );
        let report_command = format!(
            "echo \"$(id -un) $HOME $PWD $RAYEFA_MARK ${{PATH%%:*}}\" > {}",
            report.display()
        );
        let listed = [
            Listed {
                kind: "setup",
                text: "echo 'export RAYEFA_MARK=from-bashrc' >> ~/.bashrc",
            },
            Listed {
                kind: "setup",
                text: &report_command,
            },
        ];
        let env = environment(&t.ctx);
        let ran = run_in_order(&t.ctx, &listed, &env, true).await;
        let seen = std::fs::read_to_string(&report);
        let _ = run(&["userdel", "-r", USER]);
        ran.expect("both commands ran");
        let home = format!("/home/{USER}");
        assert_eq!(
            seen.expect("the report").trim(),
            format!("{USER} {home} {home} from-bashrc /opt/rayefa/venv/bin")
        );
    }
}
