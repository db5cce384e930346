//! RunInstances for one node type: the file's arguments plus rayefa's count, user data, tags
//! and client token, retried with backoff when EC2 has no capacity, throttles or fails.
//!
//! Each launch has a client token, kept while a request is repeated after an answer that
//! leaves it open whether the instances started (a server error, throttling, a broken
//! connection), so EC2 answers the repeat with the instances of the first request instead of
//! starting more. After a definite "no capacity" the token changes, and with Ray's
//! `SubnetIds` the next subnet is tried.
//!
//! For a while after an instance profile is created, RunInstances refuses it
//! (`InvalidParameterValue: ... Invalid IAM Instance Profile name`: IAM is eventually
//! consistent). That answer is retried with backoff for at most [`PROFILE_PROPAGATION_LIMIT`],
//! apart from the attempts the settings allow, and each retry says why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::operation::run_instances::builders::RunInstancesInputBuilder;
use aws_sdk_ec2::types::{Instance, ResourceType, Tag, TagSpecification};
use base64::Engine;
use rayefa_wire::Role;

use super::client::Clients;
use super::error::{ApiError, ErrorKind};
use super::node_config::NodeConfig;
use super::settings::AwsSettings;
use super::tags;

/// How long RunInstances' refusal of an instance profile is taken for IAM's propagation delay
/// (AWS: "a few seconds", seen up to about a minute) before it is taken for a wrong name.
pub(crate) const PROFILE_PROPAGATION_LIMIT: Duration = Duration::from_secs(120);

/// Whether `error` is EC2 refusing an instance profile it does not know (yet).
fn is_profile_refusal(error: &ApiError) -> bool {
    error.code.as_deref() == Some("InvalidParameterValue")
        && error.detail.contains("Invalid IAM Instance Profile name")
}

/// One launch of `count` nodes of one node type.
#[derive(Debug, Clone)]
pub(crate) struct LaunchSpec<'a> {
    /// `cluster_name`.
    pub(crate) cluster: &'a str,
    /// The key in `available_node_types`.
    pub(crate) node_type: &'a str,
    /// Head or worker.
    pub(crate) role: Role,
    /// How many instances.
    pub(crate) count: usize,
    /// The node type's RunInstances arguments.
    pub(crate) config: &'a NodeConfig,
    /// The user data script, not yet base64-encoded.
    pub(crate) user_data: &'a str,
    /// The `rayefa up` run, tagged on every instance.
    pub(crate) launch_id: &'a str,
    /// The request's own tags (Ray's, `rayefa-autoscaled`), given at launch so that no
    /// listing shows the instance without them.
    pub(crate) tags: &'a BTreeMap<String, String>,
    /// Unique to this launch within the run; client tokens derive from it.
    pub(crate) token: &'a str,
    /// The availability zone of each subnet, for messages.
    pub(crate) subnet_zones: &'a BTreeMap<String, String>,
}

/// A launch that did not start every instance.
#[derive(Debug, thiserror::Error)]
#[error(
    "{target}: {detail}; gave up after {attempts} attempt(s).{left}",
    detail = .error.detail,
    left = left_running(.launched)
)]
pub(crate) struct LaunchError {
    /// What was being launched, where: type, node type, zone, subnet, placement group.
    pub(crate) target: String,
    /// The last error.
    pub(crate) error: ApiError,
    /// RunInstances calls made.
    pub(crate) attempts: u32,
    /// Instances that did start and are still running.
    pub(crate) launched: Vec<String>,
}

fn left_running(launched: &[String]) -> String {
    if launched.is_empty() {
        String::new()
    } else {
        format!(
            " {} instance(s) did start and are left running ({}); `rayefa down FILE` \
             terminates them",
            launched.len(),
            launched.join(", ")
        )
    }
}

/// Launches `spec.count` instances, retrying as `settings` allows.
pub(crate) async fn launch(
    clients: &Clients,
    settings: &AwsSettings,
    spec: &LaunchSpec<'_>,
) -> Result<Vec<Instance>, LaunchError> {
    let user_data = base64::engine::general_purpose::STANDARD.encode(spec.user_data);
    let tag_specifications = merged_tags(spec);
    let mut launched: Vec<Instance> = Vec::new();
    let mut attempt = 0u32;
    let mut round = 0u32;
    let mut subnet_index = 0usize;
    // Since when RunInstances has refused the instance profile, and how often.
    let mut profile_refused: Option<(Instant, u32)> = None;
    loop {
        attempt += 1;
        let remaining = spec.count - launched.len();
        let subnet = (!spec.config.subnet_ids.is_empty())
            .then(|| spec.config.subnet_ids[subnet_index % spec.config.subnet_ids.len()].clone());
        let target = describe_target(spec, remaining, subnet.as_deref());
        let input = request(
            spec,
            subnet.as_deref(),
            remaining,
            &user_data,
            &tag_specifications,
        )
        .client_token(format!("{}-{round}", spec.token));
        let mut error = match input.send_with(&clients.ec2_launch).await {
            Ok(out) => {
                launched.extend(out.instances().iter().cloned());
                if launched.len() >= spec.count {
                    return Ok(launched);
                }
                // EC2 started fewer than asked (MinCount 1): ask again for the rest, anew.
                round += 1;
                ApiError {
                    doing: target.clone(),
                    kind: ErrorKind::Capacity,
                    code: Some("InsufficientInstanceCapacity".into()),
                    detail: format!("EC2 started {} of {remaining}", out.instances().len()),
                }
            }
            Err(e) => ApiError::from_sdk(target.clone(), e),
        };
        if is_profile_refusal(&error) {
            let (since, refusals) = profile_refused.get_or_insert((Instant::now(), 0));
            *refusals += 1;
            let waited = since.elapsed();
            if waited < PROFILE_PROPAGATION_LIMIT {
                let wait = settings
                    .backoff(*refusals)
                    .min(PROFILE_PROPAGATION_LIMIT - waited);
                tracing::warn!(
                    "{target}: {}; a new instance profile takes a while to reach EC2 (IAM is \
                     eventually consistent): trying again in {:.0?} (waited {}s of at most {}s)",
                    error.detail,
                    round_up(wait),
                    waited.as_secs(),
                    PROFILE_PROPAGATION_LIMIT.as_secs()
                );
                tokio::time::sleep(wait).await;
                // Not one of the attempts the settings count: the request was refused whole.
                attempt -= 1;
                round += 1;
                continue;
            }
            error.detail.push_str(&format!(
                " (still refused {}s after the first refusal: check that the instance \
                 profile exists and holds a role, `aws iam get-instance-profile \
                 --instance-profile-name NAME`)",
                waited.as_secs()
            ));
        }
        if !error.kind.is_retryable() || attempt >= settings.launch_attempts {
            return Err(LaunchError {
                target,
                error,
                attempts: attempt,
                launched: launched
                    .iter()
                    .filter_map(|i| i.instance_id().map(str::to_owned))
                    .collect(),
            });
        }
        if error.kind == ErrorKind::Capacity {
            round += 1;
            subnet_index += 1;
        }
        let wait = settings.backoff(attempt);
        tracing::warn!(
            "{target}: {}; trying again in {:.0?} (attempt {} of {})",
            error.detail,
            round_up(wait),
            attempt + 1,
            settings.launch_attempts
        );
        tokio::time::sleep(wait).await;
    }
}

fn round_up(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

/// The RunInstances input of one attempt.
fn request(
    spec: &LaunchSpec<'_>,
    subnet: Option<&str>,
    count: usize,
    user_data: &str,
    tag_specifications: &[TagSpecification],
) -> RunInstancesInputBuilder {
    let count = i32::try_from(count).unwrap_or(i32::MAX);
    let mut input = spec.config.input.clone();
    if let Some(subnet) = subnet {
        input = input.subnet_id(subnet);
    }
    input
        .min_count(1)
        .max_count(count)
        .user_data(user_data)
        .set_tag_specifications(Some(tag_specifications.to_vec()))
}

/// "2 × i7i.24xlarge for efa_worker_node in ap-northeast-1a (subnet-1), placement group pg".
fn describe_target(spec: &LaunchSpec<'_>, count: usize, subnet: Option<&str>) -> String {
    let instance_type = spec
        .config
        .instance_type()
        .unwrap_or("(type from launch template)");
    let mut target = format!("launching {count} × {instance_type} for {}", spec.node_type);
    let subnets = match subnet {
        Some(subnet) => vec![subnet.to_owned()],
        None => spec.config.subnets(),
    };
    let zone = subnets
        .iter()
        .find_map(|s| spec.subnet_zones.get(s))
        .map(String::as_str)
        .or(spec.config.availability_zone());
    if let Some(zone) = zone {
        target.push_str(&format!(" in {zone}"));
    }
    if !subnets.is_empty() {
        target.push_str(&format!(" ({})", subnets.join(", ")));
    }
    if let Some(group) = spec.config.placement_group() {
        target.push_str(&format!(", placement group {group}"));
    }
    target
}

/// The file's tag specifications with rayefa's and Ray's instance tags merged in, the way
/// Ray merges them: the file's instance tags win for keys both set (only `Name` can clash:
/// the others are reserved), other resource types are kept as written. The request's tags
/// come between: rayefa's own win over them (Ray's autoscaler asks for the same
/// `ray-node-type` and `ray-user-node-type` values), they win over the file's.
fn merged_tags(spec: &LaunchSpec<'_>) -> Vec<TagSpecification> {
    let mut ours = tags::launch_tags(spec.cluster, spec.node_type, spec.role, spec.launch_id);
    let requested: Vec<Tag> = spec
        .tags
        .iter()
        .filter(|(key, _)| !ours.iter().any(|t| t.key() == Some(key.as_str())))
        .map(|(key, value)| Tag::builder().key(key).value(value).build())
        .collect();
    ours.extend(requested);
    let mut specs: Vec<TagSpecification> = spec
        .config
        .input
        .get_tag_specifications()
        .clone()
        .unwrap_or_default();
    match specs
        .iter()
        .position(|s| s.resource_type() == Some(&ResourceType::Instance))
    {
        Some(at) => {
            let theirs = specs[at].tags().to_vec();
            let mut merged: Vec<Tag> = ours
                .into_iter()
                .filter(|t| !theirs.iter().any(|u| u.key() == t.key()))
                .collect();
            merged.extend(theirs);
            specs[at] = TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(merged))
                .build();
        }
        None => specs.push(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(ours))
                .build(),
        ),
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::node_config;
    use serde_json::json;

    const NO_TAGS: &BTreeMap<String, String> = &BTreeMap::new();

    fn spec<'a>(config: &'a NodeConfig, zones: &'a BTreeMap<String, String>) -> LaunchSpec<'a> {
        LaunchSpec {
            cluster: "c1",
            node_type: "efa_worker_node",
            role: Role::Worker,
            count: 2,
            config,
            user_data: "#!/bin/bash\n",
            launch_id: "run1",
            tags: NO_TAGS,
            token: "rayefa-run1-1",
            subnet_zones: zones,
        }
    }

    #[test]
    fn file_tags_win_for_name_and_other_resources_are_kept() {
        let config = node_config::parse(
            &json!({
                "InstanceType": "i7i.24xlarge",
                "SubnetId": "subnet-1",
                "Placement": {"GroupName": "pg"},
                "TagSpecifications": [
                    {"ResourceType": "volume", "Tags": [{"Key": "team", "Value": "ml"}]},
                    {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "mine"}]}
                ]
            }),
            "n",
        )
        .expect("valid");
        let zones = BTreeMap::from([("subnet-1".to_owned(), "ap-northeast-1a".to_owned())]);
        let spec = spec(&config, &zones);
        let merged = merged_tags(&spec);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].resource_type(), Some(&ResourceType::Volume));
        let instance = tags::tag_map(merged[1].tags());
        assert_eq!(instance["Name"], "mine");
        assert_eq!(instance[tags::RAYEFA_CLUSTER], "c1");
        assert_eq!(instance[tags::RAY_USER_NODE_TYPE], "efa_worker_node");
        assert_eq!(
            describe_target(&spec, 2, None),
            "launching 2 × i7i.24xlarge for efa_worker_node in ap-northeast-1a (subnet-1), \
             placement group pg"
        );
    }

    #[test]
    fn the_requests_tags_are_launched_with_and_rayefas_own_win() {
        let config = node_config::parse(
            &json!({
                "InstanceType": "m7i.xlarge",
                "TagSpecifications": [
                    {"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "ml"},
                                                          {"Key": "Name", "Value": "mine"}]}
                ]
            }),
            "n",
        )
        .expect("valid");
        let zones = BTreeMap::new();
        let requested = BTreeMap::from([
            ("rayefa-autoscaled".to_owned(), "true".to_owned()),
            ("ray-node-type".to_owned(), "head".to_owned()),
            ("ray-launch-config".to_owned(), "abc".to_owned()),
            ("team".to_owned(), "ray".to_owned()),
        ]);
        let mut spec = spec(&config, &zones);
        spec.tags = &requested;
        let merged = merged_tags(&spec);
        let keys: Vec<&str> = merged[0].tags().iter().filter_map(Tag::key).collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "every key once: {keys:?}");
        let instance = tags::tag_map(merged[0].tags());
        assert_eq!(instance["rayefa-autoscaled"], "true");
        assert_eq!(instance["ray-launch-config"], "abc");
        assert_eq!(
            instance[tags::RAY_NODE_KIND],
            "worker",
            "the role is rayefa's"
        );
        assert_eq!(
            instance["team"], "ml",
            "the file's tags win over the request's"
        );
        assert_eq!(instance["Name"], "mine");
    }

    #[test]
    fn each_attempt_asks_for_what_is_missing_with_the_files_arguments() {
        let config = node_config::parse(
            &json!({"InstanceType": "m7i.xlarge", "SubnetIds": ["subnet-a", "subnet-b"]}),
            "n",
        )
        .expect("valid");
        let zones = BTreeMap::new();
        let spec = spec(&config, &zones);
        let input = request(&spec, Some("subnet-b"), 1, "dXNlcg==", &merged_tags(&spec));
        assert_eq!(input.get_subnet_id().as_deref(), Some("subnet-b"));
        assert_eq!(input.get_min_count(), &Some(1));
        assert_eq!(input.get_max_count(), &Some(1));
        assert_eq!(input.get_user_data().as_deref(), Some("dXNlcg=="));
        assert_eq!(
            input.get_instance_type().as_ref().map(|t| t.as_str()),
            Some("m7i.xlarge")
        );
    }

    #[test]
    fn only_the_instance_profile_refusal_waits_for_iam() {
        let error = |code: &str, detail: &str| ApiError {
            doing: "launching".into(),
            kind: ErrorKind::Other,
            code: Some(code.into()),
            detail: detail.into(),
        };
        assert!(is_profile_refusal(&error(
            "InvalidParameterValue",
            "InvalidParameterValue: Value (p) for parameter iamInstanceProfile.name is \
             invalid. Invalid IAM Instance Profile name"
        )));
        assert!(!is_profile_refusal(&error(
            "InvalidParameterValue",
            "InvalidParameterValue: Invalid value 'x' for instanceType"
        )));
        assert!(!is_profile_refusal(&error(
            "InvalidInstanceProfile",
            "Invalid IAM Instance Profile name"
        )));
    }

    #[test]
    fn the_error_lists_instances_left_running() {
        assert_eq!(left_running(&[]), "");
        assert!(left_running(&["i-1".into()]).contains("(i-1); `rayefa down FILE`"));
    }
}
