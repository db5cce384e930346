//! Entry points for the fuzz targets in `fuzz/`: the configuration loader and the EFA
//! installer's manifest parser, each reading real files as the agent does.

use std::path::Path;

use crate::config;
use crate::host::HostRoot;
use crate::steps::install_efa::manifest::Manifest;

/// The main configuration file's name inside the scratch directory; its drop-in directory is
/// `agent.d` beside it.
pub const MAIN_FILE: &str = "agent.toml";

/// The drop-in's name inside `agent.d`.
pub const DROP_IN_FILE: &str = "50-fuzz.toml";

/// Writes `main` (and `drop_in`, if given) into `dir` as a main configuration file and one
/// drop-in, then loads and validates them as `rayefa-agent run` does. `Ok` holds the node's
/// cluster name; `Err` the message the agent would print before exiting 2. A drop-in left
/// by an earlier call is removed when `drop_in` is `None`.
pub fn load_agent_config(
    dir: &Path,
    main: &[u8],
    drop_in: Option<&[u8]>,
) -> std::io::Result<Result<String, String>> {
    let main_path = dir.join(MAIN_FILE);
    std::fs::write(&main_path, main)?;
    let drop_in_dir = dir.join("agent.d");
    let drop_in_path = drop_in_dir.join(DROP_IN_FILE);
    match drop_in {
        Some(bytes) => {
            std::fs::create_dir_all(&drop_in_dir)?;
            std::fs::write(&drop_in_path, bytes)?;
        }
        None => match std::fs::remove_file(&drop_in_path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        },
    }
    Ok(config::load(&HostRoot::new(dir), Some(&main_path))
        .map(|(settings, _files)| settings.node.cluster_name)
        .map_err(|e| e.to_string()))
}

/// What a manifest that parsed says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSummary {
    /// The installer version.
    pub version: String,
    /// Whether debug packages were installed, when the manifest says.
    pub debug_packages: Option<bool>,
    /// How many packages it lists.
    pub packages: usize,
}

/// Reads the manifest file at `path` with the install-efa step's reader (size limit, lossy
/// UTF-8 and all): `Ok(None)` when there is no file, `Err` the message the step would record.
pub fn read_efa_manifest(path: &Path) -> Result<Option<ManifestSummary>, String> {
    Manifest::read(path)
        .map(|found| {
            found.map(|manifest| ManifestSummary {
                version: manifest.version,
                debug_packages: manifest.debug_packages,
                packages: manifest.packages.len(),
            })
        })
        .map_err(|e| e.to_string())
}
