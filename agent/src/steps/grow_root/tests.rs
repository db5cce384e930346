//! grow-root over the fixture scenarios, with scripted tools.

use std::path::Path;
use std::sync::Arc;

use rayefa_wire::Role;

use super::*;
use crate::host::HostRoot;
use crate::host::scripted::ScriptedRunner;
use crate::steps::testing::{TestContext, context, settings};

fn fixture(name: &str) -> HostRoot {
    HostRoot::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/grow_root")
            .join(name),
    )
}

fn on(scenario: &str, runner: &Arc<ScriptedRunner>) -> TestContext {
    context(
        GROW_ROOT,
        fixture(scenario),
        runner.clone(),
        settings(Role::Head, ""),
    )
}

/// `xfs_growfs -n` geometry of a file system of `blocks` 4 KiB blocks.
fn xfs_geometry(blocks: u64) -> String {
    format!(
        "meta-data=/dev/nvme0n1p1         isize=512    agcount=4, agsize=523520 blks\n\
         data     =                       bsize=4096   blocks={blocks}, imaxpct=25\n\
         log      =internal log           bsize=4096   blocks=16384, version=2\n"
    )
}

/// `dumpe2fs -h` of a file system of `blocks` 4 KiB blocks.
fn ext_superblock(blocks: u64) -> String {
    format!(
        "dumpe2fs 1.47.0 (5-Feb-2023)\nBlock count:              {blocks}\nBlock size:               4096\n"
    )
}

/// nvme-xfs's root partition is 16752607 sectors; a file system filling it has this many
/// 4 KiB blocks.
const NVME_P1_BLOCKS: u64 = 16_752_607 * 512 / 4096;

#[tokio::test]
async fn a_partition_growpart_would_grow_is_not_done() {
    let runner = Arc::new(ScriptedRunner::new().answer(
        "growpart --dry-run /dev/nvme0n1 1",
        0,
        "CHANGE: partition=1 start=24576 old: size=16752607 end=16777183 new: size=209690591 end=209715167\n",
    ));
    let t = on("nvme-xfs", &runner);
    assert_eq!(
        GrowRoot::default().check(&t.ctx).await.expect("check"),
        Check::NotDone
    );
}

#[tokio::test]
async fn nvme_xfs_grows_the_partition_then_the_file_system_by_mount_point() {
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("xfs_growfs -n /", 0, &xfs_geometry(NVME_P1_BLOCKS))
            .answer("growpart /dev/nvme0n1 1", 0, "CHANGED: partition=1 start=24576 old: size=16752607 end=16777183 new: size=209690591 end=209715167\n")
            .answer("xfs_growfs /", 0, "data blocks changed from 2094075 to 26211323\n"),
    );
    let t = on("nvme-xfs", &runner);
    let Outcome::Done(Some(detail)) = GrowRoot::default().run(&t.ctx).await.expect("runs") else {
        panic!("no detail");
    };
    // The node's `/` is the fixture's folder: the file system tools act there, never on this
    // machine's own root.
    let mount_point = fixture("nvme-xfs").as_path().display().to_string();
    assert_eq!(
        runner.calls(),
        [
            format!("xfs_growfs -n {mount_point}"),
            "growpart /dev/nvme0n1 1".to_owned(),
            format!("xfs_growfs {mount_point}"),
            format!("xfs_growfs -n {mount_point}"),
        ]
    );
    assert_eq!(detail["device"], "/dev/nvme0n1p1");
    assert_eq!(detail["disk"], "/dev/nvme0n1");
    assert_eq!(detail["partition_number"], 1);
    assert_eq!(detail["partition"], "grown");
    assert_eq!(detail["fs_type"], "xfs");
    assert_eq!(detail["partition_bytes"]["before"], 16_752_607u64 * 512);
    assert_eq!(detail["disk_bytes"]["after"], 100u64 << 30);
}

#[tokio::test]
async fn xen_ext4_is_resized_by_its_partition_device() {
    let blocks = 16_775_135 * 512 / 4096;
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("dumpe2fs -h /dev/xvda1", 0, &ext_superblock(blocks))
            .answer("growpart /dev/xvda 1", 0, "CHANGED: partition=1 start=2048 old: size=16775135 end=16777182 new: size=62912479 end=62914526\n")
            .answer("resize2fs /dev/xvda1", 0, "The filesystem on /dev/xvda1 is now 7864059 (4k) blocks long.\n"),
    );
    let t = on("xvd-ext4", &runner);
    GrowRoot::default().run(&t.ctx).await.expect("runs");
    assert_eq!(
        runner.calls(),
        [
            "dumpe2fs -h /dev/xvda1",
            "growpart /dev/xvda 1",
            "resize2fs /dev/xvda1",
            "dumpe2fs -h /dev/xvda1"
        ]
    );
}

#[tokio::test]
async fn a_full_partition_and_file_system_are_already_done_with_their_sizes() {
    let partition_bytes: u64 = 16_564_191 * 512;
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer(
                "growpart --dry-run /dev/nvme0n1 1",
                1,
                "NOCHANGE: partition 1 is size 16564191. it cannot be grown\n",
            )
            .answer(
                "dumpe2fs -h /dev/nvme0n1p1",
                0,
                &ext_superblock(partition_bytes / 4096),
            ),
    );
    let t = on("dev-root", &runner);
    let Check::Done(Some(detail)) = GrowRoot::default().check(&t.ctx).await.expect("check") else {
        panic!("not done");
    };
    assert_eq!(detail["source"], "/dev/root");
    assert_eq!(detail["device"], "/dev/nvme0n1p1");
    assert_eq!(detail["partition"], "already full");
    assert_eq!(detail["file_system"], "already fills its device");
    assert_eq!(detail["partition_bytes"]["after"], partition_bytes);
    assert_eq!(
        detail["filesystem_bytes"]["after"],
        partition_bytes / 4096 * 4096
    );
}

#[tokio::test]
async fn a_file_system_smaller_than_its_full_partition_is_not_done() {
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer(
                "growpart --dry-run /dev/xvda 1",
                1,
                "NOCHANGE: partition 1 is size 20969439. it cannot be grown\n",
            )
            .answer("xfs_growfs -n /", 0, &xfs_geometry(1_000_000)),
    );
    let t = on("by-uuid", &runner);
    assert_eq!(
        GrowRoot::default().check(&t.ctx).await.expect("check"),
        Check::NotDone
    );
}

#[tokio::test]
async fn a_whole_disk_grows_only_its_file_system() {
    let disk_blocks = 209_715_200 * 512 / 4096;
    let small = Arc::new(ScriptedRunner::new().answer(
        "dumpe2fs -h /dev/vda",
        0,
        &ext_superblock(disk_blocks - 262_144),
    ));
    assert_eq!(
        GrowRoot::default()
            .check(&on("whole-disk", &small).ctx)
            .await
            .expect("check"),
        Check::NotDone
    );

    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("dumpe2fs -h /dev/vda", 0, &ext_superblock(disk_blocks))
            .answer(
                "resize2fs /dev/vda",
                0,
                "The filesystem is already 26214400 (4k) blocks long.  Nothing to do!\n",
            ),
    );
    let t = on("whole-disk", &runner);
    let Outcome::Done(Some(detail)) = GrowRoot::default().run(&t.ctx).await.expect("runs") else {
        panic!("no detail");
    };
    assert_eq!(
        runner.calls(),
        [
            "dumpe2fs -h /dev/vda",
            "resize2fs /dev/vda",
            "dumpe2fs -h /dev/vda"
        ]
    );
    assert_eq!(
        detail["partition"],
        "none: the file system is on the whole device /dev/vda"
    );
    assert_eq!(detail["file_system"], "already fills its device");
    assert!(detail.get("partition_bytes").is_none());
}

#[tokio::test]
async fn roots_that_are_not_grown_say_what_they_are_without_running_anything() {
    for (scenario, device, words) in [
        (
            "overlay",
            None,
            "/ is overlay from `overlay`, which is not a block device",
        ),
        (
            "lvm",
            Some("/dev/dm-0"),
            "device-mapper device dm-0 (vg0-root) over nvme0n1p3",
        ),
        (
            "btrfs",
            Some("/dev/nvme0n1p2"),
            "/ holds a btrfs file system on /dev/nvme0n1p2",
        ),
    ] {
        let runner = Arc::new(ScriptedRunner::new());
        let t = on(scenario, &runner);
        let Check::Done(Some(detail)) = GrowRoot::default().check(&t.ctx).await.expect("check")
        else {
            panic!("{scenario}: something to grow");
        };
        let reason = detail["nothing_to_grow"].as_str().expect("a reason");
        assert!(reason.contains(words), "{scenario}: {reason}");
        assert_eq!(detail["device"].as_str(), device, "{scenario}");
        let Outcome::Done(Some(again)) = GrowRoot::default().run(&t.ctx).await.expect("run") else {
            panic!("{scenario}: no detail");
        };
        assert_eq!(again, detail);
        assert!(
            runner.calls().is_empty(),
            "{scenario}: {:?}",
            runner.calls()
        );
    }
}

#[tokio::test]
async fn a_growpart_failure_fails_the_step_with_its_output() {
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("xfs_growfs -n /", 0, &xfs_geometry(NVME_P1_BLOCKS))
            .answer(
                "growpart /dev/nvme0n1 1",
                2,
                "FAILED: sfdisk --no-reread failed\n",
            ),
    );
    let t = on("nvme-xfs", &runner);
    let err = GrowRoot::default().run(&t.ctx).await.expect_err("fails");
    assert!(!err.is_retryable());
    assert_eq!(err.exit_code(), Some(2));
    assert_eq!(
        err.to_string(),
        "`growpart /dev/nvme0n1 1` exited 2: FAILED: sfdisk --no-reread failed"
    );
}

#[tokio::test]
async fn a_file_system_that_does_not_grow_is_an_error_not_a_success() {
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("xfs_growfs -n /", 0, &xfs_geometry(1_000_000))
            .answer(
                "growpart /dev/nvme0n1 1",
                1,
                "NOCHANGE: partition 1 is size 16752607. it cannot be grown\n",
            )
            .answer("xfs_growfs /", 0, ""),
    );
    let t = on("nvme-xfs", &runner);
    let err = GrowRoot::default()
        .run(&t.ctx)
        .await
        .expect_err("still small");
    assert_eq!(
        err.to_string(),
        format!(
            "the xfs file system at / is {} bytes after growing, on a device of {} bytes",
            1_000_000u64 * 4096,
            16_752_607u64 * 512
        )
    );
}

#[tokio::test]
async fn a_mount_point_nothing_is_mounted_at_is_fatal() {
    let runner = Arc::new(ScriptedRunner::new());
    let t = on("nvme-xfs", &runner);
    let err = GrowRoot::at("/data")
        .check(&t.ctx)
        .await
        .expect_err("no mount");
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .ends_with("proc/self/mountinfo lists nothing mounted at /data"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_capability_fails_before_the_partition_is_touched() {
    // xvd-ext4's sysfs and mount table, with an agent that lacks CAP_SYS_RESOURCE.
    let root = tempfile::tempdir().expect("root");
    let scenario = fixture("xvd-ext4");
    std::os::unix::fs::symlink(scenario.path("/sys"), root.path().join("sys")).expect("sys");
    std::fs::create_dir_all(root.path().join("proc/self")).expect("proc");
    std::fs::copy(
        scenario.path("/proc/self/mountinfo"),
        root.path().join("proc/self/mountinfo"),
    )
    .expect("mountinfo");
    std::fs::write(
        root.path().join("proc/self/status"),
        "Name:\trayefa-agent\nCapEff:\t000001fffeffffff\n",
    )
    .expect("status");
    let runner = Arc::new(ScriptedRunner::new());
    let t = context(
        GROW_ROOT,
        HostRoot::new(root.path()),
        runner.clone(),
        settings(Role::Head, ""),
    );
    let err = GrowRoot::default()
        .run(&t.ctx)
        .await
        .expect_err("lacks a capability");
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "growing the ext4 file system at / needs CAP_SYS_RESOURCE, which the agent does not have; \
         nothing was changed (grant it in the service's CapabilityBoundingSet or turn grow-root off)"
    );
    assert!(runner.calls().is_empty(), "{:?}", runner.calls());
}
