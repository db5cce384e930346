//! The SDK clients, configured the way the AWS CLI is: aws-config's default chain for
//! credentials and region (environment, profiles, SSO caches, instance roles), the standard
//! endpoint override `AWS_ENDPOINT_URL`, and the region from the cluster file when it has one.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::config::Region;

use super::AwsError;

/// Clients for every AWS service rayefa calls, in one region.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    /// EC2, with the SDK's standard retries (throttling, server errors).
    pub(crate) ec2: aws_sdk_ec2::Client,
    /// EC2 without the SDK's retries, for RunInstances: the launcher retries it itself, so it
    /// can tell capacity errors from throttling, report each attempt and keep the client token.
    pub(crate) ec2_launch: aws_sdk_ec2::Client,
    /// SSM, for the public AMI parameters.
    pub(crate) ssm: aws_sdk_ssm::Client,
    /// STS, for the account id.
    pub(crate) sts: aws_sdk_sts::Client,
    /// IAM, for instance profiles.
    pub(crate) iam: aws_sdk_iam::Client,
    /// The region the clients call.
    pub(crate) region: String,
}

impl Clients {
    /// Loads the shared configuration; `region` (from the cluster file or the command line)
    /// wins over the environment and profiles.
    pub(crate) async fn load(region: Option<&str>) -> Result<Clients, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_owned()));
        }
        let shared = loader.load().await;
        let region = shared.region().ok_or(AwsError::NoRegion)?.to_string();
        let ec2_launch_config = aws_sdk_ec2::config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .build();
        Ok(Clients {
            ec2: aws_sdk_ec2::Client::new(&shared),
            ec2_launch: aws_sdk_ec2::Client::from_conf(ec2_launch_config),
            ssm: aws_sdk_ssm::Client::new(&shared),
            sts: aws_sdk_sts::Client::new(&shared),
            iam: aws_sdk_iam::Client::new(&shared),
            region,
        })
    }
}
