//! `rayefa prepare FILE`: the placement groups and the security groups' self rules that EFA
//! nodes need, created once; running it again changes nothing and says so.

use crate::cli::PrepareArgs;
use crate::commands::aws_failed;
use crate::exit::{self, ExitCode};
use crate::provider::aws::{Clients, Outcome, Plan, Prepared, node_configs_of, prepare};
use crate::provider::load_cluster;
use crate::view::{Output, OutputFormat, table};

/// Creates what EFA nodes need before they launch; exit code 3 on a conflict.
pub(crate) async fn run(args: &PrepareArgs, output: Output) -> Result<ExitCode, exit::Error> {
    let cluster = load_cluster(&args.file)?;
    let configs = node_configs_of(&cluster).map_err(aws_failed)?;
    let plan = Plan::for_node_types(configs.values());
    let clients = Clients::load(cluster.spec.provider.value.region.as_deref())
        .await
        .map_err(aws_failed)?;
    let report: Vec<Prepared> = prepare(&clients, &plan).await.map_err(aws_failed)?;
    match output.format {
        OutputFormat::Json => output.print_json(&report),
        OutputFormat::Table | OutputFormat::Env => {
            if report.is_empty() {
                println!(
                    "nothing to prepare: no node type names a placement group or an EFA interface"
                );
            } else {
                let mut out = table(&["THING", "NAME", "RESULT", "DETAIL"]);
                for item in &report {
                    out.add_row(vec![
                        item.thing.to_owned(),
                        item.name.clone(),
                        item.outcome.label().to_owned(),
                        item.detail.clone(),
                    ]);
                }
                println!("{out}");
            }
        }
    }
    Ok(if report.iter().any(|i| i.outcome == Outcome::Conflict) {
        ExitCode::Provider
    } else {
        ExitCode::Success
    })
}
