//! Judging the EFA facts: hardware, driver and libfabric against the interfaces expected.

use std::collections::BTreeMap;

use rayefa_wire::{
    EfaFabricDevice, EfaPciDevice, EfaReport, EndpointType, ExpectedFrom, FabricEntry, FabricProbe,
    ProbeOutcome,
};

use crate::engine::StepError;
use crate::steps::efa_presence::Expected;

/// What sysfs says about EFA on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hardware {
    pub(super) pci_devices: Vec<EfaPciDevice>,
    /// RDMA devices under /sys/class/infiniband that sit on an EFA PCI device.
    pub(super) rdma_devices: Vec<String>,
    pub(super) module_loaded: bool,
}

/// One thing that did not add up.
struct Problem {
    text: String,
    /// Whether another attempt could see it resolved (a device still coming up).
    retryable: bool,
}

/// The report, and the error that fails the step when something did not add up.
pub(super) struct Judgement {
    pub(super) report: EfaReport,
    pub(super) failure: Option<StepError>,
}

/// Combines the facts. `probe` is the child's answer, or why there was none.
pub(super) fn judge(
    expected: Expected,
    hardware: Hardware,
    probe: Result<FabricProbe, String>,
) -> Judgement {
    let mut problems = Vec::new();
    let found = hardware.pci_devices.len();
    let pci_list = || {
        hardware
            .pci_devices
            .iter()
            .map(|d| format!("{} ({})", d.address, d.device_id))
            .collect::<Vec<_>>()
            .join(", ")
    };

    if found == 0 {
        let wanted = match expected.count {
            Some(count) => format!("{count} expected ({})", source(expected.from)),
            None => "EFA is required".to_owned(),
        };
        problems.push(Problem {
            text: format!(
                "no EFA interface attached: {wanted}, but no EFA PCI device (vendor 0x1d0f, \
                 device 0xefa*) is present; launch an EFA-capable instance type with \
                 network interfaces of InterfaceType efa"
            ),
            retryable: false,
        });
    } else if let Some(count) = expected.count
        && usize::try_from(count).ok() != Some(found)
    {
        problems.push(Problem {
            text: format!(
                "{count} EFA interfaces expected ({}), {found} EFA PCI devices present: {}; \
                 check the node type's NetworkInterfaces (InterfaceType efa, one per network card)",
                source(expected.from),
                pci_list(),
            ),
            retryable: false,
        });
    }

    if found > 0 && !hardware.module_loaded {
        problems.push(Problem {
            text: "the efa kernel module is not loaded (/sys/module/efa is missing): a reboot \
                   may be pending after the EFA installer, or the module failed to build for \
                   this kernel (kernel headers missing?)"
                .to_owned(),
            retryable: false,
        });
    } else if hardware.module_loaded && hardware.rdma_devices.len() < found {
        problems.push(Problem {
            text: format!(
                "only {} of {found} EFA devices have an RDMA device under /sys/class/infiniband: \
                 the driver has not brought them all up yet",
                hardware.rdma_devices.len()
            ),
            retryable: true,
        });
    }

    let fabric_devices = match &probe {
        Ok(answer) => efa_devices(&answer.entries),
        Err(_) => Vec::new(),
    };
    match &probe {
        Err(why) => problems.push(Problem {
            text: format!("the libfabric probe gave no answer: {why}"),
            retryable: true,
        }),
        Ok(answer) => {
            if let Some(problem) = fabric_problem(answer, &fabric_devices, found) {
                problems.push(problem);
            }
        }
    }

    let failure = (!problems.is_empty()).then(|| {
        let message = problems
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        if problems.iter().all(|p| p.retryable) {
            StepError::Transient(message)
        } else {
            StepError::Fatal(message)
        }
    });
    Judgement {
        report: EfaReport {
            ok: problems.is_empty(),
            problems: problems.into_iter().map(|p| p.text).collect(),
            expected_interfaces: expected.count,
            expected_from: expected.from,
            pci_devices: hardware.pci_devices,
            rdma_devices: hardware.rdma_devices,
            module_loaded: hardware.module_loaded,
            fabric_devices,
            probe: probe.ok(),
        },
        failure,
    }
}

/// What libfabric's answer says is wrong, if anything.
fn fabric_problem(
    answer: &FabricProbe,
    devices: &[EfaFabricDevice],
    pci_found: usize,
) -> Option<Problem> {
    let library = answer
        .library
        .as_ref()
        .map(|l| format!("libfabric {} at {}", l.version, l.path))
        .unwrap_or_else(|| "libfabric".to_owned());
    match &answer.outcome {
        ProbeOutcome::LibraryMissing { message } => Some(Problem {
            text: format!("libfabric missing (has the EFA installer run?): {message}"),
            retryable: false,
        }),
        ProbeOutcome::Failed { code, message } => Some(Problem {
            text: format!("{library} failed: {message}"),
            // A missing symbol stays missing; a failing call may not fail again.
            retryable: code.is_some(),
        }),
        // Without an EFA device libfabric cannot list one; the hardware problem says why.
        ProbeOutcome::NoProvider { .. } if pci_found == 0 => None,
        ProbeOutcome::NoProvider { message } => Some(Problem {
            text: format!(
                "provider efa absent from {library} ({message}): it is not the EFA installer's \
                 libfabric, or no EFA device is usable yet"
            ),
            retryable: true,
        }),
        ProbeOutcome::Found => {
            let with_rdm = devices.iter().filter(|d| d.rdm > 0).count();
            (with_rdm < pci_found.max(1)).then(|| Problem {
                text: format!(
                    "{library} offers EFA RDM endpoints on {with_rdm} of {} EFA devices",
                    pci_found.max(1)
                ),
                retryable: true,
            })
        }
    }
}

/// libfabric's native `efa` entries (`efa` and `efa-direct`, not utility providers layered on
/// them), counted per device: the NIC's name, else the domain's without `-rdm`/`-dgrm`.
pub(super) fn efa_devices(entries: &[FabricEntry]) -> Vec<EfaFabricDevice> {
    let mut devices: BTreeMap<String, EfaFabricDevice> = BTreeMap::new();
    for entry in entries {
        if !matches!(entry.provider.as_str(), "efa" | "efa-direct") {
            continue;
        }
        let name = entry
            .nic
            .as_ref()
            .and_then(|n| n.device.clone())
            .unwrap_or_else(|| {
                let domain = entry.domain.as_str();
                domain
                    .strip_suffix("-rdm")
                    .or_else(|| domain.strip_suffix("-dgrm"))
                    .unwrap_or(domain)
                    .to_owned()
            });
        let device = devices.entry(name.clone()).or_insert(EfaFabricDevice {
            device: name,
            rdm: 0,
            dgram: 0,
        });
        match entry.endpoint_type {
            EndpointType::Rdm => device.rdm += 1,
            EndpointType::Dgram => device.dgram += 1,
            _ => {}
        }
    }
    devices.into_values().collect()
}

fn source(from: ExpectedFrom) -> &'static str {
    match from {
        ExpectedFrom::Configuration => "efa.expected_interfaces",
        ExpectedFrom::InstanceMetadata => "instance metadata",
        ExpectedFrom::Unknown => "unknown",
    }
}
