//! The cluster file loader (`${VAR}` expansion, YAML, Ray's schema, rayefa's checks) on any
//! bytes, then every node type's rendered agent configuration through the agent's own loader.
//!
//! Properties: nothing panics; a refused file's message starts with the file's name; a file
//! that `rayefa validate` accepts never renders an agent configuration the agent refuses
//! (that would pass validation and fail every node at boot). The providers' own checks
//! (an EC2 `node_config`) live above the cluster file's crate and are not fuzzed here.

#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rayefa_agent::harness::fuzz::load_agent_config;
use rayefa_cluster::no_provider_checks;
use rayefa_cluster::render::{render_agent_config, to_toml};
use rayefa_wire::Role;

/// The name the fuzzed cluster file goes by in messages.
const CLUSTER_FILE_NAME: &str = "fuzz-cluster.yaml";

/// The head address workers are rendered with (the agent refuses a worker without one).
const HEAD_ADDRESS: &str = "127.0.0.1";

/// The fixed environment `${VAR}` references are filled in from: the seed guide's variables,
/// one set but empty, and values that cannot stand unquoted in YAML, so that the escaping of
/// every scalar style is exercised.
fn fuzz_environment() -> BTreeMap<String, String> {
    [
        ("CLUSTER_NAME", "ray-on-aws"),
        ("AWS_REGION", "ap-northeast-1"),
        ("X86_AMI_ID", "ami-0123456789abcdef0"),
        ("PRIV_SUBNET_ID", "subnet-0123456789abcdef0"),
        ("HEAD_SG_ID", "sg-0aaaaaaaaaaaaaaaa"),
        ("WORKER_SG_ID", "sg-0bbbbbbbbbbbbbbbb"),
        ("EMPTY", ""),
        ("NUMBER", "96"),
        ("COLON", "key: value # not a comment"),
        ("QUOTES", "it's \"quoted\" \\ back"),
        ("NEWLINE", "two\nlines"),
        ("FLOW", "[a, {b: c}]"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// What a cluster file that loaded turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadedCluster {
    /// `cluster_name`.
    name: String,
    /// The agent configuration each node type's nodes receive, as the TOML user data
    /// carries, by node type (the head type rendered as head, the others as workers).
    agent_configs: Vec<(String, String)>,
}

/// Loads `bytes` as a cluster file named [`CLUSTER_FILE_NAME`], `${VAR}`s filled in from
/// [`fuzz_environment`], the way `rayefa validate` does; a file that loads is then rendered
/// into every node type's agent configuration, the way `up` does. `Err` holds the message
/// the user would see. Bytes that are not UTF-8 are refused as reading the file refuses them.
fn load_cluster_file(bytes: &[u8]) -> Result<LoadedCluster, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("{CLUSTER_FILE_NAME}: {e}"))?;
    let cluster = rayefa_cluster::parse(
        Path::new(CLUSTER_FILE_NAME),
        text,
        &fuzz_environment(),
        &no_provider_checks,
    )
        .map_err(|e| e.to_string())?;
    let head = cluster.head_type().to_owned();
    let mut agent_configs = Vec::new();
    for name in cluster.node_type_names() {
        let (role, address) = if name == head {
            (Role::Head, None)
        } else {
            (Role::Worker, Some(HEAD_ADDRESS))
        };
        let config = render_agent_config(&cluster, name, role, address);
        let toml = to_toml(&config).map_err(|e| format!("rendering node type {name}: {e}"))?;
        agent_configs.push((name.to_owned(), toml));
    }
    Ok(LoadedCluster {
        name: cluster.name().to_owned(),
        agent_configs,
    })
}

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
