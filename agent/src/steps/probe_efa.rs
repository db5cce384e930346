//! probe-efa: the `fi_info -p efa` replacement. Asks libfabric, in a fresh child process, for
//! its `efa` entries and checks them, the EFA PCI devices, their RDMA devices and the `efa`
//! kernel module against the number of EFA interfaces this instance should have.
//!
//! The probe runs as `rayefa-agent probe-efa --json` rather than in the agent: libfabric reads
//! its providers once per process, so a copy loaded before the installer ran would stay stale,
//! and a provider that hangs or crashes takes only the child with it.

mod verdict;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use rayefa_wire::FabricProbe;

use self::verdict::{Hardware, judge};
use super::efa_presence::{self, Expected};
use super::{INSTALL_EFA, PROBE_EFA};
use crate::config::{EfaMode, Settings};
use crate::engine::{Check, Outcome, Step, StepContext, StepError, Wanted};
use crate::host::CommandSpec;

/// How long the child gets; `fi_info` answers in well under a second on a healthy node.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// RDMA devices, one folder each, with `device` leading to the PCI device.
const RDMA_DEVICES: &str = "/sys/class/infiniband";

/// Present while the `efa` kernel module is loaded.
const EFA_MODULE: &str = "/sys/module/efa";

/// The probe-efa step.
#[derive(Debug, Default)]
pub(crate) struct ProbeEfa {
    /// The agent executable that runs the probe; the running one when `None`.
    program: Option<PathBuf>,
}

impl ProbeEfa {
    /// Probes with the agent's own executable.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Probes with `program` (a test's stand-in, or the agent built for the test).
    #[cfg(test)]
    pub(crate) fn with_program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: Some(program.into()),
        }
    }

    fn command(&self, ctx: &StepContext) -> Result<CommandSpec, StepError> {
        let program = match &self.program {
            Some(program) => program.clone(),
            None => std::env::current_exe()
                .map_err(|e| StepError::io("finding the agent's own executable", e))?,
        };
        let mut spec = CommandSpec::new(program.display().to_string()).args([
            "probe-efa",
            "--json",
            "--provider",
            "efa",
        ]);
        if let Some(lib) = &ctx.settings.efa.libfabric {
            spec = spec
                .arg("--lib")
                .arg(ctx.root.path(lib).display().to_string());
        }
        Ok(spec)
    }

    /// Runs the child and reads its JSON; `Err` says why there is no answer.
    async fn ask_libfabric(&self, ctx: &StepContext) -> Result<FabricProbe, String> {
        let spec = self.command(ctx).map_err(|e| e.to_string())?;
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, ctx.run(spec.clone()))
            .await
            .map_err(|_| {
                format!(
                    "`{spec}` did not answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| e.to_string())?;
        // libfabric may log to standard error (FI_LOG_LEVEL), which the runner interleaves
        // with standard output; the answer is the one line that parses.
        outcome
            .output
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<FabricProbe>(line.trim()).ok())
            .ok_or_else(|| {
                let tail = outcome.output.trim();
                let tail = tail.lines().last().unwrap_or("no output");
                format!(
                    "`{spec}` {} without a JSON answer: {tail}",
                    outcome.describe()
                )
            })
    }
}

#[async_trait]
impl Step for ProbeEfa {
    fn name(&self) -> &str {
        PROBE_EFA
    }

    fn depends_on(&self) -> &[&str] {
        &[INSTALL_EFA]
    }

    fn plan(&self, settings: &Settings) -> Vec<String> {
        let lib = settings
            .efa
            .libfabric
            .as_ref()
            .map(|p| format!(" --lib {}", p.display()))
            .unwrap_or_default();
        let expected = match settings.efa.expected_interfaces {
            Some(count) => format!("{count} EFA interfaces (efa.expected_interfaces)"),
            None => "the EFA interfaces the instance metadata lists, else every EFA PCI device"
                .to_owned(),
        };
        let mut lines = vec![
            format!("run `rayefa-agent probe-efa --json --provider efa{lib}` in a child process"),
            format!(
                "expect {expected}, each with the efa module loaded, an RDMA device and \
                 libfabric RDM entries"
            ),
        ];
        if settings.efa.mode == EfaMode::Auto {
            lines.push("skipped on nodes without an EFA PCI device or expected interface".into());
        }
        lines
    }

    async fn wanted(&self, ctx: &StepContext) -> Wanted {
        efa_presence::efa_wanted(ctx).await
    }

    async fn check(&self, _ctx: &StepContext) -> Result<Check, StepError> {
        // A probe is never done in advance: each attempt asks the devices and libfabric anew.
        Ok(Check::NotDone)
    }

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        ctx.activity("reading EFA devices from sysfs");
        let hardware = read_hardware(ctx)?;
        let expected: Expected = efa_presence::expected_interfaces(ctx).await;
        ctx.activity("asking libfabric for its efa provider");
        let probe = self.ask_libfabric(ctx).await;
        let judgement = judge(expected, hardware, probe);
        let detail = serde_json::to_value(&judgement.report)
            .map_err(|e| StepError::io("serialising the EFA report", e))?;
        // Kept in status when the step fails, so that the facts behind the error are seen.
        ctx.report.detail(detail.clone());
        match judgement.failure {
            Some(err) => Err(err),
            None => Ok(Outcome::Done(Some(detail))),
        }
    }
}

/// The EFA PCI devices, their RDMA devices and whether the module is loaded.
fn read_hardware(ctx: &StepContext) -> Result<Hardware, StepError> {
    let pci_devices = efa_presence::efa_pci_devices(&ctx.root)
        .map_err(|e| StepError::io("listing PCI devices", e))?;
    let rdma_dir = ctx.root.path(RDMA_DEVICES);
    let mut rdma_devices = Vec::new();
    match std::fs::read_dir(&rdma_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| StepError::io(rdma_dir.display(), e))?;
                // `device` is a link to the PCI device in sysfs (a folder in test trees).
                if efa_presence::efa_device_id(&entry.path().join("device")).is_some() {
                    rdma_devices.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(StepError::io(rdma_dir.display(), err)),
    }
    rdma_devices.sort();
    Ok(Hardware {
        pci_devices,
        rdma_devices,
        module_loaded: ctx.root.path(EFA_MODULE).is_dir(),
    })
}

#[cfg(test)]
mod tests;
