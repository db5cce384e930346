//! The catalogue of Ray-style cluster files: files written here in the shapes Ray's own AWS
//! examples use (its defaults file, minimal, multi-node-type, launch templates, network
//! interfaces with EFA, CloudWatch, a GPU file). Every `tests/fixtures/ray-style/<name>.yaml`
//! has
//!
//! - `<name>.expected`: the exit code of `rayefa validate --offline` on the first line
//!   (`exit 0`), then its exact, whole stdout, with `{DIR}` standing for the fixture folder
//!   (stderr must be empty for a valid file, stdout empty for a refused one, whose message is
//!   then the stderr);
//! - `<name>.nodes.json`, for a valid file: the agent configuration of every node `up` would
//!   launch or Ray's autoscaler could (the head, a worker of every other type, and a worker of
//!   the head's type when its `min_workers` asks for some), by `"<type> (<role>)"`, with unset
//!   fields left out, so that a field added to the agent's configuration elsewhere changes
//!   nothing here.
//!
//! Files see a clean environment (PATH only). A mismatch prints the file and a line-by-line
//! diff; to see what rayefa says about a new file, run `rayefa validate --offline FILE` and
//! `rayefa user-data --output json FILE --node-type T` and check them before writing them down.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use rayefa_cluster::render::render_agent_config;
use rayefa_test_support::catalogue::{Catalogue, Expected, diff, run_in_clean_environment};
use rayefa_wire::Role;
use serde_json::Value;

const RAYEFA: &str = env!("CARGO_BIN_EXE_rayefa");

/// The head's address in the workers' configurations.
const HEAD_ADDRESS: &str = "10.0.0.1";

fn catalogue() -> Catalogue {
    Catalogue::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ray-style"),
        "yaml",
    )
}

/// `value` without its nulls, and without objects that held only nulls.
fn without_nulls(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(map) => {
            let map: serde_json::Map<String, Value> = map
                .into_iter()
                .filter_map(|(k, v)| without_nulls(v).map(|v| (k, v)))
                .collect();
            (!map.is_empty()).then_some(Value::Object(map))
        }
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(without_nulls).collect(),
        )),
        other => Some(other),
    }
}

/// The configurations of every node of `file`, as `<name>.nodes.json` holds them.
fn rendered_nodes(file: &Path) -> String {
    let cluster =
        rayefa_cluster::load_with_env(file, &BTreeMap::new(), &rayefa_cluster::no_provider_checks)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: the file validated, but loading it failed: {e}",
                    file.display()
                )
            });
    let head = cluster.head_type().to_owned();
    let mut nodes = serde_json::Map::new();
    let mut add = |node_type: &str, role: Role| {
        let address = (role == Role::Worker).then_some(HEAD_ADDRESS);
        let config = render_agent_config(&cluster, node_type, role, address);
        let value = serde_json::to_value(&config).expect("a configuration is JSON");
        nodes.insert(
            format!("{node_type} ({})", role.as_str()),
            without_nulls(value).unwrap_or(Value::Null),
        );
    };
    add(&head, Role::Head);
    for (node_type, count) in cluster.worker_counts() {
        if node_type != head || count > 0 {
            add(node_type, Role::Worker);
        }
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(nodes)).expect("JSON");
    text.push('\n');
    text
}

/// Checks one file against what it must produce; a description of each mismatch.
fn check(name: &str, file: &Path, want: &Expected) -> Vec<String> {
    let ran = run_in_clean_environment(
        Command::new(RAYEFA)
            .args(["validate", "--offline"])
            .arg(file),
        &[],
    );
    let (said, silent) = if want.code == 0 {
        (&ran.stdout, &ran.stderr)
    } else {
        (&ran.stderr, &ran.stdout)
    };
    let mut failures = Vec::new();
    if ran.code != want.code || *said != want.stderr || !silent.is_empty() {
        failures.push(format!(
            "{name} (rayefa validate --offline): exit {}, wanted {}; other stream {silent:?}\n{}",
            ran.code,
            want.code,
            diff(&want.stderr, said)
        ));
        return failures;
    }
    let nodes_file = file.with_extension("nodes.json");
    match (want.code, std::fs::read_to_string(&nodes_file)) {
        (0, Ok(wanted)) => {
            let got = rendered_nodes(file);
            if got != wanted {
                failures.push(format!(
                    "{name}: the rendered node configurations differ from {}\n{}",
                    nodes_file.display(),
                    diff(&wanted, &got)
                ));
            }
        }
        (0, Err(e)) => failures.push(format!(
            "{name}: {}: {e} (a valid file needs its node configurations)",
            nodes_file.display()
        )),
        (_, Ok(_)) => failures.push(format!(
            "{name}: refused, yet {} exists",
            nodes_file.display()
        )),
        (_, Err(_)) => {}
    }
    failures
}

#[test]
fn every_ray_style_file_gives_its_exact_findings_and_node_configurations() {
    catalogue().assert_every_case(8, check);
}

#[test]
fn every_expectation_has_its_fixture() {
    catalogue().assert_every_expectation_has_its_input();
}

/// The count the issue asks for: how many of the catalogue's files `validate` accepts. The
/// expectations decide it; this names the number so that a change to it is a deliberate one.
#[test]
fn the_catalogue_says_how_many_ray_style_files_validate() {
    let catalogue = catalogue();
    let names = catalogue.names();
    let valid: Vec<&String> = names
        .iter()
        .filter(|name| {
            let want = Expected::read(
                &catalogue.dir().join(format!("{name}.expected")),
                catalogue.dir(),
            );
            want.code == 0
        })
        .collect();
    assert_eq!(
        (valid.len(), names.len()),
        (7, 8),
        "valid: {valid:?} of {names:?}"
    );
}
