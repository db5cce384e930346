//! The user data an EC2 node boots with: a short bash script (`user_data.sh`) that downloads
//! the agent package, checks its pinned SHA-256, installs it with the OS's package manager,
//! writes the node's agent configuration to `/etc/rayefa/agent.toml` and starts
//! `rayefa-agent`. Every failure stops the script with a message on the console. The head of
//! a cluster that autoscales also installs rayefa and gets the cluster file
//! ([`super::head_share`]); every other node's script has nothing of it.

use rayefa_wire::AgentConfigFile;

use super::agent_package::{Download, NodePackage, PackageSource};
use super::head_share::HeadShare;

/// The script, with `@NAME@` placeholders.
const TEMPLATE: &str = include_str!("user_data.sh");

/// EC2's limit on user data, in bytes before base64: 16 KiB exactly.
pub(crate) const USER_DATA_LIMIT: usize = 16 * 1024;

/// Whether user data of `len` bytes (before base64) fits EC2's limit.
pub(crate) fn fits_ec2(len: usize) -> bool {
    len <= USER_DATA_LIMIT
}

/// The here-document delimiter around the agent configuration; a longer one is chosen when a
/// line of the configuration happens to equal it.
const DELIMITER: &str = "RAYEFA_AGENT_TOML";

/// Why user data could not be rendered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UserDataError {
    /// The agent configuration has a value TOML cannot hold.
    #[error("rendering the agent configuration as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
    /// No agent package fits the node type's architecture.
    #[error(transparent)]
    NoPackage(#[from] super::agent_package::NoPackage),
    /// The agent store could not be read or has no package for the node.
    #[error(transparent)]
    Store(#[from] super::agent_store::StoreError),
    /// The node type's architecture could not be found out.
    #[error("choosing the agent package by architecture: {0}")]
    Architecture(String),
    /// The head's share (rayefa's package, the cluster file) could not be made.
    #[error("the head's share for Ray's autoscaler: {0}")]
    HeadShare(String),
}

/// The user data of a node whose agent configuration is `config`, installing `package` (or
/// relying on an agent already on the image when there is none). A package chosen for an
/// architecture is installed only on a node whose `uname -m` is that architecture; with a
/// package per kind (the store's), the node takes the kind its OS installs. `head` is the
/// share of the head of a cluster that autoscales.
pub(crate) fn render_user_data(
    package: Option<&NodePackage>,
    config: &AgentConfigFile,
    head: Option<&HeadShare>,
) -> Result<String, UserDataError> {
    let mut toml = toml::to_string(config)?;
    if !toml.ends_with('\n') {
        toml.push('\n');
    }
    let mut delimiter = DELIMITER.to_owned();
    while toml.lines().any(|line| line == delimiter) {
        delimiter.push('_');
    }
    let node = config.node.as_ref();
    let describe = format!(
        "{} / {} ({})",
        node.and_then(|n| n.cluster_name.as_deref()).unwrap_or("?"),
        node.and_then(|n| n.node_type.as_deref()).unwrap_or("?"),
        node.and_then(|n| n.role).map_or("?", |r| r.as_str()),
    );
    let quoted = quoted_download;
    let (any, rpm, deb) = match package.map(|p| &p.source) {
        None => (None, None, None),
        Some(PackageSource::Any(download)) => (Some(download), None, None),
        Some(PackageSource::ByKind { rpm, deb }) => (None, rpm.as_ref(), deb.as_ref()),
    };
    let (any, rpm, deb) = (quoted(any), quoted(rpm), quoted(deb));
    let machine = package.and_then(|p| p.machine.as_deref()).unwrap_or("");
    let values = [
        ("NODE", one_line(&describe)),
        ("URL", any.0),
        ("SHA256", any.1),
        ("RPM_URL", rpm.0),
        ("RPM_SHA256", rpm.1),
        ("DEB_URL", deb.0),
        ("DEB_SHA256", deb.1),
        ("MACHINE", shell_quote(machine)),
        ("HEAD", head.map(HeadShare::render).unwrap_or_default()),
        ("EOF", delimiter),
        ("TOML", toml),
    ];
    Ok(fill(TEMPLATE, &values))
}

/// A download's URL and SHA-256 as shell words; two empty words for none.
pub(crate) fn quoted_download(download: Option<&Download>) -> (String, String) {
    match download {
        Some(d) => (
            shell_quote(&d.url),
            shell_quote(&d.sha256.to_ascii_lowercase()),
        ),
        None => (shell_quote(""), shell_quote("")),
    }
}

/// `template` with each `@NAME@` replaced by its value, in one pass so that a value is never
/// scanned for placeholders itself.
pub(crate) fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let replaced = after.find('@').and_then(|end| {
            let name = &after[..end];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (value, end))
        });
        match replaced {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` as one single-quoted shell word.
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `text` without line breaks, for a comment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::agent_package;
    use rayefa_cluster::rayefa::AgentPackages;
    use rayefa_wire::{CommandsSection, NodeSection, Role};

    fn config_with_setup(setup: Vec<String>) -> AgentConfigFile {
        AgentConfigFile {
            node: Some(NodeSection {
                cluster_name: Some("ray-on-aws-efa".into()),
                role: Some(Role::Worker),
                node_type: Some("efa_worker_node".into()),
                head_address: Some("127.0.1.4".into()),
                ..NodeSection::default()
            }),
            commands: Some(CommandsSection {
                setup: Some(setup),
                ..CommandsSection::default()
            }),
            ..AgentConfigFile::default()
        }
    }

    /// The configuration between the here-document's delimiters, read back.
    fn embedded_config(script: &str) -> AgentConfigFile {
        let start = script.find("<<'").expect("a here-document") + 3;
        let delimiter_end = script[start..].find('\'').expect("closing quote") + start;
        let delimiter = &script[start..delimiter_end];
        let body_start = script[delimiter_end..].find('\n').expect("newline") + delimiter_end + 1;
        let body_end = script[body_start..]
            .find(&format!("\n{delimiter}\n"))
            .expect("closing delimiter")
            + body_start;
        toml::from_str(&script[body_start..=body_end]).expect("the embedded TOML parses")
    }

    #[test]
    fn the_configuration_survives_the_trip_through_the_script() {
        let config = config_with_setup(vec![
            "echo 'quoted' \"twice\" $HOME `date`".into(),
            "pip install -U \"ray[default,data]\"".into(),
        ]);
        let script = render_user_data(None, &config, None).expect("renders");
        assert!(script.starts_with("#!/bin/bash\n"));
        assert_eq!(embedded_config(&script), config);
        assert!(script.contains("url=''\n"), "no package configured");
        assert!(
            !script.contains("@HEAD@") && !script.contains("rayefa_rpm_url"),
            "a node that is not an autoscaling head gets nothing of the head's share"
        );
    }

    #[test]
    fn the_size_limit_is_ec2s_16_kib_before_base64() {
        assert!(fits_ec2(16_384));
        assert!(!fits_ec2(16_385));
    }

    #[test]
    fn apt_waits_for_the_dpkg_lock_like_the_agent() {
        let script = render_user_data(None, &config_with_setup(vec![]), None).expect("renders");
        let apt: Vec<&str> = script
            .lines()
            .filter(|l| l.contains("apt-get") && !l.trim_start().starts_with('#'))
            .filter(|l| !l.contains("fail "))
            .collect();
        assert!(!apt.is_empty());
        for line in apt {
            assert!(line.contains("-o DPkg::Lock::Timeout=300"), "{line}");
        }
    }

    #[test]
    fn placeholders_are_filled_once() {
        let values = [("A", "@B@".to_owned()), ("B", "b".to_owned())];
        assert_eq!(fill("x@A@y@B@z@C@ @", &values), "x@B@ybz@C@ @");
    }

    #[test]
    fn a_line_equal_to_the_delimiter_gets_a_longer_delimiter() {
        let config = config_with_setup(vec![format!("x\n{DELIMITER}\ny")]);
        let script = render_user_data(None, &config, None).expect("renders");
        assert_eq!(embedded_config(&script), config);
    }

    #[test]
    fn the_package_is_pinned_and_quoted() {
        let yaml = "url: https://example.invalid/it's.rpm\nsha256: ABCDEF\n";
        let packages: AgentPackages = serde_saphyr::from_str(yaml).expect("package");
        let chosen = agent_package::choose(Some(&packages), &["x86_64".into()])
            .expect("fits")
            .expect("a package");
        let script =
            render_user_data(Some(&chosen.into()), &config_with_setup(vec![]), None).expect("ok");
        assert!(script.contains(r"url='https://example.invalid/it'\''s.rpm'"));
        assert!(script.contains("sha256='abcdef'"));
        assert!(
            script.contains("machine=''\n"),
            "the single form names no architecture"
        );

        let yaml = "aarch64: {url: 'https://example.invalid/arm.rpm', sha256: ABCDEF}\n";
        let packages: AgentPackages = serde_saphyr::from_str(yaml).expect("package");
        let chosen = agent_package::choose(Some(&packages), &["arm64".into()])
            .expect("fits")
            .expect("a package");
        let script =
            render_user_data(Some(&chosen.into()), &config_with_setup(vec![]), None).expect("ok");
        assert!(script.contains("machine='aarch64'\n"));
    }

    #[test]
    fn the_stores_packages_are_offered_by_kind() {
        let package = NodePackage {
            machine: Some("x86_64".into()),
            source: PackageSource::ByKind {
                rpm: Some(Download {
                    url: "https://b.s3.r.amazonaws.com/p/a.rpm?X-Amz-Signature=1&a=b".into(),
                    sha256: "AA".into(),
                }),
                deb: None,
            },
        };
        let script =
            render_user_data(Some(&package), &config_with_setup(vec![]), None).expect("ok");
        for line in [
            "url=''\n",
            "sha256=''\n",
            "rpm_url='https://b.s3.r.amazonaws.com/p/a.rpm?X-Amz-Signature=1&a=b'\n",
            "rpm_sha256='aa'\n",
            "deb_url=''\n",
            "machine='x86_64'\n",
        ] {
            assert!(script.contains(line), "{line} in\n{script}");
        }
        let printed: Vec<&str> = script
            .lines()
            .filter_map(|l| l.split_once("say \"").or_else(|| l.split_once("fail \"")))
            .map(|(_, message)| message)
            .filter(|message| message.contains("$url"))
            .collect();
        assert!(
            printed.is_empty(),
            "the URL's query is never printed: {printed:?}"
        );
    }
}
