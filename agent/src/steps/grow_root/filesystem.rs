//! The file systems grow-root grows, their sizes, and growing them while mounted.

use crate::engine::{Retry, StepContext, StepError};
use crate::host::CommandSpec;

/// A file system grow-root can grow online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileSystem {
    Xfs,
    /// ext2, ext3 and ext4, which resize2fs grows alike.
    Ext,
}

impl FileSystem {
    /// The file system of a mountinfo type, if grow-root grows it.
    pub(super) fn of(fs_type: &str) -> Option<Self> {
        match fs_type {
            "xfs" => Some(FileSystem::Xfs),
            "ext2" | "ext3" | "ext4" => Some(FileSystem::Ext),
            _ => None,
        }
    }

    /// Its size in bytes: the data section for xfs (`xfs_growfs -n`, which only reads), the
    /// block count for ext (`dumpe2fs -h`). Free-space figures from statvfs leave out metadata
    /// and cannot be compared with the device's size.
    pub(super) async fn size_bytes(
        self,
        ctx: &StepContext,
        mount_point: &str,
        device: &str,
    ) -> Result<u64, StepError> {
        let (spec, parse): (CommandSpec, fn(&str) -> Option<u64>) = match self {
            FileSystem::Xfs => (
                CommandSpec::new("xfs_growfs").args(["-n", mount_point]),
                xfs_bytes,
            ),
            FileSystem::Ext => (CommandSpec::new("dumpe2fs").args(["-h", device]), ext_bytes),
        };
        let outcome = ctx.run_checked(spec.clone(), Retry::Never).await?;
        parse(&outcome.output)
            .ok_or_else(|| StepError::Fatal(format!("`{spec}` printed no block size and count")))
    }

    /// Grows the mounted file system to fill its device: xfs by its mount point, ext by its
    /// device.
    pub(super) async fn grow(
        self,
        ctx: &StepContext,
        mount_point: &str,
        device: &str,
    ) -> Result<(), StepError> {
        let spec = match self {
            FileSystem::Xfs => CommandSpec::new("xfs_growfs").arg(mount_point),
            FileSystem::Ext => CommandSpec::new("resize2fs").arg(device),
        };
        ctx.run_checked(spec, Retry::Never).await.map(drop)
    }
}

/// `bsize × blocks` of the `data` line of xfs geometry:
/// `data     =                       bsize=4096   blocks=178939, imaxpct=25`.
fn xfs_bytes(geometry: &str) -> Option<u64> {
    let line = geometry
        .lines()
        .find(|l| l.starts_with("data ") || l.starts_with("data="))?;
    let value = |key: &str| -> Option<u64> {
        line.split(|c: char| c.is_whitespace() || c == ',')
            .find_map(|token| token.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    };
    value("bsize=")?.checked_mul(value("blocks=")?)
}

/// `Block count × Block size` of an ext superblock as `dumpe2fs -h` prints it.
fn ext_bytes(superblock: &str) -> Option<u64> {
    let value = |key: &str| -> Option<u64> {
        superblock
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
    };
    value("Block count:")?.checked_mul(value("Block size:")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfs_size_is_the_data_section() {
        let geometry = "meta-data=/dev/loop0p1           isize=512    agcount=4, agsize=25536 blks\n\
                        \x20        =                       sectsz=512   attr=2, projid32bit=1\n\
                        data     =                       bsize=4096   blocks=178939, imaxpct=25\n\
                        \x20        =                       sunit=0      swidth=0 blks\n\
                        log      =internal log           bsize=4096   blocks=16384, version=2\n";
        assert_eq!(xfs_bytes(geometry), Some(178_939 * 4096));
        assert_eq!(xfs_bytes("meta-data=/dev/x isize=512\n"), None);
    }

    #[test]
    fn ext_size_is_block_count_times_block_size() {
        let superblock = "dumpe2fs 1.47.0 (5-Feb-2023)\nFilesystem volume name:   <none>\n\
                          Block count:              178939\nReserved block count:     8946\n\
                          Block size:               4096\n";
        assert_eq!(ext_bytes(superblock), Some(178_939 * 4096));
        assert_eq!(ext_bytes("Block size: 4096\n"), None);
    }

    #[test]
    fn only_xfs_and_ext_are_grown() {
        assert_eq!(FileSystem::of("ext3"), Some(FileSystem::Ext));
        assert_eq!(FileSystem::of("xfs"), Some(FileSystem::Xfs));
        assert_eq!(FileSystem::of("btrfs"), None);
        assert_eq!(FileSystem::of("overlay"), None);
    }
}
