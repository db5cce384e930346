//! Entry points for the fuzz targets in `fuzz/`: the cluster file loader and the status
//! document decoder, each fed bytes exactly as they would arrive from a file or an agent.

use std::collections::BTreeMap;
use std::path::Path;

use rayefa_wire::Role;

use crate::cluster;
use crate::render::{render_agent_config, to_toml};
use crate::wait::client::decode_status;

/// The name the fuzzed cluster file goes by in messages.
pub const CLUSTER_FILE_NAME: &str = "fuzz-cluster.yaml";

/// The head address workers are rendered with (the agent refuses a worker without one).
pub const HEAD_ADDRESS: &str = "127.0.0.1";

/// The fixed environment `${VAR}` references are filled in from: the seed guide's variables,
/// one set but empty, and values that cannot stand unquoted in YAML, so that the escaping of
/// every scalar style is exercised.
pub fn fuzz_environment() -> BTreeMap<String, String> {
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
pub struct LoadedCluster {
    /// `cluster_name`.
    pub name: String,
    /// The agent configuration each node type's nodes receive, as the TOML user data
    /// carries, by node type (the head type rendered as head, the others as workers).
    pub agent_configs: Vec<(String, String)>,
}

/// Loads `bytes` as a cluster file named [`CLUSTER_FILE_NAME`], `${VAR}`s filled in from
/// [`fuzz_environment`], the way `rayefa validate` does; a file that loads is then rendered
/// into every node type's agent configuration, the way `up` does. `Err` holds the message
/// the user would see. Bytes that are not UTF-8 are refused as reading the file refuses them.
pub fn load_cluster_file(bytes: &[u8]) -> Result<LoadedCluster, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("{CLUSTER_FILE_NAME}: {e}"))?;
    let cluster = cluster::parse(Path::new(CLUSTER_FILE_NAME), text, &fuzz_environment())
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

/// Decodes `body` as an agent's `/v1/status` answer with the function the poller uses
/// (size limit included): `Ok` holds the node's overall state as the document spells it,
/// `Err` the poll error's message.
pub fn decode_status_body(body: &[u8]) -> Result<String, String> {
    decode_status(body)
        .map(|document| format!("{:?}", document.state))
        .map_err(|e| e.to_string())
}

/// The largest status body the poller accepts.
pub const MAX_STATUS_BYTES: usize = crate::wait::client::MAX_STATUS_BYTES;
