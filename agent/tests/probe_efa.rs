//! `rayefa-agent probe-efa` as a whole process against the machine's real libfabric (Debian's
//! libfabric1 1.17 in CI), compared with what `fi_info` (libfabric-bin) prints.

use std::process::{Command, Output};

use rayefa_wire::{EFA_PCI_VENDOR, FabricProbe, ProbeOutcome, is_efa_pci_device};

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

/// The EFA devices of this host, by what the kernel shows: an EFA function on the PCI bus
/// (vendor 0x1d0f, any device 0xefa*) or an RDMA device the efa driver made
/// (`/sys/class/infiniband/rdmap*`). Empty off EC2 and on instances without EFA.
fn host_efa_devices() -> Vec<String> {
    let read =
        |path: std::path::PathBuf| std::fs::read_to_string(path).map(|text| text.trim().to_owned());
    let mut found = Vec::new();
    if let Ok(devices) = std::fs::read_dir("/sys/bus/pci/devices") {
        for device in devices.flatten() {
            let vendor = read(device.path().join("vendor")).unwrap_or_default();
            let id = read(device.path().join("device")).unwrap_or_default();
            if vendor == EFA_PCI_VENDOR && is_efa_pci_device(&id) {
                found.push(format!(
                    "PCI {} ({id})",
                    device.file_name().to_string_lossy()
                ));
            }
        }
    }
    if let Ok(devices) = std::fs::read_dir("/sys/class/infiniband") {
        for device in devices.flatten() {
            let name = device.file_name().to_string_lossy().into_owned();
            if name.starts_with("rdmap") {
                found.push(name);
            }
        }
    }
    found
}

/// The default provider is `efa`: on a host with EFA the probe finds it and agrees with
/// `fi_info -p efa`; on a host without, it exits 1 with libfabric's "no data".
#[test]
fn efa_is_found_exactly_when_the_host_has_efa() {
    let devices = host_efa_devices();
    let output = agent(&["--provider", "efa"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (code, probe) = json(&[]);
    assert_eq!(
        probe.query.provider.as_deref(),
        Some("efa"),
        "efa is the default"
    );

    if devices.is_empty() {
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(
            stderr.contains("fi_getinfo: -61 (No data available): no provider `efa`"),
            "{stderr}"
        );
        assert_eq!(code, 1);
        assert!(
            matches!(probe.outcome, ProbeOutcome::NoProvider { .. }),
            "{probe:?}"
        );
    } else {
        // libfabric finds EFA only with the efa kernel driver and rdma-core's libefa.
        let why = format!(
            "this host has EFA ({}), so libfabric should list the efa provider \
             (is the efa driver loaded, is libefa1 installed?)",
            devices.join(", ")
        );
        assert_eq!(output.status.code(), Some(0), "{why}: {output:?}");
        assert_eq!(code, 0, "{why}: {probe:?}");
        assert_eq!(probe.outcome, ProbeOutcome::Found, "{why}");
        assert!(
            probe
                .entries
                .iter()
                .any(|e| e.provider.split(';').any(|p| p == "efa")),
            "{probe:?}"
        );
        assert_eq!(as_listed(&probe), fi_info(&["-p", "efa"]));
    }
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
