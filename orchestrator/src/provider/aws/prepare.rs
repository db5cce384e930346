//! `rayefa prepare`: what must exist before EFA nodes launch (the seed guide's steps 3 and 4):
//! the cluster placement groups the node types name, and the self-referencing all-traffic
//! rules, inbound and outbound, on the security groups of EFA interfaces. Running it again
//! changes nothing and says so.

use aws_sdk_ec2::types::{Filter, IpPermission, PlacementStrategy, SecurityGroup, UserIdGroupPair};
use serde::Serialize;

use super::client::Clients;
use super::error::{ApiError, ErrorKind};
use super::node_config::NodeConfig;

/// What `prepare` makes sure of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Placement groups named by `Placement.GroupName`, created with strategy `cluster`.
    pub(crate) placement_groups: Vec<String>,
    /// Security groups of EFA interfaces, which need the self rules.
    pub(crate) efa_security_groups: Vec<String>,
}

impl Plan {
    /// The plan for a cluster's node types.
    pub(crate) fn for_node_types<'a>(configs: impl IntoIterator<Item = &'a NodeConfig>) -> Plan {
        let mut plan = Plan::default();
        for config in configs {
            if let Some(group) = config.placement_group() {
                push_new(&mut plan.placement_groups, group);
            }
            for group in config.efa_security_groups() {
                push_new(&mut plan.efa_security_groups, &group);
            }
        }
        plan
    }
}

fn push_new(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|i| i == item) {
        list.push(item.to_owned());
    }
}

/// What happened to one thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Outcome {
    /// rayefa created it now.
    Created,
    /// It was there already.
    AlreadyPresent,
    /// Something of that name exists but is not what EFA needs.
    Conflict,
}

impl Outcome {
    /// The words the table shows.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::AlreadyPresent => "already present",
            Outcome::Conflict => "CONFLICT",
        }
    }
}

/// One line of `prepare`'s report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Prepared {
    /// `placement group`, `ingress rule`, `egress rule`.
    pub(crate) thing: &'static str,
    /// The group's name or id.
    pub(crate) name: String,
    /// What happened.
    pub(crate) outcome: Outcome,
    /// Details: the rule, the strategy found.
    pub(crate) detail: String,
}

/// Carries out `plan`, one thing after the other.
pub(crate) async fn prepare(clients: &Clients, plan: &Plan) -> Result<Vec<Prepared>, ApiError> {
    let mut report = Vec::new();
    for name in &plan.placement_groups {
        report.push(placement_group(clients, name).await?);
    }
    for group in &plan.efa_security_groups {
        report.push(self_rule(clients, group, Direction::Ingress).await?);
        report.push(self_rule(clients, group, Direction::Egress).await?);
    }
    Ok(report)
}

/// The strategy of the placement group called `name`, if it exists.
pub(crate) async fn placement_group_strategy(
    clients: &Clients,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let out = clients
        .ec2
        .describe_placement_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .send()
        .await
        .map_err(|e| ApiError::from_sdk(format!("describing placement group {name}"), e))?;
    Ok(out
        .placement_groups()
        .iter()
        .find(|g| g.group_name() == Some(name))
        .map(|g| g.strategy().map_or("unknown", |s| s.as_str()).to_owned()))
}

async fn placement_group(clients: &Clients, name: &str) -> Result<Prepared, ApiError> {
    let thing = "placement group";
    if let Some(strategy) = placement_group_strategy(clients, name).await? {
        let (outcome, detail) = if strategy == "cluster" {
            (Outcome::AlreadyPresent, "strategy cluster".to_owned())
        } else {
            (
                Outcome::Conflict,
                format!(
                    "strategy {strategy}; EFA needs a cluster placement group: use another \
                     Placement.GroupName"
                ),
            )
        };
        return Ok(Prepared {
            thing,
            name: name.to_owned(),
            outcome,
            detail,
        });
    }
    let created = clients
        .ec2
        .create_placement_group()
        .group_name(name)
        .strategy(PlacementStrategy::Cluster)
        .send()
        .await;
    let outcome = match created {
        Ok(_) => Outcome::Created,
        Err(e) => {
            let error = ApiError::from_sdk(format!("creating placement group {name}"), e);
            // Someone else created it between the look and the creation.
            if error.kind != ErrorKind::Duplicate {
                return Err(error);
            }
            Outcome::AlreadyPresent
        }
    };
    Ok(Prepared {
        thing,
        name: name.to_owned(),
        outcome,
        detail: "strategy cluster".to_owned(),
    })
}

/// Inbound or outbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Traffic into the group.
    Ingress,
    /// Traffic out of the group.
    Egress,
}

impl Direction {
    /// `ingress` or `egress`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// The all-traffic rule whose peer is the group itself.
fn self_permission(group: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("-1")
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(group).build())
        .build()
}

async fn self_rule(
    clients: &Clients,
    group: &str,
    direction: Direction,
) -> Result<Prepared, ApiError> {
    let doing = format!(
        "adding the self-referencing {} rule to {group}",
        direction.as_str()
    );
    let result = match direction {
        Direction::Ingress => clients
            .ec2
            .authorize_security_group_ingress()
            .group_id(group)
            .ip_permissions(self_permission(group))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ApiError::from_sdk(doing, e)),
        Direction::Egress => clients
            .ec2
            .authorize_security_group_egress()
            .group_id(group)
            .ip_permissions(self_permission(group))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ApiError::from_sdk(doing, e)),
    };
    let outcome = match result {
        Ok(()) => Outcome::Created,
        Err(error) if error.kind == ErrorKind::Duplicate => Outcome::AlreadyPresent,
        Err(error) => return Err(error),
    };
    Ok(Prepared {
        thing: match direction {
            Direction::Ingress => "ingress rule",
            Direction::Egress => "egress rule",
        },
        name: group.to_owned(),
        outcome,
        detail: format!(
            "all traffic {} {group} itself",
            match direction {
                Direction::Ingress => "from",
                Direction::Egress => "to",
            }
        ),
    })
}

/// Whether `group` has the all-traffic rule to or from itself in `direction`.
pub(crate) fn has_self_rule(group: &SecurityGroup, direction: Direction) -> bool {
    let Some(id) = group.group_id() else {
        return false;
    };
    let permissions = match direction {
        Direction::Ingress => group.ip_permissions(),
        Direction::Egress => group.ip_permissions_egress(),
    };
    permissions.iter().any(|p| {
        p.ip_protocol() == Some("-1")
            && p.user_id_group_pairs()
                .iter()
                .any(|pair| pair.group_id() == Some(id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_rules_are_found_only_in_their_direction() {
        let group = SecurityGroup::builder()
            .group_id("sg-1")
            .ip_permissions(self_permission("sg-1"))
            .ip_permissions_egress(
                IpPermission::builder()
                    .ip_protocol("-1")
                    .ip_ranges(
                        aws_sdk_ec2::types::IpRange::builder()
                            .cidr_ip("0.0.0.0/0")
                            .build(),
                    )
                    .build(),
            )
            .build();
        assert!(has_self_rule(&group, Direction::Ingress));
        assert!(!has_self_rule(&group, Direction::Egress));
    }

    #[test]
    fn a_rule_for_one_protocol_is_not_all_traffic() {
        let group = SecurityGroup::builder()
            .group_id("sg-1")
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(0)
                    .to_port(65535)
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-1").build())
                    .build(),
            )
            .build();
        assert!(!has_self_rule(&group, Direction::Ingress));
    }
}
