//! Whether this node has EFA, and so whether the EFA steps are wanted: the one decision that
//! install-efa and probe-efa share, so that they never disagree.
//!
//! The evidence is the PCI bus (present before any driver is installed), the configured number
//! of EFA interfaces, and the interface types the instance metadata service lists.

use std::io;
use std::path::Path;

use rayefa_wire::{EFA_PCI_VENDOR, EfaPciDevice, ExpectedFrom, is_efa_pci_device};

use crate::config::EfaMode;
use crate::engine::{StepContext, Wanted};
use crate::host::HostRoot;

/// Where the kernel lists PCI devices.
pub(crate) const PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// The EFA interfaces this instance should have, and who says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) count: Option<u32>,
    pub(crate) from: ExpectedFrom,
}

/// Whether the EFA steps should run here.
///
/// `off` skips them; `required` runs them (and a node without EFA then fails); `auto` runs
/// them when an EFA PCI device is present or EFA interfaces are expected, and skips them on
/// nodes that have neither.
pub(crate) async fn efa_wanted(ctx: &StepContext) -> Wanted {
    match ctx.settings.efa.mode {
        EfaMode::Off => Wanted::Skip("EFA turned off".to_owned()),
        EfaMode::Required => Wanted::Yes,
        EfaMode::Auto => match efa_pci_devices(&ctx.root) {
            Ok(devices) if !devices.is_empty() => Wanted::Yes,
            Ok(_) => {
                if expected_interfaces(ctx).await.count.unwrap_or(0) > 0 {
                    Wanted::Yes
                } else {
                    Wanted::Skip("no EFA interface".to_owned())
                }
            }
            Err(err) => {
                // Unreadable sysfs proves nothing either way; let the step run and say so
                // rather than silently skip EFA on a node that may have it.
                ctx.log.note(&format!("# cannot read {PCI_DEVICES}: {err}"));
                Wanted::Yes
            }
        },
    }
}

/// The number of EFA interfaces expected: `efa.expected_interfaces` if configured, else the
/// `efa` and `efa-only` interfaces the instance metadata lists. Metadata that lists none is no
/// evidence (not every metadata service reports interface types), so it counts as unknown.
pub(crate) async fn expected_interfaces(ctx: &StepContext) -> Expected {
    if let Some(count) = ctx.settings.efa.expected_interfaces {
        return Expected {
            count: Some(count),
            from: ExpectedFrom::Configuration,
        };
    }
    let from_metadata = ctx.ec2_facts().await.map_or(0, |facts| {
        facts
            .interface_types
            .iter()
            .filter(|kind| matches!(kind.as_str(), "efa" | "efa-only"))
            .count()
    });
    match u32::try_from(from_metadata) {
        Ok(count) if count > 0 => Expected {
            count: Some(count),
            from: ExpectedFrom::InstanceMetadata,
        },
        _ => Expected {
            count: None,
            from: ExpectedFrom::Unknown,
        },
    }
}

/// EFA devices on the PCI bus (vendor `0x1d0f`, any device `0xefa*`), by address. A
/// machine without `/sys/bus/pci` has none.
pub(crate) fn efa_pci_devices(root: &HostRoot) -> io::Result<Vec<EfaPciDevice>> {
    let dir = root.path(PCI_DEVICES);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(io::Error::new(
                err.kind(),
                format!("{}: {err}", dir.display()),
            ));
        }
    };
    let mut devices = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(device_id) = efa_device_id(&entry.path()) {
            devices.push(EfaPciDevice {
                address: entry.file_name().to_string_lossy().into_owned(),
                device_id,
            });
        }
    }
    devices.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(devices)
}

/// The device id if the PCI device in `dir` (a sysfs device folder) is an EFA device.
pub(crate) fn efa_device_id(dir: &Path) -> Option<String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|text| text.trim().to_ascii_lowercase())
    };
    let vendor = read("vendor")?;
    let device = read("device")?;
    (vendor == EFA_PCI_VENDOR && is_efa_pci_device(&device)).then_some(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(root: &Path, address: &str, vendor: &str, device: &str) {
        let dir = root.join("sys/bus/pci/devices").join(address);
        std::fs::create_dir_all(&dir).expect("device dir");
        std::fs::write(dir.join("vendor"), format!("{vendor}\n")).expect("vendor");
        std::fs::write(dir.join("device"), format!("{device}\n")).expect("device");
    }

    #[test]
    fn every_efa_generation_on_the_bus_counts_and_other_devices_do_not() {
        let root = tempfile::tempdir().expect("root");
        device(root.path(), "0000:00:05.0", "0x1d0f", "0xec20"); // ENA
        device(root.path(), "0000:00:06.0", "0x1d0f", "0xefa1");
        device(root.path(), "0000:10:1c.0", "0x1d0f", "0xefa4"); // past efa3
        device(root.path(), "0000:00:07.0", "0x8086", "0xefa0"); // another vendor
        let found = efa_pci_devices(&HostRoot::new(root.path())).expect("reads");
        let ids: Vec<(&str, &str)> = found
            .iter()
            .map(|d| (d.address.as_str(), d.device_id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [("0000:00:06.0", "0xefa1"), ("0000:10:1c.0", "0xefa4")]
        );
    }
}
