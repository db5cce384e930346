//! The per-cluster secret that authenticates the orchestrator to the agents' control surface
//! (`agent.control_secret`, see docs/check.md).
//!
//! It is made once per cluster (32 random bytes from the operating system, as 64 hex digits)
//! and kept in a file of mode 0600 on the operator's machine, where every later `up`, launch
//! and `check` reads it back; it is never written to EC2 tags. Where that file is belongs to
//! the provider ([`super::Provider::control_secret_file`]); this module makes, reads and
//! renders it, once for every provider.

use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rayefa_wire::{AgentConfigFile, AgentSection};

use super::ProviderError;

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// A cluster's control secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ControlSecret(String);

impl fmt::Debug for ControlSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlSecret(..)")
    }
}

/// Why the secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    /// No file: the cluster was not launched from this machine (or with this state directory).
    #[error(
        "no control secret at {path}: the cluster's nodes were not launched by rayefa from this \
         machine (or with another RAYEFA_STATE_DIR), so their agents cannot be asked to test the \
         fabric"
    )]
    Missing {
        /// The file looked for.
        path: String,
    },
    /// The file exists but does not hold a secret.
    #[error("{path}: not a control secret (64 hex digits expected)")]
    Malformed {
        /// The file.
        path: String,
    },
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<SecretError> for ProviderError {
    fn from(error: SecretError) -> Self {
        ProviderError::Failed(error.to_string())
    }
}

impl ControlSecret {
    /// A new secret from the operating system's random source.
    pub(crate) fn generate() -> Result<Self, SecretError> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| SecretError::Io {
            context: "reading random bytes for the control secret".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Self(hex::encode(bytes)))
    }

    /// The secret in `path`, made and written there (mode 0600) if the file does not exist
    /// yet. Two runs racing to make it agree: the file is created exclusively and the loser
    /// reads the winner's.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        if let Some(secret) = Self::load(path)? {
            return Ok(secret);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| SecretError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        let secret = Self::generate()?;
        let created = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut file) => {
                file.write_all(format!("{}\n", secret.0).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|source| SecretError::Io {
                        context: format!("writing {}", path.display()),
                        source,
                    })?;
                Ok(secret)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Self::load(path)?.ok_or_else(|| SecretError::Missing {
                    path: path.display().to_string(),
                })
            }
            Err(source) => Err(SecretError::Io {
                context: format!("creating {}", path.display()),
                source,
            }),
        }
    }

    /// The secret in `path`, `None` when there is no such file. A file others can read is
    /// tightened to 0600 rather than refused: the secret is only as private as user data.
    pub(crate) fn load(path: &Path) -> Result<Option<Self>, SecretError> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SecretError::Io {
                    context: format!("opening {}", path.display()),
                    source,
                });
            }
        };
        let io = |source| SecretError::Io {
            context: format!("reading {}", path.display()),
            source,
        };
        let mut text = String::new();
        // A secret is 65 bytes; anything much longer is not one.
        Read::by_ref(&mut file)
            .take(256)
            .read_to_string(&mut text)
            .map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| SecretError::Io {
                    context: format!("making {} private (mode 0600)", path.display()),
                    source,
                },
            )?;
        }
        let text = text.trim();
        if text.len() != 2 * SECRET_BYTES || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SecretError::Malformed {
                path: path.display().to_string(),
            });
        }
        Ok(Some(Self(text.to_owned())))
    }

    /// A stand-in of a secret's length, for sizing user data before any secret is made.
    pub(crate) fn placeholder() -> Self {
        Self("0".repeat(2 * SECRET_BYTES))
    }

    /// The secret itself, for the agent's configuration and the `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// `config` as a node of the cluster whose secret file is `secret_file` boots with it: with
/// the cluster's control secret, made on its first launch. Every provider's `launch` goes
/// through here, so that nodes launched by `up` and by the autoscaler alike answer `check`.
pub(crate) fn secured(
    config: &AgentConfigFile,
    secret_file: &Path,
) -> Result<AgentConfigFile, ProviderError> {
    let secret = ControlSecret::load_or_create(secret_file)?;
    let mut config = config.clone();
    with_secret(&mut config, &secret);
    Ok(config)
}

/// Puts `secret` into `config`'s `[agent]` table.
pub(crate) fn with_secret(config: &mut AgentConfigFile, secret: &ControlSecret) {
    config
        .agent
        .get_or_insert_with(AgentSection::default)
        .control_secret = Some(secret.expose().to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("scratch");
        let path = dir.path().join("a/b/control-secret");
        assert!(
            ControlSecret::load(&path)
                .expect("no file is fine")
                .is_none()
        );
        let made = ControlSecret::load_or_create(&path).expect("made");
        assert_eq!(made.expose().len(), 64);
        assert!(made.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ControlSecret::load_or_create(&path).expect("read back");
        assert_eq!(again, made, "a later launch reuses the cluster's secret");
        assert_ne!(ControlSecret::generate().expect("random"), made);
        assert_eq!(format!("{made:?}"), "ControlSecret(..)", "never printed");
    }

    #[test]
    fn a_readable_file_is_tightened_and_a_wrong_one_refused() {
        let dir = tempfile::tempdir().expect("scratch");
        let path = dir.path().join("control-secret");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(ControlSecret::load(&path).expect("read").is_some());
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not a secret\n").expect("write");
        assert!(matches!(
            ControlSecret::load_or_create(&path),
            Err(SecretError::Malformed { .. })
        ));
    }

    #[test]
    fn the_secret_lands_in_the_agent_table() {
        let dir = tempfile::tempdir().expect("scratch");
        let path = dir.path().join("control-secret");
        let config = secured(&AgentConfigFile::default(), &path).expect("secured");
        let secret = ControlSecret::load(&path).expect("read").expect("made");
        let text = toml::to_string(&config).expect("toml");
        assert!(
            text.contains(&format!("control_secret = \"{}\"", secret.expose())),
            "{text}"
        );
        assert_eq!(
            ControlSecret::placeholder().expose().len(),
            secret.expose().len()
        );
    }
}
