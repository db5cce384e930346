//! The agent's subcommands and the one place that maps their errors to exit codes.

pub(crate) mod pingpong;
pub(crate) mod plan;
pub(crate) mod probe_efa;
pub(crate) mod run;
pub(crate) mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, ConfigError, Settings};
use crate::host::HostRoot;

/// Flags every subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Global {
    /// The main configuration file; drop-ins are read from `<name>.d/*.toml` beside it.
    /// Default: /etc/rayefa/agent.toml under --root.
    #[arg(long, global = true, value_name = "PATH", env = "RAYEFA_AGENT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The directory that stands for `/` for every host path the agent reads or writes
    /// (/proc, /sys, /etc, the state directory). For tests and the local provider.
    #[arg(long, global = true, value_name = "PATH", default_value = "/")]
    pub(crate) root: PathBuf,
    /// Log at debug level (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
}

impl Global {
    pub(crate) fn host_root(&self) -> HostRoot {
        HostRoot::new(&self.root)
    }

    /// Loads and validates the configuration.
    pub(crate) fn settings(&self) -> Result<Settings, CliError> {
        config::load(&self.host_root(), self.config.as_deref())
            .map(|(settings, _files)| settings)
            .map_err(CliError::from)
    }
}

/// What an exit code means. Documented in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done; for `status`, the node is ready.
    Success = 0,
    /// The bootstrap failed (`status`), or the agent hit an internal error.
    Failed = 1,
    /// Bad configuration or usage; nothing was started.
    BadInput = 2,
    /// The machine would not let the agent work: the listener could not be bound, the state
    /// directory could not be written, no status could be read.
    Environment = 3,
    /// `status`: the bootstrap is still under way.
    InProgress = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// An error on its way out of a subcommand, with the exit code it means.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) error: anyhow::Error,
}

impl CliError {
    pub(crate) fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit,
            error: error.into(),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        Self::new(Exit::BadInput, err)
    }
}

/// What every subcommand returns.
pub(crate) type CommandResult = Result<Exit, CliError>;
