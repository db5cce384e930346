//! The agent store (`rayefa.agent_store: s3://bucket/prefix`): `rayefa publish` uploads the
//! agent packages there with a manifest, and every launch hands each node presigned GET URLs
//! of its architecture's packages, so nodes need no S3 permission and nothing is public.
//!
//! `PREFIX/manifest.json` says, per architecture (`uname -m`'s names) and package kind, the
//! object's key, SHA-256 and size:
//! `{"format": 1, "packages": {"x86_64": {"rpm": {"key": ..., "sha256": ..., "size": ...}}}}`.
//! Publishing merges into it, so the two architectures can be published one at a time; the
//! last writer wins when two people publish at once.
//!
//! The orchestrator's own packages (`rayefa`, built by `packaging/build --with-rayefa`) go to
//! the same store, in the manifest's `orchestrator` map of the same form: the head of a
//! cluster that autoscales installs one, to run `rayefa nodes` for Ray's autoscaler.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayefa_cluster::rayefa::AgentStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::agent_package::{Download, NodePackage, PackageSource, machine_name, runs};
use super::s3::{Head, S3, S3Error};

/// The manifest's name under the prefix.
pub(crate) const MANIFEST: &str = "manifest.json";

/// How long the URLs a node gets stay valid: a slow first boot (an instance waiting for
/// capacity, a long dnf update before user data) is far shorter; SigV4 allows at most 7 days.
/// A URL signed with temporary credentials stops working when their session ends, earlier.
pub(crate) const URL_LIFETIME: Duration = Duration::from_secs(3 * 3600);

/// The manifest's format; a reader refuses others.
const FORMAT: u32 = 1;

/// The package formats nodes install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PackageKind {
    /// An RPM, for dnf (Amazon Linux, RHEL, Fedora).
    Rpm,
    /// A .deb, for apt (Ubuntu, Debian).
    Deb,
}

impl PackageKind {
    /// `rpm` or `deb`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PackageKind::Rpm => "rpm",
            PackageKind::Deb => "deb",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            PackageKind::Rpm => "application/x-rpm",
            PackageKind::Deb => "application/vnd.debian.binary-package",
        }
    }
}

/// One published package in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The object's key in the bucket.
    pub(crate) key: String,
    /// Its SHA-256, hex.
    pub(crate) sha256: String,
    /// Its size in bytes.
    pub(crate) size: u64,
}

/// Published packages by architecture, then by kind.
pub(crate) type ByArchitecture = BTreeMap<String, BTreeMap<PackageKind, Entry>>;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// Always 1.
    pub(crate) format: u32,
    /// The agent's packages.
    pub(crate) packages: ByArchitecture,
    /// The orchestrator's (`rayefa`) packages, for heads that run Ray's autoscaler; absent
    /// from a manifest that has none, so older readers of format 1 read it unchanged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) orchestrator: ByArchitecture,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT,
            packages: BTreeMap::new(),
            orchestrator: BTreeMap::new(),
        }
    }
}

/// Which program a package installs, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Program {
    /// `rayefa-agent`, every node's.
    #[serde(rename = "rayefa-agent")]
    Agent,
    /// `rayefa`, the orchestrator, for an autoscaling head.
    #[serde(rename = "rayefa")]
    Orchestrator,
}

impl Program {
    /// The package's name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Program::Agent => "rayefa-agent",
            Program::Orchestrator => "rayefa",
        }
    }
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// An S3 call failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// Nothing was published there yet.
    #[error(
        "{store} has no {MANIFEST}: publish the agent packages first, `rayefa publish FILE \
         PACKAGE...`"
    )]
    NoManifest {
        /// The store.
        store: String,
    },
    /// The manifest is not one rayefa wrote.
    #[error("{store}/{MANIFEST} is not a rayefa manifest: {detail}")]
    BadManifest {
        /// The store.
        store: String,
        /// Why.
        detail: String,
    },
    /// No `rayefa` package was published for the head's architecture, and the cluster
    /// autoscales.
    #[error(
        "{runs}, and {store} has no rayefa package for it (it has {have}); the head of a cluster \
         that autoscales runs rayefa for Ray's autoscaler: build it with `packaging/build \
         --with-rayefa` and publish it with `rayefa publish FILE PACKAGE...`",
        runs = runs(.architectures),
        have = if .have.is_empty() { "none".to_owned() } else { .have.join(", ") }
    )]
    NoOrchestrator {
        /// The store.
        store: String,
        /// The head type's architectures, as `uname -m` names them.
        architectures: Vec<String>,
        /// The architectures the manifest has rayefa packages for.
        have: Vec<String>,
    },
    /// No package was published for the node's architecture.
    #[error(
        "{runs}, and {store} has no agent package for it (it has {have}): publish one with \
         `rayefa publish FILE PACKAGE...`",
        runs = runs(.architectures),
        have = if .have.is_empty() { "none".to_owned() } else { .have.join(", ") }
    )]
    NoPackage {
        /// The store.
        store: String,
        /// The node type's architectures, as `uname -m` names them.
        architectures: Vec<String>,
        /// The architectures the manifest has.
        have: Vec<String>,
    },
}

/// A package file to publish.
#[derive(Debug, Clone)]
pub(crate) struct PackageFile {
    /// Where it was read.
    pub(crate) path: PathBuf,
    /// Its file name, also its name in the store.
    pub(crate) name: String,
    /// `x86_64` or `aarch64`.
    pub(crate) machine: &'static str,
    /// RPM or .deb.
    pub(crate) kind: PackageKind,
    /// The agent's or the orchestrator's.
    pub(crate) program: Program,
    /// Its SHA-256, hex.
    pub(crate) sha256: String,
    bytes: Vec<u8>,
}

/// A package file that cannot be published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackageFileError {
    /// It could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its name does not say what it is.
    #[error("{path}: {why}")]
    Name {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// Two files are the same program's package of the same architecture and kind.
    #[error(
        "{first} and {second} are both the {machine} .{kind} package of {program}: publish one"
    )]
    Twice {
        /// `rayefa-agent` or `rayefa`.
        program: &'static str,
        /// The first file.
        first: String,
        /// The second.
        second: String,
        /// The architecture.
        machine: &'static str,
        /// The kind.
        kind: &'static str,
    },
}

/// The architecture and kind `packaging/build`'s file names say: `NAME-VERSION-RELEASE.ARCH.rpm`
/// and `NAME_VERSION-RELEASE_ARCH.deb` (`amd64`/`arm64` in Debian's words).
pub(crate) fn architecture_of(name: &str) -> Result<(&'static str, PackageKind), String> {
    let (stem, kind) = if let Some(stem) = name.strip_suffix(".rpm") {
        (stem, PackageKind::Rpm)
    } else if let Some(stem) = name.strip_suffix(".deb") {
        (stem, PackageKind::Deb)
    } else {
        return Err("is neither an .rpm nor a .deb".to_owned());
    };
    let arch = match kind {
        PackageKind::Rpm => stem.rsplit('.').next(),
        PackageKind::Deb => stem.rsplit('_').next(),
    }
    .filter(|a| a.len() < stem.len())
    .unwrap_or("");
    let machine = match (kind, arch) {
        (PackageKind::Rpm, "x86_64") | (PackageKind::Deb, "amd64") => "x86_64",
        (PackageKind::Rpm, "aarch64") | (PackageKind::Deb, "arm64") => "aarch64",
        _ => {
            let form = match kind {
                PackageKind::Rpm => "NAME-VERSION-RELEASE.ARCH.rpm with ARCH x86_64 or aarch64",
                PackageKind::Deb => "NAME_VERSION_ARCH.deb with ARCH amd64 or arm64",
            };
            return Err(format!(
                "the name does not say the architecture (`{arch}`): packaging/build names \
                 packages {form}"
            ));
        }
    };
    Ok((machine, kind))
}

/// The program a package installs, from the name before its version:
/// `NAME-VERSION-RELEASE.ARCH.rpm`, `NAME_VERSION-RELEASE_ARCH.deb`.
pub(crate) fn program_of(name: &str, kind: PackageKind) -> Result<Program, String> {
    let package = match kind {
        PackageKind::Rpm => name.rsplitn(3, '-').nth(2),
        PackageKind::Deb => name.split_once('_').map(|(package, _)| package),
    };
    match package {
        Some("rayefa-agent") => Ok(Program::Agent),
        Some("rayefa") => Ok(Program::Orchestrator),
        other => Err(format!(
            "is a package of `{}`, not of rayefa-agent or rayefa (packaging/build names them \
             rayefa-agent-VERSION-RELEASE.ARCH.rpm, rayefa_VERSION-RELEASE_ARCH.deb, ...)",
            other.unwrap_or("")
        )),
    }
}

/// Reads the package files, refusing two of the same program, architecture and kind.
pub(crate) fn read_packages(paths: &[PathBuf]) -> Result<Vec<PackageFile>, PackageFileError> {
    let mut files: Vec<PackageFile> = Vec::new();
    for path in paths {
        let file = read_package(path)?;
        if let Some(earlier) = files
            .iter()
            .find(|f| f.machine == file.machine && f.kind == file.kind && f.program == file.program)
        {
            return Err(PackageFileError::Twice {
                program: file.program.as_str(),
                first: earlier.path.display().to_string(),
                second: file.path.display().to_string(),
                machine: file.machine,
                kind: file.kind.as_str(),
            });
        }
        files.push(file);
    }
    Ok(files)
}

fn read_package(path: &Path) -> Result<PackageFile, PackageFileError> {
    let shown = path.display().to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PackageFileError::Name {
            path: shown.clone(),
            why: "has no UTF-8 file name".into(),
        })?
        .to_owned();
    let (machine, kind) = architecture_of(&name).map_err(|why| PackageFileError::Name {
        path: shown.clone(),
        why,
    })?;
    let program = program_of(&name, kind).map_err(|why| PackageFileError::Name {
        path: shown.clone(),
        why,
    })?;
    if let Err(why) = AgentStore::parse(&format!("s3://bucket/{name}")) {
        return Err(PackageFileError::Name { path: shown, why });
    }
    let bytes = std::fs::read(path).map_err(|source| PackageFileError::Read {
        path: shown,
        source,
    })?;
    Ok(PackageFile {
        path: path.to_owned(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        name,
        machine,
        kind,
        program,
        bytes,
    })
}

/// What publishing did with one package.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Published {
    /// The file.
    pub(crate) file: String,
    /// `rayefa-agent` or `rayefa`.
    pub(crate) package: Program,
    /// `x86_64` or `aarch64`.
    pub(crate) architecture: &'static str,
    /// `rpm` or `deb`.
    pub(crate) kind: &'static str,
    /// `s3://bucket/key`.
    pub(crate) object: String,
    /// Its SHA-256.
    pub(crate) sha256: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// `uploaded`, or `skipped` when the object already had this SHA-256.
    pub(crate) outcome: &'static str,
}

/// Everything `rayefa publish` did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PublishReport {
    /// `s3://bucket/prefix`.
    pub(crate) store: String,
    /// Each package.
    pub(crate) packages: Vec<Published>,
    /// `s3://bucket/prefix/manifest.json`.
    pub(crate) manifest: String,
    /// Whether the manifest changed.
    pub(crate) manifest_written: bool,
}

/// Uploads `files` to `store` (skipping an object whose stored SHA-256 matches) and records
/// them in the manifest.
pub(crate) async fn publish(
    s3: &S3,
    store: &AgentStore,
    files: Vec<PackageFile>,
) -> Result<PublishReport, StoreError> {
    // Read first: it tells a missing bucket apart (HEAD cannot), and publishing merges into it.
    let old = read_manifest_if_any(s3, store).await?;
    let mut manifest = old.clone().unwrap_or_default();
    let mut packages = Vec::new();
    for file in files {
        let key = store.key(&file.name);
        let size = file.bytes.len() as u64;
        let outcome = match s3.head(&store.bucket, &key).await? {
            Head::Present {
                sha256: Some(stored),
            } if stored.eq_ignore_ascii_case(&file.sha256) => "skipped",
            _ => {
                s3.put(
                    &store.bucket,
                    &key,
                    file.bytes,
                    &file.sha256,
                    file.kind.content_type(),
                )
                .await?;
                "uploaded"
            }
        };
        let published = match file.program {
            Program::Agent => &mut manifest.packages,
            Program::Orchestrator => &mut manifest.orchestrator,
        };
        published
            .entry(file.machine.to_owned())
            .or_default()
            .insert(
                file.kind,
                Entry {
                    key: key.clone(),
                    sha256: file.sha256.clone(),
                    size,
                },
            );
        packages.push(Published {
            file: file.path.display().to_string(),
            package: file.program,
            architecture: file.machine,
            kind: file.kind.as_str(),
            object: format!("s3://{}/{key}", store.bucket),
            sha256: file.sha256,
            size,
            outcome,
        });
    }
    let manifest_key = store.key(MANIFEST);
    let manifest_written = old.as_ref() != Some(&manifest);
    if manifest_written {
        let mut text =
            serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::BadManifest {
                store: store.to_string(),
                detail: e.to_string(),
            })?;
        text.push(b'\n');
        let sha256 = hex::encode(Sha256::digest(&text));
        s3.put(
            &store.bucket,
            &manifest_key,
            text,
            &sha256,
            "application/json",
        )
        .await?;
    }
    Ok(PublishReport {
        store: store.to_string(),
        packages,
        manifest: format!("s3://{}/{manifest_key}", store.bucket),
        manifest_written,
    })
}

/// The store's manifest; [`StoreError::NoManifest`] when nothing was published.
pub(crate) async fn read_manifest(s3: &S3, store: &AgentStore) -> Result<Manifest, StoreError> {
    read_manifest_if_any(s3, store)
        .await?
        .ok_or_else(|| StoreError::NoManifest {
            store: store.to_string(),
        })
}

async fn read_manifest_if_any(s3: &S3, store: &AgentStore) -> Result<Option<Manifest>, StoreError> {
    let Some(bytes) = s3.get(&store.bucket, &store.key(MANIFEST)).await? else {
        return Ok(None);
    };
    let bad = |detail: String| StoreError::BadManifest {
        store: store.to_string(),
        detail,
    };
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "format {} (this rayefa reads format {FORMAT})",
            manifest.format
        )));
    }
    Ok(Some(manifest))
}

/// The manifest's packages for an instance type running `architectures` (EC2's names): the
/// first architecture that has any.
pub(crate) fn packages_for<'m>(
    store: &AgentStore,
    manifest: &'m Manifest,
    architectures: &[String],
) -> Result<(&'m str, &'m BTreeMap<PackageKind, Entry>), StoreError> {
    first_with_packages(&manifest.packages, architectures).ok_or_else(|| StoreError::NoPackage {
        store: store.to_string(),
        architectures: machine_names(architectures),
        have: manifest.packages.keys().cloned().collect(),
    })
}

/// The manifest's `rayefa` packages for a head whose instance type runs `architectures`.
pub(crate) fn orchestrator_for<'m>(
    store: &AgentStore,
    manifest: &'m Manifest,
    architectures: &[String],
) -> Result<(&'m str, &'m BTreeMap<PackageKind, Entry>), StoreError> {
    first_with_packages(&manifest.orchestrator, architectures).ok_or_else(|| {
        StoreError::NoOrchestrator {
            store: store.to_string(),
            architectures: machine_names(architectures),
            have: manifest.orchestrator.keys().cloned().collect(),
        }
    })
}

/// The packages of the first of `architectures` that has any.
fn first_with_packages<'m>(
    packages: &'m ByArchitecture,
    architectures: &[String],
) -> Option<(&'m str, &'m BTreeMap<PackageKind, Entry>)> {
    architectures
        .iter()
        .find_map(|arch| packages.get_key_value(machine_name(arch)))
        .filter(|(_, kinds)| !kinds.is_empty())
        .map(|(machine, kinds)| (machine.as_str(), kinds))
}

fn machine_names(architectures: &[String]) -> Vec<String> {
    architectures
        .iter()
        .map(|a| machine_name(a).to_owned())
        .collect()
}

/// Presigns URLs for the manifest's packages; one signing time and credentials for all.
#[derive(Debug)]
pub(crate) struct Presigner<'a> {
    s3: &'a S3,
    store: &'a AgentStore,
    credentials: aws_credential_types::Credentials,
    time: SystemTime,
}

impl<'a> Presigner<'a> {
    /// Takes the credentials to sign with now, and warns when they expire before the URLs.
    pub(crate) async fn new(s3: &'a S3, store: &'a AgentStore) -> Result<Self, StoreError> {
        let credentials = s3.credentials().await?;
        let time = SystemTime::now();
        if let Some(expiry) = credentials.expiry()
            && expiry < time + URL_LIFETIME
        {
            let left = expiry.duration_since(time).unwrap_or_default().as_secs() / 60;
            tracing::warn!(
                "the agent package URLs are signed with temporary credentials that expire in \
                 {left} min, before the URLs' {} h: a node that downloads its package later \
                 is refused (use longer-lived credentials, or launch again)",
                URL_LIFETIME.as_secs() / 3600
            );
        }
        Ok(Presigner {
            s3,
            store,
            credentials,
            time,
        })
    }

    /// The download of `entry`.
    fn download(&self, entry: &Entry) -> Result<Download, StoreError> {
        Ok(Download {
            url: self.s3.presign_get(
                &self.store.bucket,
                &entry.key,
                URL_LIFETIME,
                &self.credentials,
                self.time,
            )?,
            sha256: entry.sha256.to_ascii_lowercase(),
        })
    }

    /// What a node of `machine` installs: a URL per kind the manifest has.
    pub(crate) fn node_package(
        &self,
        machine: &str,
        kinds: &BTreeMap<PackageKind, Entry>,
    ) -> Result<NodePackage, StoreError> {
        let url = |kind| kinds.get(&kind).map(|e| self.download(e)).transpose();
        Ok(NodePackage {
            machine: Some(machine.to_owned()),
            source: PackageSource::ByKind {
                rpm: url(PackageKind::Rpm)?,
                deb: url(PackageKind::Deb)?,
            },
        })
    }

    /// The longest user data any node could get, for sizing before the architectures are
    /// known: the longest URL of each kind among `packages` (the manifest's agent or rayefa
    /// packages).
    pub(crate) fn longest(
        &self,
        packages: &ByArchitecture,
    ) -> Result<Option<NodePackage>, StoreError> {
        let mut longest: BTreeMap<PackageKind, Download> = BTreeMap::new();
        for kinds in packages.values() {
            for (kind, entry) in kinds {
                let download = self.download(entry)?;
                if longest
                    .get(kind)
                    .is_none_or(|d| d.url.len() < download.url.len())
                {
                    longest.insert(*kind, download);
                }
            }
        }
        if longest.is_empty() {
            return Ok(None);
        }
        Ok(Some(NodePackage {
            machine: Some("aarch64".to_owned()),
            source: PackageSource::ByKind {
                rpm: longest.remove(&PackageKind::Rpm),
                deb: longest.remove(&PackageKind::Deb),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_says_the_architecture_and_kind() {
        for (name, machine, kind) in [
            (
                "rayefa-agent-0.1.0-1.x86_64.rpm",
                "x86_64",
                PackageKind::Rpm,
            ),
            (
                "rayefa-agent-0.1.0-1.aarch64.rpm",
                "aarch64",
                PackageKind::Rpm,
            ),
            ("rayefa-agent_0.1.0-1_amd64.deb", "x86_64", PackageKind::Deb),
            (
                "rayefa-agent_0.1.0-1_arm64.deb",
                "aarch64",
                PackageKind::Deb,
            ),
        ] {
            assert_eq!(architecture_of(name), Ok((machine, kind)), "{name}");
        }
        for (name, words) in [
            ("rayefa-agent.tar.gz", "neither"),
            ("rayefa-agent-0.1.0-1.noarch.rpm", "`noarch`"),
            ("x86_64.rpm", "``"),
            ("rayefa-agent_0.1.0-1_x86_64.deb", "amd64 or arm64"),
        ] {
            let error = architecture_of(name).expect_err(name);
            assert!(error.contains(words), "`{words}` in {error}");
        }
    }

    #[test]
    fn the_file_name_says_whose_package_it_is() {
        for (name, kind, program) in [
            (
                "rayefa-agent-0.1.0-1.x86_64.rpm",
                PackageKind::Rpm,
                Program::Agent,
            ),
            (
                "rayefa-agent_0.1.0-1_arm64.deb",
                PackageKind::Deb,
                Program::Agent,
            ),
            (
                "rayefa-0.1.0-1.aarch64.rpm",
                PackageKind::Rpm,
                Program::Orchestrator,
            ),
            (
                "rayefa_0.1.0-1_amd64.deb",
                PackageKind::Deb,
                Program::Orchestrator,
            ),
        ] {
            assert_eq!(program_of(name, kind), Ok(program), "{name}");
        }
        let error = program_of("ray-2.9.0-1.x86_64.rpm", PackageKind::Rpm).expect_err("not ours");
        assert!(error.contains("a package of `ray`"), "{error}");
    }

    #[test]
    fn a_manifest_without_rayefa_packages_reads_and_writes_as_before() {
        let text = r#"{"format": 1, "packages": {}}"#;
        let manifest: Manifest = serde_json::from_str(text).expect("parses");
        assert!(manifest.orchestrator.is_empty());
        let written = serde_json::to_value(&manifest).expect("serialises");
        assert_eq!(written, serde_json::json!({"format": 1, "packages": {}}));
        let store = AgentStore::parse("s3://bucket/p").expect("store");
        let missing = orchestrator_for(&store, &manifest, &["x86_64".into()]).expect_err("none");
        assert!(
            missing
                .to_string()
                .contains("has no rayefa package for it (it has none)"),
            "{missing}"
        );
    }

    #[test]
    fn the_manifest_reads_back_and_names_what_it_lacks() {
        let text = r#"{"format": 1, "packages": {"x86_64": {"rpm":
            {"key": "p/a.x86_64.rpm", "sha256": "ab", "size": 3}}}}"#;
        let manifest: Manifest = serde_json::from_str(text).expect("parses");
        let store = AgentStore::parse("s3://bucket/p").expect("store");
        let (machine, kinds) =
            packages_for(&store, &manifest, &["x86_64".into()]).expect("x86_64 is there");
        assert_eq!(machine, "x86_64");
        assert_eq!(kinds[&PackageKind::Rpm].key, "p/a.x86_64.rpm");
        let missing = packages_for(&store, &manifest, &["arm64".into()]).expect_err("no arm");
        assert_eq!(
            missing.to_string(),
            "the instance type runs aarch64, and s3://bucket/p has no agent package for it \
             (it has x86_64): publish one with `rayefa publish FILE PACKAGE...`"
        );
    }
}
