//! Checks against the account before anything is launched, each problem with its fix: the
//! things that otherwise surface as a failed launch, or worse, as nodes that boot and then
//! cannot use EFA.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Filter, InstanceNetworkInterfaceSpecification, InstanceType, LocationType,
};
use rayefa_cluster::rayefa::AgentPackages;
use serde::Serialize;

use super::agent_package;
use super::client::Clients;
use super::error::{ApiError, ErrorKind};
use super::image::{self, Family, ImageChoice, ResolvedImage};
use super::instance_types::InstanceTypeRow;
use super::node_config::{NodeConfig, ProfileRef};
use super::prepare::{Direction, has_self_rule, placement_group_strategy};
use super::user_data::{USER_DATA_LIMIT, fits_ec2};

/// One problem preflight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Problem {
    /// The node type it concerns, when it concerns one.
    pub(crate) node_type: Option<String>,
    /// Which check found it: `instance-type`, `efa`, `efa-interfaces`, `efa-layout`,
    /// `agent-package`, `architecture`, `image`,
    /// `subnet`, `availability-zone`, `placement-group`, `security-group`,
    /// `instance-profile`, `user-data`, `aws`.
    pub(crate) check: &'static str,
    /// What is wrong.
    pub(crate) problem: String,
    /// How to fix it.
    pub(crate) fix: String,
}

impl Problem {
    /// The problem and its fix, in one message.
    pub(crate) fn message(&self) -> String {
        format!("{}; fix: {}", self.problem, self.fix)
    }

    /// The `node_config` key the problem is about, when it is about one.
    pub(crate) fn field(&self) -> Option<&'static str> {
        match self.check {
            "instance-type" => Some("InstanceType"),
            "efa" | "efa-interfaces" | "efa-layout" => Some("NetworkInterfaces"),
            "architecture" | "image" => Some("ImageId"),
            "placement-group" => Some("Placement.GroupName"),
            "instance-profile" => Some("IamInstanceProfile"),
            _ => None,
        }
    }
}

/// One node type to check.
#[derive(Debug, Clone)]
pub(crate) struct NodeTypeCheck<'a> {
    /// Its key in `available_node_types`.
    pub(crate) name: &'a str,
    /// Its launch arguments.
    pub(crate) config: &'a NodeConfig,
    /// The size of its rendered user data, in bytes.
    pub(crate) user_data_len: usize,
    /// How much of it is the head's share for Ray's autoscaler (rayefa's package, the cluster
    /// file); 0 for every other node type.
    pub(crate) head_share_len: usize,
}

/// Everything preflight looks at.
#[derive(Debug, Clone)]
pub(crate) struct Input<'a> {
    /// The node types.
    pub(crate) node_types: Vec<NodeTypeCheck<'a>>,
    /// `provider.availability_zone`, split at commas; empty when the file has none.
    pub(crate) availability_zones: Vec<String>,
    /// `rayefa.agent_package`.
    pub(crate) agent_packages: Option<&'a AgentPackages>,
}

/// What preflight found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    /// The problems; none means the cluster can be launched.
    pub(crate) problems: Vec<Problem>,
    /// The architectures (EC2's names) of each node type's instance type, where EC2 said.
    pub(crate) architectures: BTreeMap<String, Vec<String>>,
    /// The image looked up for each node type without an `ImageId` or with `latest_dlami`.
    pub(crate) images: BTreeMap<String, ResolvedImage>,
}

/// Collects problems, remembering what EC2 said so each thing is asked about once.
struct Checker<'c> {
    clients: &'c Clients,
    problems: Vec<Problem>,
    types: BTreeMap<String, TypeLookup>,
    architectures: BTreeMap<String, Vec<String>>,
    /// The images to look up, by node type: family, SSM parameter, architecture.
    wanted_images: BTreeMap<String, (Family, &'static str, String)>,
}

impl Checker<'_> {
    fn finding(
        &mut self,
        node_type: Option<&str>,
        check: &'static str,
        problem: String,
        fix: String,
    ) {
        let finding = Problem {
            node_type: node_type.map(str::to_owned),
            check,
            problem,
            fix,
        };
        if !self.problems.contains(&finding) {
            self.problems.push(finding);
        }
    }

    /// A call that failed for another reason than "not found": the check could not be made.
    fn unchecked(&mut self, node_type: Option<&str>, error: &ApiError) {
        self.finding(
            node_type,
            "aws",
            format!("could not check: {error}"),
            "make sure the credentials may call it, then run again".into(),
        );
    }

    /// What EC2 says about instance type `name`; a lookup that failed for another reason than
    /// "no such type" is reported once, as a check that could not be made.
    async fn instance_type(&mut self, name: &str) -> TypeLookup {
        if let Some(known) = self.types.get(name) {
            return known.clone();
        }
        let answer = self
            .clients
            .ec2
            .describe_instance_types()
            .instance_types(InstanceType::from(name))
            .send()
            .await;
        let lookup = match answer {
            Ok(out) => match out.instance_types().first() {
                Some(info) => TypeLookup::Found(InstanceTypeRow::from_info(info)),
                None => TypeLookup::Missing,
            },
            Err(e) => {
                let error = ApiError::from_sdk(format!("describing instance type {name}"), e);
                // A denied or failed call says nothing about whether the type exists.
                if error.kind == ErrorKind::NotFound {
                    TypeLookup::Missing
                } else {
                    self.unchecked(None, &error);
                    TypeLookup::Unchecked
                }
            }
        };
        self.types.insert(name.to_owned(), lookup.clone());
        lookup
    }
}

/// What an instance type lookup found.
#[derive(Debug, Clone)]
enum TypeLookup {
    Found(InstanceTypeRow),
    /// EC2 says there is no such type in the region.
    Missing,
    /// The lookup failed; already reported as a check that could not be made.
    Unchecked,
}

/// Runs every check.
pub(crate) async fn preflight(clients: &Clients, input: &Input<'_>) -> Outcome {
    let mut checker = Checker {
        clients,
        problems: Vec::new(),
        types: BTreeMap::new(),
        architectures: BTreeMap::new(),
        wanted_images: BTreeMap::new(),
    };
    let zones = subnet_zones(&mut checker, input).await;
    for node_type in &input.node_types {
        check_node_type(&mut checker, node_type, input, &zones).await;
    }
    let images = resolve_images(&mut checker).await;
    check_placement_groups(&mut checker, input).await;
    check_security_groups(&mut checker, input).await;
    check_instance_profiles(&mut checker, input).await;
    Outcome {
        problems: checker.problems,
        architectures: checker.architectures,
        images,
    }
}

/// The availability zone of every subnet the node types use; missing subnets are problems.
async fn subnet_zones(checker: &mut Checker<'_>, input: &Input<'_>) -> BTreeMap<String, String> {
    let mut zones = BTreeMap::new();
    let mut users: BTreeMap<String, &str> = BTreeMap::new();
    for node_type in &input.node_types {
        for subnet in node_type.config.subnets() {
            users.entry(subnet).or_insert(node_type.name);
        }
    }
    for (subnet, user) in users {
        let answer = checker
            .clients
            .ec2
            .describe_subnets()
            .subnet_ids(&subnet)
            .send()
            .await;
        match answer {
            Ok(out) => match out.subnets().first().and_then(|s| s.availability_zone()) {
                Some(zone) => {
                    zones.insert(subnet, zone.to_owned());
                }
                None => missing_subnet(checker, user, &subnet),
            },
            Err(e) => {
                let error = ApiError::from_sdk(format!("describing subnet {subnet}"), e);
                if error.kind == ErrorKind::NotFound {
                    missing_subnet(checker, user, &subnet);
                } else {
                    checker.unchecked(Some(user), &error);
                }
            }
        }
    }
    zones
}

fn missing_subnet(checker: &mut Checker<'_>, node_type: &str, subnet: &str) {
    checker.finding(
        Some(node_type),
        "subnet",
        format!(
            "subnet {subnet} does not exist in {}",
            checker.clients.region
        ),
        "check PRIV_SUBNET_ID (`rayefa env` finds it by tag) and the region".into(),
    );
}

async fn check_node_type(
    checker: &mut Checker<'_>,
    node_type: &NodeTypeCheck<'_>,
    input: &Input<'_>,
    zones: &BTreeMap<String, String>,
) {
    let provider_zones = &input.availability_zones;
    let name = node_type.name;
    let config = node_type.config;
    let region = checker.clients.region.clone();

    let used_zones: Vec<String> = {
        let mut used: Vec<String> = config
            .subnets()
            .iter()
            .filter_map(|s| zones.get(s).cloned())
            .chain(config.availability_zone().map(str::to_owned))
            .collect();
        used.sort();
        used.dedup();
        used
    };
    if used_zones.len() > 1 && (config.efa_interfaces() > 0 || config.placement_group().is_some()) {
        checker.finding(
            Some(name),
            "availability-zone",
            format!(
                "the subnets are in different availability zones ({}); a cluster placement \
                 group and EFA traffic stay within one",
                used_zones.join(", ")
            ),
            "use subnets of one availability zone".into(),
        );
    }
    if !provider_zones.is_empty() {
        for zone in used_zones.iter().filter(|z| !provider_zones.contains(z)) {
            checker.finding(
                Some(name),
                "availability-zone",
                format!(
                    "a subnet is in {zone}, but provider.availability_zone is {}",
                    provider_zones.join(",")
                ),
                "use a subnet in that zone, or change provider.availability_zone".into(),
            );
        }
    }

    let image_choice = image::choice(config);
    if let Some(instance_type) = config.instance_type() {
        match checker.instance_type(instance_type).await {
            TypeLookup::Unchecked => {}
            TypeLookup::Missing => checker.finding(
                Some(name),
                "instance-type",
                format!("instance type {instance_type} does not exist in {region}"),
                "pick one from `rayefa instance-types --efa`".into(),
            ),
            TypeLookup::Found(row) => {
                checker
                    .architectures
                    .insert(name.to_owned(), row.architectures.clone());
                if let Err(missing) =
                    agent_package::choose(input.agent_packages, &row.architectures)
                {
                    checker.finding(
                        Some(name),
                        "agent-package",
                        format!("{instance_type}: {missing}"),
                        format!(
                            "add rayefa.agent_package.{} (url and sha256 of the package built \
                             for it), or use an instance type of another architecture",
                            missing.architectures.first().map_or("ARCH", String::as_str)
                        ),
                    );
                }
                check_type_abilities(checker, name, config, &row);
                for zone in &used_zones {
                    check_offering(checker, name, instance_type, zone).await;
                }
                match image_choice {
                    ImageChoice::Given(image) => {
                        check_architecture(checker, name, image, &row).await;
                    }
                    ImageChoice::Latest(family) => want_image(checker, name, family, &row),
                    ImageChoice::FromLaunchTemplate => {}
                }
            }
        }
    } else if let ImageChoice::Latest(family) = image_choice {
        checker.finding(
            Some(name),
            "image",
            format!(
                "{} and no InstanceType to choose the image's architecture by",
                image_request(family)
            ),
            "add InstanceType, or set ImageId to an AMI id".into(),
        );
    }

    if !fits_ec2(node_type.user_data_len) {
        let (share, fix) = if node_type.head_share_len > 0 {
            (
                format!(
                    " ({} of them the cluster file and rayefa's package, which the head of a \
                     cluster that autoscales gets for Ray's autoscaler)",
                    node_type.head_share_len
                ),
                "shorten the setup commands or the cluster file (its comments travel too), or \
                 move commands into a script they download",
            )
        } else {
            (
                String::new(),
                "shorten the setup commands, or move them into a script the commands download",
            )
        };
        checker.finding(
            Some(name),
            "user-data",
            format!(
                "the user data is {} bytes{share}; EC2 takes at most {USER_DATA_LIMIT}",
                node_type.user_data_len
            ),
            fix.into(),
        );
    }
}

/// How the file asked for a looked-up image, for messages.
fn image_request(family: Family) -> &'static str {
    match family {
        Family::Al2023 => "ImageId is missing",
        Family::DeepLearning => "ImageId is latest_dlami",
    }
}

/// Notes the image parameter a node type of instance type `row` needs, or the problem when
/// AWS publishes none for the type's architecture.
fn want_image(checker: &mut Checker<'_>, name: &str, family: Family, row: &InstanceTypeRow) {
    match image::parameter_for(family, &row.architectures) {
        Some((parameter, architecture)) => {
            checker
                .wanted_images
                .insert(name.to_owned(), (family, parameter, architecture));
        }
        None => checker.finding(
            Some(name),
            "image",
            format!(
                "{}, and AWS publishes no {} image parameter for {}, which runs {}",
                image_request(family),
                family.name(),
                row.instance_type,
                row.architectures.join(", ")
            ),
            "set ImageId to an AMI id for that architecture".into(),
        ),
    }
}

/// Looks up every wanted image in one SSM call; a parameter the region does not have is a
/// problem of each node type that needs it.
async fn resolve_images(checker: &mut Checker<'_>) -> BTreeMap<String, ResolvedImage> {
    let wanted = std::mem::take(&mut checker.wanted_images);
    let mut parameters: Vec<&'static str> = wanted.values().map(|(_, p, _)| *p).collect();
    parameters.sort_unstable();
    parameters.dedup();
    let values = match image::read_parameters(checker.clients, &parameters).await {
        Ok(values) => values,
        Err(error) => {
            for name in wanted.keys() {
                checker.unchecked(Some(name), &error);
            }
            return BTreeMap::new();
        }
    };
    let mut images = BTreeMap::new();
    for (name, (family, parameter, architecture)) in wanted {
        match values.get(parameter) {
            Some(image_id) => {
                images.insert(
                    name,
                    ResolvedImage {
                        image_id: image_id.clone(),
                        family,
                        architecture,
                        parameter,
                    },
                );
            }
            None => {
                let region = checker.clients.region.clone();
                checker.finding(
                    Some(&name),
                    "image",
                    format!(
                        "{}, and SSM has no parameter {parameter} in {region} to find the                          latest {} image by",
                        image_request(family),
                        family.name()
                    ),
                    "set ImageId to an AMI id available in the region".into(),
                );
            }
        }
    }
    images
}

fn check_type_abilities(
    checker: &mut Checker<'_>,
    name: &str,
    config: &NodeConfig,
    row: &InstanceTypeRow,
) {
    for (problem, fix) in efa_layout_problems(config.network_interfaces(), row) {
        checker.finding(Some(name), "efa-layout", problem, fix);
    }
    let wanted = config.efa_interfaces();
    if wanted == 0 {
        return;
    }
    let instance_type = &row.instance_type;
    if !row.efa_supported {
        checker.finding(
            Some(name),
            "efa",
            format!("{instance_type} does not support EFA, but a network interface asks for it"),
            "pick an EFA-capable type (`rayefa instance-types --efa`)".into(),
        );
    } else if i64::try_from(wanted).unwrap_or(i64::MAX) > i64::from(row.max_efa_interfaces) {
        checker.finding(
            Some(name),
            "efa-interfaces",
            format!(
                "{wanted} EFA interfaces asked for; {instance_type} takes at most {}",
                row.max_efa_interfaces
            ),
            format!(
                "use at most {} EFA interfaces, or a larger type",
                row.max_efa_interfaces
            ),
        );
    }
}

/// The network interface layouts AWS refuses at launch, as (problem, fix): a network card
/// index the type does not have, more than one EFA (`efa` or `efa-only`) on one network card,
/// and an `efa-only` primary interface (network card 0, device 0), which can carry no IP
/// traffic. A missing index is 0, as RunInstances takes it.
pub(crate) fn efa_layout_problems(
    interfaces: &[InstanceNetworkInterfaceSpecification],
    row: &InstanceTypeRow,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let instance_type = &row.instance_type;
    let mut efa_on_card: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (at, interface) in interfaces.iter().enumerate() {
        let card = interface.network_card_index().unwrap_or(0);
        let device = interface.device_index().unwrap_or(0);
        let kind = interface.interface_type().unwrap_or("interface");
        if card < 0 || card >= row.network_cards {
            problems.push((
                format!(
                    "NetworkInterfaces[{at}] has NetworkCardIndex {card}; {instance_type} has {} \
                     network card(s), indices 0 to {}",
                    row.network_cards,
                    row.network_cards - 1
                ),
                format!(
                    "use NetworkCardIndex below {} (`rayefa instance-types` shows the cards), \
                     or a type with more network cards",
                    row.network_cards
                ),
            ));
        }
        if matches!(kind, "efa" | "efa-only") {
            efa_on_card.entry(card).or_default().push(at);
        }
        if card == 0 && device == 0 && kind == "efa-only" {
            problems.push((
                format!(
                    "NetworkInterfaces[{at}] is the primary interface (network card 0, device 0) \
                     and is efa-only; AWS refuses an efa-only primary interface, which has no IP \
                     address"
                ),
                "make the primary interface `efa` (EFA with IP) and put efa-only interfaces \
                 on the other network cards"
                    .into(),
            ));
        }
    }
    for (card, at) in efa_on_card.iter().filter(|(_, at)| at.len() > 1) {
        let listed: Vec<String> = at.iter().map(|i| format!("[{i}]")).collect();
        problems.push((
            format!(
                "NetworkInterfaces{} are all EFA interfaces on network card {card}; AWS takes \
                 one EFA interface per network card",
                listed.join("")
            ),
            "give each EFA interface its own NetworkCardIndex".into(),
        ));
    }
    problems
}

async fn check_offering(checker: &mut Checker<'_>, name: &str, instance_type: &str, zone: &str) {
    let answer = checker
        .clients
        .ec2
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone)
        .filters(
            Filter::builder()
                .name("instance-type")
                .values(instance_type)
                .build(),
        )
        .filters(Filter::builder().name("location").values(zone).build())
        .send()
        .await;
    match answer {
        Ok(out) if out.instance_type_offerings().is_empty() => checker.finding(
            Some(name),
            "instance-type",
            format!("{instance_type} is not offered in {zone}"),
            "use a subnet in a zone that offers it, or another type".into(),
        ),
        Ok(_) => {}
        Err(e) => {
            let error = ApiError::from_sdk(format!("asking where {instance_type} is offered"), e);
            checker.unchecked(Some(name), &error);
        }
    }
}

async fn check_architecture(
    checker: &mut Checker<'_>,
    name: &str,
    image: &str,
    row: &InstanceTypeRow,
) {
    let answer = checker
        .clients
        .ec2
        .describe_images()
        .image_ids(image)
        .send()
        .await;
    let architecture = match answer {
        Ok(out) => match out.images().first() {
            Some(found) => found.architecture().map(|a| a.as_str().to_owned()),
            None => {
                missing_image(checker, name, image);
                return;
            }
        },
        Err(e) => {
            let error = ApiError::from_sdk(format!("describing image {image}"), e);
            if error.kind == ErrorKind::NotFound
                || error.code.as_deref() == Some("InvalidAMIID.Malformed")
            {
                missing_image(checker, name, image);
            } else {
                checker.unchecked(Some(name), &error);
            }
            return;
        }
    };
    if let Some(architecture) = architecture
        && !row.architectures.contains(&architecture)
    {
        checker.finding(
            Some(name),
            "architecture",
            format!(
                "image {image} is {architecture}; {} runs {}",
                row.instance_type,
                row.architectures.join(", ")
            ),
            format!(
                "use an image for {} (`rayefa env` prints X86_AMI_ID and ARM_AMI_ID)",
                row.architectures.join(" or ")
            ),
        );
    }
}

fn missing_image(checker: &mut Checker<'_>, name: &str, image: &str) {
    checker.finding(
        Some(name),
        "architecture",
        format!("image {image} does not exist in {}", checker.clients.region),
        "use X86_AMI_ID or ARM_AMI_ID from `rayefa env`".into(),
    );
}

async fn check_placement_groups(checker: &mut Checker<'_>, input: &Input<'_>) {
    let mut seen: Vec<&str> = Vec::new();
    for node_type in &input.node_types {
        let Some(group) = node_type.config.placement_group() else {
            continue;
        };
        if seen.contains(&group) {
            continue;
        }
        seen.push(group);
        match placement_group_strategy(checker.clients, group).await {
            Ok(None) => checker.finding(
                Some(node_type.name),
                "placement-group",
                format!("placement group {group} does not exist"),
                "run `rayefa prepare FILE`".into(),
            ),
            Ok(Some(strategy))
                if strategy != "cluster" && node_type.config.efa_interfaces() > 0 =>
            {
                checker.finding(
                    Some(node_type.name),
                    "placement-group",
                    format!("placement group {group} has strategy {strategy}"),
                    "use a placement group with strategy cluster for EFA nodes".into(),
                )
            }
            Ok(Some(_)) => {}
            Err(error) => checker.unchecked(Some(node_type.name), &error),
        }
    }
}

async fn check_security_groups(checker: &mut Checker<'_>, input: &Input<'_>) {
    let mut users: BTreeMap<String, (&str, bool)> = BTreeMap::new();
    for node_type in &input.node_types {
        let efa = node_type.config.efa_security_groups();
        for group in node_type.config.security_groups() {
            let entry = users
                .entry(group.clone())
                .or_insert((node_type.name, false));
            entry.1 |= efa.contains(&group);
        }
    }
    for (group, (user, needs_self_rule)) in users {
        let answer = checker
            .clients
            .ec2
            .describe_security_groups()
            .group_ids(&group)
            .send()
            .await;
        let described = match answer {
            Ok(out) => out.security_groups().first().cloned(),
            Err(e) => {
                let error = ApiError::from_sdk(format!("describing security group {group}"), e);
                if error.kind != ErrorKind::NotFound {
                    checker.unchecked(Some(user), &error);
                    continue;
                }
                None
            }
        };
        let Some(described) = described else {
            checker.finding(
                Some(user),
                "security-group",
                format!("security group {group} does not exist"),
                "check HEAD_SG_ID / WORKER_SG_ID (`rayefa env` finds them by name)".into(),
            );
            continue;
        };
        if !needs_self_rule {
            continue;
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            if !has_self_rule(&described, direction) {
                checker.finding(
                    Some(user),
                    "security-group",
                    format!(
                        "security group {group} has no all-traffic {} rule referencing itself; \
                         EFA traffic between the nodes would be dropped",
                        direction.as_str()
                    ),
                    "run `rayefa prepare FILE`".into(),
                );
            }
        }
    }
}

async fn check_instance_profiles(checker: &mut Checker<'_>, input: &Input<'_>) {
    let mut seen: Vec<String> = Vec::new();
    for node_type in &input.node_types {
        let Some(profile) = node_type.config.instance_profile() else {
            continue;
        };
        let name = match &profile {
            ProfileRef::Name(name) => name.clone(),
            // arn:aws:iam::123456789012:instance-profile/path/name
            ProfileRef::Arn(arn) => arn.rsplit('/').next().unwrap_or(arn).to_owned(),
        };
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        let answer = checker
            .clients
            .iam
            .get_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await;
        let answer = match answer {
            Ok(out) => {
                let holds_role = out
                    .instance_profile()
                    .is_some_and(|p| !p.roles().is_empty());
                if !holds_role {
                    checker.finding(
                        Some(node_type.name),
                        "instance-profile",
                        format!(
                            "instance profile {name} holds no role; the nodes would have no AWS \
                             credentials (their agents publish their state as EC2 tags with them)"
                        ),
                        format!(
                            "aws iam add-role-to-instance-profile --instance-profile-name {name} \
                             --role-name ROLE (docs/aws.md, \"Your first cluster\", has the role)"
                        ),
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = answer {
            let error = ApiError::from_sdk(format!("reading instance profile {name}"), e);
            if error.kind == ErrorKind::NotFound {
                checker.finding(
                    Some(node_type.name),
                    "instance-profile",
                    format!("instance profile {name} does not exist"),
                    format!(
                        "create it (aws iam create-instance-profile --instance-profile-name \
                         {name}) and add a role, or fix IamInstanceProfile"
                    ),
                );
            } else {
                checker.unchecked(Some(node_type.name), &error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::InstanceNetworkInterfaceSpecification as Interface;

    fn row(cards: i32) -> InstanceTypeRow {
        InstanceTypeRow {
            instance_type: "p4d.24xlarge".into(),
            architectures: vec!["x86_64".into()],
            vcpus: 96,
            cores: 48,
            memory_gib: 1152.0,
            efa_supported: true,
            max_efa_interfaces: 4,
            network_cards: cards,
        }
    }

    fn interface(card: Option<i32>, device: i32, kind: &str) -> Interface {
        Interface::builder()
            .set_network_card_index(card)
            .device_index(device)
            .interface_type(kind)
            .build()
    }

    #[test]
    fn one_efa_per_card_on_cards_the_type_has_with_an_ip_primary_passes() {
        let layout = [
            interface(None, 0, "efa"),
            interface(Some(1), 1, "efa-only"),
            interface(Some(2), 1, "efa-only"),
            interface(Some(3), 1, "efa-only"),
            interface(Some(1), 2, "interface"),
        ];
        assert_eq!(efa_layout_problems(&layout, &row(4)), Vec::new());
    }

    #[test]
    fn each_refused_layout_is_named() {
        let primary = efa_layout_problems(&[interface(Some(0), 0, "efa-only")], &row(4));
        assert_eq!(primary.len(), 1, "{primary:?}");
        assert!(primary[0].0.contains("primary interface"), "{primary:?}");

        let beyond = efa_layout_problems(
            &[interface(None, 0, "efa"), interface(Some(4), 1, "efa-only")],
            &row(4),
        );
        assert_eq!(beyond.len(), 1, "{beyond:?}");
        assert!(
            beyond[0]
                .0
                .contains("NetworkInterfaces[1] has NetworkCardIndex 4; p4d.24xlarge has 4"),
            "{beyond:?}"
        );

        let shared = efa_layout_problems(
            &[interface(None, 0, "efa"), interface(None, 1, "efa-only")],
            &row(4),
        );
        assert_eq!(shared.len(), 1, "{shared:?}");
        assert!(
            shared[0]
                .0
                .contains("NetworkInterfaces[0][1] are all EFA interfaces on network card 0"),
            "{shared:?}"
        );

        // A second interface that is not EFA may share card 0.
        let plain = [interface(None, 0, "efa"), interface(None, 1, "interface")];
        assert!(efa_layout_problems(&plain, &row(1)).is_empty());
    }
}
