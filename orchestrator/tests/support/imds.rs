//! A stand-in for the EC2 instance metadata service on the fleet's bridge.
//!
//! One HTTP server answers every node, telling them apart by source address as EC2's link-local
//! service does, from what moto knows about the instance with that private address:
//! `instance-id`, `instance-type`, `placement/availability-zone`, `local-ipv4` and
//! `network/interfaces/macs/<mac>/interface-type`, the paths the agent reads. IMDSv2 only: a
//! `PUT /latest/api/token` first, and every read must carry the token.
//!
//! moto describes every network interface as `interface` (it drops `efa`), so the interface
//! types of a node type are handed in by the test from the cluster file it wrote, by device
//! index, as EC2 would report them for an instance launched from that `node_config`.
//!
//! No instance role is offered (`iam/security-credentials/` answers 404): the nodes' tag
//! publisher then says it has no credentials, and the orchestrator reads the agents directly.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::types::{Filter, Instance};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::aws_world::{describe_instances, live_filter, sdk_config};

/// One request the stand-in answered.
#[derive(Debug, Clone)]
pub struct Asked {
    /// The node's address.
    pub from: IpAddr,
    /// `PUT` or `GET`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
}

/// The running stand-in; stops when dropped.
#[derive(Debug)]
pub struct Imds {
    asked: Arc<Mutex<Vec<Asked>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct State {
    ec2: aws_sdk_ec2::Client,
    interface_types: BTreeMap<String, Vec<String>>,
    tokens: Mutex<BTreeSet<String>>,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl Imds {
    /// Serves at `addr`, from moto at `moto_endpoint`; `interface_types` maps a node type
    /// (the `ray-user-node-type` tag) to its interfaces' types by device index.
    pub fn start(
        addr: SocketAddr,
        moto_endpoint: &str,
        interface_types: BTreeMap<String, Vec<String>>,
    ) -> Imds {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("metadata runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("binding the metadata stand-in at {addr}: {e}"));
        let config = runtime.block_on(sdk_config(moto_endpoint));
        let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
        let state = Arc::new(State {
            ec2: aws_sdk_ec2::Client::new(&config),
            interface_types,
            tokens: Mutex::default(),
            asked: Arc::clone(&asked),
        });
        runtime.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        // Only the head is read; the body (IMDS requests have none) is dropped.
                        let (parts, _body) = request.into_parts();
                        async move {
                            let (status, body) = answer(
                                &state,
                                peer.ip(),
                                &parts.method,
                                parts.uri.path(),
                                &parts.headers,
                            )
                            .await;
                            state.asked.lock().expect("asked lock").push(Asked {
                                from: peer.ip(),
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                status: status.as_u16(),
                            });
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "text/plain")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("a response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Imds {
            asked,
            runtime: Some(runtime),
        }
    }

    /// The requests answered so far.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().expect("asked lock").clone()
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn answer(
    state: &State,
    from: IpAddr,
    method: &Method,
    path: &str,
    headers: &hyper::HeaderMap,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if path == "/latest/api/token" {
        if *method != Method::PUT {
            return (StatusCode::METHOD_NOT_ALLOWED, String::new());
        }
        let ttl = header("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| (1..=21600).contains(t));
        if ttl.is_none() {
            return (StatusCode::BAD_REQUEST, String::new());
        }
        let token = format!("fleet-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        state
            .tokens
            .lock()
            .expect("tokens lock")
            .insert(token.clone());
        return (StatusCode::OK, token);
    }
    let Some(item) = path.strip_prefix("/latest/meta-data/") else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    let known = header("x-aws-ec2-metadata-token")
        .is_some_and(|t| state.tokens.lock().expect("tokens lock").contains(&t));
    if !known {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    let Some(instance) = instance_at(&state.ec2, from).await else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    match metadata(state, &instance, item) {
        Some(text) => (StatusCode::OK, text),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

/// The live instance whose private address is `address`.
async fn instance_at(ec2: &aws_sdk_ec2::Client, address: IpAddr) -> Option<Instance> {
    let at_address = Filter::builder()
        .name("private-ip-address")
        .values(address.to_string())
        .build();
    describe_instances(ec2, vec![at_address, live_filter()])
        .await
        .ok()?
        .into_iter()
        .next()
}

fn metadata(state: &State, instance: &Instance, item: &str) -> Option<String> {
    let interfaces = || {
        let mut list: Vec<_> = instance.network_interfaces().to_vec();
        list.sort_by_key(|i| i.attachment().and_then(|a| a.device_index()));
        list
    };
    let node_type = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some("ray-user-node-type"))
        .and_then(|t| t.value())
        .unwrap_or_default();
    match item {
        "instance-id" => instance.instance_id().map(str::to_owned),
        "instance-type" => instance.instance_type().map(|t| t.as_str().to_owned()),
        "placement/availability-zone" => instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        // moto's zones are its region plus a letter (it has no Local Zones).
        "placement/region" => instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(|zone| {
                zone.trim_end_matches(|c: char| c.is_ascii_lowercase())
                    .to_owned()
            }),
        "services/partition" => Some("aws".to_owned()),
        "services/domain" => Some("amazonaws.com".to_owned()),
        "local-ipv4" => instance.private_ip_address().map(str::to_owned),
        "network/interfaces/macs/" | "network/interfaces/macs" => Some(
            interfaces()
                .iter()
                .filter_map(|i| i.mac_address())
                .map(|mac| format!("{mac}/\n"))
                .collect(),
        ),
        other => {
            let mac = other
                .strip_prefix("network/interfaces/macs/")?
                .strip_suffix("/interface-type")?;
            let index = interfaces()
                .iter()
                .position(|i| i.mac_address() == Some(mac))?;
            let declared = state
                .interface_types
                .get(node_type)
                .and_then(|types| types.get(index));
            let described = interfaces()[index].interface_type().map(str::to_owned);
            declared.cloned().or(described)
        }
    }
}
