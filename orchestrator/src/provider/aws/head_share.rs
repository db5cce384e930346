//! What the head of a cluster that autoscales on EC2 needs to run `rayefa nodes` for Ray's
//! autoscaler, delivered in its user data (`head_share.sh`): the `rayefa` package from the
//! agent store (a presigned URL and its SHA-256, as the agent's), the cluster file with its
//! variables filled in, and the cluster's control secret where the head's rayefa looks for it.
//!
//! The cluster file and the secret travel inside the user data: the seed's file is about 3 KiB
//! and EC2 allows 16 KiB, which preflight checks with everything else the head's user data
//! carries. On the head, rayefa acts with the instance's role (the SDK's default chain asks
//! the instance metadata service), in the region the cluster file names.

use std::path::Path;

use super::agent_package::{NodePackage, PackageSource};
use super::user_data::{fill, quoted_download, shell_quote};

/// The script, with `@NAME@` placeholders.
const TEMPLATE: &str = include_str!("head_share.sh");

/// Where the head's `rayefa` is, as the `rayefa` package installs it.
pub(crate) const HEAD_RAYEFA: &str = "/usr/bin/rayefa";
/// Where the head's copy of the cluster file is written.
pub(crate) const HEAD_CLUSTER_FILE: &str = "/etc/rayefa/cluster.yaml";
/// The head's rayefa state directory (`RAYEFA_STATE_DIR`), which keeps the control secret.
pub(crate) const HEAD_STATE_DIR: &str = "/var/lib/rayefa-orchestrator";

/// The here-document delimiter around the cluster file; longer when a line of the file
/// happens to equal it.
const DELIMITER: &str = "RAYEFA_CLUSTER_FILE";

/// The head's share of a cluster that autoscales.
#[derive(Debug, Clone)]
pub(crate) struct HeadShare {
    /// The `rayefa` packages of the head's architecture, by kind.
    pub(crate) rayefa: NodePackage,
    /// The cluster file's text, variables filled in (the head has not the operator's
    /// environment).
    pub(crate) cluster_file: String,
    /// The cluster's control secret; absent where the configuration has none yet
    /// (`rayefa user-data` prints no secret), and then not written.
    pub(crate) control_secret: Option<String>,
    /// The file the head's rayefa reads the secret from (under [`HEAD_STATE_DIR`]).
    pub(crate) secret_path: String,
    /// The user Ray runs as (`auth.ssh_user`), who must read both files; root when absent.
    pub(crate) owner: Option<String>,
}

/// Why the head's share could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadShareError {
    /// The cluster file could not be read again.
    #[error("reading {path} for the head: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its variables could not be filled in.
    #[error("{path}:{source}")]
    Expand {
        /// The file.
        path: String,
        /// Where and why.
        source: rayefa_cluster::expand::ExpandError,
    },
    /// The filled-in text still holds a `${` (from a literal `$${`, or in a variable's value),
    /// which the head's rayefa would try to fill in again, without the operator's environment.
    #[error(
        "{path}:{source}: the head's copy of this file is read again by rayefa on the head, \
         where this `${{` would be taken for a variable; a cluster that autoscales cannot carry \
         a literal `${{` (from `$${{` or a variable's value) outside its command lists"
    )]
    ExpandedTwice {
        /// The file.
        path: String,
        /// Where.
        source: rayefa_cluster::expand::ExpandError,
    },
}

/// The text of the cluster file at `path` with its `${VAR}` references filled in from this
/// process's environment, as `up` read it.
pub(crate) fn expanded_cluster_file(path: &Path) -> Result<String, HeadShareError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| HeadShareError::Read {
        path: shown.clone(),
        source,
    })?;
    let expanded = rayefa_cluster::expand::expand(&text, &rayefa_cluster::process_env()).map_err(
        |source| HeadShareError::Expand {
            path: shown.clone(),
            source,
        },
    )?;
    // The head expands its copy again when it loads it, with no variables of the operator's.
    rayefa_cluster::expand::expand(&expanded, &std::collections::BTreeMap::new()).map_err(
        |source| HeadShareError::ExpandedTwice {
            path: shown,
            source,
        },
    )?;
    Ok(expanded)
}

/// The control secret's file under [`HEAD_STATE_DIR`], where rayefa on the head looks for the
/// cluster's secret (the AWS provider keeps it at `STATE/aws/REGION/CLUSTER/control-secret`).
pub(crate) fn head_secret_path(region: &str, cluster: &str) -> String {
    format!("{HEAD_STATE_DIR}/aws/{region}/{cluster}/control-secret")
}

impl HeadShare {
    /// The shell block that installs rayefa and writes the files, for `user_data.sh`.
    pub(crate) fn render(&self) -> String {
        let (rpm, deb) = match &self.rayefa.source {
            PackageSource::ByKind { rpm, deb } => (rpm.as_ref(), deb.as_ref()),
            PackageSource::Any(download) => (Some(download), Some(download)),
        };
        let (rpm, deb) = (quoted_download(rpm), quoted_download(deb));
        let mut text = self.cluster_file.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let mut delimiter = DELIMITER.to_owned();
        while text.lines().any(|line| line == delimiter) {
            delimiter.push('_');
        }
        let secret_dir = Path::new(&self.secret_path)
            .parent()
            .map_or_else(String::new, |p| p.display().to_string());
        let values = [
            ("RPM_URL", rpm.0),
            ("RPM_SHA256", rpm.1),
            ("DEB_URL", deb.0),
            ("DEB_SHA256", deb.1),
            ("OWNER", shell_quote(self.owner.as_deref().unwrap_or(""))),
            ("SECRET_DIR", shell_quote(&secret_dir)),
            ("STATE_DIR", shell_quote(HEAD_STATE_DIR)),
            ("CLUSTER_PATH", shell_quote(HEAD_CLUSTER_FILE)),
            ("SECRET_PATH", shell_quote(&self.secret_path)),
            (
                "SECRET",
                shell_quote(self.control_secret.as_deref().unwrap_or("")),
            ),
            ("EOF", delimiter),
            ("CLUSTER_FILE", text),
        ];
        fill(TEMPLATE, &values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::agent_package::Download;

    fn share(cluster_file: &str) -> HeadShare {
        HeadShare {
            rayefa: NodePackage {
                machine: Some("x86_64".into()),
                source: PackageSource::ByKind {
                    rpm: Some(Download {
                        url: "https://b.s3.amazonaws.com/p/rayefa.rpm?X-Amz-Signature=1".into(),
                        sha256: "ab".into(),
                    }),
                    deb: None,
                },
            },
            cluster_file: cluster_file.into(),
            control_secret: Some("0".repeat(64)),
            secret_path: head_secret_path("us-east-1", "c1"),
            owner: Some("ec2-user".into()),
        }
    }

    #[test]
    fn the_block_carries_the_package_the_file_and_the_secret() {
        let block = share("cluster_name: c1\n").render();
        for line in [
            "rayefa_rpm_url='https://b.s3.amazonaws.com/p/rayefa.rpm?X-Amz-Signature=1'\n",
            "rayefa_rpm_sha256='ab'\n",
            "rayefa_deb_url=''\n",
            "owner='ec2-user'\n",
            "<<'RAYEFA_CLUSTER_FILE'\ncluster_name: c1\nRAYEFA_CLUSTER_FILE\n",
            "'/var/lib/rayefa-orchestrator/aws/us-east-1/c1/control-secret'",
        ] {
            assert!(block.contains(line), "{line} in\n{block}");
        }
        assert!(
            !block.contains('@'),
            "every placeholder is filled:\n{block}"
        );
    }

    #[test]
    fn a_literal_dollar_brace_that_the_head_would_expand_again_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cluster.yaml");
        std::fs::write(
            &path,
            "cluster_name: c1\nmetadata: {note: 'costs $${PRICE}'}\n",
        )
        .expect("file");
        let error = expanded_cluster_file(&path).expect_err("refused");
        let message = error.to_string();
        assert!(
            matches!(error, HeadShareError::ExpandedTwice { .. }),
            "{message}"
        );
        assert!(message.contains("cluster.yaml:2:"), "{message}");

        std::fs::write(
            &path,
            "cluster_name: c1\nsetup_commands: ['echo ${HOME}']\n",
        )
        .expect("file");
        let text = expanded_cluster_file(&path).expect("commands are the node's shell");
        assert!(text.contains("echo ${HOME}"), "{text}");
    }

    #[test]
    fn a_line_equal_to_the_delimiter_gets_a_longer_one() {
        let block = share("a: 1\nRAYEFA_CLUSTER_FILE\n").render();
        assert!(block.contains("<<'RAYEFA_CLUSTER_FILE_'\n"), "{block}");
    }
}
