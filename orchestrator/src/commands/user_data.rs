//! `rayefa user-data FILE --node-type T`: what a node of type T boots with: on EC2 the
//! user-data script, for the local provider the agent's configuration file; with
//! `--output json`, the agent configuration either carries.

use rayefa_cluster::render::render_agent_config;
use rayefa_wire::Role;

use crate::cli::UserDataArgs;
use crate::exit::{Error, ExitCode};
use crate::provider;
use crate::view::Output;

/// Stands in for the head's address in a worker's configuration: it is only known once the
/// head runs.
const HEAD_ADDRESS_PLACEHOLDER: &str = "HEAD_PRIVATE_IP";

/// Runs `user-data`.
pub(crate) fn run(args: &UserDataArgs, output: Output) -> Result<ExitCode, Error> {
    let cluster = provider::load_cluster(&args.cluster.file)?;
    output.findings(&cluster);
    super::known_node_type(&cluster, &args.node_type)?;
    let role = if args.node_type == cluster.head_type() {
        Role::Head
    } else {
        Role::Worker
    };
    let head = match (role, args.head_address.as_deref()) {
        (Role::Head, _) => None,
        (Role::Worker, Some(address)) => Some(address),
        (Role::Worker, None) => {
            output.say(&format!(
                "rayefa: {HEAD_ADDRESS_PLACEHOLDER} stands for the head's private address, which \
                 `rayefa up` fills in (--head-address sets it)"
            ));
            Some(HEAD_ADDRESS_PLACEHOLDER)
        }
    };
    let mut config = render_agent_config(&cluster, &args.node_type, role, head);
    if role == Role::Head {
        config.autoscaling = crate::autoscaling::head_section(&cluster)?;
    }
    if output.json() {
        output.print_json(&config);
    } else {
        let text = provider::of_type(cluster.provider_type())?.user_data(&cluster, &config)?;
        print!("{text}");
    }
    Ok(ExitCode::Success)
}
