//! `rayefa-agent run`: the daemon.

use std::sync::Arc;

use anyhow::Context;
use rayefa_wire::{API_VERSION, NodeIdentity, NodeState, StatusDocument};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::{CliError, CommandResult, Exit, Global};
use crate::clock::now_ms;
use crate::config::Settings;
use crate::control::Control;
use crate::engine::{Engine, EngineEnd, Journal, JournalError, StatusBoard};
use crate::facts::{Ec2Lookup, local_facts};
use crate::host::{ChildRegistry, GroupRecords, HostRoot, SystemRunner};
use crate::{logging, publish_tags, serve, steps, systemd};

pub(crate) fn run(global: &Global) -> CommandResult {
    logging::init(global.verbose);
    let settings = global.settings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            CliError::new(
                Exit::Environment,
                anyhow::Error::new(e).context("cannot start the async runtime"),
            )
        })?;
    runtime.block_on(daemon(global.host_root(), settings))
}

async fn daemon(root: HostRoot, settings: Settings) -> CommandResult {
    let settings = Arc::new(settings);
    let graph = steps::bootstrap_graph().map_err(|e| CliError::new(Exit::Failed, e))?;
    let state_dir = root.path(&settings.agent.state_dir);
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))
        .map_err(|e| CliError::new(Exit::Environment, e))?;

    let journal = Journal::new(&state_dir);
    let mut warnings = Vec::new();
    let recorded = match journal.load() {
        Ok(doc) => doc,
        Err(corrupt @ JournalError::Corrupt { .. }) => {
            let aside = journal
                .set_aside()
                .map_err(|e| CliError::new(Exit::Environment, e))?;
            let warning = format!("{corrupt}; kept as {} and started afresh", aside.display());
            tracing::error!("{warning}");
            warnings.push(warning);
            None
        }
        Err(err) => return Err(CliError::new(Exit::Environment, err)),
    };
    let pending_reboot = recorded.as_ref().and_then(|doc| doc.pending_reboot.clone());

    let board = StatusBoard::new(StatusDocument {
        api: API_VERSION,
        node: NodeIdentity {
            cluster_name: settings.node.cluster_name.clone(),
            role: settings.node.role,
            node_type: settings.node.node_type.clone(),
        },
        facts: local_facts(&root),
        state: NodeState::Starting,
        steps: Engine::initial_steps(&graph, recorded.as_ref(), &root),
        warnings,
        generated_at_ms: now_ms(),
    });

    let listen = settings.agent.listen;
    let listener = serve::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(|e| CliError::new(Exit::Environment, e))?;
    tracing::info!(%listen, node_type = settings.node.node_type, role = %settings.node.role, "serving status");

    let stop = CancellationToken::new();
    let program = std::env::current_exe()
        .context("finding the agent's own executable")
        .map_err(|e| CliError::new(Exit::Environment, e))?;
    let control = Arc::new(Control::new(
        settings.agent.control_secret.as_deref(),
        program,
    ));
    let server = tokio::spawn(serve::serve(
        listener,
        board.clone(),
        control,
        settings.agent.max_connections,
        stop.clone(),
    ));
    systemd::ready();
    tokio::spawn(systemd::forward_status(board.subscribe()));
    tokio::spawn(stop_on_signal(stop.clone()));

    let ec2 = if settings.agent.imds {
        let facts_board = board.clone();
        Ec2Lookup::start(settings.agent.imds_endpoint.clone(), move |facts| {
            facts_board.update(|doc| doc.facts.ec2 = facts);
        })
    } else {
        Ec2Lookup::known(None)
    };
    if settings.agent.publish_tags {
        tokio::spawn(publish_tags::run(
            publish_tags::PublishConfig::new(
                settings.agent.imds_endpoint.clone(),
                settings.agent.ec2_endpoint.clone(),
            ),
            ec2.clone(),
            board.subscribe(),
        ));
    }

    // What a crashed agent left running would run beside the re-run of its step.
    let records = GroupRecords::new(state_dir.join("running"), &root);
    for leftover in records.stop_leftovers(settings.agent.stop_grace).await {
        let how = if leftover.killed { "killed" } else { "stopped" };
        tracing::warn!(
            pgid = leftover.pgid,
            "{how} process group {} that a previous agent left running",
            leftover.pgid
        );
    }
    let children = ChildRegistry::recorded(records);
    let engine = Engine {
        graph,
        settings: settings.clone(),
        root,
        runner: Arc::new(SystemRunner::new(children.clone())),
        children,
        board: board.clone(),
        journal,
        log_dir: state_dir.join("logs"),
        ec2,
        on_reboot: settings.efa.on_reboot,
    };
    match engine.run(pending_reboot, stop.clone()).await {
        EngineEnd::Ready => tracing::info!("node ready"),
        EngineEnd::Failed { step } => tracing::error!(step, "bootstrap failed"),
        EngineEnd::Rebooting { step } => tracing::warn!(step, "rebooting to finish a step"),
        EngineEnd::Stopped => {
            tracing::info!("stopped during the bootstrap; the journal holds where it was")
        }
    }
    // The node's state stays readable until the service is stopped.
    stop.cancelled().await;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(Exit::Success)
}

async fn stop_on_signal(stop: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    systemd::stopping();
    stop.cancel();
}
