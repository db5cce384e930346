//! `rayefa validate FILE`: every check that needs no cloud, and what `up` would launch.

use std::io::Write;

use serde::Serialize;

use crate::cli::{GlobalArgs, ValidateArgs};
use crate::cluster::{self, Finding, Severity};
use crate::exit::{Error, ExitCode};
use crate::view::Output;

/// What `validate --output json` prints.
#[derive(Debug, Serialize)]
struct Validation<'a> {
    file: String,
    valid: bool,
    cluster: Option<&'a str>,
    provider: Option<&'a str>,
    /// What `up` would launch: node type, role, count.
    launch: Vec<PlannedNodes<'a>>,
    findings: Vec<Finding>,
}

#[derive(Debug, Serialize)]
struct PlannedNodes<'a> {
    node_type: &'a str,
    role: &'static str,
    count: usize,
}

/// Runs `validate`.
pub(crate) async fn run(
    args: &ValidateArgs,
    global: &GlobalArgs,
    output: Output,
) -> Result<ExitCode, Error> {
    let file = args.cluster.file.display().to_string();
    let cluster = match cluster::load(&args.cluster.file) {
        Ok(cluster) => cluster,
        Err(error) if output.json() => {
            output.print_json(&Validation {
                file,
                valid: false,
                cluster: None,
                provider: None,
                launch: Vec::new(),
                findings: error.findings(),
            });
            return Ok(ExitCode::from(&error));
        }
        Err(error) => return Err(error.into()),
    };
    // The AWS provider adds its preflight against the account to the file's findings.
    if cluster.provider_type() == "aws" && !args.offline {
        return crate::aws::validate(global, &cluster).await;
    }
    let mut launch = vec![PlannedNodes {
        node_type: cluster.head_type(),
        role: "head",
        count: 1,
    }];
    launch.extend(
        cluster
            .worker_counts()
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(node_type, count)| PlannedNodes {
                node_type,
                role: "worker",
                count,
            }),
    );
    if output.json() {
        output.print_json(&Validation {
            file,
            valid: true,
            cluster: Some(cluster.name()),
            provider: Some(cluster.provider_type()),
            launch,
            findings: cluster.findings.clone(),
        });
        return Ok(ExitCode::Success);
    }
    let mut out = std::io::stdout().lock();
    for finding in &cluster.findings {
        let _ = writeln!(out, "{}", finding.display(&file));
    }
    let warnings = cluster
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    let plan: Vec<String> = launch
        .iter()
        .map(|p| format!("{} {} ({})", p.count, p.node_type, p.role))
        .collect();
    let _ = writeln!(
        out,
        "{file}: valid ({warnings} warning{}); cluster {} on provider {}; up launches {}",
        if warnings == 1 { "" } else { "s" },
        cluster.name(),
        cluster.provider_type(),
        plan.join(", ")
    );
    Ok(ExitCode::Success)
}
