//! The names of the bootstrap's steps, spelled once for the agent and the orchestrator.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One step of a node's bootstrap. Its kebab-case name ([`StepName::as_str`]) is how the
/// agent's configuration (`[steps.install-ray]`), the status document and the instance tags
/// spell it, and how it serialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepName {
    /// `grow-root`: the root partition and file system to the end of the disk.
    GrowRoot,
    /// `install-efa`: the verified EFA installer.
    InstallEfa,
    /// `probe-efa`: libfabric's EFA provider, checked against the hardware.
    ProbeEfa,
    /// `install-ray`: OS packages and the virtualenv with Ray.
    InstallRay,
    /// `setup-commands`: the cluster file's initialization and setup commands.
    SetupCommands,
    /// `start-ray`: the role's start commands.
    StartRay,
}

impl StepName {
    /// Every step, in the order the agent declares its bootstrap graph: each step after the
    /// steps it depends on.
    pub const ALL: [StepName; 6] = [
        StepName::GrowRoot,
        StepName::InstallEfa,
        StepName::ProbeEfa,
        StepName::InstallRay,
        StepName::SetupCommands,
        StepName::StartRay,
    ];

    /// The step's name in configuration, status and tags (`grow-root`).
    pub const fn as_str(self) -> &'static str {
        match self {
            StepName::GrowRoot => "grow-root",
            StepName::InstallEfa => "install-efa",
            StepName::ProbeEfa => "probe-efa",
            StepName::InstallRay => "install-ray",
            StepName::SetupCommands => "setup-commands",
            StepName::StartRay => "start-ray",
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepName {
    type Err = UnknownStep;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        StepName::ALL
            .into_iter()
            .find(|step| step.as_str() == name)
            .ok_or_else(|| UnknownStep(name.to_owned()))
    }
}

/// A name that is not one of [`StepName::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStep(pub String);

impl fmt::Display for UnknownStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a step; the steps are ", self.0)?;
        for (i, step) in StepName::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{step}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownStep {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StepSection, StepsSection};

    #[test]
    fn names_parse_back_and_serialise_as_themselves() {
        for step in StepName::ALL {
            assert_eq!(step.as_str().parse::<StepName>(), Ok(step));
            assert_eq!(step.to_string(), step.as_str());
            let json = serde_json::to_string(&step).expect("serialises");
            assert_eq!(json, format!("\"{}\"", step.as_str()));
            assert_eq!(
                serde_json::from_str::<StepName>(&json).expect("deserialises"),
                step
            );
        }
    }

    #[test]
    fn an_unknown_name_lists_the_steps() {
        let err = "grow_root".parse::<StepName>().expect_err("not kebab-case");
        assert_eq!(
            err.to_string(),
            "`grow_root` is not a step; the steps are grow-root, install-efa, probe-efa, \
             install-ray, setup-commands, start-ray"
        );
    }

    #[test]
    fn the_steps_section_has_a_table_per_step_under_its_name() {
        for step in StepName::ALL {
            let json = format!(r#"{{"{step}": {{"enabled": false}}}}"#);
            let section: StepsSection = serde_json::from_str(&json).expect("a steps table");
            for other in StepName::ALL {
                let expected = (other == step).then(|| StepSection {
                    enabled: Some(false),
                    ..StepSection::default()
                });
                assert_eq!(section.get(other), expected.as_ref(), "{step}: {other}");
            }
        }
    }
}
