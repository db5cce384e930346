//! A real OpenPGP signer for test EFA installers: GnuPG (Debian package `gnupg`) in a scratch
//! home made for one run, so every run signs with keys of its own and nothing touches the
//! user's keyring. And the SHA-256 digest the installer checks pin.

use std::process::{Command, Stdio};

use tempfile::TempDir;

/// A GnuPG home of its own; its agent is stopped when this is dropped.
#[derive(Debug)]
pub struct Gpg {
    home: TempDir,
}

impl Default for Gpg {
    fn default() -> Self {
        Self::new()
    }
}

impl Gpg {
    /// A new, empty home. It lives in `/tmp` whatever `TMPDIR` says: gpg-agent's socket path
    /// must stay short.
    pub fn new() -> Self {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .expect("gnupg home");
        Self { home }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("gpg");
        command
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .stdin(Stdio::null());
        command
    }

    /// Runs gpg with `args` in this home; its stdout. Fails with gpg's stderr if it fails.
    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        let output = self
            .command()
            .args(args)
            .output()
            .expect("gpg runs (Debian package gnupg)");
        assert!(
            output.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// Makes a key for `uid` (`algo` as `--quick-gen-key` takes it, usage `usage`) and
    /// answers its fingerprint, upper-case hex.
    pub fn generate(&self, uid: &str, algo: &str, usage: &str) -> String {
        self.run(&["--quick-gen-key", uid, algo, usage, "never"]);
        self.fingerprint(uid)
    }

    /// Adds a subkey to the key `fingerprint`.
    pub fn add_subkey(&self, fingerprint: &str, algo: &str, usage: &str) {
        self.run(&["--quick-add-key", fingerprint, algo, usage, "never"]);
    }

    fn fingerprint(&self, uid: &str) -> String {
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid]))
            .expect("utf-8 listing");
        listing
            .lines()
            .find_map(|line| line.strip_prefix("fpr:"))
            .and_then(|rest| rest.split(':').find(|field| field.len() == 40))
            .expect("a fingerprint")
            .to_owned()
    }

    /// The armoured public key (with subkeys) of `fingerprint`.
    pub fn export(&self, fingerprint: &str) -> Vec<u8> {
        self.run(&["--armor", "--export", fingerprint])
    }

    /// A detached binary signature of `data` by the key `signer` (gpg picks its signing
    /// subkey if it has one).
    pub fn sign(&self, signer: &str, data: &[u8]) -> Vec<u8> {
        let file = self.home.path().join("to-sign");
        std::fs::write(&file, data).expect("write data");
        let sig = self.home.path().join("to-sign.sig");
        let _ = std::fs::remove_file(&sig);
        let (file_arg, sig_arg) = (file.display().to_string(), sig.display().to_string());
        self.run(&[
            "--local-user",
            signer,
            "--output",
            &sig_arg,
            "--detach-sign",
            &file_arg,
        ]);
        std::fs::read(&sig).expect("signature")
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_nothing_is_the_well_known_digest() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_signature_verifies_with_gpg_against_the_exported_key_only() {
        let signer = Gpg::new();
        let fingerprint = signer.generate("Test <test@example.invalid>", "ed25519", "sign");
        assert_eq!(fingerprint.len(), 40);
        let signature = signer.sign(&fingerprint, b"payload");

        let verifier = Gpg::new();
        let key = verifier.home.path().join("key.asc");
        std::fs::write(&key, signer.export(&fingerprint)).expect("key");
        verifier.run(&["--import", &key.display().to_string()]);
        let (data, sig) = (
            verifier.home.path().join("data"),
            verifier.home.path().join("sig"),
        );
        std::fs::write(&sig, &signature).expect("sig");
        for (payload, verifies) in [(&b"payload"[..], true), (&b"tampered"[..], false)] {
            std::fs::write(&data, payload).expect("data");
            let status = verifier
                .command()
                .args([
                    "--verify",
                    &sig.display().to_string(),
                    &data.display().to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("gpg runs");
            assert_eq!(status.success(), verifies, "{payload:?}");
        }
    }
}
