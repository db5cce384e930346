//! Every class of configuration mistake: its message names the file, the key and the line,
//! the exit code is 2, and nothing is started.

mod support;

use support::Node;

/// Runs `plan` (which loads and validates like `run`) and returns exit code and stderr.
fn check(node: &Node) -> (i32, String) {
    let output = node.output(&["plan"]);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The 1-based line of the configuration file that contains `text`.
fn line_of(node: &Node, text: &str) -> usize {
    let config = std::fs::read_to_string(node.config()).expect("config");
    config
        .lines()
        .position(|line| line.contains(text))
        .map(|index| index + 1)
        .expect("text is in the configuration")
}

/// Writes `extra` into a node's configuration and expects exit 2 with a message naming the
/// file and the line holding `culprit`, plus every needle.
fn expect_error(extra: &str, culprit: &str, needles: &[&str]) {
    let node = Node::new(extra);
    let (code, stderr) = check(&node);
    assert_eq!(code, 2, "exit code for {extra:?}: {stderr}");
    let location = format!("{}:{}:", node.config().display(), line_of(&node, culprit));
    assert!(stderr.contains(&location), "{location:?} not in {stderr:?}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
}

#[test]
fn an_unknown_key_names_its_line_and_the_keys_allowed() {
    expect_error(
        "[packages]\nvirtualenvs = \"/opt/v\"\n",
        "virtualenvs",
        &[
            "packages.virtualenvs",
            "unknown field `virtualenvs`",
            "virtualenv",
        ],
    );
}

#[test]
fn a_wrong_type_names_key_and_line() {
    expect_error(
        "[steps.start-ray]\nattempts = \"three\"\n",
        "three",
        &["steps.start-ray.attempts", "invalid type"],
    );
}

#[test]
fn an_invalid_value_names_key_and_line() {
    expect_error(
        "[efa]\nmode = \"sometimes\"\n",
        "sometimes",
        &["efa.mode", "not one of required, auto, off"],
    );
    expect_error(
        "[packages]\nvirtualenv = \"venv\"\n",
        "\"venv\"",
        &["packages.virtualenv", "not an absolute path"],
    );
    expect_error(
        "[steps.start-ray]\nattempts = 0\n",
        "attempts = 0",
        &["steps.start-ray.attempts", "at least 1"],
    );
}

#[test]
fn a_table_given_twice_names_the_table() {
    let node = Node::new("[steps.grow-root]\ntimeout_secs = 5\n");
    let (code, stderr) = check(&node);
    assert_eq!(code, 2, "{stderr}");
    let second = line_of(&node, "timeout_secs = 5") - 1;
    let location = format!(
        "{}:{second}: key `steps.grow-root`",
        node.config().display()
    );
    assert!(stderr.contains(&location), "{location:?} not in {stderr:?}");
}

#[test]
fn a_toml_syntax_error_names_its_line() {
    expect_error(
        "[commands]\nsetup = [\"echo\"\nstart = []\n",
        "start = []",
        &["expected"],
    );
}

#[test]
fn a_missing_required_value_says_which_and_why() {
    let node = Node::new("");
    let text = std::fs::read_to_string(node.config()).expect("config");
    node.write_config(&text.replace("role = \"head\"", "role = \"worker\""));
    let (code, stderr) = check(&node);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("missing required value `node.head_address`"),
        "{stderr}"
    );
    assert!(stderr.contains("a worker must know its head"), "{stderr}");
}

#[test]
fn a_bad_listen_address_is_refused_before_anything_starts() {
    let node = Node::new("");
    let text = std::fs::read_to_string(node.config()).expect("config");
    node.write_config(&text.replace(&node.address.to_string(), "localhost"));
    let output = node.output(&["run"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let location = format!(
        "{}:{}:",
        node.config().display(),
        line_of(&node, "localhost")
    );
    assert!(
        stderr.contains("agent.listen") && stderr.contains(&location),
        "{stderr}"
    );
    assert!(
        !node.path("root/var/lib/rayefa").exists(),
        "the state directory was created"
    );
}

#[test]
fn a_mistake_in_a_drop_in_names_the_drop_in() {
    let node = Node::new("");
    let dropins = node.path("agent.d");
    std::fs::create_dir_all(&dropins).expect("drop-in dir");
    std::fs::write(dropins.join("10-good.toml"), "[environment]\nA = \"1\"\n").expect("write");
    std::fs::write(
        dropins.join("20-bad.toml"),
        "[environment]\n\"1BAD\" = \"x\"\n",
    )
    .expect("write");
    let (code, stderr) = check(&node);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("20-bad.toml:2"), "{stderr}");
    assert!(
        stderr.contains("not an environment variable name"),
        "{stderr}"
    );
}

#[test]
fn drop_ins_override_the_main_file_in_name_order() {
    let node = Node::new("[commands]\nsetup = [\"echo main\"]\n");
    let dropins = node.path("agent.d");
    std::fs::create_dir_all(&dropins).expect("drop-in dir");
    std::fs::write(
        dropins.join("10-a.toml"),
        "[commands]\nsetup = [\"echo a\"]\n",
    )
    .expect("write");
    std::fs::write(
        dropins.join("20-b.toml"),
        "[steps.setup-commands]\ntimeout_secs = 77\n",
    )
    .expect("write");
    let output = node.output(&["plan", "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON plan");
    let setup = plan
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == "setup-commands"))
        .expect("setup-commands planned");
    assert_eq!(setup["timeout_secs"], 77);
    let would = setup["would"].to_string();
    assert!(
        would.contains("echo a") && !would.contains("echo main"),
        "{would}"
    );
}

#[test]
fn a_missing_configuration_file_is_named() {
    let node = Node::new("");
    std::fs::remove_file(node.config()).expect("remove");
    let (code, stderr) = check(&node);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("agent.toml: cannot read"), "{stderr}");
}
