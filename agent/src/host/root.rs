use std::path::{Component, Path, PathBuf};

/// The directory that stands for `/`: `/` on a node, a scratch folder in a test or in the
/// `local` provider. Every host path the agent touches goes through [`HostRoot::path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRoot(PathBuf);

impl HostRoot {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// The real machine's root.
    #[cfg(test)]
    pub(crate) fn system() -> Self {
        Self(PathBuf::from("/"))
    }

    pub(crate) fn as_path(&self) -> &Path {
        &self.0
    }

    /// Where the host path `host_path` (absolute, as on a node) lives under this root.
    /// `..` components are dropped so that a configured path cannot leave the root.
    pub(crate) fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let mut joined = self.0.clone();
        for component in host_path.as_ref().components() {
            if let Component::Normal(part) = component {
                joined.push(part);
            }
        }
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_land_under_the_root() {
        let root = HostRoot::new("/tmp/scratch");
        assert_eq!(
            root.path("/proc/self/mountinfo"),
            PathBuf::from("/tmp/scratch/proc/self/mountinfo")
        );
        assert_eq!(root.path("/../etc/x"), PathBuf::from("/tmp/scratch/etc/x"));
        assert_eq!(
            HostRoot::system().path("/etc/os-release"),
            PathBuf::from("/etc/os-release")
        );
    }
}
