//! `grow-root`: the root partition to the end of its disk, then the root file system to the
//! end of its partition, found from the mount table and sysfs rather than assumed.

mod capabilities;
mod filesystem;
mod mountinfo;
mod partition;
mod sysfs;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::GROW_ROOT;
use crate::config::Settings;
use crate::engine::{Check, Outcome, Step, StepContext, StepError};
use filesystem::FileSystem;
use mountinfo::Mount;
use partition::Growth;
use sysfs::Placement;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// How far a file system may stay below its device's size and still count as filling it. The
/// tools leave a tail they cannot use: xfs_growfs up to 64 blocks too small for an allocation
/// group, resize2fs a last block group smaller than its own metadata (a few MiB). A volume that
/// was really enlarged (EBS grows by whole GiB) has far more room than this.
const FILL_SLACK_BYTES: u64 = 16 << 20;

/// Grows the partition under `/` with `growpart` and then its file system with `xfs_growfs` or
/// `resize2fs`, by the file system type in the mount table. A root that is not on a partition
/// of a disk (overlay, tmpfs, LVM) or not xfs/ext has nothing to grow, and the detail says what
/// was found instead.
#[derive(Debug)]
pub(crate) struct GrowRoot {
    /// The mount point whose file system is grown: `/` on a node.
    mount_point: String,
}

impl Default for GrowRoot {
    fn default() -> Self {
        Self {
            mount_point: "/".to_owned(),
        }
    }
}

impl GrowRoot {
    /// Grows the file system mounted at `mount_point` instead: tests grow a loop device mounted
    /// in a scratch folder, never the machine's own root.
    #[cfg(test)]
    pub(crate) fn at(mount_point: impl Into<String>) -> Self {
        Self {
            mount_point: mount_point.into(),
        }
    }
}

/// A file system grow-root grows, and where it lives.
#[derive(Debug)]
struct Growable {
    mount: Mount,
    fs: FileSystem,
    /// The kernel name of the device holding the file system.
    device: String,
    partition: Option<PartitionOf>,
}

#[derive(Debug)]
struct PartitionOf {
    disk: String,
    number: u32,
}

/// What the mount table and sysfs say about the mount point.
enum Found {
    Growable(Growable),
    /// Nothing to grow; the detail says what is there.
    Nothing(Value),
}

/// Sizes at one moment, in bytes.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    disk: u64,
    partition: Option<u64>,
    filesystem: u64,
}

impl Sizes {
    /// Whether the file system reaches the end of its device, give or take what the tools
    /// cannot use.
    fn filesystem_fills_device(&self) -> bool {
        let device = self.partition.unwrap_or(self.disk);
        device.saturating_sub(self.filesystem) <= FILL_SLACK_BYTES
    }
}

impl GrowRoot {
    async fn find(&self, ctx: &StepContext) -> Result<Found, StepError> {
        ctx.activity(format!("finding the device of {}", self.mount_point));
        let path = ctx.root.path(MOUNTINFO);
        let text = std::fs::read_to_string(&path)
            .map_err(|err| StepError::io(format!("reading {}", path.display()), err))?;
        let mounts = mountinfo::parse(&text)
            .map_err(|err| StepError::Fatal(format!("{}: {err}", path.display())))?;
        let mount = mountinfo::mounted_at(&mounts, &self.mount_point)
            .ok_or_else(|| {
                StepError::Fatal(format!(
                    "{} lists nothing mounted at {}",
                    path.display(),
                    self.mount_point
                ))
            })?
            .clone();
        let nothing = |device: Option<&str>, reason: String| {
            Found::Nothing(json!({
                "mount_point": mount.mount_point,
                "fs_type": mount.fs_type,
                "source": mount.source,
                "device": device.map(|d| format!("/dev/{d}")),
                "nothing_to_grow": reason,
            }))
        };
        let (device, partition) = match sysfs::locate(&ctx.root, &mount)? {
            Placement::NotGrowable { name, reason } => return Ok(nothing(name.as_deref(), reason)),
            Placement::WholeDevice { name } => (name, None),
            Placement::Partition { name, disk, number } => {
                (name, Some(PartitionOf { disk, number }))
            }
        };
        let Some(fs) = FileSystem::of(&mount.fs_type) else {
            let reason = format!(
                "{} holds a {} file system on /dev/{device}; grow-root grows xfs and ext2/3/4 \
                 only, so the partition is left as it is",
                mount.mount_point, mount.fs_type
            );
            return Ok(nothing(Some(&device), reason));
        };
        Ok(Found::Growable(Growable {
            mount,
            fs,
            device,
            partition,
        }))
    }
}

impl Growable {
    /// Where the file system is mounted on this machine: the mount table under a scratch root
    /// speaks of the node's paths, and the node's `/` is the root's directory. (Device names
    /// come from sysfs and are the machine's own.)
    fn host_mount_point(&self, ctx: &StepContext) -> String {
        ctx.root.path(&self.mount.mount_point).display().to_string()
    }

    fn device_path(&self) -> String {
        format!("/dev/{}", self.device)
    }

    /// Fails, before anything changes, when the agent lacks a capability the tools need.
    fn ensure_capabilities(&self, ctx: &StepContext) -> Result<(), StepError> {
        let mut needed = Vec::new();
        if self.partition.is_some() {
            needed.push(capabilities::SYS_ADMIN);
        }
        needed.push(match self.fs {
            FileSystem::Xfs => capabilities::SYS_ADMIN,
            FileSystem::Ext => capabilities::SYS_RESOURCE,
        });
        let missing = capabilities::missing(&ctx.root, &needed);
        if missing.is_empty() {
            return Ok(());
        }
        Err(StepError::Fatal(format!(
            "growing the {} file system at {} needs {}, which the agent does not have; nothing \
             was changed (grant it in the service's CapabilityBoundingSet or turn grow-root off)",
            self.mount.fs_type,
            self.mount.mount_point,
            missing.join(" and ")
        )))
    }

    async fn sizes(&self, ctx: &StepContext) -> Result<Sizes, StepError> {
        let device = sysfs::size_bytes(&ctx.root, &self.device)?;
        let (disk, partition) = match &self.partition {
            Some(p) => (sysfs::size_bytes(&ctx.root, &p.disk)?, Some(device)),
            None => (device, None),
        };
        let filesystem = self
            .fs
            .size_bytes(ctx, &self.host_mount_point(ctx), &self.device_path())
            .await?;
        Ok(Sizes {
            disk,
            partition,
            filesystem,
        })
    }

    /// The step's detail: what was found, the sizes before and after, and what happened to the
    /// partition and the file system, in words.
    fn detail(&self, before: Sizes, after: Sizes, partition: &str, file_system: &str) -> Value {
        let change = |b: u64, a: u64| json!({ "before": b, "after": a });
        let mut detail = json!({
            "mount_point": self.mount.mount_point,
            "fs_type": self.mount.fs_type,
            "source": self.mount.source,
            "device": self.device_path(),
            "disk_bytes": change(before.disk, after.disk),
            "filesystem_bytes": change(before.filesystem, after.filesystem),
            "partition": partition,
            "file_system": file_system,
        });
        if let (Some(p), Some(b), Some(a)) = (&self.partition, before.partition, after.partition) {
            detail["disk"] = json!(format!("/dev/{}", p.disk));
            detail["partition_number"] = json!(p.number);
            detail["partition_bytes"] = change(b, a);
        }
        detail
    }

    fn no_partition(&self) -> String {
        format!(
            "none: the file system is on the whole device {}",
            self.device_path()
        )
    }
}

#[async_trait]
impl Step for GrowRoot {
    fn name(&self) -> &str {
        GROW_ROOT
    }

    fn depends_on(&self) -> &[&str] {
        &[]
    }

    fn plan(&self, _settings: &Settings) -> Vec<String> {
        vec![format!(
            "grow the partition under {} to the end of its disk (growpart) and its xfs or ext \
             file system to the end of the partition (xfs_growfs, resize2fs)",
            self.mount_point
        )]
    }

    async fn check(&self, ctx: &StepContext) -> Result<Check, StepError> {
        let target = match self.find(ctx).await? {
            Found::Nothing(detail) => return Ok(Check::Done(Some(detail))),
            Found::Growable(target) => target,
        };
        let partition = match &target.partition {
            Some(p) => {
                ctx.activity(format!(
                    "asking growpart about /dev/{} {}",
                    p.disk, p.number
                ));
                if partition::growpart(ctx, &p.disk, p.number, true).await? == Growth::Grows {
                    return Ok(Check::NotDone);
                }
                "already full".to_owned()
            }
            None => target.no_partition(),
        };
        let sizes = target.sizes(ctx).await?;
        if !sizes.filesystem_fills_device() {
            return Ok(Check::NotDone);
        }
        Ok(Check::Done(Some(target.detail(
            sizes,
            sizes,
            &partition,
            "already fills its device",
        ))))
    }

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        let target = match self.find(ctx).await? {
            Found::Nothing(detail) => return Ok(Outcome::Done(Some(detail))),
            Found::Growable(target) => target,
        };
        target.ensure_capabilities(ctx)?;
        let before = target.sizes(ctx).await?;
        let partition = match &target.partition {
            Some(p) => {
                ctx.activity(format!("growing partition {} of /dev/{}", p.number, p.disk));
                match partition::growpart(ctx, &p.disk, p.number, false).await? {
                    Growth::Grows => "grown".to_owned(),
                    Growth::AlreadyFull => "already full".to_owned(),
                }
            }
            None => target.no_partition(),
        };
        ctx.activity(format!(
            "growing the {} file system at {}",
            target.mount.fs_type, target.mount.mount_point
        ));
        target
            .fs
            .grow(ctx, &target.host_mount_point(ctx), &target.device_path())
            .await?;
        let after = target.sizes(ctx).await?;
        if !after.filesystem_fills_device() {
            return Err(StepError::Fatal(format!(
                "the {} file system at {} is {} bytes after growing, on a device of {} bytes",
                target.mount.fs_type,
                target.mount.mount_point,
                after.filesystem,
                after.partition.unwrap_or(after.disk)
            )));
        }
        let file_system = if after.filesystem > before.filesystem {
            "grown"
        } else {
            "already fills its device"
        };
        Ok(Outcome::Done(Some(target.detail(
            before,
            after,
            &partition,
            file_system,
        ))))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod loop_tests;
