//! The two checks a downloaded installer must pass before anything in it is unpacked: its
//! SHA-256 against the pinned value, and its detached OpenPGP signature against the public key
//! (a file on the node, or fetched from beside the installer), whose fingerprint must be the
//! pinned one.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;
use sha2::{Digest, Sha256};

use super::signing_key::{KeySource, PublicKey};

/// Why a check failed. Every variant but [`VerifyError::Io`] is a verdict about the inputs:
/// no retry changes it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    #[error("SHA-256 check failed: {file} has SHA-256 {actual}, the configuration pins {expected}")]
    HashMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("public key check failed: cannot use {origin}: {reason}")]
    KeyUnreadable { origin: KeySource, reason: String },
    #[error(
        "public key check failed: {origin} holds key {actual}, the configuration pins {expected}"
    )]
    FingerprintMismatch {
        origin: KeySource,
        expected: String,
        actual: String,
    },
    #[error("signature check failed: cannot read the signature from {url}: {reason}")]
    SignatureUnreadable { url: String, reason: String },
    #[error(
        "signature check failed: the signature from {url} is not a valid signature of {file} by key {fingerprint}: {reason}"
    )]
    BadSignature {
        url: String,
        file: String,
        fingerprint: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl VerifyError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        VerifyError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The lower-case hex SHA-256 of the file at `path`.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks that the file at `path` has the SHA-256 `expected` (lower-case hex); answers it.
pub(crate) fn check_sha256(path: &Path, expected: &str) -> Result<String, VerifyError> {
    let actual = sha256_file(path).map_err(|e| VerifyError::io(path, e))?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(actual)
    } else {
        Err(VerifyError::HashMismatch {
            file: path.display().to_string(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

/// The signature check's inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignatureCheck<'a> {
    /// The signed file.
    pub(crate) file: &'a Path,
    /// The detached signature, armoured or binary.
    pub(crate) signature: &'a [u8],
    /// Where the signature came from, for messages.
    pub(crate) signature_url: &'a str,
    /// The public key (armoured or binary).
    pub(crate) key: &'a PublicKey,
    /// The primary key fingerprint the key must have: upper-case hex, no spaces.
    pub(crate) fingerprint: &'a str,
}

/// Who signed: the pinned primary key, and the key (primary or a signing subkey bound to it)
/// whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signer {
    pub(crate) primary: String,
    pub(crate) signing_key: String,
}

/// Checks the key's fingerprint, then the signature over the file.
pub(crate) fn check_signature(check: &SignatureCheck<'_>) -> Result<Signer, VerifyError> {
    let key = read_key(check.key)?;
    let primary = format!("{:X}", key.primary_key.fingerprint());
    if primary != check.fingerprint {
        return Err(VerifyError::FingerprintMismatch {
            origin: check.key.source.clone(),
            expected: check.fingerprint.to_owned(),
            actual: primary,
        });
    }
    let (signature, _) = DetachedSignature::from_reader_single(check.signature).map_err(|e| {
        VerifyError::SignatureUnreadable {
            url: check.signature_url.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let bad = |reason: String| VerifyError::BadSignature {
        url: check.signature_url.to_owned(),
        file: check.file.display().to_string(),
        fingerprint: primary.clone(),
        reason,
    };

    // The pin authenticates the primary key itself; a subkey counts only with a valid binding
    // signature from it that allows signing.
    let issuers = Issuers::of(&signature);
    let mut last_failure = None;
    let mut tried = false;
    let primary_key = &key.primary_key;
    if issuers.names(primary_key) {
        tried = true;
        match verify_with(&signature, primary_key, check.file)? {
            Ok(()) => {
                return Ok(Signer {
                    signing_key: primary.clone(),
                    primary,
                });
            }
            Err(reason) => last_failure = Some(reason),
        }
    }
    for subkey in &key.public_subkeys {
        if !issuers.names(&subkey.key) {
            continue;
        }
        tried = true;
        let signing = subkey.signatures.iter().any(|s| s.key_flags().sign());
        if !signing {
            last_failure = Some(format!(
                "subkey {:X} is not allowed to sign",
                subkey.key.fingerprint()
            ));
            continue;
        }
        if let Err(err) = subkey.verify_bindings(primary_key) {
            last_failure = Some(format!(
                "subkey {:X} is not validly bound to the key: {err}",
                subkey.key.fingerprint()
            ));
            continue;
        }
        match verify_with(&signature, subkey, check.file)? {
            Ok(()) => {
                return Ok(Signer {
                    signing_key: format!("{:X}", subkey.key.fingerprint()),
                    primary,
                });
            }
            Err(reason) => last_failure = Some(reason),
        }
    }
    if !tried {
        return Err(bad(format!(
            "it was made by {}, which is neither the key nor one of its subkeys",
            issuers.describe()
        )));
    }
    Err(bad(
        last_failure.unwrap_or_else(|| "no key verified it".to_owned())
    ))
}

/// Verifies `signature` over the file with one key: the outer error is a file error, the
/// inner one the verdict.
fn verify_with(
    signature: &DetachedSignature,
    key: &impl pgp::types::VerifyingKey,
    file: &Path,
) -> Result<Result<(), String>, VerifyError> {
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(file).map_err(|e| VerifyError::io(file, e))?,
    );
    Ok(signature
        .signature
        .verify(key, reader)
        .map_err(|e| e.to_string()))
}

fn read_key(key: &PublicKey) -> Result<SignedPublicKey, VerifyError> {
    let (parsed, _) = SignedPublicKey::from_reader_single(key.bytes.as_slice()).map_err(|e| {
        VerifyError::KeyUnreadable {
            origin: key.source.clone(),
            reason: format!("not an OpenPGP public key: {e}"),
        }
    })?;
    Ok(parsed)
}

/// Which keys a signature says made it: issuer fingerprints and key ids, hashed or not.
struct Issuers {
    fingerprints: Vec<String>,
    key_ids: Vec<String>,
}

impl Issuers {
    fn of(signature: &DetachedSignature) -> Self {
        Self {
            fingerprints: signature
                .signature
                .issuer_fingerprint()
                .into_iter()
                .map(|f| format!("{f:X}"))
                .collect(),
            key_ids: signature
                .signature
                .issuer_key_id()
                .into_iter()
                .filter(|id| !id.is_wildcard())
                .map(hex::encode_upper)
                .collect(),
        }
    }

    /// Whether `key` may have made the signature. A signature that names no issuer could be
    /// anyone's, so every key is tried.
    fn names(&self, key: &impl KeyDetails) -> bool {
        if self.fingerprints.is_empty() && self.key_ids.is_empty() {
            return true;
        }
        let fingerprint = format!("{:X}", key.fingerprint());
        let key_id = hex::encode_upper(key.legacy_key_id());
        self.fingerprints.contains(&fingerprint) || self.key_ids.contains(&key_id)
    }

    fn describe(&self) -> String {
        self.fingerprints
            .iter()
            .chain(&self.key_ids)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::install_efa::testkit::{Gpg, sha256};

    struct Case {
        dir: tempfile::TempDir,
        file: std::path::PathBuf,
        key: std::path::PathBuf,
    }

    impl Case {
        fn new(data: &[u8], key: &[u8]) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("installer.tar.gz");
            std::fs::write(&file, data).expect("data");
            let key_path = dir.path().join("installer.key");
            std::fs::write(&key_path, key).expect("key");
            Self {
                dir,
                file,
                key: key_path,
            }
        }

        fn check(&self, signature: &[u8], fingerprint: &str) -> Result<Signer, VerifyError> {
            let key = PublicKey {
                bytes: std::fs::read(&self.key).expect("key file"),
                source: KeySource::File(self.key.display().to_string()),
            };
            check_signature(&SignatureCheck {
                file: &self.file,
                signature,
                signature_url: "http://127.0.0.1/installer.tar.gz.sig",
                key: &key,
                fingerprint,
            })
        }
    }

    const DATA: &[u8] = b"pretend this is aws-efa-installer-1.45.1.tar.gz";

    #[test]
    fn sha256_of_a_file_and_its_mismatch() {
        let case = Case::new(DATA, b"");
        let expected = sha256(DATA);
        assert_eq!(
            check_sha256(&case.file, &expected).expect("matches"),
            expected
        );
        assert_eq!(
            check_sha256(&case.file, &expected.to_ascii_uppercase()).expect("any case"),
            expected
        );
        let err = check_sha256(&case.file, &"0".repeat(64)).expect_err("mismatch");
        let text = err.to_string();
        assert!(
            text.starts_with("SHA-256 check failed") && text.contains(&expected),
            "{text}"
        );
        let missing = case.dir.path().join("missing");
        assert!(matches!(
            check_sha256(&missing, &expected),
            Err(VerifyError::Io { .. })
        ));
    }

    #[test]
    fn a_signature_by_the_pinned_key_verifies_armoured_or_not() {
        let gpg = Gpg::new();
        let fpr = gpg.generate("EFA test <efa@example.invalid>", "ed25519", "sign");
        let case = Case::new(DATA, &gpg.export(&fpr));
        let signature = gpg.sign(&fpr, DATA);
        let signer = case.check(&signature, &fpr).expect("verifies");
        assert_eq!(
            signer,
            Signer {
                primary: fpr.clone(),
                signing_key: fpr.clone()
            }
        );

        // The same key in binary form verifies the same.
        let binary = gpg.run(&["--export", &fpr]);
        std::fs::write(&case.key, binary).expect("binary key");
        case.check(&signature, &fpr)
            .expect("verifies with a binary key");
    }

    #[test]
    fn an_rsa_key_like_aws_verifies() {
        let gpg = Gpg::new();
        let fpr = gpg.generate("EFA RSA <rsa@example.invalid>", "rsa2048", "sign");
        let case = Case::new(DATA, &gpg.export(&fpr));
        case.check(&gpg.sign(&fpr, DATA), &fpr).expect("verifies");
    }

    #[test]
    fn a_signature_by_a_bound_signing_subkey_verifies() {
        let gpg = Gpg::new();
        let fpr = gpg.generate("EFA sub <sub@example.invalid>", "ed25519", "cert");
        gpg.add_subkey(&fpr, "ed25519", "sign");
        let case = Case::new(DATA, &gpg.export(&fpr));
        let signer = case.check(&gpg.sign(&fpr, DATA), &fpr).expect("verifies");
        assert_eq!(signer.primary, fpr);
        assert_ne!(signer.signing_key, fpr, "made by the subkey");
    }

    #[test]
    fn another_key_is_refused_by_its_fingerprint() {
        let gpg = Gpg::new();
        let fpr = gpg.generate("EFA test <efa@example.invalid>", "ed25519", "sign");
        let case = Case::new(DATA, &gpg.export(&fpr));
        let pinned = "4E9091BCBB97A96B26B15E59A05480B1DD2D3CCC";
        let err = case
            .check(&gpg.sign(&fpr, DATA), pinned)
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.starts_with("public key check failed"), "{text}");
        assert!(text.contains(pinned) && text.contains(&fpr), "{text}");
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let gpg = Gpg::new();
        let fpr = gpg.generate("EFA test <efa@example.invalid>", "ed25519", "sign");
        let other = gpg.generate("Mallory <mallory@example.invalid>", "ed25519", "sign");
        let case = Case::new(DATA, &gpg.export(&fpr));
        let err = case
            .check(&gpg.sign(&other, DATA), &fpr)
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.starts_with("signature check failed"), "{text}");
        assert!(text.contains(&other), "names the signer: {text}");
    }

    #[test]
    fn a_signature_of_other_bytes_is_refused() {
        let gpg = Gpg::new();
        let fpr = gpg.generate("EFA test <efa@example.invalid>", "ed25519", "sign");
        let case = Case::new(DATA, &gpg.export(&fpr));
        let err = case
            .check(&gpg.sign(&fpr, b"something else"), &fpr)
            .expect_err("refused");
        assert!(matches!(err, VerifyError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn unreadable_inputs_say_which() {
        let gpg = Gpg::new();
        let fpr = gpg.generate("EFA test <efa@example.invalid>", "ed25519", "sign");
        let case = Case::new(
            DATA,
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64\n",
        );
        let err = case
            .check(&gpg.sign(&fpr, DATA), &fpr)
            .expect_err("bad key");
        assert!(matches!(err, VerifyError::KeyUnreadable { .. }), "{err}");

        std::fs::write(&case.key, gpg.export(&fpr)).expect("key");
        let err = case
            .check(b"<html>404</html>", &fpr)
            .expect_err("bad signature file");
        assert!(
            matches!(err, VerifyError::SignatureUnreadable { .. }),
            "{err}"
        );
    }
}
