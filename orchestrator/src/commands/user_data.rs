//! `rayefa user-data FILE --node-type T`: the agent configuration a node of type T receives.

use rayefa_wire::Role;

use crate::cli::UserDataArgs;
use crate::cluster;
use crate::exit::{Error, ExitCode};
use crate::render::{render_agent_config, to_toml};
use crate::view::Output;

/// Stands in for the head's address in a worker's configuration: it is only known once the
/// head runs.
pub(crate) const HEAD_ADDRESS_PLACEHOLDER: &str = "HEAD_PRIVATE_IP";

/// Runs `user-data`.
pub(crate) fn run(args: &UserDataArgs, output: Output) -> Result<ExitCode, Error> {
    let cluster = cluster::load(&args.cluster.file)?;
    output.findings(&cluster);
    if cluster.node_type(&args.node_type).is_none() {
        return Err(Error::Usage(format!(
            "{}: node type `{}` is not in available_node_types (which has {})",
            cluster.display_path(),
            args.node_type,
            cluster.node_type_names().join(", ")
        )));
    }
    // On EC2 a node receives a user-data script that carries this configuration.
    if cluster.provider_type() == "aws" {
        return crate::aws::print_user_data(&cluster, &args.node_type);
    }
    let role = if args.node_type == cluster.head_type() {
        Role::Head
    } else {
        Role::Worker
    };
    let head = args
        .head_address
        .as_deref()
        .unwrap_or(HEAD_ADDRESS_PLACEHOLDER);
    let config = render_agent_config(&cluster, &args.node_type, role, Some(head));
    if output.json() {
        output.print_json(&config);
    } else {
        let text = to_toml(&config)
            .map_err(|e| Error::Internal(format!("rendering the agent configuration: {e}")))?;
        print!("{text}");
    }
    Ok(ExitCode::Success)
}
