//! The AWS-only commands: `env`, `instance-types` and `prepare`, with their options and
//! output (a table for people, `--output json` for scripts, and for `env` also
//! `--output env`: `export` lines a shell can `eval`).

use std::path::PathBuf;

use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::AwsError;
use super::client::Clients;
use super::discover::{self, Discovered, Search, TagFilter};
use super::instance_types::{self as types, InstanceTypeRow, format_gib};
use super::prepare::{self as prep, Outcome, Plan, Prepared};
use super::provider::{node_configs_of, node_user_data, preflight_cluster};
use crate::cli::{GlobalArgs, OutputFormat};
use crate::cluster::{Cluster, Severity};
use crate::exit::{self, ExitCode};
use crate::provider::ProviderError;
use crate::render::render_agent_config;
use rayefa_wire::Role;

/// `rayefa env`
#[derive(Debug, Args)]
pub(crate) struct EnvArgs {
    /// The region to look in; otherwise AWS_REGION or the profile's.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// The tag that marks the cluster's VPC.
    #[arg(long, value_name = "KEY=VALUE", default_value = "Name=RayVPC")]
    pub(crate) vpc_tag: TagFilter,
    /// The tag that marks the private subnet, in that VPC.
    #[arg(
        long,
        value_name = "KEY=VALUE",
        default_value = "Name=Ray-Private-Subnet"
    )]
    pub(crate) subnet_tag: TagFilter,
    /// The name of the head nodes' security group, in that VPC.
    #[arg(long, value_name = "NAME", default_value = "RayHeadSG")]
    pub(crate) head_sg: String,
    /// The name of the worker nodes' security group, in that VPC.
    #[arg(long, value_name = "NAME", default_value = "RayWorkerSG")]
    pub(crate) worker_sg: String,
}

/// `rayefa instance-types`
#[derive(Debug, Args)]
pub(crate) struct InstanceTypesArgs {
    /// The region to look in; otherwise AWS_REGION or the profile's.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Families to show, comma-separated: `7i` matches every type whose name contains `7i`
    /// (m7i, c7i, u7i-6tb...); a value with `*` or `.` is a pattern of its own (`c7i.*`).
    #[arg(long, value_delimiter = ',', value_name = "FAMILY,...")]
    pub(crate) family: Vec<String>,
    /// Only types that support EFA.
    #[arg(long)]
    pub(crate) efa: bool,
}

/// `rayefa prepare`
#[derive(Debug, Args)]
pub(crate) struct PrepareArgs {
    /// The cluster file whose placement groups and EFA security groups to prepare.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

fn failed(error: impl Into<AwsError>) -> exit::Error {
    exit::Error::Provider(ProviderError::from(error.into()))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), exit::Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| exit::Error::Provider(ProviderError::Failed(format!("writing JSON: {e}"))))?;
    println!("{text}");
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}

/// Finds the cluster's AWS resources; exit code 3 when something is missing.
pub(crate) async fn env(global: &GlobalArgs, args: &EnvArgs) -> Result<ExitCode, exit::Error> {
    let clients = Clients::load(args.region.as_deref())
        .await
        .map_err(failed)?;
    let search = Search {
        vpc_tag: args.vpc_tag.clone(),
        subnet_tag: args.subnet_tag.clone(),
        head_group: args.head_sg.clone(),
        worker_group: args.worker_sg.clone(),
    };
    let found = discover::discover(&clients, &search)
        .await
        .map_err(failed)?;
    let missing: Vec<&Discovered> = found.iter().filter(|d| d.value.is_none()).collect();
    match global.output {
        OutputFormat::Json => {
            let values: serde_json::Map<String, serde_json::Value> = found
                .iter()
                .map(|d| (d.variable.to_owned(), serde_json::json!(d.value)))
                .collect();
            print_json(&serde_json::json!({ "values": values, "found": found }))?;
        }
        OutputFormat::Env => {
            print!("{}", discover::export_lines(&found));
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

/// Lists instance types.
pub(crate) async fn instance_types(
    global: &GlobalArgs,
    args: &InstanceTypesArgs,
) -> Result<ExitCode, exit::Error> {
    let clients = Clients::load(args.region.as_deref())
        .await
        .map_err(failed)?;
    let rows = types::list(&clients, &args.family, args.efa)
        .await
        .map_err(failed)?;
    match global.output {
        OutputFormat::Json => print_json(&rows)?,
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

/// Creates what EFA nodes need before they launch; exit code 3 on a conflict.
pub(crate) async fn prepare(
    global: &GlobalArgs,
    args: &PrepareArgs,
) -> Result<ExitCode, exit::Error> {
    let cluster = crate::cluster::load(&args.file)?;
    let configs = node_configs_of(&cluster).map_err(failed)?;
    let plan = Plan::for_node_types(configs.values());
    let clients = Clients::load(cluster.spec.provider.value.region.as_deref())
        .await
        .map_err(failed)?;
    let report: Vec<Prepared> = prep::prepare(&clients, &plan).await.map_err(failed)?;
    match global.output {
        OutputFormat::Json => print_json(&report)?,
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

/// The head address shown in a worker's user data by `rayefa user-data`, where `up` puts the
/// head's private address.
const HEAD_ADDRESS_PLACEHOLDER: &str = "HEAD_PRIVATE_IP";

/// `rayefa validate` for an AWS cluster: the file's own findings, then the preflight checks
/// against the account. Exit code 2 when there is an error.
pub(crate) async fn validate(
    global: &GlobalArgs,
    cluster: &Cluster,
) -> Result<ExitCode, exit::Error> {
    let mut findings = cluster.findings.clone();
    findings.extend(preflight_cluster(cluster).await.map_err(failed)?);
    let file = cluster.display_path();
    let valid = !findings.iter().any(|f| f.severity == Severity::Error);
    match global.output {
        OutputFormat::Json => {
            // The same document `validate` prints for other providers.
            let mut launch = vec![serde_json::json!({
                "node_type": cluster.head_type(), "role": "head", "count": 1
            })];
            launch.extend(
                cluster
                    .worker_counts()
                    .into_iter()
                    .filter(|(_, count)| *count > 0)
                    .map(|(node_type, count)| {
                        serde_json::json!({"node_type": node_type, "role": "worker", "count": count})
                    }),
            );
            print_json(&serde_json::json!({
                "file": file,
                "valid": valid,
                "cluster": cluster.name(),
                "provider": cluster.provider_type(),
                "launch": launch,
                "findings": findings,
            }))?;
        }
        OutputFormat::Table | OutputFormat::Env => {
            for finding in &findings {
                println!("{}", finding.display(&file));
            }
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            eprintln!(
                "{file}: {errors} error(s), {} other finding(s), preflight against {} done",
                findings.len() - errors,
                cluster
                    .spec
                    .provider
                    .value
                    .region
                    .as_deref()
                    .unwrap_or("the default region")
            );
        }
    }
    Ok(if valid {
        ExitCode::Success
    } else {
        ExitCode::BadInput
    })
}

/// `rayefa user-data` for an AWS cluster: the script a node of `node_type` boots with.
pub(crate) fn print_user_data(cluster: &Cluster, node_type: &str) -> Result<ExitCode, exit::Error> {
    if cluster.node_type(node_type).is_none() {
        return Err(exit::Error::Provider(ProviderError::Failed(format!(
            "{}: no node type `{node_type}` in available_node_types (there are: {})",
            cluster.display_path(),
            cluster.node_type_names().join(", ")
        ))));
    }
    let role = if cluster.head_type() == node_type {
        Role::Head
    } else {
        Role::Worker
    };
    let head = (role == Role::Worker).then_some(HEAD_ADDRESS_PLACEHOLDER);
    let config = render_agent_config(cluster, node_type, role, head);
    let script = node_user_data(cluster, &config).map_err(|source| {
        failed(AwsError::UserData {
            node_type: node_type.to_owned(),
            source,
        })
    })?;
    print!("{script}");
    if role == Role::Worker {
        eprintln!(
            "rayefa: {HEAD_ADDRESS_PLACEHOLDER} stands for the head's private address, which \
             `rayefa up` fills in; {} bytes of EC2's 16384",
            script.len()
        );
    }
    Ok(ExitCode::Success)
}
