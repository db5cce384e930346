//! install-efa: downloads the EFA installer, checks its SHA-256 and OpenPGP signature, unpacks
//! it safely, runs `efa_installer.sh` under the package-manager lock and confirms from the
//! installer's manifest that the wanted version is in. "Reboot is needed" becomes a reboot
//! the engine performs; after the boot the manifest check finds the work done.
//!
//! Files, under the state directory: `downloads/` holds the tarball (and its `.part` while
//! downloading, kept across failures to resume from); `efa-installer/<name>` the unpacked
//! tree while the installer runs. The installer's whole output is in the step's log.

mod download;
mod extract;
mod installer;
pub(crate) mod manifest;
mod signing_key;
pub(crate) mod verify;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use self::download::{DownloadError, DownloadPolicy, Fetched, Progress, partial_path};
use self::extract::ExtractError;
use self::installer::Verdict;
use self::manifest::{MANIFEST_PATH, Manifest, ManifestReadError};
use self::signing_key::{KeyError, KeySource, PublicKey};
use self::verify::{SignatureCheck, VerifyError};
use super::{GROW_ROOT, INSTALL_EFA};
use crate::config::Settings;
use crate::engine::{Check, Outcome, Step, StepContext, StepError, Wanted};

/// How often download progress reaches the status document.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The install-efa step.
#[derive(Debug, Default)]
pub(crate) struct InstallEfa {
    download: DownloadPolicy,
}

impl InstallEfa {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    fn with_download_policy(download: DownloadPolicy) -> Self {
        Self { download }
    }
}

#[async_trait]
impl Step for InstallEfa {
    fn name(&self) -> &str {
        INSTALL_EFA
    }

    fn depends_on(&self) -> &[&str] {
        &[GROW_ROOT]
    }

    fn plan(&self, settings: &Settings) -> Vec<String> {
        let efa = &settings.efa;
        vec![
            format!(
                "download {} (SHA-256 {})",
                efa.installer_url, efa.installer_sha256
            ),
            format!(
                "verify {} with {} if present, else with {} (key {})",
                efa.signature_url,
                efa.public_key.display(),
                signing_key::key_url(&efa.installer_url),
                efa.fingerprint
            ),
            format!(
                "run {}/{} {} under the package-manager lock",
                installer::INSTALLER_DIR,
                installer::INSTALLER_SCRIPT,
                efa.installer_flags.join(" ")
            ),
            format!(
                "done when {MANIFEST_PATH} reports version {}",
                efa.installer_version
            ),
        ]
    }

    async fn wanted(&self, ctx: &StepContext) -> Wanted {
        super::efa_presence::efa_wanted(ctx).await
    }

    async fn check(&self, ctx: &StepContext) -> Result<Check, StepError> {
        let wanted = &ctx.settings.efa.installer_version;
        match read_manifest(ctx) {
            Ok(Some(found)) if &found.version == wanted => {
                Ok(Check::Done(Some(serde_json::json!({
                    "version": found.version,
                    "manifest": MANIFEST_PATH,
                    "packages": found.packages.len(),
                }))))
            }
            Ok(Some(found)) => {
                ctx.log.note(&format!(
                    "# EFA installer {} is installed, {wanted} is wanted",
                    found.version
                ));
                Ok(Check::NotDone)
            }
            Ok(None) => Ok(Check::NotDone),
            Err(err @ ManifestReadError::Invalid { .. }) => {
                ctx.log.note(&format!("# {err}; installing again"));
                Ok(Check::NotDone)
            }
            Err(err @ ManifestReadError::Io { .. }) => Err(StepError::Io(err.to_string())),
        }
    }

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        Install::new(ctx, &self.download)?.run().await
    }
}

fn read_manifest(ctx: &StepContext) -> Result<Option<Manifest>, ManifestReadError> {
    Manifest::read(&ctx.root.path(MANIFEST_PATH))
}

/// Where one installer's files go, all under the state directory.
#[derive(Debug, Clone)]
struct Layout {
    tarball: PathBuf,
    tree: PathBuf,
}

impl Layout {
    fn new(ctx: &StepContext) -> Self {
        let efa = &ctx.settings.efa;
        let state = ctx.root.path(&ctx.settings.agent.state_dir);
        let name = tarball_name(&efa.installer_url);
        // The pinned hash in the name keeps a file fetched for another pin from being taken
        // for this one.
        let pin: String = efa.installer_sha256.chars().take(12).collect();
        let stem = name
            .strip_suffix(".tar.gz")
            .or_else(|| name.strip_suffix(".tgz"))
            .unwrap_or(&name)
            .to_owned();
        Self {
            tarball: state.join("downloads").join(format!("{pin}-{name}")),
            tree: state.join("efa-installer").join(stem),
        }
    }
}

/// The file name the URL's path ends in, if it is a plain one.
fn tarball_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let last = path.rsplit('/').next().unwrap_or_default();
    let plain = !last.is_empty()
        && !last.starts_with('.')
        && last
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if plain {
        last.to_owned()
    } else {
        "aws-efa-installer.tar.gz".to_owned()
    }
}

/// What status shows about the install, filled in as it goes.
#[derive(Debug, Clone, Default, Serialize)]
struct Detail {
    version: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reused_download: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256_verified: Option<String>,
    signature_url: String,
    /// The key file used, or the URL the key was fetched from.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signer_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extracted_files: Option<u64>,
    flags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    installer_exit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reboot_needed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    packages: Option<usize>,
    log: String,
}

/// One attempt at installing.
struct Install<'a> {
    ctx: &'a StepContext,
    policy: &'a DownloadPolicy,
    client: reqwest::Client,
    layout: Layout,
    detail: Detail,
}

impl<'a> Install<'a> {
    fn new(ctx: &'a StepContext, policy: &'a DownloadPolicy) -> Result<Self, StepError> {
        let efa = &ctx.settings.efa;
        let client = policy
            .client()
            .map_err(|e| StepError::Fatal(e.to_string()))?;
        Ok(Self {
            ctx,
            policy,
            client,
            layout: Layout::new(ctx),
            detail: Detail {
                version: efa.installer_version.clone(),
                url: efa.installer_url.clone(),
                signature_url: efa.signature_url.clone(),
                flags: efa.installer_flags.clone(),
                log: ctx.log.path().display().to_string(),
                ..Detail::default()
            },
        })
    }

    fn publish(&self) -> Option<serde_json::Value> {
        let value = serde_json::to_value(&self.detail).ok();
        if let Some(value) = &value {
            self.ctx.report.detail(value.clone());
        }
        value
    }

    async fn run(mut self) -> Result<Outcome, StepError> {
        let fetched = self.download().await?;
        let signature = self.fetch_signature().await?;
        let key = self.public_key().await?;
        self.check_sha256(fetched).await?;
        self.check_signature(signature, key).await?;
        self.unpack().await?;
        self.install().await
    }

    /// The key file on the node, or the key beside the installer.
    async fn public_key(&mut self) -> Result<PublicKey, StepError> {
        let efa = &self.ctx.settings.efa;
        let url = signing_key::key_url(&efa.installer_url);
        let progress = StatusProgress::new(self.ctx, &self.detail);
        let key = signing_key::obtain(
            &self.ctx.root.path(&efa.public_key),
            &efa.public_key,
            &url,
            &self.client,
            self.policy,
            &progress,
        )
        .await
        .map_err(|err| {
            self.ctx.log.note(&format!("# {err}"));
            match err {
                KeyError::File { .. } => StepError::Io(err.to_string()),
                _ if err.is_retryable() => StepError::Transient(err.to_string()),
                _ => StepError::Fatal(err.to_string()),
            }
        })?;
        let source = match &key.source {
            KeySource::File(path) => path.clone(),
            KeySource::Fetched(url) => url.clone(),
        };
        self.ctx
            .log
            .note(&format!("# the installer's public key: {}", key.source));
        self.detail.public_key = Some(source);
        self.publish();
        Ok(key)
    }

    async fn check_signature(
        &mut self,
        signature: Vec<u8>,
        key: PublicKey,
    ) -> Result<(), StepError> {
        let efa = &self.ctx.settings.efa;
        self.ctx.activity("checking the OpenPGP signature");
        let (tarball, url) = (self.layout.tarball.clone(), efa.signature_url.clone());
        let fingerprint = efa.fingerprint.clone();
        let signer = blocking(move || {
            verify::check_signature(&SignatureCheck {
                file: &tarball,
                signature: &signature,
                signature_url: &url,
                key: &key,
                fingerprint: &fingerprint,
            })
        })
        .await?
        .map_err(|err| self.refuse(err))?;
        self.ctx.log.note(&format!(
            "# signature verified: made by {} of key {}",
            signer.signing_key, signer.primary
        ));
        self.detail.signer_fingerprint = Some(signer.primary);
        self.detail.signing_key = Some(signer.signing_key);
        self.publish();
        Ok(())
    }

    async fn unpack(&mut self) -> Result<(), StepError> {
        self.ctx.activity("unpacking the installer");
        if let Some(dir) = self.layout.tree.parent() {
            private_dir(dir)?;
        }
        let (tarball, tree) = (self.layout.tarball.clone(), self.layout.tree.clone());
        let extracted = blocking(move || extract::extract_fresh(&tarball, &tree))
            .await?
            .map_err(|err| match err {
                ExtractError::Io { .. } => StepError::Io(format!("unpacking: {err}")),
                _ => StepError::Fatal(format!("{}: {err}", self.layout.tarball.display())),
            })?;
        self.detail.extracted_files = Some(extracted.files);
        self.publish();
        Ok(())
    }

    /// Runs the unpacked installer, removes its tree whatever happened, and judges the run.
    async fn install(mut self) -> Result<Outcome, StepError> {
        let ctx = self.ctx;
        let efa = &ctx.settings.efa;
        let ran = installer::run_installer(ctx, &self.layout.tree, &efa.installer_flags).await;
        self.remove_tree().await;
        let ran = ran?;
        let after = read_manifest(ctx);
        self.detail.installer_exit = ran.outcome.code;
        self.detail.reboot_needed = Some(ran.reboot_needed);
        if let Ok(Some(found)) = &after {
            self.detail.manifest_version = Some(found.version.clone());
            self.detail.packages = Some(found.packages.len());
        }
        let detail = self.publish();
        match installer::judge(&ran, &after, &efa.installer_version) {
            Verdict::Installed => {
                self.remove_download();
                ctx.activity(format!("EFA installer {} installed", efa.installer_version));
                Ok(Outcome::Done(detail))
            }
            Verdict::RebootRequired => {
                self.remove_download();
                Ok(Outcome::RebootRequired {
                    reason: format!(
                        "{} says a reboot is needed to load the new EFA kernel module",
                        installer::INSTALLER_SCRIPT
                    ),
                    detail,
                })
            }
            Verdict::Failed(err) => Err(err),
        }
    }

    async fn download(&mut self) -> Result<Fetched, StepError> {
        let ctx = self.ctx;
        let url = &ctx.settings.efa.installer_url;
        if let Some(dir) = self.layout.tarball.parent() {
            private_dir(dir)?;
        }
        ctx.activity(format!("downloading {url}"));
        let progress = StatusProgress::new(ctx, &self.detail);
        let fetched = download::download_file(
            &self.client,
            self.policy,
            url,
            &self.layout.tarball,
            &progress,
        )
        .await
        .map_err(download_failure)?;
        ctx.log.note(&format!(
            "# {} bytes in {}{}",
            fetched.bytes,
            fetched.path.display(),
            match (fetched.reused, fetched.resumed_from) {
                (true, _) => " (kept from an earlier attempt)".to_owned(),
                (false, Some(from)) => format!(" (resumed at byte {from})"),
                (false, None) => String::new(),
            }
        ));
        self.detail.bytes = Some(fetched.bytes);
        self.detail.resumed_from = fetched.resumed_from;
        self.detail.reused_download = Some(fetched.reused);
        self.publish();
        Ok(fetched)
    }

    async fn fetch_signature(&self) -> Result<Vec<u8>, StepError> {
        let url = &self.ctx.settings.efa.signature_url;
        self.ctx.activity(format!("downloading {url}"));
        let progress = StatusProgress::new(self.ctx, &self.detail);
        download::fetch_small(
            &self.client,
            self.policy,
            url,
            download::MAX_SIGNATURE_BYTES,
            &progress,
        )
        .await
        .map_err(download_failure)
    }

    /// Checks the pinned SHA-256. A file pieced together with bytes from an earlier attempt
    /// may mix two versions of what the server held; it gets one fresh download before a
    /// mismatch counts.
    async fn check_sha256(&mut self, fetched: Fetched) -> Result<(), StepError> {
        self.ctx.activity("checking the SHA-256");
        let mut result = self.hash_tarball().await?;
        if matches!(result, Err(VerifyError::HashMismatch { .. }))
            && (fetched.reused || fetched.resumed_from.is_some())
        {
            if let Err(err) = &result {
                self.ctx.log.note(&format!(
                    "# {err}; the file was resumed, downloading it afresh"
                ));
            }
            self.remove_download();
            self.download().await?;
            self.ctx.activity("checking the SHA-256");
            result = self.hash_tarball().await?;
        }
        let sha256 = result.map_err(|err| self.refuse(err))?;
        self.detail.sha256_verified = Some(sha256);
        self.publish();
        Ok(())
    }

    async fn hash_tarball(&self) -> Result<Result<String, VerifyError>, StepError> {
        let tarball = self.layout.tarball.clone();
        let expected = self.ctx.settings.efa.installer_sha256.clone();
        blocking(move || verify::check_sha256(&tarball, &expected)).await
    }

    /// A failed check: the download is deleted so that a later attempt fetches it anew, and
    /// no retry is asked for.
    fn refuse(&self, err: VerifyError) -> StepError {
        if let VerifyError::Io { .. } = err {
            return StepError::Io(err.to_string());
        }
        self.remove_download();
        self.ctx
            .log
            .note(&format!("# refusing to run the installer: {err}"));
        StepError::Fatal(format!("refusing to run the EFA installer: {err}"))
    }

    fn remove_download(&self) {
        remove_file_now(&self.layout.tarball);
        remove_file_now(&partial_path(&self.layout.tarball));
    }

    async fn remove_tree(&self) {
        let tree = self.layout.tree.clone();
        let removed = blocking(move || std::fs::remove_dir_all(&tree)).await;
        if let Ok(Err(err)) = removed
            && err.kind() != std::io::ErrorKind::NotFound
        {
            self.ctx.log.note(&format!(
                "# cannot remove {}: {err}",
                self.layout.tree.display()
            ));
        }
    }
}

/// Makes `dir` (and its parents) and leaves it to root alone: what is verified there must not
/// be swapped by another user before it is unpacked and run.
fn private_dir(dir: &Path) -> Result<(), StepError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StepError::io(parent.display(), e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StepError::io(dir.display(), e))
        }
        Err(e) => Err(StepError::io(dir.display(), e)),
    }
}

/// Removes a file; a file that is not there is fine, and any other failure only costs disk.
fn remove_file_now(path: &Path) {
    if let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {err}", path.display());
    }
}

/// Runs file-heavy work (hashing hundreds of MiB, unpacking) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StepError::Io(format!("a worker thread failed: {e}")))
}

fn download_failure(err: DownloadError) -> StepError {
    if err.is_retryable() {
        StepError::Transient(err.to_string())
    } else if let DownloadError::File { .. } = err {
        StepError::Io(err.to_string())
    } else {
        StepError::Fatal(err.to_string())
    }
}

/// Download progress into status, at most once a [`PROGRESS_EVERY`].
struct StatusProgress<'a> {
    ctx: &'a StepContext,
    name: String,
    url: String,
    last: Mutex<Option<Instant>>,
}

impl<'a> StatusProgress<'a> {
    fn new(ctx: &'a StepContext, detail: &Detail) -> Self {
        Self {
            ctx,
            name: tarball_name(&detail.url),
            url: detail.url.clone(),
            last: Mutex::new(None),
        }
    }
}

impl Progress for StatusProgress<'_> {
    fn bytes(&self, bytes: u64, total: Option<u64>) {
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let finished = total == Some(bytes);
            if last.is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY) && !finished {
                return;
            }
            *last = Some(now);
        }
        self.ctx.report.activity(format!(
            "downloading {}: {}",
            self.name,
            mebibytes(bytes, total)
        ));
        self.ctx.report.detail(serde_json::json!({
            "phase": "download",
            "url": self.url,
            "bytes": bytes,
            "total": total,
        }));
    }

    fn retrying(&self, error: &DownloadError, wait: Duration) {
        self.ctx.activity(format!(
            "{error}; trying again in {:.1} s",
            wait.as_secs_f64()
        ));
    }
}

/// `12.3/340.0 MiB`, or `12.3 MiB` when the size is unknown.
fn mebibytes(bytes: u64, total: Option<u64>) -> String {
    let mib = |n: u64| n as f64 / (1024.0 * 1024.0);
    match total {
        Some(total) => format!("{:.1}/{:.1} MiB", mib(bytes), mib(total)),
        None => format!("{:.1} MiB", mib(bytes)),
    }
}
