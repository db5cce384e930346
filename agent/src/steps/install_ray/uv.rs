//! uv, where it can be had: a static binary shipped as a wheel on PyPI, which makes the
//! virtualenv and resolves and installs Ray's dependency tree many times faster than
//! `python -m venv` and pip (docs/performance.md). It is installed into the agent's state
//! directory (not into the virtualenv, which stays the user's) with the pip of the Python that
//! makes the virtualenv, before the virtualenv exists, or copied from the shared cache
//! directory when an earlier node left it there (shared_uv.rs). Then `uv venv --seed` makes
//! the virtualenv and `uv pip install --python <virtualenv python>` installs the requirements.
//! When uv cannot be had (no route to its index, no pip for the interpreter, a `pip_args`
//! option uv has no counterpart for) `python -m venv` and pip do the work, and the step's
//! detail says which and why.

use std::path::{Path, PathBuf};

use super::shared_uv;
use crate::engine::{Retry, StepContext, StepError};
use crate::host::CommandSpec;
use crate::steps::venv;

/// Where uv is installed, under the state directory.
const UV_DIR: &str = "uv";

/// What installs the requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Installer {
    /// uv at `binary`, reporting `version` (`uv 0.13.9`), with `pip_args` translated.
    Uv {
        binary: PathBuf,
        version: String,
        args: UvArgs,
    },
    /// pip, because uv could not be had for the reason given.
    Pip { why_not_uv: String },
}

impl Installer {
    /// What the detail and the log call it: `uv 0.13.9`, or `pip (uv: why not)`.
    pub(super) fn describe(&self) -> String {
        match self {
            Installer::Uv { version, .. } => version.clone(),
            Installer::Pip { why_not_uv } => format!("pip (not uv: {why_not_uv})"),
        }
    }
}

/// `pip_args` as uv takes them: command-line options and environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct UvArgs {
    /// For `uv pip install`.
    pub(super) args: Vec<String>,
    /// Those of `args` that `uv venv` takes too (the index and the cache): `--seed` fetches
    /// pip from the same index.
    pub(super) venv_args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    /// Whether the options name a cache (`--cache-dir`, `--no-cache`).
    pub(super) cache_named: bool,
    /// The cache directory the options name: where uv's own binary is shared.
    pub(super) cache_dir: Option<PathBuf>,
}

/// Translates pip's options to uv's; `Err` names the first option uv has no counterpart for.
pub(super) fn translate(pip_args: &[String]) -> Result<UvArgs, String> {
    let mut out = UvArgs::default();
    let mut args = pip_args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("`{name}` has no value"))
        };
        match name {
            "--proxy" => {
                let proxy = value()?;
                out.env.push(("HTTPS_PROXY".into(), proxy.clone()));
                out.env.push(("HTTP_PROXY".into(), proxy));
            }
            "--cert" => {
                let cert = value()?;
                out.env.push(("SSL_CERT_FILE".into(), cert));
            }
            "--timeout" => {
                let secs = value()?;
                out.env.push(("UV_HTTP_TIMEOUT".into(), secs));
            }
            "--cache-dir" => {
                let dir = value()?;
                out.cache_dir = Some(PathBuf::from(&dir));
                out.both(["--cache-dir".to_owned(), dir]);
                out.cache_named = true;
            }
            "--no-cache-dir" => {
                out.both(["--no-cache".to_owned()]);
                out.cache_named = true;
            }
            "-i" | "--index-url" => out.both(["--index-url".to_owned(), value()?]),
            "--extra-index-url" | "--find-links" | "-f" => out.both([name.to_owned(), value()?]),
            "--constraint" | "-c" | "--requirement" | "-r" | "--only-binary" | "--no-binary" => {
                out.args.extend([name.to_owned(), value()?]);
            }
            "--trusted-host" => out.both(["--allow-insecure-host".to_owned(), value()?]),
            "--pre" => out.args.extend(["--prerelease".into(), "allow".into()]),
            "--no-index" | "-q" | "--quiet" | "-v" | "--verbose" => out.both([name.to_owned()]),
            "-U" | "--upgrade" | "--no-deps" => out.args.push(name.to_owned()),
            other => return Err(format!("pip_args has `{other}`, which uv does not take")),
        }
    }
    Ok(out)
}

impl UvArgs {
    /// Options that `uv pip install` and `uv venv` both take.
    fn both<const N: usize>(&mut self, options: [String; N]) {
        self.venv_args.extend(options.iter().cloned());
        self.args.extend(options);
    }

    /// The cache options: the configured ones, else a cache beside uv itself, since a system
    /// service may have no HOME.
    fn cache(&self, ctx: &StepContext) -> Vec<String> {
        if self.cache_named {
            return Vec::new();
        }
        let cache = ctx
            .root
            .path(&ctx.settings.agent.state_dir)
            .join("uv-cache");
        vec!["--cache-dir".to_owned(), cache.display().to_string()]
    }
}

/// uv's binary: the one an earlier attempt installed, else the shared cache's, else one
/// installed from its wheel with `python`'s pip (and then left in the shared cache); or why
/// pip must do the work.
pub(super) async fn obtain(ctx: &StepContext, python: &str) -> Installer {
    let args = match translate(&ctx.settings.packages.pip_args) {
        Ok(args) => args,
        Err(why_not_uv) => return Installer::Pip { why_not_uv },
    };
    let dir = ctx.root.path(&ctx.settings.agent.state_dir).join(UV_DIR);
    let binary = dir.join("bin/uv");
    if let Ok(version) = version_of(ctx, &binary).await {
        return Installer::Uv {
            binary,
            version,
            args,
        };
    }
    let shared = args.cache_dir.as_deref().map(|d| ctx.root.path(d));
    if let Some(cache) = &shared {
        match shared_uv::take(cache, &binary) {
            Ok(true) => match version_of(ctx, &binary).await {
                Ok(version) => {
                    ctx.log.note(&format!(
                        "# uv copied from {}",
                        shared_uv::binary_in(cache).display()
                    ));
                    return Installer::Uv {
                        binary,
                        version,
                        args,
                    };
                }
                Err(err) => ctx.log.note(&format!(
                    "# the shared {} does not run here ({err}): installing uv from its wheel",
                    shared_uv::binary_in(cache).display()
                )),
            },
            Ok(false) => {}
            Err(err) => ctx.log.note(&format!(
                "# cannot copy uv from {}: {err}",
                shared_uv::binary_in(cache).display()
            )),
        }
    }
    ctx.activity("installing uv from its wheel");
    if let Err(err) = install(ctx, python, &dir).await {
        return Installer::Pip {
            why_not_uv: format!("it could not be installed: {err}"),
        };
    }
    match version_of(ctx, &binary).await {
        Ok(version) => {
            if let Some(cache) = &shared
                && let Err(err) = shared_uv::keep(&binary, cache)
            {
                ctx.log.note(&format!(
                    "# cannot leave uv in {} for the other nodes: {err}",
                    shared_uv::binary_in(cache).display()
                ));
            }
            Installer::Uv {
                binary,
                version,
                args,
            }
        }
        Err(err) => Installer::Pip {
            why_not_uv: format!("the installed {} does not run: {err}", binary.display()),
        },
    }
}

/// `pip install --target DIR uv` with `python`'s pip and the configured pip options. pip
/// writes only into DIR: `--target` is outside PEP 668's guard of the system's packages.
async fn install(ctx: &StepContext, python: &str, dir: &Path) -> Result<(), StepError> {
    let spec = CommandSpec::new(python)
        .args(["-m", "pip", "install", "--upgrade", "--target"])
        .arg(dir.display().to_string())
        .args(&ctx.settings.packages.pip_args)
        .arg("uv")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1");
    ctx.run_checked(spec, Retry::Never).await.map(drop)
}

async fn version_of(ctx: &StepContext, binary: &Path) -> Result<String, StepError> {
    if !binary.is_file() {
        return Err(StepError::Io(format!("no {}", binary.display())));
    }
    let spec = CommandSpec::new(binary.display().to_string()).arg("--version");
    let outcome = ctx.run_checked(spec, Retry::Never).await?;
    let version = outcome.output.lines().next().unwrap_or_default().trim();
    // `uv 0.13.9 (x86_64-unknown-linux-gnu)`: the name and the version.
    Ok(version.split(" (").next().unwrap_or(version).to_owned())
}

/// `uv pip install --python <virtualenv python>` of the configured requirements.
pub(super) async fn pip_install(
    ctx: &StepContext,
    binary: &Path,
    args: &UvArgs,
) -> Result<(), StepError> {
    let packages = &ctx.settings.packages;
    let mut spec = CommandSpec::new(binary.display().to_string())
        .args(["pip", "install", "--color", "never", "--python"])
        .arg(venv::python(ctx).display().to_string())
        .args(args.cache(ctx))
        .args(&args.args)
        .args(&packages.python)
        .env("UV_PYTHON_DOWNLOADS", "never");
    for (name, value) in &args.env {
        spec = spec.env(name, value);
    }
    ctx.run_checked(spec, Retry::IfOutput(uv_retryable))
        .await
        .map(drop)
}

/// `uv venv --seed` of the virtualenv with `interpreter` (a system one: uv neither downloads
/// one nor takes its own), afresh (`--clear`) when `clear`. `--seed` puts pip into it, as
/// `python -m venv` does, so that users can `pip install` into it.
pub(super) async fn make_venv(
    ctx: &StepContext,
    binary: &Path,
    args: &UvArgs,
    interpreter: &str,
    clear: bool,
) -> Result<(), StepError> {
    let mut spec = CommandSpec::new(binary.display().to_string())
        .args(["venv", "--color", "never", "--seed", "--no-project"])
        .args([
            "--python",
            interpreter,
            "--python-preference",
            "only-system",
        ])
        .args(args.cache(ctx))
        .args(&args.venv_args);
    if clear {
        spec = spec.arg("--clear");
    }
    spec = spec
        .arg(venv::dir(ctx).display().to_string())
        .env("UV_PYTHON_DOWNLOADS", "never");
    for (name, value) in &args.env {
        spec = spec.env(name, value);
    }
    // No retry: `python -m venv` takes over when uv fails.
    ctx.run_checked(spec, Retry::Never).await.map(drop)
}

/// Whether a failed uv run met the network, so that another attempt may pass. A resolution
/// that finds no solution, or an index that answers 404, is final.
fn uv_retryable(output: &str) -> bool {
    const NETWORK: &[&str] = &[
        "dns error",
        "tcp connect error",
        "error sending request",
        "Connection reset",
        "connection closed before message completed",
        "operation timed out",
        "Request failed after",
        "HTTP status server error",
        "429 Too Many Requests",
    ];
    NETWORK.iter().any(|n| output.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pip_options_become_uv_options_and_environment() {
        let uv = translate(&strings(&[
            "--proxy",
            "http://169.254.100.1:8777",
            "--cert=/etc/ssl/certs/ca-certificates.crt",
            "--cache-dir",
            "/var/cache/pip",
            "-i",
            "https://mirror.example/simple",
            "--pre",
        ]))
        .expect("translates");
        assert_eq!(
            uv.args,
            strings(&[
                "--cache-dir",
                "/var/cache/pip",
                "--index-url",
                "https://mirror.example/simple",
                "--prerelease",
                "allow"
            ])
        );
        // `uv venv` has no `--prerelease`: it takes only where pip comes from.
        assert_eq!(
            uv.venv_args,
            strings(&[
                "--cache-dir",
                "/var/cache/pip",
                "--index-url",
                "https://mirror.example/simple"
            ])
        );
        assert_eq!(uv.cache_dir, Some(PathBuf::from("/var/cache/pip")));
        assert!(uv.cache_named);
        assert!(
            uv.env
                .contains(&("HTTPS_PROXY".into(), "http://169.254.100.1:8777".into()))
        );
        assert!(uv.env.contains(&(
            "SSL_CERT_FILE".into(),
            "/etc/ssl/certs/ca-certificates.crt".into()
        )));
        assert!(!translate(&[]).expect("nothing").cache_named);
    }

    #[test]
    fn an_option_uv_lacks_keeps_pip() {
        let err = translate(&strings(&["--use-pep517"])).expect_err("uv has none");
        assert!(err.contains("--use-pep517"), "{err}");
        let err = translate(&strings(&["--proxy"])).expect_err("no value");
        assert!(err.contains("no value"), "{err}");
    }

    #[test]
    fn uv_network_failures_are_retryable_and_resolution_failures_are_not() {
        assert!(uv_retryable(
            "error: Request failed after 3 retries\n  Caused by: error sending request for url (https://pypi.org/simple/ray/)\n  Caused by: dns error"
        ));
        assert!(!uv_retryable(
            "  x No solution found when resolving dependencies:\n  `-> Because there is no version of six==0.0.0.1 and you require six==0.0.0.1, we can conclude that your requirements are unsatisfiable."
        ));
    }
}
