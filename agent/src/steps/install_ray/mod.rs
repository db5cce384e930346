//! `install-ray`: OS packages with the node's package manager, then a virtualenv with the
//! configured Python packages.

mod os_packages;
mod python;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{GROW_ROOT, INSTALL_RAY};
use crate::config::Settings;
use crate::engine::{Check, Outcome, Step, StepContext, StepError};
use os_packages::Manager;
use python::Requirements;

/// Installs what Ray needs: OS packages (dnf or apt, chosen from os-release unless configured,
/// only under the node's package-manager lock) and then, without the lock so that pip's
/// downloads overlap the EFA installer, a virtualenv with the configured Python requirements.
///
/// Done when every OS package is installed, the virtualenv exists and pip would find every
/// requirement (with its extras and their dependencies) already satisfied.
#[derive(Debug, Default)]
pub(crate) struct InstallRay;

/// What the OS-package part found or did, for the detail.
struct OsPart {
    manager: Manager,
    packages: Vec<String>,
    installed_now: Vec<String>,
}

#[async_trait]
impl Step for InstallRay {
    fn name(&self) -> &str {
        INSTALL_RAY
    }

    fn depends_on(&self) -> &[&str] {
        &[GROW_ROOT]
    }

    fn plan(&self, settings: &Settings) -> Vec<String> {
        let packages = &settings.packages;
        let os = match &packages.os {
            Some(list) if list.is_empty() => "no OS packages".to_owned(),
            Some(list) => format!("OS packages {} (those not installed)", list.join(" ")),
            None => format!(
                "OS packages {} with dnf or {} with apt (those not installed)",
                Manager::Dnf.default_packages().join(" "),
                Manager::Apt.default_packages().join(" ")
            ),
        };
        vec![
            os,
            format!(
                "virtualenv {} made with {}",
                packages.virtualenv.display(),
                packages.python_interpreter
            ),
            format!("pip install {}", packages.python.join(" ")),
        ]
    }

    async fn check(&self, ctx: &StepContext) -> Result<Check, StepError> {
        let os = match os_packages::requested(ctx)? {
            Some((manager, packages)) => {
                if !os_packages::missing(ctx, manager, &packages)
                    .await?
                    .is_empty()
                {
                    return Ok(Check::NotDone);
                }
                Some(OsPart {
                    manager,
                    packages,
                    installed_now: Vec::new(),
                })
            }
            None => None,
        };
        if !python::venv_exists(ctx) {
            return Ok(Check::NotDone);
        }
        match python::requirements(ctx).await {
            Ok(found) if found.satisfied => Ok(Check::Done(Some(detail(ctx, os.as_ref(), &found)))),
            Ok(_) => Ok(Check::NotDone),
            Err(err) => {
                // A virtualenv that cannot answer is one to repair, not a reason to fail.
                ctx.log
                    .note(&format!("# the virtualenv cannot be checked: {err}"));
                Ok(Check::NotDone)
            }
        }
    }

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        let os = match os_packages::requested(ctx)? {
            Some((manager, packages)) => Some(install_os_packages(ctx, manager, packages).await?),
            None => None,
        };
        if !python::venv_exists(ctx) {
            python::create_venv(ctx).await?;
        }
        ctx.activity("checking the virtualenv's Python packages");
        let mut found = python::requirements(ctx).await?;
        if !found.satisfied {
            python::pip_install(ctx).await?;
            found = python::requirements(ctx).await?;
            // What only pip can judge, pip has just judged; what is known to be unmet is not.
            if !found.problems.is_empty() {
                return Err(StepError::Fatal(format!(
                    "pip install succeeded but the requirements are still not met: {}",
                    found.problems.join("; ")
                )));
            }
        }
        Ok(Outcome::Done(Some(detail(ctx, os.as_ref(), &found))))
    }
}

/// Installs the missing ones of `packages` under the package-manager lock. Nothing missing
/// means no wait for the lock, which the EFA installer may hold for many minutes; the database
/// is asked again once the lock is held, as another step may have installed them meanwhile.
async fn install_os_packages(
    ctx: &StepContext,
    manager: Manager,
    packages: Vec<String>,
) -> Result<OsPart, StepError> {
    ctx.activity(format!("checking OS packages with {manager}"));
    let mut missing = os_packages::missing(ctx, manager, &packages).await?;
    if !missing.is_empty() {
        ctx.activity("waiting for the package-manager lock");
        let _lock = ctx.package_lock.acquire().await;
        missing = os_packages::missing(ctx, manager, &missing).await?;
        if !missing.is_empty() {
            os_packages::install(ctx, manager, &missing).await?;
        }
    }
    Ok(OsPart {
        manager,
        packages,
        installed_now: missing,
    })
}

fn detail(ctx: &StepContext, os: Option<&OsPart>, python: &Requirements) -> Value {
    let os = os.map_or(Value::Null, |os| {
        json!({
            "manager": os.manager.to_string(),
            "packages": os.packages,
            "installed_now": os.installed_now,
        })
    });
    json!({
        "os_packages": os,
        "virtualenv": ctx.settings.packages.virtualenv,
        "python_packages": python.versions,
    })
}

#[cfg(test)]
mod tests;
