//! `rayefa env`: the seed guide's discovery of what a cluster file refers to in AWS, as a
//! table, `--output json`, or `--output env` (`export` lines a shell can `eval`).

use crate::cli::EnvArgs;
use crate::commands::aws_failed;
use crate::exit::{self, ExitCode};
use crate::provider::aws::{Clients, Discovered, Search, discover, export_lines};
use crate::view::{Output, OutputFormat, table};

/// Finds the cluster's AWS resources; exit code 3 when something is missing.
pub(crate) async fn run(args: &EnvArgs, output: Output) -> Result<ExitCode, exit::Error> {
    let clients = Clients::load(args.region.as_deref())
        .await
        .map_err(aws_failed)?;
    let search = Search {
        vpc_tag: args.vpc_tag.clone(),
        subnet_tag: args.subnet_tag.clone(),
        head_group: args.head_sg.clone(),
        worker_group: args.worker_sg.clone(),
    };
    let found = discover(&clients, &search).await.map_err(aws_failed)?;
    let missing: Vec<&Discovered> = found.iter().filter(|d| d.value.is_none()).collect();
    match output.format {
        OutputFormat::Json => {
            let values: serde_json::Map<String, serde_json::Value> = found
                .iter()
                .map(|d| (d.variable.to_owned(), serde_json::json!(d.value)))
                .collect();
            output.print_json(&serde_json::json!({ "values": values, "found": found }));
        }
        OutputFormat::Env => {
            print!("{}", export_lines(&found));
            for d in &missing {
                eprintln!(
                    "rayefa: {} not found: {}",
                    d.variable,
                    d.problem.as_deref().unwrap_or("no value")
                );
            }
        }
        OutputFormat::Table => {
            let mut out = table(&["VARIABLE", "VALUE", "FOUND BY"]);
            for d in &found {
                let (value, how) = match (&d.value, &d.problem) {
                    (Some(value), _) => (value.clone(), d.source.clone()),
                    (None, problem) => (
                        "-".to_owned(),
                        format!("NOT FOUND: {}", problem.as_deref().unwrap_or(&d.source)),
                    ),
                };
                out.add_row(vec![d.variable.to_owned(), value, how]);
            }
            println!("{out}");
        }
    }
    Ok(if missing.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Provider
    })
}
