//! uv's binary kept in the cache directory that `pip_args` names (`--cache-dir`), beside the
//! wheels pip and uv keep there. Such a directory is the one a site shares between its nodes
//! (EFS, a cache volume, the fleet's bound host directory): the first node that installs uv
//! from its wheel leaves the binary there, and the others copy it (a fraction of a second)
//! instead of running pip against the index (seconds, and every time where the egress keeps
//! pip's HTTP cache from working).
//!
//! The binary sits at `<cache>/rayefa-uv/<arch>/uv` with its SHA-256 in `uv.sha256` beside it
//! (by the agent's architecture: x86_64 and Graviton node types may share one cache); both are
//! written to a temporary name and renamed, so a reader sees whole files. A binary that does
//! not match its sum (a writer between its two renames, a damaged file) is not used, and the
//! node installs uv from its wheel as if the cache were empty. Nothing here fails the step:
//! the cache only saves time. A binary that runs is used as it is, however old: removing the
//! folder makes the next node install the current uv and keep that one.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::steps::install_efa::verify::sha256_file;

/// The folder under the cache directory.
const DIR: &str = "rayefa-uv";
const BINARY: &str = "uv";
const SUM: &str = "uv.sha256";

/// The folder of this architecture's binary under `cache_dir`.
fn folder(cache_dir: &Path) -> PathBuf {
    cache_dir.join(DIR).join(std::env::consts::ARCH)
}

/// Where uv's binary is kept under `cache_dir`.
pub(super) fn binary_in(cache_dir: &Path) -> PathBuf {
    folder(cache_dir).join(BINARY)
}

/// Copies the shared binary to `to` when it is there and matches its sum. `Ok(false)`: no
/// usable binary in the cache.
pub(super) fn take(cache_dir: &Path, to: &Path) -> io::Result<bool> {
    let shared = binary_in(cache_dir);
    let Ok(expected) = std::fs::read_to_string(folder(cache_dir).join(SUM)) else {
        return Ok(false);
    };
    if !shared.is_file() || sha256_file(&shared)? != expected.trim() {
        return Ok(false);
    }
    let parent = to
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no folder", to.display())))?;
    std::fs::create_dir_all(parent)?;
    let partial = temporary(to);
    std::fs::copy(&shared, &partial)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    // The copy is checked too: the shared file may have been replaced while it was read.
    if sha256_file(&partial)? != expected.trim() {
        std::fs::remove_file(&partial)?;
        return Ok(false);
    }
    std::fs::rename(&partial, to)?;
    Ok(true)
}

/// Leaves `binary` (a uv that runs) in the cache for the other nodes.
pub(super) fn keep(binary: &Path, cache_dir: &Path) -> io::Result<()> {
    let dir = folder(cache_dir);
    std::fs::create_dir_all(&dir)?;
    let sum = sha256_file(binary)?;
    let shared = dir.join(BINARY);
    let partial = temporary(&shared);
    std::fs::copy(binary, &partial)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&partial, &shared)?;
    let sum_path = dir.join(SUM);
    let partial = temporary(&sum_path);
    std::fs::write(&partial, format!("{sum}\n"))?;
    std::fs::rename(&partial, &sum_path)
}

/// A name beside `path` that no other writer uses: nodes share the folder, and their process
/// ids may be equal.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.partial-{:016x}", fastrand::u64(..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_binary_is_taken_whole_and_a_damaged_one_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = dir.path().join("cache");
        let node = dir.path().join("node/uv/bin/uv");
        assert!(
            !take(&cache, &node).expect("empty cache"),
            "nothing kept yet"
        );

        let built = dir.path().join("built-uv");
        std::fs::write(&built, b"#!/bin/sh\necho uv 0.13.9\n").expect("binary");
        keep(&built, &cache).expect("kept");
        assert!(take(&cache, &node).expect("taken"));
        assert_eq!(
            std::fs::read(&node).expect("copy"),
            std::fs::read(&built).expect("built")
        );
        let mode = std::fs::metadata(&node)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // Only the two files: no partial file is left behind.
        let mut names: Vec<String> = std::fs::read_dir(folder(&cache))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["uv", "uv.sha256"]);

        // A binary that does not match its sum is left alone, and the node's copy too.
        std::fs::write(binary_in(&cache), b"truncated").expect("damage");
        let other = dir.path().join("other/uv");
        assert!(!take(&cache, &other).expect("checked"));
        assert!(!other.exists());
    }
}
