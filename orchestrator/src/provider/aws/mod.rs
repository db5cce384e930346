//! The AWS side of rayefa: the `aws` provider (`up`, `status`, `down` on EC2) and what the
//! commands that replace the seed guide's manual AWS CLI steps (`env`, `instance-types`,
//! `prepare`) ask of the account.
//!
//! Credentials, region and endpoint come from aws-config's default chain, so the same binary
//! runs against AWS and, with `AWS_ENDPOINT_URL`, against a stand-in such as moto.

mod agent_package;
mod agent_store;
mod client;
mod discover;
mod error;
mod fields;
mod file_check;
mod head_share;
mod image;
mod instance_types;
mod launch;
mod node_config;
mod preflight;
mod prepare;
mod provider;
mod provider_type;
mod s3;
mod settings;
mod tags;
mod user_data;

pub(crate) use agent_store::{PublishReport, StoreError, publish, read_packages};
pub(crate) use client::Clients;
pub(crate) use discover::{Discovered, Search, TagFilter, discover, export_lines};
pub(crate) use error::ApiError;
pub(crate) use fields::NodeConfigError;
pub(crate) use head_share::{HEAD_CLUSTER_FILE, HEAD_RAYEFA, HEAD_STATE_DIR};
pub(crate) use instance_types::{InstanceTypeRow, format_gib, list as list_instance_types};
pub(crate) use prepare::{Outcome, Plan, Prepared, prepare};
pub(crate) use provider::node_configs_of;
pub(crate) use provider_type::Aws;
pub(crate) use s3::S3;

/// Why an AWS command or the AWS provider failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AwsError {
    /// Neither the cluster file, the command line, the environment nor a profile names a
    /// region.
    #[error(
        "no AWS region: set provider.region in the cluster file, pass --region, set AWS_REGION, \
         or give the AWS profile a region"
    )]
    NoRegion,
    /// An AWS call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A node type's `node_config` is wrong.
    #[error("{file}:{line}: {source}")]
    NodeConfig {
        /// The cluster file.
        file: String,
        /// The line of the `node_config` mapping.
        line: u64,
        /// The mistake.
        source: NodeConfigError,
    },
    /// The agent store (`rayefa.agent_store`) could not be read.
    #[error(transparent)]
    Store(#[from] agent_store::StoreError),
    /// The head's autoscaling configuration could not be made.
    #[error("Ray's autoscaling configuration: {0}")]
    Autoscaling(String),
    /// The head's share (the cluster file) could not be made.
    #[error(transparent)]
    HeadShare(#[from] head_share::HeadShareError),
    /// A node type's user data could not be rendered.
    #[error("rendering the user data of node type {node_type}: {source}")]
    UserData {
        /// The node type.
        node_type: String,
        /// Why.
        source: user_data::UserDataError,
    },
}
