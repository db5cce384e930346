//! `rayefa instance-types`: EC2 instance types with vCPUs, cores, memory, architecture and
//! EFA interfaces, for family filters such as `7i,8g,7a`.

use crate::cli::InstanceTypesArgs;
use crate::commands::aws_failed;
use crate::exit::{self, ExitCode};
use crate::provider::aws::{Clients, InstanceTypeRow, format_gib, list_instance_types};
use crate::view::{Output, OutputFormat, table};

/// Lists instance types.
pub(crate) async fn run(args: &InstanceTypesArgs, output: Output) -> Result<ExitCode, exit::Error> {
    let clients = Clients::load(args.region.as_deref())
        .await
        .map_err(aws_failed)?;
    let rows = list_instance_types(&clients, &args.family, args.efa)
        .await
        .map_err(aws_failed)?;
    match output.format {
        OutputFormat::Json => output.print_json(&rows),
        OutputFormat::Table | OutputFormat::Env => {
            let mut out = table(&[
                "TYPE",
                "ARCH",
                "vCPUs",
                "CORES",
                "MEMORY GiB",
                "EFA",
                "NETWORK CARDS",
            ]);
            for row in &rows {
                out.add_row(type_cells(row));
            }
            println!("{out}");
            eprintln!("{} instance type(s) in {}", rows.len(), clients.region);
        }
    }
    Ok(ExitCode::Success)
}

fn type_cells(row: &InstanceTypeRow) -> Vec<String> {
    vec![
        row.instance_type.clone(),
        row.architectures.join(","),
        row.vcpus.to_string(),
        row.cores.to_string(),
        format_gib(row.memory_gib),
        if row.efa_supported {
            format!("up to {}", row.max_efa_interfaces)
        } else {
            "no".to_owned()
        },
        row.network_cards.to_string(),
    ]
}
