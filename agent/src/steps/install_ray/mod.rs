//! `install-ray`: OS packages with the node's package manager, then a virtualenv (Python 3.12
//! on Amazon Linux 2023) with the configured Python packages, installed by uv where it can be
//! had and by pip otherwise.

mod interpreter;
mod os_packages;
mod owner;
mod python;
mod shared_uv;
mod uv;

use async_trait::async_trait;
use rayefa_wire::PythonInstallDetail;
use serde::Serialize;
use serde_json::{Value, json};

use super::{GROW_ROOT, INSTALL_RAY, venv};
use crate::config::Settings;
use crate::engine::{Check, Outcome, Step, StepContext, StepError};
use interpreter::Interpreter;
use os_packages::Manager;
use python::Requirements;
use uv::Installer;

/// Installs what Ray needs: OS packages (dnf or apt, chosen from os-release unless configured,
/// only under the node's package-manager lock; on Amazon Linux 2023 also `python3.12` and
/// `python3.12-pip`) and then, without the lock so that the downloads overlap the EFA
/// installer, a virtualenv with the configured Python requirements, installed by uv where it
/// can be had (pip otherwise).
///
/// Done when every OS package is installed, the virtualenv exists and pip would find every
/// requirement (with its extras and their dependencies) already satisfied: the check reads the
/// installed distributions' metadata, which uv and pip write alike. When the cluster commands
/// run as a user, the virtualenv is handed to that user after the install and is done only
/// while the user owns all of it (owner.rs says why).
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
        let python = packages.python_interpreter.clone().unwrap_or_else(|| {
            "python3.12 on Amazon Linux 2023 (with python3.12 and python3.12-pip), python3 \
             elsewhere"
                .to_owned()
        });
        vec![
            os,
            format!(
                "uv from its wheel with {python}'s pip (or from the shared cache named by \
                 --cache-dir); pip if it cannot be had"
            ),
            format!(
                "virtualenv {} made with uv venv --seed --python {python} ({python} -m venv \
                 without uv)",
                packages.virtualenv.display()
            ),
            format!(
                "uv pip install (pip without uv) {}",
                packages.python.join(" ")
            ),
        ]
    }

    async fn check(&self, ctx: &StepContext) -> Result<Check, StepError> {
        let interpreter = interpreter::choose(ctx);
        let os = match os_packages::requested(ctx, &interpreter.packages)? {
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
            Ok(found) if found.satisfied => {
                if let Some(user) = &ctx.settings.commands.user
                    && !owner::owned_by(ctx, user).await?
                {
                    return Ok(Check::NotDone);
                }
                Ok(Check::Done(Some(detail(
                    ctx,
                    os.as_ref(),
                    &interpreter,
                    None,
                    &found,
                ))))
            }
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
        let interpreter = interpreter::choose(ctx);
        let os = match os_packages::requested(ctx, &interpreter.packages)? {
            Some((manager, packages)) => Some(install_os_packages(ctx, manager, packages).await?),
            None => None,
        };
        // uv before the virtualenv, with the interpreter's own pip: uv then makes the
        // virtualenv too.
        let mut obtained = None;
        let mut made_by = None;
        if !python::venv_exists(ctx) {
            ctx.log.note(&format!(
                "# the virtualenv's interpreter: {} ({})",
                interpreter.command, interpreter.reason
            ));
            let installer = uv::obtain(ctx, &interpreter.command).await;
            made_by = Some(python::create_venv(ctx, &interpreter.command, &installer).await?);
            obtained = Some(installer);
        }
        ctx.activity("checking the virtualenv's Python packages");
        let mut found = python::requirements(ctx).await?;
        let mut used = None;
        if !found.satisfied {
            let installer = match obtained {
                Some(installer) => installer,
                None => uv::obtain(ctx, &venv::python(ctx).display().to_string()).await,
            };
            ctx.log.note(&format!(
                "# installing the Python packages with {}",
                installer.describe()
            ));
            match &installer {
                Installer::Uv { binary, args, .. } => {
                    ctx.activity(format!(
                        "uv pip install {}",
                        ctx.settings.packages.python.join(" ")
                    ));
                    uv::pip_install(ctx, binary, args).await?;
                }
                Installer::Pip { .. } => python::pip_install(ctx).await?,
            }
            used = Some(installer);
            found = python::requirements(ctx).await?;
            // What only pip can judge, pip has just judged; what is known to be unmet is not.
            if !found.problems.is_empty() {
                return Err(StepError::Fatal(format!(
                    "pip install succeeded but the requirements are still not met: {}",
                    found.problems.join("; ")
                )));
            }
        }
        if let Some(user) = &ctx.settings.commands.user {
            owner::hand_over(ctx, user).await?;
        }
        if let Some(version) = &found.ray_version {
            ctx.activity(format!("Ray {version} installed"));
        }
        let mut detail = detail(ctx, os.as_ref(), &interpreter, used.as_ref(), &found);
        if let Some(made_by) = made_by {
            detail["virtualenv_made_with"] = Value::String(made_by);
        }
        Ok(Outcome::Done(Some(detail)))
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

/// The step's detail: what other programs read ([`PythonInstallDetail`]) and the rest.
#[derive(Serialize)]
struct Detail<'a> {
    #[serde(flatten)]
    shared: PythonInstallDetail,
    os_packages: Value,
    virtualenv: &'a std::path::Path,
    /// The user the virtualenv belongs to, when it is not root's: the one the cluster
    /// commands run as.
    #[serde(skip_serializing_if = "Option::is_none")]
    virtualenv_owner: Option<&'a str>,
    python_packages: &'a std::collections::BTreeMap<String, Option<String>>,
}

fn detail(
    ctx: &StepContext,
    os: Option<&OsPart>,
    interpreter: &Interpreter,
    installer: Option<&Installer>,
    python: &Requirements,
) -> Value {
    let os = os.map_or(Value::Null, |os| {
        json!({
            "manager": os.manager.to_string(),
            "packages": os.packages,
            "installed_now": os.installed_now,
        })
    });
    let detail = Detail {
        shared: PythonInstallDetail {
            ray_version: python.ray_version.clone(),
            python_interpreter: Some(interpreter.command.clone()),
            python_installer: installer.map(Installer::describe),
        },
        os_packages: os,
        virtualenv: &ctx.settings.packages.virtualenv,
        virtualenv_owner: ctx.settings.commands.user.as_deref(),
        python_packages: &python.versions,
    };
    serde_json::to_value(&detail).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
