//! `rayefa timeline FILE`: a picture of the bootstrap, one row per node and a bar per step.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::agent_client;
use crate::cli::TimelineArgs;
use crate::exit::{Error, ExitCode};
use crate::provider;
use crate::timeline::{NodeTimeline, render_svg};
use crate::view::Output;
use crate::wait;
use crate::wait::node::NodeWatch;

/// Runs `timeline`: exit 0 once the picture is written, whatever the nodes' states.
pub(crate) async fn run(args: &TimelineArgs, output: Output) -> Result<ExitCode, Error> {
    let cluster = provider::load_cluster(&args.cluster.file)?;
    output.findings(&cluster);
    let provider = provider::for_cluster(&cluster).await?;
    let policy = cluster.settings.poll.clone();
    let client = agent_client(&policy)?;
    let now = Instant::now();
    let mut watches: Vec<NodeWatch> = provider
        .list()
        .await?
        .into_iter()
        .map(|n| NodeWatch::new(n, now))
        .collect();
    if watches.is_empty() {
        return Err(Error::Usage(format!(
            "cluster {} has no nodes to draw; run `rayefa up {}` first",
            cluster.name(),
            args.cluster.file.display()
        )));
    }
    wait::once(&client, &mut watches, &policy).await;
    let nodes: Vec<NodeTimeline> = watches
        .into_iter()
        .map(|w| NodeTimeline {
            status: w.document.clone().ok_or_else(|| match &w.last_error {
                Some(error) => error.to_string(),
                None => w.activity(),
            }),
            id: w.record.id,
            node_type: w.record.node_type,
            role: w.record.role,
        })
        .collect();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let svg = render_svg(cluster.name(), &nodes, now_ms);
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-timeline.svg", cluster.name())));
    std::fs::write(&path, svg).map_err(|e| {
        Error::Usage(format!(
            "cannot write the timeline to {}: {e}",
            path.display()
        ))
    })?;
    let answered = nodes.iter().filter(|n| n.status.is_ok()).count();
    if output.json() {
        output.print_json(&serde_json::json!({
            "cluster": cluster.name(),
            "written": path,
            "nodes": nodes.len(),
            "answered": answered,
        }));
    } else {
        println!(
            "wrote {} ({} node(s), {answered} answered)",
            path.display(),
            nodes.len()
        );
    }
    Ok(ExitCode::Success)
}
