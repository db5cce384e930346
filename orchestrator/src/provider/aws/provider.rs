//! The `aws` provider: nodes are EC2 instances launched from the node types' `node_config`,
//! found again by their `rayefa-cluster` tag, and terminated only when they carry it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, Tag};
use rayefa_wire::{AgentConfigFile, Role};
use tokio::sync::OnceCell;

use super::AwsError;
use super::agent_package::{self, NodePackage};
use super::agent_store::{self, Manifest, Presigner, StoreError};
use super::client::Clients;
use super::error::{ApiError, ErrorKind};
use super::head_share::{self, HeadShare};
use super::image::ResolvedImage;
use super::launch::{self, LaunchSpec};
use super::node_config::{self, NodeConfig};
use super::preflight::{self, NodeTypeCheck, Problem};
use super::s3::S3;
use super::settings::AwsSettings;
use super::tags::{self, PublishedState};
use super::user_data::render_user_data;
use crate::provider::control_secret::{self, ControlSecret};
use crate::provider::{
    LaunchRequest, Lifecycle, NodeRecord, Provider, ProviderError, Published, Termination,
};
use rayefa_cluster::rayefa::{AgentPackages, AgentStore};
use rayefa_cluster::render::render_agent_config;
use rayefa_cluster::{Cluster, Finding, Severity};

/// How often launches and `down` look at instances they wait for.
const WAIT_INTERVAL: Duration = Duration::from_secs(2);

/// A stand-in head address for sizing a worker's user data before the head exists; as long as
/// any IPv4 address.
const SIZING_HEAD_ADDRESS: &str = "255.255.255.255";

/// The node types' launch arguments, checked, by node type.
pub(crate) fn node_configs_of(cluster: &Cluster) -> Result<BTreeMap<String, NodeConfig>, AwsError> {
    let mut configs = BTreeMap::new();
    let Some(types) = &cluster.spec.available_node_types else {
        return Ok(configs);
    };
    for (name, spec) in &types.value {
        let path = format!("available_node_types.{name}.node_config");
        let config = node_config::parse(&spec.node_config.value, &path).map_err(|source| {
            AwsError::NodeConfig {
                file: cluster.path.display().to_string(),
                line: spec.node_config.referenced.line(),
                source,
            }
        })?;
        configs.insert(name.clone(), config);
    }
    Ok(configs)
}

/// Whether `node_type` is the cluster's head type.
fn role_of(cluster: &Cluster, node_type: &str) -> Role {
    if cluster.head_type() == node_type {
        Role::Head
    } else {
        Role::Worker
    }
}

/// `provider.availability_zone`, split at commas.
fn provider_zones(cluster: &Cluster) -> Vec<String> {
    cluster
        .spec
        .provider
        .value
        .availability_zone
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|z| !z.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs the preflight checks of `cluster` against the account, without launching anything;
/// every finding is an error that would stop `up`. For `rayefa validate`.
pub(crate) async fn preflight_cluster(cluster: &Cluster) -> Result<Vec<Finding>, AwsError> {
    let clients = Clients::load(cluster.spec.provider.value.region.as_deref()).await?;
    let configs = node_configs_of(cluster)?;
    let store = StoreClient::open(cluster).await?;
    let manifest = match &store {
        Some(store) => Some(store.manifest().await?),
        None => None,
    };
    let store = store.as_ref().zip(manifest.as_ref());
    Ok(run_preflight(&clients, cluster, &configs, store)
        .await?
        .findings)
}

/// The agent store of a cluster file with `rayefa.agent_store`, and the client that reads it.
#[derive(Debug)]
struct StoreClient {
    store: AgentStore,
    s3: S3,
}

impl StoreClient {
    /// The file's store, if it names one (a malformed one was reported by the file's checks).
    async fn open(cluster: &Cluster) -> Result<Option<StoreClient>, AwsError> {
        let Some(store) = cluster
            .spec
            .rayefa
            .as_ref()
            .and_then(|r| r.value.agent_store.as_ref())
            .and_then(|s| AgentStore::parse(&s.value).ok())
        else {
            return Ok(None);
        };
        let s3 = S3::load(cluster.spec.provider.value.region.as_deref())
            .await
            .map_err(StoreError::from)?;
        Ok(Some(StoreClient { store, s3 }))
    }

    async fn manifest(&self) -> Result<Manifest, StoreError> {
        agent_store::read_manifest(&self.s3, &self.store).await
    }

    /// The share of the head of a cluster that autoscales, whose instance type runs
    /// `architectures` and whose agent configuration is `config`: rayefa's package with URLs
    /// signed now, the cluster file, and the control secret `config` carries.
    async fn head_share(
        &self,
        manifest: &Manifest,
        architectures: &[String],
        cluster: &Cluster,
        region: &str,
        config: &AgentConfigFile,
    ) -> Result<HeadShare, AwsError> {
        let (machine, kinds) = agent_store::orchestrator_for(&self.store, manifest, architectures)?;
        let rayefa = Presigner::new(&self.s3, &self.store)
            .await?
            .node_package(machine, kinds)?;
        Ok(head_share_with(rayefa, cluster, region, config)?)
    }

    /// What a node of an instance type running `architectures` installs, with URLs signed now.
    async fn node_package(
        &self,
        manifest: &Manifest,
        architectures: &[String],
    ) -> Result<NodePackage, StoreError> {
        let (machine, kinds) = agent_store::packages_for(&self.store, manifest, architectures)?;
        Presigner::new(&self.s3, &self.store)
            .await?
            .node_package(machine, kinds)
    }
}

/// The head's share around the `rayefa` package `rayefa`.
fn head_share_with(
    rayefa: NodePackage,
    cluster: &Cluster,
    region: &str,
    config: &AgentConfigFile,
) -> Result<HeadShare, head_share::HeadShareError> {
    Ok(HeadShare {
        rayefa,
        cluster_file: head_share::expanded_cluster_file(&cluster.path)?,
        control_secret: config.agent.as_ref().and_then(|a| a.control_secret.clone()),
        secret_path: head_share::head_secret_path(region, cluster.name()),
        owner: config.commands.as_ref().and_then(|c| c.user.clone()),
    })
}

/// Whether `config` is that of a head that runs Ray's autoscaler.
fn autoscaling_head(config: &AgentConfigFile) -> bool {
    config.node.as_ref().and_then(|n| n.role) == Some(Role::Head) && config.autoscaling.is_some()
}

/// `rayefa.agent_package`, if the file has one.
fn agent_packages(cluster: &Cluster) -> Option<&AgentPackages> {
    cluster
        .spec
        .rayefa
        .as_ref()
        .and_then(|r| r.value.agent_package.as_ref())
}

/// A preflight problem as a finding of the cluster file, at its node type's `node_config`.
fn cluster_finding(cluster: &Cluster, problem: &Problem) -> Finding {
    let Some(node_type) = &problem.node_type else {
        return Finding::error(
            cluster.spec.provider.referenced,
            "provider",
            problem.message(),
        );
    };
    let location = cluster
        .node_type(node_type)
        .map_or(cluster.spec.provider.referenced, |t| {
            t.node_config.referenced
        });
    let mut key = format!("available_node_types.{node_type}.node_config");
    if let Some(field) = problem.field() {
        key.push('.');
        key.push_str(field);
    }
    Finding::error(location, key, problem.message())
}

/// What preflight found, as the cluster file's findings and what launches need.
#[derive(Debug)]
struct Preflighted {
    /// Errors (each stops `up`) and notes.
    findings: Vec<Finding>,
    /// The architectures of each node type's instance type.
    architectures: BTreeMap<String, Vec<String>>,
    /// The image looked up for each node type without an `ImageId` or with `latest_dlami`.
    images: BTreeMap<String, ResolvedImage>,
}

/// The note that says which image a node type will boot, where it was looked up.
fn image_note(cluster: &Cluster, node_type: &str, image: &ResolvedImage) -> Finding {
    let location = cluster
        .node_type(node_type)
        .map_or(cluster.spec.provider.referenced, |t| {
            t.node_config.referenced
        });
    let asked = match image.family {
        super::image::Family::Al2023 => "ImageId missing",
        super::image::Family::DeepLearning => "ImageId latest_dlami",
    };
    Finding::note(
        location,
        format!("available_node_types.{node_type}.node_config.ImageId"),
        format!("node type {node_type}: {asked}; will use {image}"),
    )
}

/// Runs preflight for `up` and `validate`.
async fn run_preflight(
    clients: &Clients,
    cluster: &Cluster,
    configs: &BTreeMap<String, NodeConfig>,
    store: Option<(&StoreClient, &Manifest)>,
) -> Result<Preflighted, AwsError> {
    let packages = agent_packages(cluster);
    // Sized with the longest package URLs: the architectures are not known yet.
    let (package, rayefa) = match store {
        Some((client, manifest)) => {
            let presigner = Presigner::new(&client.s3, &client.store).await?;
            (
                presigner.longest(&manifest.packages)?,
                presigner.longest(&manifest.orchestrator)?,
            )
        }
        None => (
            agent_package::longest(packages).map(NodePackage::from),
            None,
        ),
    };
    let autoscaling = crate::autoscaling::head_section(cluster)
        .map_err(|e| AwsError::Autoscaling(e.to_string()))?;
    let mut checks = Vec::new();
    for (name, config) in configs {
        let role = role_of(cluster, name);
        let head = (role == Role::Worker).then_some(SIZING_HEAD_ADDRESS);
        let mut agent_config = render_agent_config(cluster, name, role, head);
        if role == Role::Head {
            agent_config.autoscaling.clone_from(&autoscaling);
        }
        control_secret::with_secret(&mut agent_config, &ControlSecret::placeholder());
        // A head whose store has no rayefa package is refused below; the rest is sized.
        let share = match (&rayefa, autoscaling_head(&agent_config)) {
            (Some(rayefa), true) => Some(head_share_with(
                rayefa.clone(),
                cluster,
                &clients.region,
                &agent_config,
            )?),
            _ => None,
        };
        let user_data = render_user_data(package.as_ref(), &agent_config, share.as_ref()).map_err(
            |source| AwsError::UserData {
                node_type: name.clone(),
                source,
            },
        )?;
        checks.push(NodeTypeCheck {
            name,
            config,
            user_data_len: user_data.len(),
            head_share_len: share.as_ref().map_or(0, |s| s.render().len()),
        });
    }
    let input = preflight::Input {
        node_types: checks,
        availability_zones: provider_zones(cluster),
        agent_packages: packages,
    };
    let outcome = preflight::preflight(clients, &input).await;
    let mut findings: Vec<Finding> = outcome
        .problems
        .iter()
        .map(|p| cluster_finding(cluster, p))
        .collect();
    if let Some((client, manifest)) = store {
        for name in configs.keys() {
            let architectures = outcome
                .architectures
                .get(name)
                .map_or(&[][..], Vec::as_slice);
            let rayefa = (autoscaling.is_some() && role_of(cluster, name) == Role::Head)
                .then(|| agent_store::orchestrator_for(&client.store, manifest, architectures));
            let missing = [
                agent_store::packages_for(&client.store, manifest, architectures).err(),
                rayefa.and_then(Result::err),
            ];
            for error in missing.into_iter().flatten() {
                let location = cluster
                    .node_type(name)
                    .map_or(cluster.spec.provider.referenced, |t| {
                        t.node_config.referenced
                    });
                findings.push(Finding::error(
                    location,
                    format!("available_node_types.{name}.node_config.InstanceType"),
                    error.to_string(),
                ));
            }
        }
    }
    findings.extend(
        outcome
            .images
            .iter()
            .map(|(name, image)| image_note(cluster, name, image)),
    );
    Ok(Preflighted {
        findings,
        architectures: outcome.architectures,
        images: outcome.images,
    })
}

/// What preflight found out, once per run.
#[derive(Debug)]
struct Checked {
    /// The architectures of each node type's instance type.
    architectures: BTreeMap<String, Vec<String>>,
    /// The agent store's manifest, when the file names a store.
    manifest: Option<Manifest>,
    /// The image looked up for each node type without an `ImageId` or with `latest_dlami`:
    /// once per run, so every node of the run boots the same one.
    images: BTreeMap<String, ResolvedImage>,
}

/// Nodes are EC2 instances.
#[derive(Debug)]
pub(crate) struct AwsProvider {
    clients: Clients,
    cluster: Cluster,
    configs: BTreeMap<String, NodeConfig>,
    settings: AwsSettings,
    agent_port: u16,
    /// Tags every instance of this run; client tokens derive from it.
    launch_id: String,
    launches: AtomicU32,
    /// `rayefa.agent_store`, when the file names one.
    store: Option<StoreClient>,
    /// Preflight runs once, before the first launch; it finds each node type's architectures.
    checked: OnceCell<Checked>,
    subnet_zones: OnceCell<BTreeMap<String, String>>,
}

impl AwsProvider {
    /// The provider of `cluster`: its node types' `node_config` checked, SDK clients loaded.
    pub(crate) async fn new(cluster: &Cluster) -> Result<AwsProvider, ProviderError> {
        let rayefa = cluster.spec.rayefa.as_ref().map(|r| &r.value);
        // The file's checks have reported every mistake in the section already.
        let mut settings =
            AwsSettings::from_section(rayefa.and_then(|r| r.aws.as_ref()), &mut Vec::new());
        if let Some(timeout) = cluster.settings.down_timeout {
            settings.terminate_timeout = timeout;
        }
        let configs = node_configs_of(cluster)?;
        let clients = Clients::load(cluster.spec.provider.value.region.as_deref()).await?;
        let store = StoreClient::open(cluster).await?;
        Ok(AwsProvider {
            clients,
            cluster: cluster.clone(),
            configs,
            settings,
            agent_port: cluster.settings.agent_port,
            launch_id: format!("{:016x}", fastrand::u64(..)),
            launches: AtomicU32::new(0),
            store,
            checked: OnceCell::new(),
            subnet_zones: OnceCell::new(),
        })
    }

    /// Runs preflight once (reading the agent store's manifest first, if any).
    async fn ensure_checked(&self) -> Result<&Checked, ProviderError> {
        self.checked
            .get_or_try_init(|| async {
                let manifest = match &self.store {
                    Some(store) => Some(store.manifest().await.map_err(AwsError::from)?),
                    None => None,
                };
                let store = self.store.as_ref().zip(manifest.as_ref());
                let preflighted =
                    run_preflight(&self.clients, &self.cluster, &self.configs, store).await?;
                let findings: Vec<&Finding> = preflighted
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .collect();
                if findings.is_empty() {
                    for note in &preflighted.findings {
                        tracing::info!("{}", note.display(&self.cluster.display_path()));
                    }
                    return Ok(Checked {
                        architectures: preflighted.architectures,
                        manifest,
                        images: preflighted.images,
                    });
                }
                let file = self.cluster.display_path();
                let list: Vec<String> = findings
                    .iter()
                    .map(|f| format!("  {}", f.display(&file)))
                    .collect();
                Err(ProviderError::Failed(format!(
                    "preflight found {} problem(s); nothing was launched:\n{}",
                    findings.len(),
                    list.join("\n")
                )))
            })
            .await
    }

    async fn zones(&self) -> Result<&BTreeMap<String, String>, ProviderError> {
        self.subnet_zones
            .get_or_try_init(|| async {
                let mut subnets: Vec<String> = self
                    .configs
                    .values()
                    .flat_map(NodeConfig::subnets)
                    .collect();
                subnets.sort();
                subnets.dedup();
                if subnets.is_empty() {
                    return Ok(BTreeMap::new());
                }
                let out = self
                    .clients
                    .ec2
                    .describe_subnets()
                    .set_subnet_ids(Some(subnets))
                    .send()
                    .await
                    .map_err(|e| ApiError::from_sdk("describing the node types' subnets", e))?;
                Ok::<_, ProviderError>(
                    out.subnets()
                        .iter()
                        .filter_map(|s| {
                            Some((s.subnet_id()?.to_owned(), s.availability_zone()?.to_owned()))
                        })
                        .collect(),
                )
            })
            .await
    }

    /// The cluster's instances that are not terminated, or the given ones among them.
    ///
    /// EC2 is eventually consistent: for a while after RunInstances, DescribeInstances with
    /// the new instance's id answers `InvalidInstanceID.NotFound`. Then the cluster's listing
    /// (by tag) is asked instead and the instances it does not show yet are left out.
    async fn describe(&self, ids: Option<Vec<String>>) -> Result<Vec<Instance>, ProviderError> {
        let Some(ids) = ids else {
            return Ok(self.describe_listing(None).await?);
        };
        match self.describe_listing(Some(ids.clone())).await {
            Err(error) if error.kind == ErrorKind::NotFound => {
                tracing::debug!("{error}; EC2 may not list new instances yet");
                let all = self.describe_listing(None).await?;
                Ok(all
                    .into_iter()
                    .filter(|i| {
                        i.instance_id()
                            .is_some_and(|id| ids.iter().any(|x| x == id))
                    })
                    .collect())
            }
            answer => Ok(answer?),
        }
    }

    async fn describe_listing(&self, ids: Option<Vec<String>>) -> Result<Vec<Instance>, ApiError> {
        let states = ["pending", "running", "stopping", "stopped", "shutting-down"];
        let mut request = self
            .clients
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::RAYEFA_CLUSTER))
                    .values(self.cluster.name())
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(states.map(String::from).to_vec()))
                    .build(),
            );
        if let Some(ids) = ids {
            request = request.set_instance_ids(Some(ids));
        }
        let mut pages = request.into_paginator().send();
        let mut instances = Vec::new();
        while let Some(page) = pages.try_next().await.map_err(|e| {
            ApiError::from_sdk(
                format!("listing the instances of {}", self.cluster.name()),
                e,
            )
        })? {
            for reservation in page.reservations() {
                instances.extend(reservation.instances().iter().cloned());
            }
        }
        Ok(instances)
    }

    /// CreateTags on `id`, once it is known to be a live instance of this cluster.
    ///
    /// Ray tags a node right after launching it, and for a while after RunInstances EC2 may
    /// not know the new instance yet (`InvalidInstanceID.NotFound`, from DescribeInstances by
    /// id and from CreateTags alike): that answer is retried with backoff for as long as a
    /// launch waits for an instance's address. An instance EC2 knows but that is not one of
    /// this cluster's live ones is refused at once.
    async fn tag_instance(
        &self,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = match self.describe_listing(Some(vec![id.to_owned()])).await {
                Ok(found) if found.is_empty() => {
                    return Err(ProviderError::Failed(format!(
                        "{id} is not a live instance of cluster {}: not tagged",
                        self.cluster.name()
                    )));
                }
                Ok(_) => self
                    .clients
                    .ec2
                    .create_tags()
                    .resources(id)
                    .set_tags(Some(
                        tags.iter()
                            .map(|(k, v)| Tag::builder().key(k).value(v).build())
                            .collect(),
                    ))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| ApiError::from_sdk(format!("tagging {id}"), e)),
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let waited = started.elapsed();
            let again = error.kind == ErrorKind::NotFound || error.kind.is_retryable();
            if !again || waited >= self.settings.address_timeout {
                return Err(error.into());
            }
            let wait = self
                .settings
                .backoff(attempt)
                .min(self.settings.address_timeout - waited);
            let why = if error.kind == ErrorKind::NotFound {
                "EC2 may not know a new instance yet"
            } else {
                "EC2 may answer the next request"
            };
            tracing::warn!("{error}; {why}: trying again in {wait:.1?}");
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits until every instance in `instances` has a private address.
    async fn with_addresses(
        &self,
        mut instances: Vec<Instance>,
    ) -> Result<Vec<Instance>, ProviderError> {
        let deadline = Instant::now() + self.settings.address_timeout;
        loop {
            let missing: Vec<String> = instances
                .iter()
                .filter(|i| i.private_ip_address().is_none())
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect();
            if missing.is_empty() {
                return Ok(instances);
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::Failed(format!(
                    "{} had no private address after {:?}; they are left running: `rayefa down \
                     FILE` terminates them",
                    missing.join(", "),
                    self.settings.address_timeout
                )));
            }
            tokio::time::sleep(WAIT_INTERVAL).await;
            let fresh = self.describe(Some(missing)).await?;
            for instance in &mut instances {
                if let Some(update) = fresh
                    .iter()
                    .find(|f| f.instance_id() == instance.instance_id())
                {
                    *instance = update.clone();
                }
            }
        }
    }

    fn record(&self, instance: &Instance) -> Option<NodeRecord> {
        let tags = tags::tag_map(instance.tags());
        let role = match tags.get(tags::RAY_NODE_KIND).map(String::as_str) {
            Some("head") => Role::Head,
            _ => Role::Worker,
        };
        let private_ip = instance.private_ip_address().map(str::to_owned);
        let agent_address = private_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, self.agent_port));
        Some(NodeRecord {
            id: instance.instance_id()?.to_owned(),
            node_type: tags
                .get(tags::RAY_USER_NODE_TYPE)
                .cloned()
                .unwrap_or_default(),
            role,
            agent_address,
            private_address: private_ip,
            lifecycle: lifecycle(instance),
            launched_at_ms: instance
                .launch_time()
                .and_then(|t| t.to_millis().ok())
                .and_then(|ms| u64::try_from(ms).ok()),
        })
    }
}

/// The node's lifecycle from the instance's state.
fn lifecycle(instance: &Instance) -> Lifecycle {
    let state = instance.state().and_then(|s| s.name());
    match state {
        Some(InstanceStateName::Pending) => Lifecycle::Pending,
        Some(InstanceStateName::Running) => Lifecycle::Running,
        other => {
            let name = other.map_or("unknown", |s| s.as_str());
            let why = match instance.state_reason().and_then(|r| r.message()) {
                Some(reason) if !reason.is_empty() => format!("instance {name}: {reason}"),
                _ => format!("instance {name}"),
            };
            Lifecycle::Stopped { why }
        }
    }
}

#[async_trait::async_trait]
impl Provider for AwsProvider {
    async fn launch(&self, request: LaunchRequest<'_>) -> Result<Vec<NodeRecord>, ProviderError> {
        let checked = self.ensure_checked().await?;
        let config = self.configs.get(request.node_type).ok_or_else(|| {
            ProviderError::Failed(format!(
                "node type {} is not in available_node_types",
                request.node_type
            ))
        })?;
        let resolved;
        let config = match checked.images.get(request.node_type) {
            Some(image) => {
                resolved = config.with_image(&image.image_id);
                &resolved
            }
            None => config,
        };
        let type_architectures = checked
            .architectures
            .get(request.node_type)
            .map_or(&[][..], Vec::as_slice);
        let failed = |e: &dyn std::fmt::Display| {
            ProviderError::Failed(format!("node type {}: {e}", request.node_type))
        };
        // Fresh URLs on every launch, so a scale-out hours after `up` gets working ones.
        let package = match (&self.store, &checked.manifest) {
            (Some(store), Some(manifest)) => Some(
                store
                    .node_package(manifest, type_architectures)
                    .await
                    .map_err(|e| failed(&e))?,
            ),
            _ => agent_package::choose(agent_packages(&self.cluster), type_architectures)
                .map_err(|e| failed(&e))?
                .map(NodePackage::from),
        };
        let agent_config = control_secret::secured(request.config, &self.control_secret_file()?)?;
        if request.role == Role::Head
            && request.config.autoscaling.is_none()
            && self.cluster.spec.autoscales()
        {
            tracing::warn!(
                "{}: the cluster autoscales, but its head can get rayefa only from \
                 rayefa.agent_store, which the file does not name: the head starts Ray without \
                 Ray's autoscaler (docs/autoscaling.md)",
                self.cluster.display_path()
            );
        }
        let share = match (&self.store, &checked.manifest) {
            (Some(store), Some(manifest)) if autoscaling_head(&agent_config) => Some(
                store
                    .head_share(
                        manifest,
                        type_architectures,
                        &self.cluster,
                        &self.clients.region,
                        &agent_config,
                    )
                    .await
                    .map_err(|e| failed(&e))?,
            ),
            _ => None,
        };
        let user_data =
            render_user_data(package.as_ref(), &agent_config, share.as_ref()).map_err(|e| {
                ProviderError::Failed(format!(
                    "rendering the user data of {}: {e}",
                    request.node_type
                ))
            })?;
        let token = format!(
            "rayefa-{}-{}",
            self.launch_id,
            self.launches.fetch_add(1, Ordering::Relaxed)
        );
        let spec = LaunchSpec {
            cluster: self.cluster.name(),
            node_type: request.node_type,
            role: request.role,
            count: request.count,
            config,
            user_data: &user_data,
            launch_id: &self.launch_id,
            tags: request.tags,
            token: &token,
            subnet_zones: self.zones().await?,
        };
        let instances = launch::launch(&self.clients, &self.settings, &spec)
            .await
            .map_err(|e| ProviderError::Failed(e.to_string()))?;
        let instances = self.with_addresses(instances).await?;
        Ok(instances.iter().filter_map(|i| self.record(i)).collect())
    }

    fn location(&self) -> Option<String> {
        Some(self.clients.region.clone())
    }

    /// EC2 keeps them: the instances' own tags.
    fn keeps_tags(&self) -> bool {
        true
    }

    async fn tags(
        &self,
        nodes: &[NodeRecord],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, ProviderError> {
        if nodes.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        Ok(self
            .describe(Some(ids))
            .await?
            .iter()
            .filter_map(|i| Some((i.instance_id()?.to_owned(), tags::tag_map(i.tags()))))
            .filter(|(_, tags)| !tags.is_empty())
            .collect())
    }

    async fn set_tags(
        &self,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        if let Some(key) = tags.keys().find(|k| tags::is_reserved(k)) {
            return Err(ProviderError::Failed(format!(
                "tag {key} of {id}: rayefa sets it itself, and finds its instances by it"
            )));
        }
        self.tag_instance(id, tags).await
    }

    /// Beside the local provider's clusters, by region: `STATE/aws/REGION/CLUSTER/`.
    fn control_secret_file(&self) -> Result<std::path::PathBuf, ProviderError> {
        Ok(crate::provider::local::state_dir()?
            .join("aws")
            .join(&self.clients.region)
            .join(self.cluster.name())
            .join("control-secret"))
    }

    async fn published(
        &self,
        nodes: &[NodeRecord],
    ) -> Result<BTreeMap<String, Published>, ProviderError> {
        if nodes.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let instances = self.describe(Some(ids)).await?;
        Ok(instances
            .iter()
            .filter_map(|i| {
                let state = PublishedState::from_tags(&tags::tag_map(i.tags()))?;
                Some((i.instance_id()?.to_owned(), state.into()))
            })
            .collect())
    }

    async fn list(&self) -> Result<Vec<NodeRecord>, ProviderError> {
        let instances = self.describe(None).await?;
        Ok(instances.iter().filter_map(|i| self.record(i)).collect())
    }

    async fn terminate(&self, nodes: &[NodeRecord]) -> Result<Vec<Termination>, ProviderError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        // Only instances that carry this cluster's rayefa tag, whatever the caller passed.
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let ours: Vec<Instance> = self.describe(Some(ids.clone())).await?;
        let mut outcomes: Vec<Termination> = ids
            .iter()
            .filter(|id| !ours.iter().any(|i| i.instance_id() == Some(id.as_str())))
            .map(|id| Termination {
                id: id.clone(),
                outcome: format!("left alone: not a live instance of {}", self.cluster.name()),
            })
            .collect();
        let to_stop: Vec<String> = ours
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        if to_stop.is_empty() {
            return Ok(outcomes);
        }
        self.clients
            .ec2
            .terminate_instances()
            .set_instance_ids(Some(to_stop.clone()))
            .send()
            .await
            .map_err(|e| ApiError::from_sdk(format!("terminating {}", to_stop.join(", ")), e))?;
        let started = Instant::now();
        let deadline = started + self.settings.terminate_timeout;
        loop {
            let remaining = self.describe(Some(to_stop.clone())).await?;
            if remaining.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let left: Vec<String> = remaining
                    .iter()
                    .map(|i| {
                        format!(
                            "{} ({})",
                            i.instance_id().unwrap_or("?"),
                            i.state().and_then(|s| s.name()).map_or("?", |s| s.as_str())
                        )
                    })
                    .collect();
                return Err(ProviderError::Failed(format!(
                    "asked EC2 to terminate {}, but after {:?} these are not terminated yet: {}",
                    to_stop.join(", "),
                    self.settings.terminate_timeout,
                    left.join(", ")
                )));
            }
            tokio::time::sleep(WAIT_INTERVAL).await;
        }
        let took = started.elapsed().as_secs_f64();
        outcomes.extend(to_stop.into_iter().map(|id| Termination {
            id,
            outcome: format!("terminated in {took:.1} s"),
        }));
        Ok(outcomes)
    }
}

impl From<AwsError> for ProviderError {
    fn from(error: AwsError) -> Self {
        ProviderError::Failed(error.to_string())
    }
}

impl From<ApiError> for ProviderError {
    fn from(error: ApiError) -> Self {
        ProviderError::Failed(error.to_string())
    }
}

/// The user data of a node type carrying the agent configuration `config`, for
/// `rayefa user-data`. With a package per architecture or an agent store, EC2 is asked which
/// architecture the node type's instance type runs; the store's URLs are signed now.
pub(crate) fn node_user_data(
    cluster: &Cluster,
    config: &AgentConfigFile,
) -> Result<String, super::user_data::UserDataError> {
    let node_type = config
        .node
        .as_ref()
        .and_then(|n| n.node_type.clone())
        .unwrap_or_default();
    // The command runs on the multi-threaded runtime; these few calls block it.
    let (package, share) = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(node_package(cluster, &node_type, config))
    })?;
    render_user_data(package.as_ref(), config, share.as_ref())
}

/// The package a node of `node_type` installs, and the head's share when it is the head of a
/// cluster that autoscales, for `rayefa user-data`.
async fn node_package(
    cluster: &Cluster,
    node_type: &str,
    config: &AgentConfigFile,
) -> Result<(Option<NodePackage>, Option<HeadShare>), super::user_data::UserDataError> {
    use super::user_data::UserDataError;
    let store = StoreClient::open(cluster)
        .await
        .map_err(|e| UserDataError::Architecture(e.to_string()))?;
    if let Some(store) = store {
        let manifest = store.manifest().await?;
        let architectures = instance_type_architectures(cluster, node_type).await?;
        let package = store.node_package(&manifest, &architectures).await?;
        let share = if autoscaling_head(config) {
            let clients = Clients::load(cluster.spec.provider.value.region.as_deref())
                .await
                .map_err(|e| UserDataError::Architecture(e.to_string()))?;
            Some(
                store
                    .head_share(&manifest, &architectures, cluster, &clients.region, config)
                    .await
                    .map_err(|e| UserDataError::HeadShare(e.to_string()))?,
            )
        } else {
            None
        };
        return Ok((Some(package), share));
    }
    let packages = agent_packages(cluster);
    let architectures = match packages {
        Some(AgentPackages::PerArchitecture(_)) => {
            instance_type_architectures(cluster, node_type).await?
        }
        _ => Vec::new(),
    };
    Ok((
        agent_package::choose(packages, &architectures)?.map(NodePackage::from),
        None,
    ))
}

/// The architectures of `node_type`'s instance type, from DescribeInstanceTypes.
async fn instance_type_architectures(
    cluster: &Cluster,
    node_type: &str,
) -> Result<Vec<String>, super::user_data::UserDataError> {
    use super::user_data::UserDataError;
    let configs =
        node_configs_of(cluster).map_err(|e| UserDataError::Architecture(e.to_string()))?;
    let instance_type = configs
        .get(node_type)
        .and_then(NodeConfig::instance_type)
        .ok_or_else(|| {
            UserDataError::Architecture(format!(
                "node type {node_type} names no InstanceType to choose its agent package by"
            ))
        })?
        .to_owned();
    let clients = Clients::load(cluster.spec.provider.value.region.as_deref())
        .await
        .map_err(|e| UserDataError::Architecture(e.to_string()))?;
    let out = clients
        .ec2
        .describe_instance_types()
        .instance_types(aws_sdk_ec2::types::InstanceType::from(
            instance_type.as_str(),
        ))
        .send()
        .await
        .map_err(|e| {
            UserDataError::Architecture(
                ApiError::from_sdk(format!("describing instance type {instance_type}"), e)
                    .to_string(),
            )
        })?;
    Ok(out
        .instance_types()
        .first()
        .and_then(|info| info.processor_info())
        .map(|p| {
            p.supported_architectures()
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect()
        })
        .unwrap_or_default())
}
