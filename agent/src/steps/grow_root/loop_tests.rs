//! grow-root for real: partitioned disk images on loop devices, enlarged while mounted, grown by
//! the real growpart, xfs_growfs and resize2fs through the system runner. The machine's own
//! `/proc` and `/sys` are read; the step is pointed at the loop device's mount point.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayefa_wire::Role;

use super::*;
use crate::host::{HostRoot, SystemRunner};
use crate::steps::testing::{context, settings};

const MIB: u64 = 1 << 20;

/// Runs a setup command of the test, panicking with its output when it fails.
fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A disk image with one partition, attached to a loop device and mounted; detached and
/// removed on drop, whatever the test did.
struct LoopDisk {
    _dir: tempfile::TempDir,
    image: PathBuf,
    /// `/dev/loopN`, once attached.
    device: Option<String>,
    mount_point: PathBuf,
    mounted: bool,
}

impl LoopDisk {
    /// An image of `size` bytes with a DOS label and one partition filling it, made with
    /// `mkfs` (`["mkfs.xfs", "-q"]`) and mounted.
    fn new(size: u64, mkfs: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let image = dir.path().join("disk.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        let mount_point = std::fs::canonicalize(&mount_point).expect("canonical");
        let mut disk = Self {
            _dir: dir,
            image,
            device: None,
            mount_point,
            mounted: false,
        };
        disk.set_size(size);
        let mut sfdisk = Command::new("sfdisk")
            .args(["-q"])
            .arg(&disk.image)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sfdisk");
        sfdisk
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"label: dos\n,,83\n")
            .expect("partition table");
        assert!(sfdisk.wait().expect("sfdisk").success());

        let image = disk.image.display().to_string();
        disk.device = Some(sh("losetup", &["-fP", "--show", &image]));
        let partition = disk.partition();
        // Without udev the partition may not be known to the kernel yet; partx adds it and
        // devtmpfs makes its node.
        if !Path::new("/sys/class/block")
            .join(disk.partition_name())
            .exists()
        {
            sh("partx", &["-a", disk.device()]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Path::new(&partition).exists() {
            assert!(Instant::now() < deadline, "{partition} did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (program, args) = mkfs.split_first().expect("mkfs");
        let mut args = args.to_vec();
        args.push(&partition);
        sh(program, &args);
        sh(
            "mount",
            &[&partition, &disk.mount_point.display().to_string()],
        );
        disk.mounted = true;
        disk
    }

    fn device(&self) -> &str {
        self.device.as_deref().expect("attached")
    }

    fn partition_name(&self) -> String {
        format!("{}p1", self.device().trim_start_matches("/dev/"))
    }

    fn partition(&self) -> String {
        format!("/dev/{}", self.partition_name())
    }

    fn set_size(&self, size: u64) {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.image)
            .and_then(|f| f.set_len(size))
            .expect("image size");
    }

    /// Enlarges the image and tells the loop device, as an EBS volume modification would.
    fn enlarge(&self, size: u64) {
        self.set_size(size);
        sh("losetup", &["-c", self.device()]);
    }

    fn step(&self) -> GrowRoot {
        GrowRoot::at(self.mount_point.display().to_string())
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let mount_point = self.mount_point.display().to_string();
        if self.mounted {
            let _ = Command::new("umount").arg(&mount_point).status();
        }
        if let Some(device) = &self.device {
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
        // `_dir`, holding the image, is removed after this, once the device has let go of it.
    }
}

fn system_context() -> crate::steps::testing::TestContext {
    context(
        GROW_ROOT,
        HostRoot::system(),
        Arc::new(SystemRunner::default()),
        settings(Role::Head, ""),
    )
}

fn bytes(detail: &Value, key: &str, when: &str) -> u64 {
    detail[key][when]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}.{when} in {detail}"))
}

/// Whether this process may resize a mounted ext4 file system. Containers often drop
/// CAP_SYS_RESOURCE (this build machine does); a node's agent runs with it.
fn may_resize_ext4_online() -> bool {
    capabilities::missing(&HostRoot::system(), &[capabilities::SYS_RESOURCE]).is_empty()
}

/// Enlarges a 400 MiB disk made with `mkfs` to 700 MiB, grows it, and checks it again.
async fn grows_then_is_done(disk: &LoopDisk, fs_type: &str) {
    disk.enlarge(700 * MIB);
    let step = disk.step();
    let t = system_context();

    assert_eq!(step.check(&t.ctx).await.expect("check"), Check::NotDone);
    let Outcome::Done(Some(detail)) = step.run(&t.ctx).await.expect("grows") else {
        panic!("no detail");
    };
    assert_eq!(detail["fs_type"], fs_type);
    assert_eq!(detail["device"], disk.partition().as_str());
    assert_eq!(detail["disk"], disk.device());
    assert_eq!(detail["partition"], "grown");
    assert_eq!(detail["file_system"], "grown");
    assert_eq!(bytes(&detail, "disk_bytes", "after"), 700 * MIB);
    assert!(bytes(&detail, "partition_bytes", "before") < 400 * MIB);
    let partition_after = bytes(&detail, "partition_bytes", "after");
    assert!(partition_after > 690 * MIB, "{detail}");
    let fs_after = bytes(&detail, "filesystem_bytes", "after");
    assert!(
        bytes(&detail, "filesystem_bytes", "before") < 400 * MIB,
        "{detail}"
    );
    assert!(
        fs_after <= partition_after && partition_after - fs_after < 16 * MIB,
        "{detail}"
    );

    let Check::Done(Some(again)) = step.check(&t.ctx).await.expect("check") else {
        panic!("a second run has work to do");
    };
    assert_eq!(again["partition"], "already full");
    assert_eq!(bytes(&again, "filesystem_bytes", "after"), fs_after);
}

#[tokio::test]
#[ignore = "needs root and loop devices; run by tests/run"]
async fn xfs_on_a_loop_partition_grows_and_then_is_done() {
    let disk = LoopDisk::new(400 * MIB, &["mkfs.xfs", "-q"]);
    grows_then_is_done(&disk, "xfs").await;
}

#[tokio::test]
#[ignore = "needs root and loop devices; run by tests/run"]
async fn ext4_on_a_loop_partition_grows_and_then_is_done() {
    let disk = LoopDisk::new(400 * MIB, &["mkfs.ext4", "-q", "-F"]);
    if may_resize_ext4_online() {
        grows_then_is_done(&disk, "ext4").await;
        return;
    }
    // Without CAP_SYS_RESOURCE the kernel would refuse resize2fs after growpart had already
    // grown the partition: the step must refuse first and leave the disk as it was.
    disk.enlarge(700 * MIB);
    let step = disk.step();
    let t = system_context();
    assert_eq!(step.check(&t.ctx).await.expect("check"), Check::NotDone);
    let err = step
        .run(&t.ctx)
        .await
        .expect_err("cannot resize ext4 online here");
    assert!(err.to_string().contains("needs CAP_SYS_RESOURCE"), "{err}");
    let partition_sectors = std::fs::read_to_string(
        Path::new("/sys/class/block")
            .join(disk.partition_name())
            .join("size"),
    )
    .expect("size");
    assert!(partition_sectors.trim().parse::<u64>().expect("sectors") * 512 < 400 * MIB);
    assert_eq!(
        step.check(&t.ctx).await.expect("check"),
        Check::NotDone,
        "still to do"
    );
}

#[tokio::test]
#[ignore = "needs root and loop devices; run by tests/run"]
async fn a_file_system_smaller_than_its_full_partition_grows_alone() {
    // The partition fills the image but the file system was made for 320 MiB of it.
    let disk = LoopDisk::new(500 * MIB, &["mkfs.xfs", "-q", "-d", "size=320m"]);
    let step = disk.step();
    let t = system_context();

    assert_eq!(step.check(&t.ctx).await.expect("check"), Check::NotDone);
    let Outcome::Done(Some(detail)) = step.run(&t.ctx).await.expect("grows") else {
        panic!("no detail");
    };
    assert_eq!(detail["partition"], "already full", "{detail}");
    assert_eq!(detail["file_system"], "grown", "{detail}");
    assert_eq!(bytes(&detail, "filesystem_bytes", "before"), 320 * MIB);
    assert!(
        bytes(&detail, "filesystem_bytes", "after") > 490 * MIB,
        "{detail}"
    );
    assert!(matches!(
        step.check(&t.ctx).await.expect("check"),
        Check::Done(_)
    ));
}
