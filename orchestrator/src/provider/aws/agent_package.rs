//! Which agent package a node installs: the one package of a one-architecture cluster, or the
//! package of its instance type's architecture (`rayefa.agent_package.x86_64` / `.aarch64`).

use rayefa_cluster::rayefa::{AgentPackage, AgentPackages};

/// The package a node type installs, with the architecture it was built for when the file
/// says (the per-architecture form); the user data compares that with `uname -m`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chosen<'a> {
    /// The package.
    pub(crate) package: &'a AgentPackage,
    /// `uname -m`'s name of its architecture, in the per-architecture form.
    pub(crate) machine: Option<&'a str>,
}

/// What a node's user data installs, wherever it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodePackage {
    /// `uname -m`'s name of the architecture it was chosen for; `None` in the single form.
    pub(crate) machine: Option<String>,
    /// The download.
    pub(crate) source: PackageSource,
}

/// Where a node downloads its package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PackageSource {
    /// `rayefa.agent_package`'s URL, whatever the node's OS.
    Any(Download),
    /// The store's packages (presigned URLs): the node takes the kind its OS installs.
    ByKind {
        /// The RPM, for dnf.
        rpm: Option<Download>,
        /// The .deb, for apt.
        deb: Option<Download>,
    },
}

/// One file to download, with its pinned SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Download {
    /// Where.
    pub(crate) url: String,
    /// Its SHA-256, hex.
    pub(crate) sha256: String,
}

impl From<Chosen<'_>> for NodePackage {
    fn from(chosen: Chosen<'_>) -> Self {
        NodePackage {
            machine: chosen.machine.map(str::to_owned),
            source: PackageSource::Any(Download {
                url: chosen.package.url.value.clone(),
                sha256: chosen.package.sha256.value.to_ascii_lowercase(),
            }),
        }
    }
}

/// No package fits the node type's architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}, and rayefa.agent_package has no package for it (it has {})",
    runs(.architectures),
    .have.join(", ")
)]
pub(crate) struct NoPackage {
    /// The type's architectures, as `uname -m` names them.
    pub(crate) architectures: Vec<String>,
    /// The architectures the file has packages for.
    pub(crate) have: Vec<String>,
}

/// "the instance type runs aarch64", or why the architecture is not known.
pub(super) fn runs(architectures: &[String]) -> String {
    if architectures.is_empty() {
        "the node type's architecture is not known (its node_config names no InstanceType)"
            .to_owned()
    } else {
        format!("the instance type runs {}", architectures.join(" or "))
    }
}

/// `uname -m`'s name for an EC2 architecture (`arm64` is `aarch64` on Linux).
pub(crate) fn machine_name(ec2_architecture: &str) -> &str {
    match ec2_architecture {
        "arm64" => "aarch64",
        other => other,
    }
}

/// The package for an instance type running `architectures` (EC2's names, from
/// DescribeInstanceTypes); `None` when the file has no package (the agent is on the image).
/// In the per-architecture form the first architecture of the type that has a package wins.
pub(crate) fn choose<'a>(
    packages: Option<&'a AgentPackages>,
    architectures: &[String],
) -> Result<Option<Chosen<'a>>, NoPackage> {
    match packages {
        None => Ok(None),
        Some(AgentPackages::One(package)) => Ok(Some(Chosen {
            package,
            machine: None,
        })),
        Some(AgentPackages::PerArchitecture(by_machine)) => architectures
            .iter()
            .find_map(|arch| by_machine.get_key_value(machine_name(arch)))
            .map(|(machine, package)| {
                Some(Chosen {
                    package,
                    machine: Some(machine.as_str()),
                })
            })
            .ok_or_else(|| NoPackage {
                architectures: architectures
                    .iter()
                    .map(|a| machine_name(a).to_owned())
                    .collect(),
                have: by_machine.keys().cloned().collect(),
            }),
    }
}

/// The package whose URL is longest, for sizing user data before the architectures are known.
pub(crate) fn longest(packages: Option<&AgentPackages>) -> Option<Chosen<'_>> {
    packages?
        .each()
        .into_iter()
        .max_by_key(|(_, p)| p.url.value.len())
        .map(|(machine, package)| Chosen { package, machine })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packages(yaml: &str) -> AgentPackages {
        serde_saphyr::from_str(yaml).expect("agent_package parses")
    }

    const BOTH: &str = "x86_64: {url: 'https://x/amd.rpm', sha256: aa}\n\
                        aarch64: {url: 'https://x/arm.rpm', sha256: bb}\n";

    #[test]
    fn each_architecture_gets_its_package() {
        let both = packages(BOTH);
        let x86 = choose(Some(&both), &["x86_64".into()])
            .expect("x86")
            .expect("some");
        assert_eq!(x86.package.url.value, "https://x/amd.rpm");
        assert_eq!(x86.machine, Some("x86_64"));
        let arm = choose(Some(&both), &["arm64".into()])
            .expect("arm")
            .expect("some");
        assert_eq!(arm.package.url.value, "https://x/arm.rpm");
        assert_eq!(arm.machine, Some("aarch64"));
    }

    #[test]
    fn a_missing_architecture_is_refused_and_one_package_fits_all() {
        let x86_only = packages("x86_64: {url: 'https://x/amd.rpm', sha256: aa}\n");
        let refused = choose(Some(&x86_only), &["arm64".into()]).expect_err("no arm package");
        assert_eq!(
            refused.to_string(),
            "the instance type runs aarch64, and rayefa.agent_package has no package for it \
             (it has x86_64)"
        );
        let unknown = choose(Some(&x86_only), &[]).expect_err("no architecture known");
        assert!(
            unknown.to_string().contains("names no InstanceType"),
            "{unknown}"
        );
        let one = packages("url: 'https://x/any.rpm'\nsha256: cc\n");
        let chosen = choose(Some(&one), &["arm64".into()])
            .expect("one")
            .expect("some");
        assert_eq!(
            chosen.machine, None,
            "the single form names no architecture"
        );
        assert!(choose(None, &["arm64".into()]).expect("none").is_none());
    }

    #[test]
    fn the_two_forms_do_not_mix_and_typos_are_named() {
        for (yaml, words) in [
            ("url: u\nx86_64: {url: u, sha256: s}\n", "not both"),
            ("x86-64: {url: u, sha256: s}\n", "x86-64"),
            ("url: u\n", "sha256"),
        ] {
            let error = serde_saphyr::from_str::<AgentPackages>(yaml)
                .expect_err(yaml)
                .to_string();
            assert!(error.contains(words), "`{words}` in {error}");
        }
    }
}
