//! `rayefa-agent plan`: the step graph and what each step would do.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

use super::{CliError, CommandResult, Exit, Global};
use crate::steps;

#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PlannedStep {
    name: String,
    depends_on: Vec<String>,
    enabled: bool,
    timeout_secs: u64,
    attempts: u32,
    would: Vec<String>,
}

pub(crate) fn plan(global: &Global, args: &PlanArgs) -> CommandResult {
    let settings = global.settings()?;
    let graph = steps::bootstrap_graph().map_err(|e| CliError::new(Exit::Failed, e))?;
    let planned: Vec<PlannedStep> = graph
        .steps()
        .iter()
        .map(|step| {
            let policy = settings.policy(step.name());
            PlannedStep {
                name: step.name().to_owned(),
                depends_on: step.depends_on().iter().map(|d| (*d).to_owned()).collect(),
                enabled: policy.enabled,
                timeout_secs: policy.timeout.as_secs(),
                attempts: policy.attempts,
                would: if policy.enabled {
                    step.plan(&settings)
                } else {
                    vec!["nothing: turned off in configuration".to_owned()]
                },
            }
        })
        .collect();
    if args.json {
        let text =
            serde_json::to_string_pretty(&planned).map_err(|e| CliError::new(Exit::Failed, e))?;
        println!("{text}");
        return Ok(Exit::Success);
    }
    println!(
        "{} node of type {} in cluster {}",
        settings.node.role, settings.node.node_type, settings.node.cluster_name
    );
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["STEP", "AFTER", "TIMEOUT", "ATTEMPTS", "WOULD"]);
    for step in planned {
        table.add_row([
            step.name,
            if step.depends_on.is_empty() {
                "-".to_owned()
            } else {
                step.depends_on.join(", ")
            },
            format!("{}s", step.timeout_secs),
            step.attempts.to_string(),
            step.would.join("\n"),
        ]);
    }
    println!("{table}");
    Ok(Exit::Success)
}
