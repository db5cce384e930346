//! The AWS provider's part of checking a cluster file. `node_config` and `rayefa.aws` are read
//! only by this provider, but a mistake in them is a mistake in the file: it is reported with
//! the file's other findings (exit code 2, by `validate --offline` too), not when `up` has
//! already started talking to the account.

use rayefa_cluster::Finding;
use rayefa_cluster::schema::ClusterSpec;

use super::image::{self, Family, ImageChoice};
use super::node_config;
use super::settings::AwsSettings;

/// Adds the AWS-only mistakes of `spec` to `out`.
pub(crate) fn check(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    let section = spec.rayefa.as_ref().and_then(|r| r.value.aws.as_ref());
    AwsSettings::from_section(section, out);
    for (name, node_type) in spec
        .available_node_types
        .iter()
        .flat_map(|types| types.value.iter())
    {
        let path = format!("available_node_types.{name}.node_config");
        match node_config::parse(&node_type.node_config.value, &path) {
            Ok(config) => {
                if let ImageChoice::Latest(family) = image::choice(&config) {
                    out.push(Finding::note(
                        node_type.node_config.referenced,
                        format!("{path}.ImageId"),
                        looked_up_at_launch(family),
                    ));
                }
            }
            Err(error) => out.push(Finding::error(
                node_type.node_config.referenced,
                error.path,
                error.message,
            )),
        }
    }
}

/// What becomes of a missing `ImageId` or `latest_dlami`, said without the account.
fn looked_up_at_launch(family: Family) -> String {
    let (asked, ray) = match family {
        Family::Al2023 => ("not given", "Ray would use a Deep Learning AMI (Ubuntu)"),
        Family::DeepLearning => ("latest_dlami", "Ray's is an Ubuntu one"),
    };
    format!(
        "{asked}: the latest {} image for the instance type's architecture is looked up when \
         `up` runs (SSM parameter {}; `rayefa validate` without --offline shows which); {ray}",
        family.name(),
        family.parameters()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use rayefa_cluster::ClusterError;

    use crate::provider::check_file;

    const HEAD: &str = "cluster_name: c\nprovider: {type: aws, region: us-east-1}\n\
        head_node_type: head\navailable_node_types:\n  head:\n    node_config:\n";

    /// The errors found in `text` (warnings, such as the one about a missing agent package,
    /// are not what these tests are about).
    fn findings(text: &str) -> Vec<String> {
        match rayefa_cluster::parse(Path::new("c.yaml"), text, &BTreeMap::new(), &check_file) {
            Ok(_) => Vec::new(),
            Err(ClusterError::Invalid { findings, .. }) => findings
                .iter()
                .map(|f| f.display("c.yaml").to_string())
                .filter(|line| line.contains(": error: "))
                .collect(),
            Err(other) => panic!("not a finding: {other}"),
        }
    }

    #[test]
    fn a_wrong_node_config_is_a_mistake_of_the_file_at_its_line() {
        let found = findings(&format!(
            "{HEAD}      InstanceType: m5.large\n      MaxCount: lots\n"
        ));
        assert_eq!(
            found,
            [
                "c.yaml:7:7: error: available_node_types.head.node_config.MaxCount: rayefa sets \
              the count from min_workers; remove MaxCount"
            ]
        );
    }

    #[test]
    fn a_bad_aws_duration_is_a_mistake_of_the_file() {
        let found = findings(&format!(
            "{HEAD}      InstanceType: m5.large\nrayefa:\n  aws: {{launch_backoff: soon}}\n"
        ));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("rayefa.aws.launch_backoff"), "{found:#?}");
    }

    #[test]
    fn a_correct_file_has_no_aws_findings() {
        assert!(findings(&format!("{HEAD}      InstanceType: m5.large\n")).is_empty());
    }

    #[test]
    fn other_providers_do_not_read_node_config() {
        let local = format!("{HEAD}      MaxCount: lots\n").replace("type: aws", "type: local");
        assert!(findings(&local).is_empty());
    }
}
