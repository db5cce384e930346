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

/// The Python packages the agent installs by default. A replaced `pip install` adds its
/// requirements to these rather than replacing them, so that a node whose only pip line is
/// `pip install boto3==1.4.8` still gets Ray.
pub(crate) use rayefa_wire::DEFAULT_PYTHON_PACKAGES;

/// `[packages]` for a node whose dropped commands did `dropped`. Their packages join the
/// agent's defaults; `rayefa.packages.os` / `python`, when given, are the whole lists instead
/// (the explicit way to install fewer than the defaults).
pub(super) fn render(configured: Option<&Packages>, dropped: &[Work]) -> Option<PackagesSection> {
    let mut python: Vec<String> = Vec::new();
    let mut os: Vec<String> = Vec::new();
    for work in dropped {
        match work {
            Work::PythonPackages(packages) => {
                if python.is_empty() {
                    python = DEFAULT_PYTHON_PACKAGES.map(str::to_owned).to_vec();
                }
                for requirement in packages {
                    add_requirement(&mut python, requirement);
                }
            }
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

/// Adds `requirement` to `list`; one that names a project already listed (`boto3==1.4.8`
/// beside the default `boto3`) takes that entry's place, so the user's version wins and pip is
/// not asked for the same project twice.
fn add_requirement(list: &mut Vec<String>, requirement: &str) {
    let project = project_name(requirement);
    match list.iter_mut().find(|r| project_name(r) == project) {
        Some(entry) => requirement.clone_into(entry),
        None => list.push(requirement.to_owned()),
    }
}

/// The normalised project name of a requirement specifier (PEP 503: case-insensitive, runs of
/// `-`, `_` and `.` alike): `Ray` in `Ray[default]>=2.9`.
fn project_name(requirement: &str) -> String {
    let name = requirement
        .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .next()
        .unwrap_or_default();
    let mut normalised = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !normalised.ends_with('-') {
                normalised.push('-');
            }
        } else {
            normalised.push(c.to_ascii_lowercase());
        }
    }
    normalised
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python(dropped: &[&[&str]]) -> Vec<String> {
        let work: Vec<Work> = dropped
            .iter()
            .map(|p| Work::PythonPackages(p.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        render(None, &work)
            .and_then(|section| section.python)
            .expect("a python list")
    }

    #[test]
    fn replaced_pip_lines_add_to_the_defaults_and_never_remove_ray() {
        assert_eq!(
            python(&[&["boto3==1.4.8"]]),
            ["ray[default,data]", "pandas", "pyarrow", "boto3==1.4.8"]
        );
        assert_eq!(
            python(&[&["torch"], &["Ray[default]>=2.9", "py_Arrow"]]),
            [
                "Ray[default]>=2.9",
                "pandas",
                "pyarrow",
                "boto3",
                "torch",
                "py_Arrow"
            ],
            "`py_Arrow` is not pyarrow, but `Ray[default]` is ray"
        );
    }

    #[test]
    fn configured_lists_are_the_whole_lists() {
        let configured = Packages {
            python: Some(vec!["numpy".to_owned()]),
            ..Packages::default()
        };
        let work = [Work::PythonPackages(vec!["boto3==1.4.8".to_owned()])];
        let section = render(Some(&configured), &work).expect("section");
        assert_eq!(section.python, Some(vec!["numpy".to_owned()]));
    }

    #[test]
    fn project_names_are_normalised() {
        assert_eq!(project_name("Foo.Bar__baz[x]==1"), "foo-bar-baz");
        assert_eq!(project_name("ray"), "ray");
        assert_eq!(project_name("boto3>=1.4.8; python_version>'3'"), "boto3");
    }
}
