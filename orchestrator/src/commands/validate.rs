//! `rayefa validate FILE`: every check of the file, the provider's preflight against its
//! account unless `--offline`, and what `up` would launch.

use std::io::Write;

use serde::Serialize;

use rayefa_cluster::{Finding, Severity};

use crate::cli::ValidateArgs;
use crate::exit::{Error, ExitCode};
use crate::provider;
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
pub(crate) async fn run(args: &ValidateArgs, output: Output) -> Result<ExitCode, Error> {
    let file = args.cluster.file.display().to_string();
    let cluster = match provider::load_cluster(&args.cluster.file) {
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
    let mut findings = cluster.findings.clone();
    let mut checked_against = None;
    if !args.offline
        && let Some(preflight) = provider::of_type(cluster.provider_type())?
            .preflight(&cluster)
            .await?
    {
        findings.extend(preflight.findings);
        checked_against = Some(preflight.against);
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
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
    let code = if errors == 0 {
        ExitCode::Success
    } else {
        ExitCode::BadInput
    };
    if output.json() {
        output.print_json(&Validation {
            file,
            valid: errors == 0,
            cluster: Some(cluster.name()),
            provider: Some(cluster.provider_type()),
            launch,
            findings,
        });
        return Ok(code);
    }
    let mut out = std::io::stdout().lock();
    for finding in &findings {
        let _ = writeln!(out, "{}", finding.display(&file));
    }
    if errors > 0 {
        let _ = writeln!(
            out,
            "{file}: {errors} error{} found by the preflight against {}",
            if errors == 1 { "" } else { "s" },
            checked_against.as_deref().unwrap_or("the provider")
        );
        return Ok(code);
    }
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    let plan: Vec<String> = launch
        .iter()
        .map(|p| format!("{} {} ({})", p.count, p.node_type, p.role))
        .collect();
    let checked = checked_against
        .map(|against| format!("; preflight against {against} passed"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{file}: valid ({warnings} warning{}); cluster {} on provider {}; up launches {}{checked}",
        if warnings == 1 { "" } else { "s" },
        cluster.name(),
        cluster.provider_type(),
        plan.join(", ")
    );
    Ok(code)
}
