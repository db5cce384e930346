//! The install-ray step's packages: the `rayefa.packages` section, else what the dropped
//! setup commands installed.

use rayefa_wire::PackagesSection;

use crate::rayefa::Packages;
use crate::replaced::Work;

/// The OS packages the agent installs by default for a package manager (the agent's
/// `install_ray::os_packages` defaults). A replaced `dnf install` adds its packages to these
/// rather than replacing them, so the virtualenv still gets pip (and venv on Debian).
fn agent_defaults(manager: &str) -> &'static [&'static str] {
    match manager {
        "apt" | "apt-get" => &["python3-venv", "python3-pip"],
        _ => &["python3-pip"],
    }
}

/// `[packages]` for a node whose dropped commands did `dropped`.
pub(super) fn render(configured: Option<&Packages>, dropped: &[Work]) -> Option<PackagesSection> {
    let mut python: Vec<String> = Vec::new();
    let mut os: Vec<String> = Vec::new();
    for work in dropped {
        match work {
            Work::PythonPackages(packages) => extend_unique(&mut python, packages),
            Work::OsPackages { manager, packages } => {
                let defaults: Vec<String> = agent_defaults(manager)
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect();
                extend_unique(&mut os, &defaults);
                extend_unique(&mut os, packages);
            }
            Work::GrowRoot | Work::InstallEfa { .. } => {}
        }
    }
    let configured = configured.cloned().unwrap_or_default();
    let section = PackagesSection {
        manager: configured.manager.map(|m| m.value),
        os: configured.os.or((!os.is_empty()).then_some(os)),
        python: configured.python.or((!python.is_empty()).then_some(python)),
        virtualenv: configured.virtualenv.map(|v| v.value),
        python_interpreter: configured.python_interpreter,
        pip_args: configured.pip_args,
    };
    (section != PackagesSection::default()).then_some(section)
}

fn extend_unique(list: &mut Vec<String>, items: &[String]) {
    for item in items {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}
