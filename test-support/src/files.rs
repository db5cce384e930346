//! Small file helpers the suites need around the binaries they run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `contents` to `path` and makes it executable (mode 755): a script a test runs or
/// puts on `PATH` as a stand-in for a real program.
pub fn write_executable(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    set_mode(path, 0o755);
}

/// Sets the permission bits of `path` to `mode`.
pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Packs `top`, a folder in `parent`, into the gzip-compressed tarball `tarball` with tar(1),
/// every entry owned by root as in a vendor's release.
pub fn tar_gz(parent: &Path, top: &str, tarball: &Path) {
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(parent)
        .args(["--owner=0", "--group=0", "-czf"])
        .arg(tarball)
        .arg(top)
        .status()
        .expect("running tar");
    assert!(status.success(), "tar failed: {status}");
}
