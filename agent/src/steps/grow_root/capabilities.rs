//! Whether the agent holds the capabilities growing needs, asked before anything changes: the
//! kernel refuses an ext4 online resize without CAP_SYS_RESOURCE only after growpart has
//! already rewritten the partition table, which would leave the work half done.

use crate::host::HostRoot;

/// A Linux capability: its bit in the capability sets and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Capability {
    bit: u32,
    pub(super) name: &'static str,
}

/// Partition-table updates (the BLKPG ioctl behind growpart's `partx --update`) and xfs
/// growth.
pub(super) const SYS_ADMIN: Capability = Capability {
    bit: 21,
    name: "CAP_SYS_ADMIN",
};

/// ext4 online resizing.
pub(super) const SYS_RESOURCE: Capability = Capability {
    bit: 24,
    name: "CAP_SYS_RESOURCE",
};

/// Those of `needed` that the agent's effective set lacks, as its `/proc/self/status` under the
/// root says. A status that cannot be read says nothing is missing: the tools then report what
/// they lack themselves.
pub(super) fn missing(root: &HostRoot, needed: &[Capability]) -> Vec<&'static str> {
    let effective = std::fs::read_to_string(root.path("/proc/self/status"))
        .ok()
        .and_then(|status| effective_set(&status));
    let Some(effective) = effective else {
        return Vec::new();
    };
    let mut names: Vec<&'static str> = needed
        .iter()
        .filter(|c| effective & (1u64 << c.bit) == 0)
        .map(|c| c.name)
        .collect();
    names.dedup();
    names
}

/// The `CapEff:` line of a status file.
fn effective_set(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_status(cap_eff: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("root");
        std::fs::create_dir_all(root.path().join("proc/self")).expect("proc");
        std::fs::write(
            root.path().join("proc/self/status"),
            format!("Name:\trayefa-agent\nCapPrm:\t000001ffffffffff\nCapEff:\t{cap_eff}\n"),
        )
        .expect("status");
        root
    }

    #[test]
    fn a_container_without_sys_resource_is_told_apart() {
        // This build machine's own set: everything but CAP_SYS_RESOURCE.
        let root = root_with_status("000001fffeffffff");
        let root = HostRoot::new(root.path());
        assert_eq!(
            missing(&root, &[SYS_ADMIN, SYS_RESOURCE]),
            ["CAP_SYS_RESOURCE"]
        );
        assert!(missing(&root, &[SYS_ADMIN, SYS_ADMIN]).is_empty());
    }

    #[test]
    fn a_full_set_or_an_unreadable_status_misses_nothing() {
        let full = root_with_status("000001ffffffffff");
        assert!(missing(&HostRoot::new(full.path()), &[SYS_ADMIN, SYS_RESOURCE]).is_empty());
        assert!(missing(&HostRoot::new("/nonexistent"), &[SYS_RESOURCE]).is_empty());
        let none = root_with_status("0000000000000000");
        assert_eq!(
            missing(
                &HostRoot::new(none.path()),
                &[SYS_ADMIN, SYS_ADMIN, SYS_RESOURCE]
            ),
            ["CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"]
        );
    }
}
