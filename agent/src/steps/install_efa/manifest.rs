//! The EFA installer's record of what it installed, `/opt/amazon/efa_installed_packages`:
//!
//! ```text
//! # EFA installer version: 1.45.1
//! # Debug packages installed: no
//! # Packages installed:
//! ibacm_60.0-1_amd64 libfabric1-aws_2.3.1amzn1.0_amd64 ...
//! ```
//!
//! The parser takes whatever is in the file (a person may have edited it, a crash may have
//! cut it short) and never panics: it answers a [`Manifest`] or says what is wrong.

use std::io::Read;
use std::path::Path;

/// Where the installer writes its manifest, as a host path.
pub(crate) const MANIFEST_PATH: &str = "/opt/amazon/efa_installed_packages";

/// More than any real manifest (a few KiB); a larger file is read only this far.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// How much of an offending line an error quotes.
const QUOTE_CHARS: usize = 80;

/// The longest version string accepted.
const MAX_VERSION_CHARS: usize = 64;

/// What the manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// The installer version, as the installer's `env.sh` spells it (`1.45.1`).
    pub(crate) version: String,
    /// Whether debug packages were installed, when the manifest says.
    pub(crate) debug_packages: Option<bool>,
    /// Package file names without their extension, in the manifest's order.
    pub(crate) packages: Vec<String>,
}

/// Why a manifest's text is not a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("is empty")]
    Empty,
    #[error("line {line}: expected `# EFA installer version: X`, found `{found}`")]
    NoVersionLine { line: usize, found: String },
    #[error("line {line}: `{version}` is not an installer version")]
    BadVersion { line: usize, version: String },
}

/// Why the manifest on the host could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestReadError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: String, source: ManifestError },
}

impl Manifest {
    /// Parses a manifest's text. The version line must be the first line that is not blank.
    pub(crate) fn parse(text: &str) -> Result<Self, ManifestError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty());
        let (line, first) = lines.next().ok_or(ManifestError::Empty)?;
        let version = comment_value(first, "EFA installer version").ok_or_else(|| {
            ManifestError::NoVersionLine {
                line,
                found: quote(first),
            }
        })?;
        if !is_version(version) {
            return Err(ManifestError::BadVersion {
                line,
                version: quote(version),
            });
        }
        let mut manifest = Manifest {
            version: version.to_owned(),
            debug_packages: None,
            packages: Vec::new(),
        };
        for (_, line) in lines {
            if let Some(value) = comment_value(line, "Debug packages installed") {
                manifest.debug_packages = match value.to_ascii_lowercase().as_str() {
                    "yes" => Some(true),
                    "no" => Some(false),
                    _ => None,
                };
            } else if !line.starts_with('#') {
                manifest
                    .packages
                    .extend(line.split_whitespace().map(str::to_owned));
            }
        }
        Ok(manifest)
    }

    /// Reads the manifest at `path` (a path on this machine, already under the root):
    /// `Ok(None)` when there is none.
    pub(crate) fn read(path: &Path) -> Result<Option<Self>, ManifestReadError> {
        let shown = path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ManifestReadError::Io {
                    path: shown,
                    source,
                });
            }
        };
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|source| ManifestReadError::Io {
                path: shown.clone(),
                source,
            })?;
        Self::parse(&String::from_utf8_lossy(&bytes))
            .map(Some)
            .map_err(|source| ManifestReadError::Invalid {
                path: shown,
                source,
            })
    }
}

/// The value of a `# Key: value` comment line, the key matched without regard to case or
/// the spaces around it.
fn comment_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix('#')?;
    let (name, value) = rest.split_once(':')?;
    name.trim().eq_ignore_ascii_case(key).then(|| value.trim())
}

/// Versions such as `1.45.1`, `1.9.0-rc1`, `latest`: letters, digits and `.-_+~`, starting
/// with a letter or digit.
fn is_version(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && text.chars().count() <= MAX_VERSION_CHARS
        && chars.all(|c| c.is_ascii_alphanumeric() || ".-_+~".contains(c))
}

/// The start of `text` for an error message, control characters shown escaped: at most
/// [`QUOTE_CHARS`] characters as shown (an escape such as `\u{18}` counts as what it shows).
fn quote(text: &str) -> String {
    let mut shown = String::new();
    let mut length = 0;
    for c in text.chars() {
        let escaped: String = c.escape_debug().collect();
        length += escaped.chars().count();
        if length > QUOTE_CHARS {
            shown.push('…');
            break;
        }
        shown.push_str(&escaped);
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "# EFA installer version: 1.45.1\n\
        # Debug packages installed: no\n\
        # Packages installed:\n\
        ibacm_60.0-1_amd64 ibverbs-providers_60.0-1_amd64 libfabric1-aws_2.3.1amzn1.0_amd64\n";

    #[test]
    fn reads_what_the_installer_writes() {
        let manifest = Manifest::parse(REAL).expect("parses");
        assert_eq!(manifest.version, "1.45.1");
        assert_eq!(manifest.debug_packages, Some(false));
        assert_eq!(
            manifest.packages,
            [
                "ibacm_60.0-1_amd64",
                "ibverbs-providers_60.0-1_amd64",
                "libfabric1-aws_2.3.1amzn1.0_amd64"
            ]
        );
    }

    #[test]
    fn tolerates_crlf_a_bom_blank_lines_and_spacing() {
        let text = "\u{feff}\r\n  #EFA Installer Version:   1.38.0  \r\n#Debug packages installed:YES\r\n\r\nefa-2.10\r\n";
        let manifest = Manifest::parse(text).expect("parses");
        assert_eq!(manifest.version, "1.38.0");
        assert_eq!(manifest.debug_packages, Some(true));
        assert_eq!(manifest.packages, ["efa-2.10"]);
    }

    #[test]
    fn a_version_line_only_is_a_manifest_without_packages() {
        let manifest = Manifest::parse("# EFA installer version: 1.45.1").expect("parses");
        assert!(manifest.packages.is_empty());
        assert_eq!(manifest.debug_packages, None);
    }

    #[test]
    fn says_what_is_wrong() {
        assert_eq!(Manifest::parse(""), Err(ManifestError::Empty));
        assert_eq!(Manifest::parse(" \n\t\n"), Err(ManifestError::Empty));
        assert_eq!(
            Manifest::parse("\nlibfabric\n# EFA installer version: 1.45.1"),
            Err(ManifestError::NoVersionLine {
                line: 2,
                found: "libfabric".to_owned()
            })
        );
        assert_eq!(
            Manifest::parse("# EFA installer version:"),
            Err(ManifestError::BadVersion {
                line: 1,
                version: String::new()
            })
        );
        assert_eq!(
            Manifest::parse("# EFA installer version: 1.45.1; rm -rf /"),
            Err(ManifestError::BadVersion {
                line: 1,
                version: "1.45.1; rm -rf /".to_owned()
            })
        );
        let long = format!("# EFA installer version: {}", "9".repeat(65));
        assert!(matches!(
            Manifest::parse(&long),
            Err(ManifestError::BadVersion { .. })
        ));
    }

    #[test]
    fn quotes_junk_short_and_escaped() {
        let junk = format!("\u{1b}[31m{}", "x".repeat(500));
        let Err(ManifestError::NoVersionLine { found, .. }) = Manifest::parse(&junk) else {
            panic!("junk parsed");
        };
        assert!(found.starts_with("\\u{1b}[31m"));
        assert!(found.ends_with('…'));
        assert!(found.chars().count() < 120);
    }

    /// Found by the efa_manifest fuzz target: 80 control characters quoted as 640.
    #[test]
    fn a_line_of_control_characters_is_quoted_short() {
        let mut bytes = b"\n\nli".to_vec();
        bytes.extend([0x18; 115]);
        bytes.extend(b"bfa\r\n\xca\xcb\xdb1\n");
        let text = String::from_utf8_lossy(&bytes);
        let Err(ManifestError::NoVersionLine { line, found }) = Manifest::parse(&text) else {
            panic!("parsed");
        };
        assert_eq!(line, 3);
        assert!(found.starts_with("li\\u{18}"), "{found}");
        assert!(found.ends_with('…'), "{found}");
        assert!(found.chars().count() <= QUOTE_CHARS + 1, "{found}");
    }

    #[test]
    fn never_panics_on_mangled_manifests() {
        let seeds: [&[u8]; 4] = [
            REAL.as_bytes(),
            b"# EFA installer version: 1.45.1\n# Debug packages installed: maybe\n",
            "#:\u{feff}:#\r\r\n\u{2028}é".as_bytes(),
            b"\xff\xfe# EFA installer version: \x00\n",
        ];
        let mut rng = fastrand::Rng::with_seed(0x0efa);
        for seed in seeds {
            for _ in 0..2000 {
                let mut bytes = seed.to_vec();
                for _ in 0..rng.usize(1..8) {
                    match rng.u8(0..3) {
                        0 if !bytes.is_empty() => {
                            let at = rng.usize(..bytes.len());
                            bytes[at] = rng.u8(..);
                        }
                        1 => bytes.insert(rng.usize(..=bytes.len()), rng.u8(..)),
                        _ if !bytes.is_empty() => {
                            bytes.remove(rng.usize(..bytes.len()));
                        }
                        _ => {}
                    }
                }
                let text = String::from_utf8_lossy(&bytes);
                if let Ok(manifest) = Manifest::parse(&text) {
                    assert!(is_version(&manifest.version));
                }
            }
        }
    }

    #[test]
    fn reading_a_missing_file_is_none_and_a_bad_one_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("efa_installed_packages");
        assert!(Manifest::read(&path).expect("reads").is_none());
        std::fs::write(&path, "garbage\n").expect("write");
        let err = Manifest::read(&path).expect_err("invalid");
        assert!(err.to_string().contains("efa_installed_packages"));
        std::fs::write(&path, REAL).expect("write");
        assert_eq!(
            Manifest::read(&path).expect("reads").map(|m| m.version),
            Some("1.45.1".to_owned())
        );
    }
}
