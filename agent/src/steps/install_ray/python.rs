//! The virtualenv and the Python packages in it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::uv::{self, Installer};
use crate::engine::{Retry, StepContext, StepError};
use crate::host::CommandSpec;
use crate::steps::venv;

/// Run by the virtualenv's interpreter to tell whether the requirements are met.
const SATISFIED_PY: &str = include_str!("satisfied.py");
/// The prefix of the one line [`SATISFIED_PY`] prints.
const REPORT_PREFIX: &str = "rayefa-requirements: ";

/// What the virtualenv has of the configured requirements.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(super) struct Requirements {
    /// True when pip would find nothing to install.
    pub(super) satisfied: bool,
    /// Requirements known to be unmet, one line each.
    pub(super) problems: Vec<String>,
    /// Requirements only pip can judge (a URL, a path), one line each.
    pub(super) unverifiable: Vec<String>,
    /// The installed version of each configured requirement, by name.
    pub(super) versions: BTreeMap<String, Option<String>>,
    /// The installed `ray` distribution's version, whether or not a requirement names it.
    #[serde(default)]
    pub(super) ray_version: Option<String>,
}

/// Written into the virtualenv once `uv venv` or `python -m venv` has finished. The
/// interpreter appears long before pip does, so a virtualenv without this file was interrupted
/// (the agent crashed or was stopped while making it) and may have no pip.
const COMPLETE_MARKER: &str = ".rayefa-complete";

/// Whether the virtualenv was made to the end.
pub(super) fn venv_exists(ctx: &StepContext) -> bool {
    venv::python(ctx).is_file() && venv::dir(ctx).join(COMPLETE_MARKER).is_file()
}

/// Creates the virtualenv with `interpreter`, afresh (`--clear`) over what an interrupted
/// attempt left: with `uv venv --seed` when `installer` is uv (`python -m venv` spends most
/// of its time in ensurepip), else, or when uv fails (an index without pip to seed from),
/// with `python -m venv`. Answers what made it, for the detail.
pub(super) async fn create_venv(
    ctx: &StepContext,
    interpreter: &str,
    installer: &Installer,
) -> Result<String, StepError> {
    let dir = venv::dir(ctx);
    if dir.exists() {
        ctx.log
            .note("# the virtualenv was not finished by an earlier attempt: making it afresh");
    }
    let mut made_by = None;
    if let Installer::Uv {
        binary,
        version,
        args,
    } = installer
    {
        ctx.activity(format!(
            "creating the virtualenv {} with uv venv --seed --python {interpreter}",
            dir.display()
        ));
        match uv::make_venv(ctx, binary, args, interpreter, dir.exists()).await {
            Ok(()) => made_by = Some(format!("{version} (uv venv --seed)")),
            Err(err) => ctx.log.note(&format!(
                "# uv venv failed, making the virtualenv with {interpreter} -m venv: {err}"
            )),
        }
    }
    let made_by = match made_by {
        Some(made_by) => made_by,
        None => {
            ctx.activity(format!(
                "creating the virtualenv {} with {interpreter} -m venv",
                dir.display()
            ));
            let mut spec = CommandSpec::new(interpreter).args(["-m", "venv"]);
            if dir.exists() {
                spec = spec.arg("--clear");
            }
            let spec = spec.arg(dir.display().to_string());
            // A missing venv module or ensurepip (Debian without python3-venv) stays missing.
            ctx.run_checked(spec, Retry::Never).await?;
            format!("{interpreter} -m venv")
        }
    };
    let marker = dir.join(COMPLETE_MARKER);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&marker, ""))
        .map_err(|e| StepError::Io(format!("cannot write {}: {e}", marker.display())))?;
    Ok(made_by)
}

/// Asks the virtualenv's interpreter whether the configured requirements are met. Reads only
/// what is installed: no network, a fraction of a second even for Ray's dependency tree.
pub(super) async fn requirements(ctx: &StepContext) -> Result<Requirements, StepError> {
    // No bytecode from the check: the agent runs it as root, and what it wrote into the
    // virtualenv would be root's in a tree that may belong to the commands' user (owner.rs).
    let spec = CommandSpec::new(venv::python(ctx).display().to_string())
        .args(["-B", "-c", SATISFIED_PY])
        .args(&ctx.settings.packages.python);
    let outcome = ctx.run(spec).await?;
    let line = outcome
        .output
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(REPORT_PREFIX));
    match line {
        Some(json) if outcome.success() => serde_json::from_str(json).map_err(|err| {
            StepError::Io(format!("cannot read the requirement check's answer: {err}"))
        }),
        _ => Err(StepError::Io(format!(
            "the requirement check in {} {}: {}",
            venv::dir(ctx).display(),
            outcome.describe(),
            crate::engine::tail_of(outcome.output.trim(), 512)
        ))),
    }
}

/// `pip install` of the configured requirements into the virtualenv.
pub(super) async fn pip_install(ctx: &StepContext) -> Result<(), StepError> {
    let packages = &ctx.settings.packages;
    ctx.activity(format!("pip install {}", packages.python.join(" ")));
    let spec = CommandSpec::new(venv::python(ctx).display().to_string())
        .args(["-m", "pip", "install"])
        .args(&packages.pip_args)
        .args(&packages.python)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1");
    ctx.run_checked(spec, Retry::IfOutput(pip_retryable))
        .await
        .map(drop)
}

/// Whether a failed pip run met the network: then another attempt may succeed. pip reports an
/// unreachable index as "No matching distribution found" too, after its retry warnings, so the
/// network's traces decide; a requirement no index can satisfy is final.
fn pip_retryable(output: &str) -> bool {
    const NETWORK: &[&str] = &[
        "NewConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "Read timed out",
        "ConnectionResetError",
        "Connection reset by peer",
        "Connection broken",
        "Connection aborted",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "Max retries exceeded",
        "ProxyError",
        "IncompleteRead",
        "HTTP error 5",
        "502 Bad Gateway",
        "503 Service Unavailable",
        "504 Gateway Time",
    ];
    NETWORK.iter().any(|n| output.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_failures_from_the_network_are_retryable() {
        let offline = "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) \
            after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection \
            object at 0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/six/\n\
            ERROR: Could not find a version that satisfies the requirement six (from versions: none)\n\
            ERROR: No matching distribution found for six\n";
        assert!(pip_retryable(offline));
        let no_such = "ERROR: Could not find a version that satisfies the requirement six==0.0.0.1 \
            (from versions: 0.9.0, 1.16.0)\nERROR: No matching distribution found for six==0.0.0.1\n";
        assert!(!pip_retryable(no_such));
        assert!(pip_retryable(
            "ERROR: HTTP error 503 while getting https://files.pythonhosted.org/x.whl"
        ));
        assert!(!pip_retryable("ERROR: Invalid requirement: 'ray[default'"));
    }
}
