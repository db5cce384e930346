//! The cluster file loader (`${VAR}` expansion, YAML, Ray's schema, rayefa's checks) on any
//! bytes, then every node type's rendered agent configuration through the agent's own loader.
//!
//! Properties: nothing panics; a refused file's message starts with the file's name; a file
//! that `rayefa validate` accepts never renders an agent configuration the agent refuses
//! (that would pass validation and fail every node at boot).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rayefa_agent::harness::fuzz::load_agent_config;
use rayefa_orchestrator::harness::fuzz::{CLUSTER_FILE_NAME, load_cluster_file};

/// Where rendered agent configurations are written for the agent's loader; left for the
/// caller's TMPDIR to clean up (libFuzzer exits without running destructors).
static SCRATCH: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    tempfile::Builder::new()
        .prefix("rayefa-fuzz-cluster-")
        .tempdir()
        .expect("scratch directory")
});

fuzz_target!(|data: &[u8]| {
    match load_cluster_file(data) {
        Err(message) => assert!(
            message.starts_with(CLUSTER_FILE_NAME),
            "a cluster file error does not name the file: {message}"
        ),
        Ok(cluster) => {
            for (node_type, toml) in &cluster.agent_configs {
                let loaded = load_agent_config(SCRATCH.path(), toml.as_bytes(), None)
                    .expect("scratch directory writable");
                if let Err(message) = loaded {
                    panic!(
                        "cluster {} is valid, but the agent refuses node type {node_type}'s \
                         configuration: {message}\n--- rendered ---\n{toml}",
                        cluster.name
                    );
                }
            }
        }
    }
});
