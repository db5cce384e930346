//! The `aws` provider type: its checks of a cluster file, its preflight against the account,
//! and the user-data script an instance boots with.

use rayefa_cluster::schema::ClusterSpec;
use rayefa_cluster::{Cluster, Finding};
use rayefa_wire::AgentConfigFile;

use super::provider::{AwsProvider, node_user_data, preflight_cluster};
use super::{AwsError, file_check};
use crate::provider::{Preflight, Provider, ProviderError, ProviderType};

/// Nodes are EC2 instances.
#[derive(Debug)]
pub(crate) struct Aws;

#[async_trait::async_trait]
impl ProviderType for Aws {
    fn check_file(&self, spec: &ClusterSpec, out: &mut Vec<Finding>) {
        file_check::check(spec, out);
    }

    async fn preflight(&self, cluster: &Cluster) -> Result<Option<Preflight>, ProviderError> {
        let region = cluster.spec.provider.value.region.as_deref();
        Ok(Some(Preflight {
            against: format!(
                "the AWS account in {}",
                region.unwrap_or("the default region")
            ),
            findings: preflight_cluster(cluster).await?,
        }))
    }

    fn user_data(
        &self,
        cluster: &Cluster,
        config: &AgentConfigFile,
    ) -> Result<String, ProviderError> {
        node_user_data(cluster, config).map_err(|source| {
            AwsError::UserData {
                node_type: config
                    .node
                    .as_ref()
                    .and_then(|node| node.node_type.clone())
                    .unwrap_or_default(),
                source,
            }
            .into()
        })
    }

    async fn open(&self, cluster: &Cluster) -> Result<Box<dyn Provider>, ProviderError> {
        Ok(Box::new(AwsProvider::new(cluster).await?))
    }
}
