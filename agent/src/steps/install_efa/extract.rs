//! Unpacking the installer tarball into a fresh directory: no entry may land outside it (an
//! absolute path, `..`, a symbolic or hard link pointing out), and a failure leaves nothing
//! half-unpacked behind.

use std::fs::File;
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tar::EntryType;

/// Group and world write bits are dropped from what the archive says.
const MODE_MASK: u32 = 0o022;

/// Why an archive was not unpacked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExtractError {
    #[error("unsafe archive: entry `{entry}` has an absolute path")]
    AbsolutePath { entry: String },
    #[error("unsafe archive: entry `{entry}` leaves the target directory with `..`")]
    ParentDir { entry: String },
    #[error("unsafe archive: entry `{entry}` links to `{target}`, outside the target directory")]
    LinkEscapes { entry: String, target: String },
    #[error("unsafe archive: entry `{entry}` is a {kind}, which an installer has no use for")]
    Unsupported { entry: String, kind: String },
    #[error("damaged archive: {0}")]
    Damaged(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl ExtractError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        ExtractError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// What was unpacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extracted {
    pub(crate) files: u64,
    pub(crate) directories: u64,
    pub(crate) links: u64,
    pub(crate) bytes: u64,
}

/// Unpacks the gzip-compressed tarball at `tarball` so that its entries are under `dest`.
/// The work happens in a sibling staging directory that replaces `dest` only when every entry
/// is unpacked and checked; on failure the staging directory is removed and `dest` is
/// untouched.
pub(crate) fn extract_fresh(tarball: &Path, dest: &Path) -> Result<Extracted, ExtractError> {
    let parent = dest.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| ExtractError::io(parent, e))?;
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(dest.file_name().unwrap_or_default());
    staging_name.push(".partial");
    let staging = parent.join(staging_name);
    remove_dir_if_present(&staging)?;
    std::fs::create_dir(&staging).map_err(|e| ExtractError::io(&staging, e))?;

    let unpacked = unpack(tarball, &staging).and_then(|extracted| {
        remove_dir_if_present(dest)?;
        std::fs::rename(&staging, dest).map_err(|e| ExtractError::io(dest, e))?;
        Ok(extracted)
    });
    if unpacked.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_dir_all(&staging);
    }
    unpacked
}

fn remove_dir_if_present(dir: &Path) -> Result<(), ExtractError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ExtractError::io(dir, e)),
    }
}

fn unpack(tarball: &Path, target: &Path) -> Result<Extracted, ExtractError> {
    let file = File::open(tarball).map_err(|e| ExtractError::io(tarball, e))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(false);
    archive.set_mask(MODE_MASK);
    let canonical_target = target
        .canonicalize()
        .map_err(|e| ExtractError::io(target, e))?;

    let mut extracted = Extracted::default();
    let mut symlinks = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| ExtractError::Damaged(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ExtractError::Damaged(e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| ExtractError::Damaged(e.to_string()))?
            .into_owned();
        let shown = raw.display().to_string();
        let Some(relative) = contained(&raw).map_err(|kind| kind.error(&shown))? else {
            continue;
        };
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                extracted.files += 1;
                extracted.bytes += entry.size();
            }
            EntryType::Directory => extracted.directories += 1,
            EntryType::Symlink => {
                let link = link_target(&mut entry, &shown)?;
                let dir = relative.parent().unwrap_or(Path::new(""));
                if !link_stays_inside(dir, &link) {
                    return Err(ExtractError::LinkEscapes {
                        entry: shown,
                        target: link.display().to_string(),
                    });
                }
                symlinks.push((relative.clone(), link));
                extracted.links += 1;
            }
            EntryType::Link => {
                let link = link_target(&mut entry, &shown)?;
                let escapes = || ExtractError::LinkEscapes {
                    entry: shown.clone(),
                    target: link.display().to_string(),
                };
                // A hard link names its target from the archive's top, and must reach a
                // file unpacked already, without passing through a link that leads out.
                let inside = contained(&link)
                    .map_err(|_| escapes())?
                    .ok_or_else(escapes)?;
                let resolved = target.join(&inside).canonicalize().map_err(|_| escapes())?;
                if !resolved.starts_with(&canonical_target) {
                    return Err(escapes());
                }
                extracted.links += 1;
            }
            // Metadata for the entries that follow, handled by the reader.
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            other => {
                return Err(ExtractError::Unsupported {
                    entry: shown,
                    kind: describe(other),
                });
            }
        }
        let unpacked = entry.unpack_in(target).map_err(|e| ExtractError::Io {
            path: target.join(&relative).display().to_string(),
            source: e,
        })?;
        if !unpacked {
            return Err(ExtractError::ParentDir { entry: shown });
        }
    }

    // Each link was checked alone; a chain of them (`a -> .`, `b -> a/..`) can still lead
    // out, which only resolving them on disk shows.
    for (relative, link) in symlinks {
        let path = target.join(&relative);
        let escapes = || ExtractError::LinkEscapes {
            entry: relative.display().to_string(),
            target: link.display().to_string(),
        };
        match path.canonicalize() {
            Ok(resolved) if resolved.starts_with(&canonical_target) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = path
                    .parent()
                    .and_then(|p| p.canonicalize().ok())
                    .ok_or_else(escapes)?;
                let dir = parent
                    .strip_prefix(&canonical_target)
                    .map_err(|_| escapes())?;
                if !link_stays_inside(dir, &link) {
                    return Err(escapes());
                }
            }
            _ => return Err(escapes()),
        }
    }
    Ok(extracted)
}

/// How an entry's own path can be unsafe.
enum Unsafe {
    Absolute,
    Parent,
}

impl Unsafe {
    fn error(self, entry: &str) -> ExtractError {
        let entry = entry.to_owned();
        match self {
            Unsafe::Absolute => ExtractError::AbsolutePath { entry },
            Unsafe::Parent => ExtractError::ParentDir { entry },
        }
    }
}

/// The path relative to the target: `None` for the archive's top itself (`./`).
fn contained(path: &Path) -> Result<Option<PathBuf>, Unsafe> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(Unsafe::Absolute),
            Component::ParentDir => return Err(Unsafe::Parent),
            Component::CurDir => {}
            Component::Normal(part) => relative.push(part),
        }
    }
    Ok((!relative.as_os_str().is_empty()).then_some(relative))
}

/// Whether a symbolic link in directory `dir` (relative to the target) whose contents are
/// `target` points inside the target, reading `..` as the kernel would if no component on
/// the way were itself a link.
fn link_stays_inside(dir: &Path, target: &Path) -> bool {
    let mut depth: Vec<&std::ffi::OsStr> = dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect();
    for component in target.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return false,
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::Normal(part) => depth.push(part),
        }
    }
    true
}

fn link_target<R: std::io::Read>(
    entry: &mut tar::Entry<'_, R>,
    shown: &str,
) -> Result<PathBuf, ExtractError> {
    entry
        .link_name()
        .map_err(|e| ExtractError::Damaged(e.to_string()))?
        .map(std::borrow::Cow::into_owned)
        .ok_or_else(|| ExtractError::Damaged(format!("link `{shown}` has no target")))
}

fn describe(kind: EntryType) -> String {
    match kind {
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "named pipe".to_owned(),
        EntryType::GNUSparse => "sparse file".to_owned(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

#[cfg(test)]
mod tests;
