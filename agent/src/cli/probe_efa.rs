//! `rayefa-agent probe-efa`: `fi_info -p efa` through the agent's own bindings, as a table for
//! people or JSON for programs (the probe-efa step runs it as a child process).

use std::io::Write;
use std::path::PathBuf;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use rayefa_wire::{EndpointType, FabricEntry, FabricProbe, FabricQuery, LinkState, ProbeOutcome};

use crate::fabric;

/// Ask libfabric which fabrics it can reach, like `fi_info -p PROVIDER`, in a fresh process.
///
/// Exit codes: 0 entries found, 1 the provider is absent (fi_getinfo: -61), 2 libfabric could
/// not be loaded or failed.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProbeEfaArgs {
    /// Only entries of this libfabric provider (`efa`, `tcp`, ...), as `fi_info -p`.
    #[arg(long, short = 'p', value_name = "NAME", default_value = "efa")]
    pub(crate) provider: String,
    /// Only entries of this endpoint type, as `fi_info -t`.
    #[arg(long, short = 't', value_name = "TYPE", value_enum)]
    pub(crate) ep_type: Option<EpType>,
    /// Load this libfabric and nothing else. Default: the first that loads of
    /// /opt/amazon/efa/lib64/libfabric.so.1, /opt/amazon/efa/lib/libfabric.so.1 and the
    /// system's libfabric.so.1.
    #[arg(long, value_name = "PATH")]
    pub(crate) lib: Option<PathBuf>,
    /// Print one JSON document (one line) on standard output instead of a table; errors are in
    /// the document, not on standard error.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The endpoint types a probe can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EpType {
    /// Reliable datagrams (`FI_EP_RDM`), what NCCL and MPI use over EFA.
    Rdm,
    /// Unreliable datagrams (`FI_EP_DGRAM`).
    Dgram,
    /// Connected messages (`FI_EP_MSG`).
    Msg,
}

impl From<EpType> for EndpointType {
    fn from(kind: EpType) -> Self {
        match kind {
            EpType::Rdm => EndpointType::Rdm,
            EpType::Dgram => EndpointType::Dgram,
            EpType::Msg => EndpointType::Msg,
        }
    }
}

/// Runs the probe and prints it; returns the exit code.
pub(crate) fn probe_efa(args: &ProbeEfaArgs) -> i32 {
    let query = FabricQuery {
        provider: Some(args.provider.clone()),
        endpoint_type: args.ep_type.map(EndpointType::from),
    };
    let probe = fabric::probe(args.lib.as_deref(), query);
    let code = probe.outcome.exit_code();
    let printed = if args.json {
        print_json(&probe)
    } else {
        print_table(&probe)
    };
    match printed {
        Ok(()) => code,
        // A closed pipe or a full disk: the answer did not reach anyone.
        Err(_) => 2,
    }
}

fn print_json(probe: &FabricProbe) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, probe)?;
    writeln!(out)?;
    out.flush()
}

fn print_table(probe: &FabricProbe) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(lib) = &probe.library {
        let file = lib
            .file
            .as_deref()
            .filter(|file| *file != lib.path)
            .map(|file| format!(" -> {file}"))
            .unwrap_or_default();
        writeln!(
            out,
            "libfabric {} at {}{file} (asked for API {})",
            lib.version, lib.path, lib.api_version
        )?;
    }
    match &probe.outcome {
        ProbeOutcome::Found => {
            writeln!(out, "{}", entries_table(&probe.entries))?;
            let count = probe.entries.len();
            writeln!(
                out,
                "{count} {}",
                if count == 1 { "entry" } else { "entries" }
            )?;
        }
        other => {
            let message = other.message().unwrap_or_default();
            eprintln!("rayefa-agent probe-efa: {message}");
            if let Some(hint) = hint(other, probe.query.provider.as_deref()) {
                eprintln!("  {hint}");
            }
        }
    }
    out.flush()
}

/// What a person should look at next.
fn hint(outcome: &ProbeOutcome, provider: Option<&str>) -> Option<&'static str> {
    match outcome {
        ProbeOutcome::Found => None,
        ProbeOutcome::NoProvider { .. } if provider == Some("efa") => Some(
            "this libfabric has no efa provider, or no EFA device is usable: is an EFA \
             interface attached, the efa module loaded, and this the EFA installer's libfabric?",
        ),
        ProbeOutcome::NoProvider { .. } => None,
        ProbeOutcome::LibraryMissing { .. } => {
            Some("has the EFA installer run? (or name a library with --lib)")
        }
        ProbeOutcome::Failed { .. } => None,
    }
}

/// The columns `fi_info -p X` prints, plus the link when providers describe it.
fn entries_table(entries: &[FabricEntry]) -> Table {
    let with_link = entries
        .iter()
        .any(|e| e.nic.as_ref().is_some_and(|n| n.link.is_some()));
    let mut header = vec![
        "PROVIDER", "FABRIC", "DOMAIN", "VERSION", "TYPE", "PROTOCOL",
    ];
    if with_link {
        header.push("LINK");
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(header);
    for entry in entries {
        let mut row = vec![
            entry.provider.clone(),
            entry.fabric.clone(),
            entry.domain.clone(),
            entry.provider_version.clone(),
            entry.endpoint_type.fi_name().to_owned(),
            entry.protocol.clone(),
        ];
        if with_link {
            row.push(link_summary(entry));
        }
        table.add_row(row);
    }
    table
}

/// `up, 100 Gb/s, MTU 8928`.
fn link_summary(entry: &FabricEntry) -> String {
    let Some(link) = entry.nic.as_ref().and_then(|n| n.link.as_ref()) else {
        return String::new();
    };
    let state = match link.state {
        LinkState::Up => "up",
        LinkState::Down => "down",
        LinkState::Unknown => "unknown",
    };
    let mut parts = vec![state.to_owned()];
    if link.speed_bps > 0 {
        parts.push(format!("{} Gb/s", link.speed_bps / 1_000_000_000));
    }
    if link.mtu > 0 {
        parts.push(format!("MTU {}", link.mtu));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use rayefa_wire::{FabricLink, FabricNic};

    use super::*;

    fn entry(link: Option<FabricLink>) -> FabricEntry {
        FabricEntry {
            provider: "efa".into(),
            provider_version: "203.10".into(),
            fabric: "efa".into(),
            domain: "rdmap0s31-rdm".into(),
            endpoint_type: EndpointType::Rdm,
            protocol: "FI_PROTO_EFA".into(),
            address_format: "FI_ADDR_EFA".into(),
            capabilities: vec!["FI_MSG".into()],
            nic: Some(FabricNic {
                device: Some("rdmap0s31".into()),
                link,
                ..FabricNic::default()
            }),
        }
    }

    #[test]
    fn the_table_has_fi_info_columns_and_the_link_when_known() {
        let up = FabricLink {
            state: LinkState::Up,
            speed_bps: 100_000_000_000,
            mtu: 8928,
            address: None,
            network_type: None,
        };
        let text = entries_table(&[entry(Some(up))]).to_string();
        for needle in [
            "PROVIDER",
            "rdmap0s31-rdm",
            "203.10",
            "FI_EP_RDM",
            "FI_PROTO_EFA",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(text.contains("up, 100 Gb/s, MTU 8928"), "{text}");
        assert!(!entries_table(&[entry(None)]).to_string().contains("LINK"));
    }
}
