//! `rayefa-agent status`: the steps of this node, from the daemon or its journal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use rayefa_wire::{NodeState, StatusDocument, StepState, StepStatus};

use super::{CliError, CommandResult, Exit, Global};
use crate::clock::now_ms;
use crate::engine::Journal;

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Print the status document as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Where the answer came from.
enum Source {
    Daemon(Box<StatusDocument>),
    /// The daemon did not answer; the journal says how far it got.
    Journal(Vec<StepStatus>, String),
}

pub(crate) fn status(global: &Global, args: &StatusArgs) -> CommandResult {
    let settings = global.settings()?;
    let address = local_address(settings.agent.listen);
    let source = match fetch(address) {
        Ok(doc) => Source::Daemon(Box::new(doc)),
        Err(daemon_error) => {
            let journal = Journal::new(&global.host_root().path(&settings.agent.state_dir));
            match journal.load() {
                Ok(Some(doc)) => Source::Journal(doc.steps, format!("{daemon_error:#}")),
                Ok(None) => {
                    return Err(CliError::new(
                        Exit::Environment,
                        daemon_error.context(format!(
                            "and there is no journal at {}",
                            journal.path().display()
                        )),
                    ));
                }
                Err(err) => {
                    return Err(CliError::new(Exit::Environment, daemon_error.context(err)));
                }
            }
        }
    };
    match &source {
        Source::Daemon(doc) if args.json => print_json(&**doc)?,
        Source::Journal(steps, _) if args.json => print_json(steps)?,
        Source::Daemon(doc) => {
            println!(
                "{} {} ({}) of cluster {}: {}",
                doc.node.role,
                doc.facts.hostname.as_deref().unwrap_or("node"),
                doc.node.node_type,
                doc.node.cluster_name,
                node_summary(&doc.state)
            );
            println!("{}", steps_table(&doc.steps));
            for warning in &doc.warnings {
                println!("warning: {warning}");
            }
        }
        Source::Journal(steps, why) => {
            println!("the agent is not answering ({why}); from its journal:");
            println!("{}", steps_table(steps));
        }
    }
    Ok(match source {
        Source::Daemon(doc) => match doc.state {
            NodeState::Ready => Exit::Success,
            NodeState::Failed { .. } => Exit::Failed,
            _ => Exit::InProgress,
        },
        Source::Journal(steps, _) => {
            if steps.iter().all(|s| s.state.is_satisfied()) {
                Exit::Success
            } else if steps
                .iter()
                .any(|s| matches!(s.state, StepState::Failed { .. }))
            {
                Exit::Failed
            } else {
                Exit::InProgress
            }
        }
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::new(Exit::Failed, e))?;
    println!("{text}");
    Ok(())
}

/// The address to reach a daemon listening on `listen` from this machine.
fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn fetch(address: SocketAddr) -> anyhow::Result<StatusDocument> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let url = format!("http://{address}/v1/status");
    runtime
        .block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .no_proxy()
                .build()?;
            let response = client.get(&url).send().await?.error_for_status()?;
            response.bytes().await
        })
        .map_err(|e| anyhow!("no answer from {url}: {e}"))
        .and_then(|body| {
            serde_json::from_slice(&body)
                .with_context(|| format!("{url} answered something that is not a status document"))
        })
}

fn node_summary(state: &NodeState) -> String {
    match state {
        NodeState::Starting => "starting".to_owned(),
        NodeState::Bootstrapping => "bootstrapping".to_owned(),
        NodeState::Ready => "ready".to_owned(),
        NodeState::Failed { step, reason } => format!("FAILED at {step}: {reason}"),
        NodeState::Rebooting { step } => format!("rebooting to finish {step}"),
    }
}

/// A table of steps: state, attempts, duration and what a person most needs to know.
pub(crate) fn steps_table(steps: &[StepStatus]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["STEP", "STATE", "ATTEMPTS", "DURATION", "NOTE"]);
    let now = now_ms();
    for step in steps {
        let duration = step
            .elapsed_ms(now)
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let note = match &step.state {
            StepState::Skipped { reason } => reason.clone(),
            StepState::Blocked { by } => format!("blocked by {by}"),
            StepState::Failed { .. } => step.error.clone().unwrap_or_default(),
            StepState::Running => step.activity.clone().unwrap_or_default(),
            _ => String::new(),
        };
        table.add_row([
            step.name.clone(),
            step.state.label().to_owned(),
            step.attempts.to_string(),
            duration,
            first_line(&note, 80),
        ]);
    }
    table
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max - 1).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}
