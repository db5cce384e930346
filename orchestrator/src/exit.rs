//! The one place that maps errors and outcomes to exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: every node ready (`up`), no node failed (`status`), nodes stopped (`down`), the file is valid (`validate`) |
//! | 1 | a node failed: a step failed, its agent became unreachable, or it stopped |
//! | 2 | bad input: the cluster file (syntax, schema, variables, checks) or the command line |
//! | 3 | the provider failed: the cloud refused or failed, or processes could not be started |
//! | 4 | timed out: nodes were not ready in time |

use crate::provider::ProviderError;
use rayefa_cluster::ClusterError;

/// What the process exit code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitCode {
    /// 0: everything asked for was done.
    Success = 0,
    /// 1: a node failed its bootstrap.
    NodeFailed = 1,
    /// 2: the cluster file or the command line is wrong.
    BadInput = 2,
    /// 3: the provider (the cloud, or the local machine) refused or failed.
    Provider = 3,
    /// 4: nodes did not become ready in time.
    TimedOut = 4,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// Every error a command can end with (outcomes such as a failed node are exit codes, not
/// errors).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The cluster file could not be read or is wrong.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The command line asks for something the cluster file does not have.
    #[error("{0}")]
    Usage(String),
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Something on this machine failed (the HTTP client, the async runtime).
    #[error("{0}")]
    Internal(String),
}

impl From<&ClusterError> for ExitCode {
    fn from(_: &ClusterError) -> Self {
        ExitCode::BadInput
    }
}

impl From<&Error> for ExitCode {
    fn from(error: &Error) -> Self {
        match error {
            Error::Cluster(error) => error.into(),
            Error::Usage(_) => ExitCode::BadInput,
            Error::Provider(_) | Error::Internal(_) => ExitCode::Provider,
        }
    }
}
