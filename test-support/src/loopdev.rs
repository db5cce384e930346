//! A real disk for the agent's end-to-end tests: an image file with a DOS label and one
//! partition, attached to a loop device, formatted and mounted where the test wants it, and
//! taken apart again on drop whatever the test did.
//!
//! Needs root, `sfdisk`, `losetup`, `partx`, `mkfs.xfs`, `mount`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One mebibyte, in bytes.
pub const MIB: u64 = 1 << 20;

/// sysfs counts block device sizes in 512-byte sectors whatever the device's own sector size.
const SYSFS_SECTOR: u64 = 512;

/// Runs a command of the test's own, panicking with its output when it fails; its stdout,
/// trimmed.
pub fn sh(program: &str, args: &[&str]) -> String {
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

/// A partitioned, formatted and mounted disk image on a loop device.
#[derive(Debug)]
pub struct LoopDisk {
    image: PathBuf,
    /// `/dev/loopN`, once attached.
    device: Option<String>,
    mount_point: PathBuf,
    mounted: bool,
}

impl LoopDisk {
    /// Makes `image` (`size` bytes, sparse) with one partition filling it, attaches it, formats
    /// the partition with XFS and mounts it on `mount_point`, which must exist.
    pub fn xfs(image: &Path, size: u64, mount_point: &Path) -> Self {
        Self::formatted(image, size, mount_point, &["mkfs.xfs", "-q"])
    }

    /// As [`LoopDisk::xfs`], with the partition formatted by `mkfs` and its arguments (the
    /// partition's path is appended), e.g. `["mkfs.ext4", "-q", "-F"]`.
    pub fn formatted(image: &Path, size: u64, mount_point: &Path, mkfs: &[&str]) -> Self {
        let mut disk = Self {
            image: image.to_owned(),
            device: None,
            mount_point: mount_point.to_owned(),
            mounted: false,
        };
        disk.set_size(size);
        let mut sfdisk = Command::new("sfdisk")
            .arg("-q")
            .arg(&disk.image)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sfdisk");
        sfdisk
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"label: dos\n,,83\n")
            .expect("partition table");
        assert!(sfdisk.wait().expect("sfdisk").success(), "sfdisk failed");

        let image = disk.image.display().to_string();
        disk.device = Some(sh("losetup", &["-fP", "--show", &image]));
        // Without udev the kernel may not have read the partition table yet; partx adds the
        // partition and devtmpfs makes its node.
        if !disk.sysfs().exists() {
            sh("partx", &["-a", disk.device()]);
        }
        let partition = disk.partition();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Path::new(&partition).exists() {
            assert!(Instant::now() < deadline, "{partition} did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (program, args) = mkfs.split_first().expect("a mkfs program");
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

    /// Where the partition is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// `/dev/loopN`.
    pub fn device(&self) -> &str {
        self.device.as_deref().expect("attached")
    }

    /// The partition's kernel name, `loopNp1`.
    pub fn partition_name(&self) -> String {
        format!("{}p1", self.device().trim_start_matches("/dev/"))
    }

    /// `/dev/loopNp1`.
    pub fn partition(&self) -> String {
        format!("/dev/{}", self.partition_name())
    }

    /// The partition's device number as the kernel gives it, `MAJOR:MINOR`.
    pub fn partition_number(&self) -> String {
        std::fs::read_to_string(self.sysfs().join("dev"))
            .expect("partition dev")
            .trim()
            .to_owned()
    }

    /// The partition's size in bytes, as the kernel knows it now.
    pub fn partition_bytes(&self) -> u64 {
        sectors(&self.sysfs().join("size")) * SYSFS_SECTOR
    }

    /// The whole device's size in bytes, as the kernel knows it now.
    pub fn disk_bytes(&self) -> u64 {
        let name = self.device().trim_start_matches("/dev/");
        sectors(&Path::new("/sys/class/block").join(name).join("size")) * SYSFS_SECTOR
    }

    /// Enlarges the image to `size` bytes and tells the loop device, as an EBS volume
    /// modification tells the instance: the partition and the file system stay as they were.
    pub fn enlarge(&self, size: u64) {
        self.set_size(size);
        sh("losetup", &["-c", self.device()]);
    }

    fn sysfs(&self) -> PathBuf {
        Path::new("/sys/class/block").join(self.partition_name())
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
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.mounted {
            let mount_point = self.mount_point.display().to_string();
            // Processes the test stopped may take a moment to let go of their files.
            let deadline = Instant::now() + Duration::from_secs(10);
            let unmounted = loop {
                let ok = Command::new("umount")
                    .arg(&mount_point)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok || Instant::now() > deadline {
                    break ok;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            if !unmounted {
                eprintln!("{mount_point} stayed busy; detaching it lazily");
                let _ = Command::new("umount").args(["-l", &mount_point]).status();
            }
        }
        if let Some(device) = &self.device {
            // A device still held by a lazily detached mount is freed by the kernel when the
            // last user lets go (losetup -d then only marks it for auto-clear).
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A whole number in a sysfs file.
fn sectors(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The size in bytes of the data section of the XFS file system mounted at `mount_point`, as
/// `xfs_info` prints it (`data = bsize=4096 blocks=N`).
pub fn xfs_data_bytes(mount_point: &Path) -> u64 {
    let geometry = sh("xfs_info", &[&mount_point.display().to_string()]);
    let line = geometry
        .lines()
        .find(|l| l.starts_with("data "))
        .unwrap_or_else(|| panic!("no data line in xfs_info:\n{geometry}"));
    let value = |key: &str| -> u64 {
        line.split(|c: char| c.is_whitespace() || c == ',')
            .find_map(|token| token.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in `{line}`"))
    };
    value("bsize=") * value("blocks=")
}

/// The size in bytes `df` gives the file system mounted at `mount_point`.
pub fn df_bytes(mount_point: &Path) -> u64 {
    let out = sh(
        "df",
        &["-B1", "--output=size", &mount_point.display().to_string()],
    );
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("df printed {out:?}"))
}
