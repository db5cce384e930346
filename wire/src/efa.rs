//! The EFA probe: what `rayefa-agent probe-efa --json` prints ([`FabricProbe`]), and the
//! verdict of the probe-efa step ([`EfaReport`]), which the status document carries as that
//! step's `detail` for the orchestrator to read.

use serde::{Deserialize, Serialize};

/// The PCI vendor id of Amazon's devices, as sysfs writes it.
pub const EFA_PCI_VENDOR: &str = "0x1d0f";

/// Whether a PCI device id, as sysfs writes it (`0xefa1`), is an EFA device's: every
/// `0xefa?`, as AWS's installer matches `1d0f:efa*`, so that a new generation (past `0xefa3`)
/// counts without a new agent.
pub fn is_efa_pci_device(device_id: &str) -> bool {
    let id = device_id.trim().to_ascii_lowercase();
    id.strip_prefix("0x")
        .and_then(|hex| hex.strip_prefix("efa"))
        .is_some_and(|last| last.len() == 1 && last.chars().all(|c| c.is_ascii_hexdigit()))
}

/// One run of `fi_getinfo` in a fresh process: what was asked, which library answered, how it
/// ended and every entry it returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FabricProbe {
    /// What was asked for.
    pub query: FabricQuery,
    /// The libfabric that was loaded; absent when none could be.
    pub library: Option<FabricLibrary>,
    /// How the probe ended.
    #[serde(flatten)]
    pub outcome: ProbeOutcome,
    /// Every entry `fi_getinfo` returned, in its order; empty unless the outcome is `found`.
    #[serde(default)]
    pub entries: Vec<FabricEntry>,
}

/// The filters of a probe, as `fi_info -p PROVIDER -t TYPE` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricQuery {
    /// Only this provider (`efa`, `tcp`); all providers when absent.
    pub provider: Option<String>,
    /// Only this endpoint type; all when absent.
    pub endpoint_type: Option<EndpointType>,
}

/// The libfabric a probe loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricLibrary {
    /// The path the dynamic loader reports for the library
    /// (`/opt/amazon/efa/lib64/libfabric.so.1`).
    pub path: String,
    /// The file that path resolves to (`/opt/amazon/efa/lib64/libfabric.so.1.28.1`), when it
    /// could be resolved.
    pub file: Option<String>,
    /// `fi_version()`, as `major.minor`.
    pub version: String,
    /// The API version `fi_getinfo` was asked for: the older of the library's and the
    /// bindings', as `major.minor`.
    pub api_version: String,
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ProbeOutcome {
    /// `fi_getinfo` returned at least one entry.
    Found,
    /// `fi_getinfo` answered `-FI_ENODATA` (61): no provider matches the query.
    NoProvider {
        /// `fi_getinfo: -61 (No data available)`, with the provider asked for.
        message: String,
    },
    /// No libfabric could be loaded.
    LibraryMissing {
        /// Each path tried, with the loader's reason.
        message: String,
    },
    /// libfabric was loaded but lacks a function, or a call failed.
    Failed {
        /// The negative `fi_errno` a call returned, when one did.
        code: Option<i32>,
        /// What failed, with libfabric's own text for the error.
        message: String,
    },
}

impl ProbeOutcome {
    /// The exit code of `rayefa-agent probe-efa`: 0 found, 1 no such provider, 2 libfabric
    /// missing or failing.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProbeOutcome::Found => 0,
            ProbeOutcome::NoProvider { .. } => 1,
            ProbeOutcome::LibraryMissing { .. } | ProbeOutcome::Failed { .. } => 2,
        }
    }

    /// The error text; absent when entries were found.
    pub fn message(&self) -> Option<&str> {
        match self {
            ProbeOutcome::Found => None,
            ProbeOutcome::NoProvider { message }
            | ProbeOutcome::LibraryMissing { message }
            | ProbeOutcome::Failed { message, .. } => Some(message),
        }
    }
}

/// One `struct fi_info` entry, copied out of libfabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricEntry {
    /// The provider, with the utility providers layered on it (`tcp;ofi_rxm`).
    pub provider: String,
    /// The provider's version, as `fi_info` prints it (`117.0`).
    pub provider_version: String,
    /// The fabric's name (`efa`, `192.0.2.0/24`).
    pub fabric: String,
    /// The domain's name (`rdmap0s31-rdm`, `eth0`).
    pub domain: String,
    /// The endpoint type.
    pub endpoint_type: EndpointType,
    /// The protocol, as libfabric names it (`FI_PROTO_EFA`).
    pub protocol: String,
    /// The address format, as libfabric names it (`FI_ADDR_EFA`).
    pub address_format: String,
    /// The capability flags, as libfabric names them (`FI_MSG`, `FI_RMA`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The network interface behind the entry, when the provider describes it.
    pub nic: Option<FabricNic>,
}

impl FabricEntry {
    /// The core provider, without the utility providers layered on it (`tcp` of
    /// `tcp;ofi_rxm`).
    pub fn core_provider(&self) -> &str {
        self.provider.split(';').next().unwrap_or(&self.provider)
    }
}

/// A libfabric endpoint type (`enum fi_ep_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointType {
    /// `FI_EP_UNSPEC`
    Unspec,
    /// `FI_EP_MSG`: connected, reliable.
    Msg,
    /// `FI_EP_DGRAM`: unreliable datagrams.
    Dgram,
    /// `FI_EP_RDM`: reliable datagrams, what NCCL and MPI use over EFA.
    Rdm,
    /// `FI_EP_SOCK_STREAM`
    SockStream,
    /// `FI_EP_SOCK_DGRAM`
    SockDgram,
    /// A type newer than the reader knows.
    #[serde(other)]
    Other,
}

impl EndpointType {
    /// The name `fi_info` prints (`FI_EP_RDM`).
    pub fn fi_name(self) -> &'static str {
        match self {
            EndpointType::Unspec => "FI_EP_UNSPEC",
            EndpointType::Msg => "FI_EP_MSG",
            EndpointType::Dgram => "FI_EP_DGRAM",
            EndpointType::Rdm => "FI_EP_RDM",
            EndpointType::SockStream => "FI_EP_SOCK_STREAM",
            EndpointType::SockDgram => "FI_EP_SOCK_DGRAM",
            EndpointType::Other => "unknown",
        }
    }
}

/// The network interface of an entry (`struct fid_nic` and its attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricNic {
    /// The device's name (`rdmap0s31`).
    pub device: Option<String>,
    /// The vendor id, as the provider reports it (`0x1d0f`).
    pub vendor_id: Option<String>,
    /// The device id, as the provider reports it (`0xefa1`).
    pub device_id: Option<String>,
    /// The kernel driver (`efa`).
    pub driver: Option<String>,
    /// The firmware version.
    pub firmware: Option<String>,
    /// The PCI address (`0000:00:1f.0`) when the device is on PCI.
    pub pci_address: Option<String>,
    /// The link, when the provider describes it.
    pub link: Option<FabricLink>,
}

/// The link of a network interface (`struct fi_link_attr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricLink {
    /// Up, down or unknown.
    pub state: LinkState,
    /// Bits per second; 0 when unknown.
    pub speed_bps: u64,
    /// Bytes; 0 when unknown.
    pub mtu: u64,
    /// The link's address.
    pub address: Option<String>,
    /// The kind of network (`Ethernet`).
    pub network_type: Option<String>,
}

/// `enum fi_link_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// `FI_LINK_UP`
    Up,
    /// `FI_LINK_DOWN`
    Down,
    /// `FI_LINK_UNKNOWN`, or a state newer than the reader knows.
    #[serde(other)]
    Unknown,
}

/// The probe-efa step's verdict: every fact it combined, and what did not add up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfaReport {
    /// True when the EFA hardware, driver and libfabric agree with the expected interfaces.
    pub ok: bool,
    /// What did not add up, each with its likely cause; empty when `ok`.
    #[serde(default)]
    pub problems: Vec<String>,
    /// EFA interfaces this instance should have.
    pub expected_interfaces: Option<u32>,
    /// Where that number came from.
    pub expected_from: ExpectedFrom,
    /// EFA PCI devices (vendor `0x1d0f`, device `0xefa*`).
    #[serde(default)]
    pub pci_devices: Vec<EfaPciDevice>,
    /// RDMA devices under `/sys/class/infiniband` that sit on an EFA PCI device.
    #[serde(default)]
    pub rdma_devices: Vec<String>,
    /// Whether the `efa` kernel module is loaded (`/sys/module/efa`).
    pub module_loaded: bool,
    /// libfabric's `efa` entries, counted per device.
    #[serde(default)]
    pub fabric_devices: Vec<EfaFabricDevice>,
    /// The libfabric probe as the child process answered; absent when it gave no answer.
    pub probe: Option<FabricProbe>,
}

/// Where the expected number of EFA interfaces came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedFrom {
    /// `efa.expected_interfaces` in the agent's configuration.
    Configuration,
    /// The interface types the instance metadata service lists.
    InstanceMetadata,
    /// Neither said: the PCI devices found are taken as the truth.
    Unknown,
}

/// An EFA device on the PCI bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EfaPciDevice {
    /// The PCI address (`0000:00:1f.0`).
    pub address: String,
    /// The device id (`0xefa1`).
    pub device_id: String,
}

/// libfabric's `efa` entries for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EfaFabricDevice {
    /// The device (`rdmap0s31`), from the NIC or the domain's name.
    pub device: String,
    /// `FI_EP_RDM` entries.
    pub rdm: u32,
    /// `FI_EP_DGRAM` entries.
    pub dgram: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_efa_device_id_counts_and_nothing_else() {
        for id in [
            "0xefa0", "0xefa1", "0xefa3", "0xefa4", "0xefaf", "0xEFA2", "0xefa2\n",
        ] {
            assert!(is_efa_pci_device(id), "{id}");
        }
        for id in ["0xec20", "0xefa", "0xefa10", "efa0", "0x1d0f", "0xefag", ""] {
            assert!(!is_efa_pci_device(id), "{id}");
        }
    }

    #[test]
    fn the_outcome_is_flattened_into_the_probe() {
        let probe = FabricProbe {
            query: FabricQuery {
                provider: Some("efa".into()),
                endpoint_type: None,
            },
            library: None,
            outcome: ProbeOutcome::LibraryMissing {
                message: "libfabric.so.1: not found".into(),
            },
            entries: vec![],
        };
        let json = serde_json::to_value(&probe).expect("serialises");
        assert_eq!(json["result"], "library-missing");
        assert_eq!(json["message"], "libfabric.so.1: not found");
        let back: FabricProbe = serde_json::from_value(json).expect("parses");
        assert_eq!(back, probe);
        assert_eq!(back.outcome.exit_code(), 2);
    }

    #[test]
    fn unknown_enumerators_from_a_newer_agent_still_parse() {
        let ep: EndpointType = serde_json::from_str("\"sock-seqpacket\"").expect("parses");
        assert_eq!(ep, EndpointType::Other);
        let state: LinkState = serde_json::from_str("\"testing\"").expect("parses");
        assert_eq!(state, LinkState::Unknown);
        assert_eq!(
            serde_json::to_string(&EndpointType::SockDgram).expect("serialises"),
            "\"sock-dgram\""
        );
    }

    #[test]
    fn the_core_provider_drops_layered_utility_providers() {
        let entry = FabricEntry {
            provider: "tcp;ofi_rxm".into(),
            provider_version: "117.0".into(),
            fabric: "127.0.0.1/32".into(),
            domain: "lo".into(),
            endpoint_type: EndpointType::Rdm,
            protocol: "FI_PROTO_RXM".into(),
            address_format: "FI_SOCKADDR_IN".into(),
            capabilities: vec![],
            nic: None,
        };
        assert_eq!(entry.core_provider(), "tcp");
    }
}
