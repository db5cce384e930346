//! Which block device holds a mount, and whether it is a partition, from `/sys/class/block`.
//!
//! The kernel's own names are the only ones trusted: the mount table may say `/dev/root` or
//! `/dev/disk/by-uuid/...`, which are names udev or the boot made up, so the device is found by
//! its number first and by its name only when the number is anonymous (btrfs).

use std::path::{Path, PathBuf};

use super::mountinfo::Mount;
use crate::engine::StepError;
use crate::host::HostRoot;

const CLASS_BLOCK: &str = "/sys/class/block";

/// sysfs gives block device sizes in 512-byte sectors, whatever the device's sector size.
const SYSFS_SECTOR: u64 = 512;

/// Where a file system lives, as far as growing it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Placement {
    /// Partition `number` of `disk`, both kernel names (`nvme0n1p1` on `nvme0n1`).
    Partition {
        name: String,
        disk: String,
        number: u32,
    },
    /// A device without partitions (`vda`, a loop device): only the file system can grow.
    WholeDevice { name: String },
    /// Something grow-root does not grow, and why, in words.
    NotGrowable {
        /// The kernel name, when there is a block device.
        name: Option<String>,
        reason: String,
    },
}

/// Finds the block device of `mount` and what kind it is.
pub(super) fn locate(root: &HostRoot, mount: &Mount) -> Result<Placement, StepError> {
    let name = match find_device(root, mount)? {
        Some(name) => name,
        None if mount.major == 0 => {
            return Ok(Placement::NotGrowable {
                name: None,
                reason: format!(
                    "{} is {} from `{}`, which is not a block device",
                    mount.mount_point, mount.fs_type, mount.source
                ),
            });
        }
        None => {
            return Err(StepError::Fatal(format!(
                "{} is mounted from `{}`, device {}:{}, which {} does not list",
                mount.mount_point,
                mount.source,
                mount.major,
                mount.minor,
                root.path(CLASS_BLOCK).display()
            )));
        }
    };
    let device = root.path(CLASS_BLOCK).join(&name);
    if let Some(number) = read_trimmed(&device.join("partition")) {
        let number = number.parse().map_err(|_| {
            StepError::Fatal(format!(
                "{}: `{number}` is not a partition number",
                device.join("partition").display()
            ))
        })?;
        let disk = parent_disk(&device)?;
        return Ok(Placement::Partition { name, disk, number });
    }
    let slaves = slaves(&device);
    if let Some(dm_name) = read_trimmed(&device.join("dm/name")) {
        return Ok(Placement::NotGrowable {
            reason: format!(
                "{} is on device-mapper device {name} ({dm_name}) over {}; grow-root does not \
                 resize logical volumes or encrypted devices",
                mount.mount_point,
                list_or_nothing(&slaves)
            ),
            name: Some(name),
        });
    }
    if !slaves.is_empty() {
        return Ok(Placement::NotGrowable {
            reason: format!(
                "{} is on {name}, which is built from {}; grow-root grows partitions of disks only",
                mount.mount_point,
                slaves.join(", ")
            ),
            name: Some(name),
        });
    }
    Ok(Placement::WholeDevice { name })
}

/// The kernel name of the device of `mount`, by device number, else by the name in the mount
/// table (`/dev/nvme0n1p2`, `/dev/mapper/vg-root`).
fn find_device(root: &HostRoot, mount: &Mount) -> Result<Option<String>, StepError> {
    let class = root.path(CLASS_BLOCK);
    let entries = match std::fs::read_dir(&class) {
        Ok(entries) => entries,
        Err(err) if mount.major == 0 && err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(err) => return Err(StepError::io(format!("reading {}", class.display()), err)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if mount.major != 0 {
        let number = format!("{}:{}", mount.major, mount.minor);
        return Ok(names
            .into_iter()
            .find(|n| read_trimmed(&class.join(n).join("dev")).as_deref() == Some(&number)));
    }
    let Some(dev_path) = mount.source.strip_prefix("/dev/") else {
        return Ok(None);
    };
    if let Some(mapped) = dev_path.strip_prefix("mapper/") {
        return Ok(names
            .into_iter()
            .find(|n| read_trimmed(&class.join(n).join("dm/name")).as_deref() == Some(mapped)));
    }
    Ok(names.into_iter().find(|n| n == dev_path))
}

/// The disk a partition folder belongs to: sysfs nests partitions inside their disk's folder,
/// and `/sys/class/block/<part>` links there.
fn parent_disk(partition: &Path) -> Result<String, StepError> {
    let real = std::fs::canonicalize(partition)
        .map_err(|err| StepError::io(format!("resolving {}", partition.display()), err))?;
    let disk = real
        .parent()
        .filter(|dir| dir.join("dev").is_file())
        .and_then(Path::file_name)
        .ok_or_else(|| {
            StepError::Fatal(format!(
                "{} is a partition but {} is not its disk",
                partition.display(),
                real.parent()
                    .map_or(PathBuf::new(), Path::to_path_buf)
                    .display()
            ))
        })?;
    Ok(disk.to_string_lossy().into_owned())
}

/// The devices a virtual device (device-mapper, md) is built from.
fn slaves(device: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(device.join("slaves"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn list_or_nothing(names: &[String]) -> String {
    if names.is_empty() {
        "no listed device".to_owned()
    } else {
        names.join(", ")
    }
}

/// The size of the block device `name` in bytes.
pub(super) fn size_bytes(root: &HostRoot, name: &str) -> Result<u64, StepError> {
    let path = root.path(CLASS_BLOCK).join(name).join("size");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| StepError::io(format!("reading {}", path.display()), err))?;
    let sectors: u64 = text.trim().parse().map_err(|_| {
        StepError::Fatal(format!(
            "{}: `{}` is not a sector count",
            path.display(),
            text.trim()
        ))
    })?;
    Ok(sectors.saturating_mul(SYSFS_SECTOR))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::mountinfo;
    use super::*;

    fn fixture(name: &str) -> HostRoot {
        HostRoot::new(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/grow_root")
                .join(name),
        )
    }

    /// The placement of `/` in the fixture `name`.
    fn root_placement(name: &str) -> Placement {
        let root = fixture(name);
        let text = std::fs::read_to_string(root.path("/proc/self/mountinfo")).expect("mountinfo");
        let mounts = mountinfo::parse(&text).expect("parses");
        let mount = mountinfo::mounted_at(&mounts, "/").expect("a root mount");
        locate(&root, mount).expect("locates")
    }

    fn partition(name: &str, disk: &str, number: u32) -> Placement {
        Placement::Partition {
            name: name.into(),
            disk: disk.into(),
            number,
        }
    }

    #[test]
    fn nvme_partitions_belong_to_their_namespace() {
        assert_eq!(
            root_placement("nvme-xfs"),
            partition("nvme0n1p1", "nvme0n1", 1)
        );
    }

    #[test]
    fn xen_partitions_belong_to_their_disk() {
        assert_eq!(root_placement("xvd-ext4"), partition("xvda1", "xvda", 1));
    }

    #[test]
    fn names_sysfs_does_not_know_are_found_by_device_number() {
        assert_eq!(
            root_placement("dev-root"),
            partition("nvme0n1p1", "nvme0n1", 1)
        );
        assert_eq!(root_placement("by-uuid"), partition("xvda1", "xvda", 1));
    }

    #[test]
    fn an_anonymous_device_number_falls_back_to_the_name() {
        assert_eq!(
            root_placement("btrfs"),
            partition("nvme0n1p2", "nvme0n1", 2)
        );
    }

    #[test]
    fn a_whole_disk_has_no_partition() {
        assert_eq!(
            root_placement("whole-disk"),
            Placement::WholeDevice { name: "vda".into() }
        );
    }

    #[test]
    fn device_mapper_is_not_grown_and_says_what_it_sits_on() {
        let Placement::NotGrowable { name, reason } = root_placement("lvm") else {
            panic!("lvm is growable");
        };
        assert_eq!(name.as_deref(), Some("dm-0"));
        assert_eq!(
            reason,
            "/ is on device-mapper device dm-0 (vg0-root) over nvme0n1p3; grow-root does not \
             resize logical volumes or encrypted devices"
        );
    }

    #[test]
    fn mapper_names_lead_to_their_dm_device() {
        let mount = Mount {
            major: 0,
            minor: 40,
            mount_point: "/".into(),
            fs_type: "btrfs".into(),
            source: "/dev/mapper/vg0-root".into(),
        };
        assert!(matches!(
            locate(&fixture("lvm"), &mount).expect("locates"),
            Placement::NotGrowable { name: Some(n), .. } if n == "dm-0"
        ));
    }

    #[test]
    fn an_overlay_is_not_a_block_device() {
        assert_eq!(
            root_placement("overlay"),
            Placement::NotGrowable {
                name: None,
                reason: "/ is overlay from `overlay`, which is not a block device".into()
            }
        );
    }

    #[test]
    fn a_device_number_sysfs_does_not_list_is_an_error() {
        let mount = Mount {
            major: 259,
            minor: 9,
            mount_point: "/".into(),
            fs_type: "xfs".into(),
            source: "/dev/root".into(),
        };
        let err = locate(&fixture("nvme-xfs"), &mount).expect_err("unknown device");
        assert!(err.to_string().contains("device 259:9, which"), "{err}");
    }

    #[test]
    fn sizes_are_in_bytes() {
        assert_eq!(
            size_bytes(&fixture("nvme-xfs"), "nvme0n1").expect("size"),
            100 << 30
        );
        assert_eq!(
            size_bytes(&fixture("nvme-xfs"), "nvme0n1p1").expect("size"),
            16_752_607 * 512
        );
        assert!(size_bytes(&fixture("nvme-xfs"), "sda").is_err());
    }
}
