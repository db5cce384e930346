//! The example configuration in `examples/` stays valid: the real binary accepts it and plans
//! every step from it.

mod support;

use std::path::Path;
use std::process::Command;

use support::AGENT;

/// `rayefa-agent --config examples/agent.toml --root <scratch> plan <args>`.
fn plan(args: &[&str]) -> std::process::Output {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent.toml");
    let root = tempfile::tempdir().expect("root");
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&example)
        .arg("--root")
        .arg(root.path())
        .arg("plan")
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("agent runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

#[test]
fn the_example_agent_configuration_plans_every_step() {
    let table = String::from_utf8_lossy(&plan(&[]).stdout).into_owned();
    assert!(
        table.starts_with("head node of type head_node in cluster ray-efa"),
        "{table}"
    );

    let json = plan(&["--json"]).stdout;
    let plan: serde_json::Value = serde_json::from_slice(&json).expect("the plan is JSON");
    let steps = plan.as_array().expect("a list of steps");
    let mut names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "grow-root",
            "install-efa",
            "install-ray",
            "probe-efa",
            "setup-commands",
            "start-ray"
        ]
    );
    assert!(
        steps.iter().all(|s| s["enabled"] == true),
        "the example turns nothing off: {plan:#}"
    );
}
