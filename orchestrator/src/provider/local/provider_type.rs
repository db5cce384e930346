//! The `local` provider type: what it adds to the checks of a cluster file, and what a node
//! boots with (its agent configuration file, written into the node's directory).

use rayefa_cluster::render::to_toml;
use rayefa_cluster::schema::ClusterSpec;
use rayefa_cluster::{Cluster, Finding, efa_interfaces};
use rayefa_wire::AgentConfigFile;

use super::LocalProvider;
use crate::provider::{Preflight, Provider, ProviderError, ProviderType};

/// Nodes are `rayefa-agent` processes on this machine.
#[derive(Debug)]
pub(crate) struct Local;

#[async_trait::async_trait]
impl ProviderType for Local {
    fn check_file(&self, spec: &ClusterSpec, out: &mut Vec<Finding>) {
        notes(spec, out);
    }

    async fn preflight(&self, _cluster: &Cluster) -> Result<Option<Preflight>, ProviderError> {
        Ok(None)
    }

    fn user_data(
        &self,
        _cluster: &Cluster,
        config: &AgentConfigFile,
    ) -> Result<String, ProviderError> {
        to_toml(config)
            .map_err(|e| ProviderError::Failed(format!("rendering the agent configuration: {e}")))
    }

    async fn open(&self, cluster: &Cluster) -> Result<Box<dyn Provider>, ProviderError> {
        Ok(Box::new(LocalProvider::new(cluster)?))
    }
}

/// What the local provider does differently from a cloud.
fn notes(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    out.push(Finding::note(
        spec.provider.referenced,
        "provider.type",
        "local: every node is a rayefa-agent process on this machine; steps grow-root and \
         install-efa are off (they would change this machine) and node_config is not used",
    ));
    for (name, node_type) in spec
        .available_node_types
        .iter()
        .flat_map(|t| t.value.iter())
    {
        if efa_interfaces(&node_type.node_config.value) > 0 {
            out.push(Finding::warning(
                node_type.node_config.referenced,
                format!("available_node_types.{name}.node_config"),
                "asks for EFA interfaces, so EFA is required on these nodes, but the local \
                 provider's nodes have none unless this machine does: probe-efa will fail",
            ));
        }
    }
}
