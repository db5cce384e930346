//! grow-root for real: partitioned disk images on loop devices, enlarged while mounted, grown by
//! the real growpart, xfs_growfs and resize2fs through the system runner. The machine's own
//! `/proc` and `/sys` are read; the step is pointed at the loop device's mount point.

use std::path::Path;
use std::sync::Arc;

use rayefa_test_support::loopdev::{LoopDisk, MIB};
use rayefa_wire::Role;

use super::*;
use crate::host::{HostRoot, SystemRunner};
use crate::steps::testing::{context, settings};

/// A disk of the test's own, in a scratch folder removed after the disk is taken apart.
struct TestDisk {
    disk: LoopDisk,
    _dir: tempfile::TempDir,
}

impl TestDisk {
    fn new(size: u64, mkfs: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        let mount_point = std::fs::canonicalize(&mount_point).expect("canonical");
        let disk = LoopDisk::formatted(&dir.path().join("disk.img"), size, &mount_point, mkfs);
        Self { disk, _dir: dir }
    }

    fn step(&self) -> GrowRoot {
        GrowRoot::at(self.disk.mount_point().display().to_string())
    }
}

impl std::ops::Deref for TestDisk {
    type Target = LoopDisk;

    fn deref(&self) -> &LoopDisk {
        &self.disk
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
async fn grows_then_is_done(disk: &TestDisk, fs_type: &str) {
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
    let disk = TestDisk::new(400 * MIB, &["mkfs.xfs", "-q"]);
    grows_then_is_done(&disk, "xfs").await;
}

#[tokio::test]
#[ignore = "needs root and loop devices; run by tests/run"]
async fn ext4_on_a_loop_partition_grows_and_then_is_done() {
    let disk = TestDisk::new(400 * MIB, &["mkfs.ext4", "-q", "-F"]);
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
    let disk = TestDisk::new(500 * MIB, &["mkfs.xfs", "-q", "-d", "size=320m"]);
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
