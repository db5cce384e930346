//! `rayefa-agent probe-efa` as a whole process against the machine's real libfabric (Debian's
//! libfabric1 1.17 in CI), compared with what `fi_info` (libfabric-bin) prints.

use std::process::{Command, Output};

use rayefa_wire::{FabricProbe, ProbeOutcome};

const AGENT: &str = env!("CARGO_BIN_EXE_rayefa-agent");

fn agent(args: &[&str]) -> Output {
    Command::new(AGENT)
        .arg("probe-efa")
        .args(args)
        .output()
        .expect("the agent runs")
}

fn json(args: &[&str]) -> (i32, FabricProbe) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = agent(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let probe = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("not a probe document ({e}): {stdout}");
    });
    (output.status.code().expect("exit code"), probe)
}

/// One entry as `fi_info` prints it without `-v`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Listed {
    provider: String,
    fabric: String,
    domain: String,
    version: String,
    kind: String,
    protocol: String,
}

/// Runs `fi_info ARGS` and parses its blocks of `key: value` lines.
fn fi_info(args: &[&str]) -> Vec<Listed> {
    let output = Command::new("fi_info")
        .args(args)
        .output()
        .expect("fi_info (libfabric-bin) is installed");
    assert!(output.status.success(), "fi_info {args:?}: {output:?}");
    let mut listed: Vec<Listed> = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match key.trim() {
            "provider" => listed.push(Listed {
                provider: value,
                ..Listed::default()
            }),
            field => {
                let entry = listed.last_mut().expect("a provider line comes first");
                match field {
                    "fabric" => entry.fabric = value,
                    "domain" => entry.domain = value,
                    "version" => entry.version = value,
                    "type" => entry.kind = value,
                    "protocol" => entry.protocol = value,
                    _ => {}
                }
            }
        }
    }
    listed
}

fn as_listed(probe: &FabricProbe) -> Vec<Listed> {
    probe
        .entries
        .iter()
        .map(|e| Listed {
            provider: e.provider.clone(),
            fabric: e.fabric.clone(),
            domain: e.domain.clone(),
            version: e.provider_version.clone(),
            kind: e.endpoint_type.fi_name().to_owned(),
            protocol: e.protocol.clone(),
        })
        .collect()
}

#[test]
fn tcp_entries_match_fi_info() {
    let expected = fi_info(&["-p", "tcp"]);
    assert!(!expected.is_empty(), "fi_info lists tcp entries here");
    let (code, probe) = json(&["--provider", "tcp"]);
    assert_eq!(code, 0, "{probe:?}");
    assert_eq!(probe.outcome, ProbeOutcome::Found);
    assert_eq!(as_listed(&probe), expected);
    let library = probe.library.expect("the library is named");
    assert!(library.path.ends_with("libfabric.so.1"), "{library:?}");
}

#[test]
fn the_endpoint_type_filter_matches_fi_info() {
    let expected = fi_info(&["-p", "tcp", "-t", "FI_EP_MSG"]);
    let (code, probe) = json(&["--provider", "tcp", "--ep-type", "msg"]);
    assert_eq!(code, 0);
    assert_eq!(as_listed(&probe), expected);
}

#[test]
fn the_table_shows_every_entry_fi_info_shows() {
    let expected = fi_info(&["-p", "tcp"]);
    let output = agent(&["--provider", "tcp"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("libfabric 1."), "{text}");
    for header in [
        "PROVIDER", "FABRIC", "DOMAIN", "VERSION", "TYPE", "PROTOCOL",
    ] {
        assert!(text.contains(header), "{header} missing:\n{text}");
    }
    let rows = text.lines().filter(|l| l.contains("tcp")).count();
    assert_eq!(rows, expected.len(), "{text}");
    assert!(
        text.contains(&format!("{} entries", expected.len())),
        "{text}"
    );
}

#[test]
fn efa_is_absent_here_and_exits_1() {
    let output = agent(&["--provider", "efa"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("fi_getinfo: -61 (No data available): no provider `efa`"),
        "{stderr}"
    );

    let (code, probe) = json(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        probe.query.provider.as_deref(),
        Some("efa"),
        "efa is the default"
    );
    assert!(
        matches!(probe.outcome, ProbeOutcome::NoProvider { .. }),
        "{probe:?}"
    );
}

#[test]
fn a_wrong_library_exits_2_and_names_what_was_tried() {
    let output = agent(&["--lib", "/nonexistent/libfabric.so.1"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("libfabric not found; tried /nonexistent/libfabric.so.1"),
        "{stderr}"
    );

    let (code, probe) = json(&["--lib", "/nonexistent/libfabric.so.1"]);
    assert_eq!(code, 2);
    assert!(probe.library.is_none());
    assert!(
        matches!(probe.outcome, ProbeOutcome::LibraryMissing { .. }),
        "{probe:?}"
    );
}

#[test]
fn an_explicit_library_is_the_one_loaded() {
    let (code, probe) = json(&["--provider", "tcp", "--lib", "libfabric.so.1"]);
    assert_eq!(code, 0);
    let library = probe.library.expect("loaded");
    let file = library.file.expect("resolved");
    assert!(file.contains("libfabric.so.1."), "{file}");
}

#[test]
fn the_agent_does_not_link_libfabric() {
    // The agent must start on a node where the EFA installer has not yet run.
    let output = Command::new("readelf")
        .args(["--dynamic", AGENT])
        .output()
        .expect("readelf (binutils) is installed");
    assert!(output.status.success(), "{output:?}");
    let dynamic = String::from_utf8_lossy(&output.stdout);
    assert!(dynamic.contains("(NEEDED)"), "{dynamic}");
    assert!(!dynamic.contains("libfabric"), "{dynamic}");
}
