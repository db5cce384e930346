//! The crash suite: the real agent binary is SIGKILLed at random moments of a bootstrap whose
//! steps run real child processes, and restarted each time, the way systemd restarts the unit
//! (`Restart=on-failure`, `KillMode=process`: the dead agent's commands are left running).
//!
//! What must hold, for every kill:
//! - the journal is readable (or not written yet) and never set aside as corrupt;
//! - a step the journal called done is never run again (its log gains no attempt and its
//!   commands no run);
//! - no command runs beside another (a command of an interrupted step that the dead agent left
//!   running must not overlap the step's re-run: for an installer or a package manager that
//!   would be two at once);
//! - every bootstrap ends Ready once the kills stop.
//!
//! The kills are seeded; the seed is printed, and `RAYEFA_CRASH_SEED=N` replays a run.
//!
//! Run: `cargo test -p rayefa-agent --test crash -- --ignored --nocapture`

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use rayefa_test_support::files::write_executable;
use rayefa_test_support::procs::wait_for_process;
use support::{Node, kill, procs, wait_exit};

/// Kills that land during a bootstrap (kills after one finished are counted apart).
const KILLS: usize = 50;
/// The whole suite's time limit, calibration included.
const BUDGET: Duration = Duration::from_secs(150);

/// The commands of each step that runs any: (step, [(command name, seconds)]).
const COMMANDS: &[(&str, &[(&str, &str)])] = &[
    (
        "setup-commands",
        &[
            ("init-1", "0.05"),
            ("setup-1", "0.15"),
            ("setup-2", "0.1"),
            ("setup-3", "0.15"),
        ],
    ),
    ("start-ray", &[("start-1", "0.1"), ("start-2", "0.15")]),
];

/// Runs one named command: records its start and end, sleeps, and notes an overlap when any
/// command is running already. The steps here run one after the other (start-ray needs
/// setup-commands), so the agent itself never runs two commands at once: a held lock means a
/// dead agent's command is still running.
const RUN_COMMAND: &str = r#"#!/bin/sh
name=$1
flock -n -E 99 "$MARKS/lock" sh -c '
    echo $$ >> "$MARKS/$1.begin"
    sleep "$2"
    echo $$ >> "$MARKS/$1.end"
' _ "$name" "$2"
rc=$?
if [ "$rc" -eq 99 ]; then
    echo "$name" >> "$MARKS/overlap"
    exit 0
fi
exit "$rc"
"#;

/// One scratch node for a bootstrap and its agent.
struct CrashNode {
    node: Node,
    agent: Option<Child>,
}

impl CrashNode {
    fn new() -> Self {
        let dir_probe = Node::new("");
        let script = dir_probe.path("run-command");
        write_executable(&script, RUN_COMMAND);
        let list = |step: &str, skip_first: bool| -> String {
            let (_, commands) = COMMANDS
                .iter()
                .find(|(s, _)| *s == step)
                .expect("known step");
            commands
                .iter()
                .skip(usize::from(skip_first))
                .map(|(name, secs)| format!("\"\\\"$RUN\\\" {name} {secs}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (init_name, init_secs) = COMMANDS[0].1[0];
        let extra = format!(
            "RUN = \"{script}\"\n\n[commands]\n\
             initialization = [\"\\\"$RUN\\\" {init_name} {init_secs}\"]\n\
             setup = [{setup}]\nstart = [{start}]\n",
            script = script.display(),
            setup = list("setup-commands", true),
            start = list("start-ray", false),
        );
        // Same folder, same port: only the configuration gains the commands.
        let text = std::fs::read_to_string(dir_probe.config()).expect("config");
        dir_probe.write_config(&format!("{text}{extra}"));
        Self {
            node: dir_probe,
            agent: None,
        }
    }

    fn spawn(&mut self) {
        assert!(self.agent.is_none());
        self.agent = Some(self.node.spawn_tagged());
    }

    /// SIGKILL; the commands the agent was running are left alone, as systemd leaves them.
    fn crash(&mut self) {
        let mut agent = self.agent.take().expect("an agent");
        kill(&mut agent, libc::SIGKILL);
        wait_exit(&mut agent, Duration::from_secs(10)).expect("killed");
    }

    fn stop(&mut self) {
        let mut agent = self.agent.take().expect("an agent");
        kill(&mut agent, libc::SIGTERM);
        let exit = wait_exit(&mut agent, Duration::from_secs(15)).expect("exits on SIGTERM");
        assert_eq!(exit.code(), Some(0), "{}", self.node.log());
    }

    fn state_dir(&self) -> PathBuf {
        self.node.path("root/var/lib/rayefa")
    }

    /// The journal as the next agent will read it: `None` before the first write. Anything
    /// unreadable fails the test.
    fn journal(&self) -> Option<Value> {
        let path = self.state_dir().join("journal.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => panic!("{}: {err}", path.display()),
        };
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
            panic!(
                "the journal is unreadable after a kill: {err}\n{}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert!(doc["steps"].is_array(), "{doc:#}");
        Some(doc)
    }

    fn attempts_logged(&self, step: &str) -> usize {
        std::fs::read_to_string(self.state_dir().join(format!("logs/{step}.log")))
            .unwrap_or_default()
            .matches(&format!("=== {step}: attempt"))
            .count()
    }

    fn runs(&self, command: &str) -> usize {
        self.node.marks(&format!("{command}.begin"))
    }

    /// What a step has done so far: logged attempts and runs of each of its commands.
    fn footprint(&self, step: &str) -> Footprint {
        let (_, commands) = COMMANDS
            .iter()
            .find(|(s, _)| *s == step)
            .expect("known step");
        Footprint {
            attempts: self.attempts_logged(step),
            runs: commands
                .iter()
                .map(|(name, _)| ((*name).to_owned(), self.runs(name)))
                .collect(),
        }
    }

    fn corrupt_journals(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.contains(".corrupt-"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for CrashNode {
    fn drop(&mut self) {
        procs::kill_agent_and_tagged(self.agent.take(), self.node.dir.path());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Footprint {
    attempts: usize,
    runs: BTreeMap<String, usize>,
}

/// The names of the journal's steps in `state`.
fn steps_in(journal: &Value, state: &str) -> Vec<String> {
    journal["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter(|s| s["state"] == state)
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn all_final(journal: &Value) -> bool {
    journal["steps"].as_array().is_some_and(|steps| {
        steps
            .iter()
            .all(|s| s["state"] == "succeeded" || s["state"] == "skipped")
    })
}

/// Checks that no step recorded as done has done anything since.
fn assert_not_rerun(node: &CrashNode, done: &BTreeMap<String, Footprint>, when: &str) {
    for (step, then) in done {
        let now = node.footprint(step);
        assert_eq!(
            &now,
            then,
            "{step} was done (journal: succeeded) and ran again {when}\nlog:\n{}",
            node.node.log()
        );
    }
}

/// Waits for Ready and checks the whole bootstrap; the time it took from `since`.
fn assert_ends_ready(node: &CrashNode, done: &BTreeMap<String, Footprint>) {
    let (code, body) = node.node.wait_ready(Duration::from_secs(30));
    assert_eq!(code, 200, "never ready: {body}\n{}", node.node.log());
    let doc = node.node.status();
    assert_eq!(doc["state"], "ready", "{doc:#}");
    assert_eq!(
        doc["warnings"],
        serde_json::json!([]),
        "warnings after a crash: {doc:#}"
    );
    assert_not_rerun(node, done, "after the last restart");
    for (step, commands) in COMMANDS {
        let status = doc["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["name"] == *step))
            .expect("step in status");
        assert_eq!(status["state"], "succeeded", "{status:#}");
        for (name, _) in *commands {
            assert!(
                node.node.marks(&format!("{name}.end")) >= 1,
                "{name} never finished"
            );
        }
    }
    let corrupt = node.corrupt_journals();
    assert!(corrupt.is_empty(), "journals set aside: {corrupt:?}");
    let overlaps = std::fs::read_to_string(node.node.path("marks/overlap")).unwrap_or_default();
    assert!(
        overlaps.is_empty(),
        "commands started while a dead agent's command still ran: {}",
        overlaps.split_whitespace().collect::<Vec<_>>().join(", ")
    );
}

fn seed() -> u64 {
    std::env::var("RAYEFA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

#[test]
#[ignore = "50 kills and restarts of the real agent, about a minute; run by tests/run"]
fn fifty_sigkills_at_random_moments_never_rerun_a_done_step_nor_lose_the_journal() {
    let seed = seed();
    eprintln!("crash suite: seed {seed} (RAYEFA_CRASH_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();

    // A bootstrap without kills sets the window the kills fall in: spawn to Ready.
    let mut calibration = CrashNode::new();
    let clean = Instant::now();
    calibration.spawn();
    assert_ends_ready(&calibration, &BTreeMap::new());
    let window = clean.elapsed();
    calibration.stop();
    drop(calibration);
    eprintln!(
        "crash suite: a bootstrap without kills takes {:.0} ms",
        window.as_secs_f64() * 1e3
    );

    let mut kills = 0;
    let mut kills_after_ready = 0;
    let mut bootstraps = 0;
    let mut kill_states: BTreeMap<String, usize> = BTreeMap::new();
    while kills < KILLS {
        assert!(
            started.elapsed() < BUDGET,
            "over budget after {kills} kills in {bootstraps} bootstraps"
        );
        bootstraps += 1;
        let mut node = CrashNode::new();
        let mut done: BTreeMap<String, Footprint> = BTreeMap::new();
        loop {
            node.spawn();
            std::thread::sleep(window.mul_f64(rng.f64()));
            node.crash();
            assert_not_rerun(&node, &done, "after a restart");
            let Some(journal) = node.journal() else {
                *kill_states.entry("before the journal".into()).or_default() += 1;
                kills += 1;
                if kills == KILLS {
                    break;
                }
                continue;
            };
            if all_final(&journal) {
                kills_after_ready += 1;
                for step in steps_in(&journal, "succeeded") {
                    done.entry(step.clone())
                        .or_insert_with(|| node.footprint(&step));
                }
                break;
            }
            kills += 1;
            let running = steps_in(&journal, "running");
            let label = if running.is_empty() {
                "between steps".to_owned()
            } else {
                format!("during {}", running.join("+"))
            };
            *kill_states.entry(label).or_default() += 1;
            for step in steps_in(&journal, "succeeded") {
                done.entry(step.clone())
                    .or_insert_with(|| node.footprint(&step));
            }
            if kills == KILLS {
                break;
            }
        }
        node.spawn();
        assert_ends_ready(&node, &done);
        node.stop();
    }
    eprintln!(
        "crash suite: {kills} kills during {bootstraps} bootstraps (+{kills_after_ready} after \
         one had finished), every bootstrap ready, in {:.1} s; where the kills landed: {kill_states:?}",
        started.elapsed().as_secs_f64()
    );
}

/// install-ray with no packages to install: the virtualenv alone, made by the real
/// `python3 -m venv`; the setup command needs its pip.
const VENV_BOOTSTRAP: &str = r#"
[node]
cluster_name = "it"
role = "head"
node_type = "head_node"

[agent]
listen = "{listen}"
imds = false
stop_grace_secs = 2

[steps.grow-root]
enabled = false
[steps.install-efa]
enabled = false
[steps.probe-efa]
enabled = false

[packages]
os = []
python = []
python_interpreter = "/usr/bin/python3"

[environment]
MARKS = "{marks}"

[commands]
setup = ["python -m pip --version >> $MARKS/pip"]
start = ["true"]
"#;

/// The process making the virtualenv `dir` once it exists: `uv venv --seed ... DIR`, or
/// `python -m venv DIR` where uv cannot be had.
fn wait_for_venv_process(dir: &std::path::Path, within: Duration) -> i32 {
    let dir = dir.display().to_string();
    wait_for_process(
        |argv| {
            let uv_venv = argv.first().is_some_and(|a| a.ends_with("/uv"))
                && argv.get(1).is_some_and(|a| a == "venv");
            (uv_venv || argv.windows(2).any(|w| w == ["-m", "venv"])) && argv.contains(&dir)
        },
        within,
        || "neither uv venv nor python -m venv started".to_owned(),
    )
}

#[test]
#[ignore = "makes real virtualenvs (python3-venv), 10-40 s; run by tests/run"]
fn a_kill_while_the_virtualenv_is_made_leaves_no_half_made_virtualenv() {
    let node = Node::new("");
    node.write_config(
        &VENV_BOOTSTRAP
            .replace("{listen}", &node.address.to_string())
            .replace("{marks}", &node.path("marks").display().to_string()),
    );
    let venv = node.path("root/opt/rayefa/venv");
    let mut crashing = CrashNode { node, agent: None };
    crashing.spawn();
    let maker = wait_for_venv_process(&venv, Duration::from_secs(30));
    // Stopped once the interpreter is in place and before pip is: the half-made state a kill
    // in the middle of making it leaves.
    let started = Instant::now();
    while !venv.join("bin/python").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no bin/python");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) on the virtualenv maker this test's agent started, found by its
    // command line naming this test's scratch folder.
    assert_eq!(unsafe { libc::kill(maker, libc::SIGSTOP) }, 0);
    assert!(
        !venv.join("bin/pip").exists(),
        "pip was in place before the kill; the machine was too quick for this test"
    );
    crashing.crash();

    crashing.spawn();
    let doc = crashing.node.wait_status(Duration::from_secs(120), |doc| {
        doc["state"] == "ready" || doc["state"] == "failed"
    });
    assert_eq!(doc["state"], "ready", "{doc:#}\n{}", crashing.node.log());
    assert_eq!(crashing.node.marks("pip"), 1, "the virtualenv has no pip");
    crashing.stop();
}
