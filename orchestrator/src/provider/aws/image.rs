//! The image a node type boots when its `node_config` names none, or names Ray's placeholder
//! `latest_dlami`. Ray fills both in before it calls EC2; rayefa does too, from the SSM
//! public parameters AWS keeps pointing at the newest image of a family, for the architecture
//! of the node type's instance type. The lookup happens once per `up` or `validate`, with the
//! preflight, so every node of a run boots the same image.
//!
//! A missing `ImageId` becomes the latest Amazon Linux 2023 image (the parameters `rayefa env`
//! reads): the OS the seed guide uses and the agent's packages target. `latest_dlami` becomes
//! the latest "Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023)": of AWS's
//! Deep Learning AMIs the one without a framework environment (rayefa installs Ray into its
//! own virtualenv), on the same OS, published for both x86_64 and arm64, with the NVIDIA
//! driver, CUDA and the EFA software already installed. Ray itself uses an Ubuntu Deep
//! Learning AMI for both; docs/cluster-file.md lists the difference.

use std::collections::BTreeMap;

use super::client::Clients;
use super::discover::{AL2023_ARM64, AL2023_X86_64};
use super::error::ApiError;
use super::node_config::NodeConfig;

/// Ray's `ImageId` placeholder for "the latest Deep Learning AMI".
pub(crate) const LATEST_DLAMI: &str = "latest_dlami";

/// The SSM public parameter of the latest Deep Learning Base OSS Nvidia Driver GPU AMI
/// (Amazon Linux 2023) for x86_64.
pub(crate) const DLAMI_X86_64: &str = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id";
/// The same for arm64 (Graviton).
pub(crate) const DLAMI_ARM64: &str = "/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id";

/// A family of images AWS publishes an SSM parameter for, per architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// Amazon Linux 2023, for a missing `ImageId`.
    Al2023,
    /// The Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023), for
    /// `latest_dlami`.
    DeepLearning,
}

impl Family {
    /// The family's short name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::Al2023 => "AL2023",
            Family::DeepLearning => "Deep Learning Base OSS Nvidia Driver GPU AMI, AL2023",
        }
    }

    /// The parameter for an architecture (EC2's names); `None` for one AWS publishes none for.
    pub(crate) fn parameter(self, architecture: &str) -> Option<&'static str> {
        match (self, architecture) {
            (Family::Al2023, "x86_64") => Some(AL2023_X86_64),
            (Family::Al2023, "arm64") => Some(AL2023_ARM64),
            (Family::DeepLearning, "x86_64") => Some(DLAMI_X86_64),
            (Family::DeepLearning, "arm64") => Some(DLAMI_ARM64),
            _ => None,
        }
    }

    /// Both parameters, for a message written before the architecture is known.
    pub(crate) fn parameters(self) -> String {
        format!(
            "{} or {}",
            self.parameter("x86_64").unwrap_or_default(),
            self.parameter("arm64").unwrap_or_default()
        )
    }
}

/// What a node type's `node_config` says about its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageChoice<'a> {
    /// An `ImageId`, passed to EC2 as written.
    Given(&'a str),
    /// No `ImageId`, but a `LaunchTemplate`, which carries the image: nothing is added.
    FromLaunchTemplate,
    /// Looked up at launch: no `ImageId` (Amazon Linux 2023) or `latest_dlami`.
    Latest(Family),
}

/// The image choice of `config`.
pub(crate) fn choice(config: &NodeConfig) -> ImageChoice<'_> {
    match config.image_id() {
        // Ray compares the placeholder case-insensitively.
        Some(image) if image.eq_ignore_ascii_case(LATEST_DLAMI) => {
            ImageChoice::Latest(Family::DeepLearning)
        }
        Some(image) => ImageChoice::Given(image),
        None if config.input.get_launch_template().is_some() => ImageChoice::FromLaunchTemplate,
        None => ImageChoice::Latest(Family::Al2023),
    }
}

/// The parameter to read for an instance type running `architectures` (EC2's names), and the
/// architecture it is for: the first of the type's architectures that the family has.
pub(crate) fn parameter_for(
    family: Family,
    architectures: &[String],
) -> Option<(&'static str, String)> {
    architectures
        .iter()
        .find_map(|arch| Some((family.parameter(arch)?, arch.clone())))
}

/// An image looked up for a node type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedImage {
    /// The AMI.
    pub(crate) image_id: String,
    /// Which family it is the latest of.
    pub(crate) family: Family,
    /// The architecture it is for (EC2's name).
    pub(crate) architecture: String,
    /// The SSM parameter it came from.
    pub(crate) parameter: &'static str,
}

impl std::fmt::Display for ResolvedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} {}, from {})",
            self.image_id,
            self.family.name(),
            self.architecture,
            self.parameter
        )
    }
}

/// The values of `parameters` in one SSM call; parameters SSM does not have in the region are
/// left out of the answer.
pub(crate) async fn read_parameters(
    clients: &Clients,
    parameters: &[&'static str],
) -> Result<BTreeMap<&'static str, String>, ApiError> {
    if parameters.is_empty() {
        return Ok(BTreeMap::new());
    }
    let out = clients
        .ssm
        .get_parameters()
        .set_names(Some(parameters.iter().map(|p| (*p).to_owned()).collect()))
        .send()
        .await
        .map_err(|e| {
            ApiError::from_sdk(
                format!(
                    "reading the image parameters {} from SSM",
                    parameters.join(", ")
                ),
                e,
            )
        })?;
    Ok(parameters
        .iter()
        .filter_map(|wanted| {
            let value = out
                .parameters()
                .iter()
                .find(|p| p.name() == Some(*wanted))
                .and_then(|p| p.value())?;
            Some((*wanted, value.to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::node_config;

    fn config(json: serde_json::Value) -> NodeConfig {
        node_config::parse(&json, "available_node_types.t.node_config").expect("valid")
    }

    #[test]
    fn a_missing_image_is_al2023_latest_dlami_the_deep_learning_ami_and_a_template_keeps_its_own() {
        let missing = config(serde_json::json!({"InstanceType": "m7i.large"}));
        assert_eq!(choice(&missing), ImageChoice::Latest(Family::Al2023));
        let dlami =
            config(serde_json::json!({"InstanceType": "g5.xlarge", "ImageId": "latest_dlami"}));
        assert_eq!(choice(&dlami), ImageChoice::Latest(Family::DeepLearning));
        let shouted = config(serde_json::json!({"ImageId": "LATEST_DLAMI"}));
        assert_eq!(choice(&shouted), ImageChoice::Latest(Family::DeepLearning));
        // Ray takes an empty ImageId for a missing one.
        let empty = config(serde_json::json!({"InstanceType": "m7i.large", "ImageId": ""}));
        assert_eq!(choice(&empty), ImageChoice::Latest(Family::Al2023));
        let given = config(serde_json::json!({"ImageId": "ami-0abc"}));
        assert_eq!(choice(&given), ImageChoice::Given("ami-0abc"));
        let template = config(serde_json::json!({
            "LaunchTemplate": {"LaunchTemplateName": "ray", "Version": "$Latest"}
        }));
        assert_eq!(choice(&template), ImageChoice::FromLaunchTemplate);
        // `latest_dlami` beside a template is still an explicit request for an image.
        let both = config(serde_json::json!({
            "ImageId": "latest_dlami",
            "LaunchTemplate": {"LaunchTemplateName": "ray"}
        }));
        assert_eq!(choice(&both), ImageChoice::Latest(Family::DeepLearning));
    }

    #[test]
    fn the_parameter_follows_the_instance_types_architecture() {
        let arch = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parameter_for(Family::Al2023, &arch(&["i386", "x86_64"])),
            Some((AL2023_X86_64, "x86_64".to_owned()))
        );
        assert_eq!(
            parameter_for(Family::Al2023, &arch(&["arm64"])),
            Some((AL2023_ARM64, "arm64".to_owned()))
        );
        assert_eq!(
            parameter_for(Family::DeepLearning, &arch(&["arm64"])),
            Some((DLAMI_ARM64, "arm64".to_owned()))
        );
        assert_eq!(parameter_for(Family::Al2023, &arch(&["x86_64_mac"])), None);
        assert_eq!(parameter_for(Family::DeepLearning, &[]), None);
    }
}
