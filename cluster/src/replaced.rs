//! Setup commands that an agent step now does better.
//!
//! The seed's `setup_commands` grow the root file system with errors swallowed
//! (`growpart ... || true`), download and run the EFA installer unverified, and install pip
//! and Ray by hand. The agent's grow-root, install-efa and install-ray steps do the same work
//! checked, idempotently and under one package-manager lock. Running the commands as well
//! would do the work twice and bring the swallowed errors back, so a command that consists
//! only of such work is recognised here and (by default) dropped, with a warning that names the
//! step replacing it. A command that mixes such work with anything else is kept verbatim and
//! only reported.

use rayefa_wire::StepName;

/// An agent step that can stand in for a setup command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplacingStep {
    /// `grow-root`
    GrowRoot,
    /// `install-efa`
    InstallEfa,
    /// `install-ray`
    InstallRay,
}

impl ReplacingStep {
    /// The step's name, as in `rayefa.steps` and the status document.
    pub fn name(self) -> &'static str {
        let step = match self {
            ReplacingStep::GrowRoot => StepName::GrowRoot,
            ReplacingStep::InstallEfa => StepName::InstallEfa,
            ReplacingStep::InstallRay => StepName::InstallRay,
        };
        step.as_str()
    }
}

/// One piece of work recognised in a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Growing a partition or file system.
    GrowRoot,
    /// Downloading, extracting or running the EFA installer; the version when the command
    /// names one (`aws-efa-installer-1.45.1.tar.gz`).
    InstallEfa {
        /// The installer version named in the command.
        version: Option<String>,
    },
    /// `pip install` of these requirement specifiers.
    PythonPackages(Vec<String>),
    /// An OS package manager installing these packages.
    OsPackages {
        /// `dnf`, `yum`, `apt-get` or `apt`.
        manager: String,
        /// The packages.
        packages: Vec<String>,
    },
}

impl Work {
    /// The step that does this work.
    pub fn step(&self) -> ReplacingStep {
        match self {
            Work::GrowRoot => ReplacingStep::GrowRoot,
            Work::InstallEfa { .. } => ReplacingStep::InstallEfa,
            Work::PythonPackages(_) | Work::OsPackages { .. } => ReplacingStep::InstallRay,
        }
    }
}

/// What a command is, as far as the agent's steps go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognition {
    /// Nothing a step does.
    Unrelated,
    /// Only work that steps do; the command can be dropped.
    Replaceable(Vec<Work>),
    /// Some work that steps do, mixed with other commands; it has to stay.
    Overlaps(Vec<Work>),
}

/// Classifies one shell command.
pub fn recognise(command: &str) -> Recognition {
    let Some(words) = shlex::split(command) else {
        return Recognition::Unrelated;
    };
    let mut segments: Vec<(Option<&str>, &[String])> = Vec::new();
    let mut start = 0;
    let mut previous = None;
    for (i, word) in words.iter().enumerate() {
        if matches!(word.as_str(), "&&" | "||" | ";") {
            segments.push((previous, &words[start..i]));
            previous = Some(word.as_str());
            start = i + 1;
        }
    }
    segments.push((previous, &words[start..]));

    let mut work = Vec::new();
    let mut other = false;
    for (previous, segment) in segments {
        match classify(strip_sudo(segment)) {
            Segment::Work(w) => work.push(w),
            Segment::Neutral => {}
            // `|| true` is the seed's way of ignoring errors of the work before it; a step
            // that reports its errors replaces both.
            Segment::True if previous == Some("||") => {}
            Segment::True | Segment::Other => other = true,
        }
    }
    if has_shell_syntax(command) {
        other = true;
    }
    match (work.is_empty(), other) {
        (true, _) => Recognition::Unrelated,
        (false, false) => Recognition::Replaceable(work),
        (false, true) => Recognition::Overlaps(work),
    }
}

/// One simple command between `&&`, `||` and `;`.
enum Segment {
    Work(Work),
    /// `cd` into the installer's directory: part of running it.
    Neutral,
    /// `true` or `:`.
    True,
    Other,
}

fn classify(words: &[String]) -> Segment {
    let Some((program, args)) = words.split_first() else {
        return Segment::Other;
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    let mentions_installer = args.iter().any(|a| a.contains("aws-efa-installer"));
    match base {
        "true" | ":" if args.is_empty() => Segment::True,
        "growpart" | "xfs_growfs" | "resize2fs" => Segment::Work(Work::GrowRoot),
        "efa_installer.sh" => Segment::Work(Work::InstallEfa { version: None }),
        "curl" | "wget" | "tar" if mentions_installer => Segment::Work(Work::InstallEfa {
            version: args.iter().find_map(|a| installer_version(a)),
        }),
        "cd" if mentions_installer && args.len() == 1 => Segment::Neutral,
        "pip" | "pip3" => pip_install(args),
        "python" | "python3" if args.len() > 2 && args[0] == "-m" && args[1] == "pip" => {
            pip_install(&args[2..])
        }
        "dnf" | "yum" | "apt-get" | "apt" => os_install(base, args),
        _ => Segment::Other,
    }
}

/// `sudo [-E|-H|-n ...] COMMAND` is `COMMAND`: the agent runs steps as root.
fn strip_sudo(words: &[String]) -> &[String] {
    match words.split_first() {
        Some((first, rest)) if first == "sudo" => {
            let skip = rest.iter().take_while(|w| w.starts_with('-')).count();
            &rest[skip..]
        }
        _ => words,
    }
}

/// `pip install [-U|--upgrade|-q|--user|--no-cache-dir] REQ...`; anything fancier (`-r FILE`,
/// `-e`, an index URL) is left to the user's command.
fn pip_install(args: &[String]) -> Segment {
    let Some((verb, rest)) = args.split_first() else {
        return Segment::Other;
    };
    if verb != "install" {
        return Segment::Other;
    }
    let (flags, requirements): (Vec<&String>, Vec<&String>) =
        rest.iter().partition(|a| a.starts_with('-'));
    let simple = flags.iter().all(|f| {
        matches!(
            f.as_str(),
            "-U" | "--upgrade" | "-q" | "--quiet" | "--user" | "--no-cache-dir"
        )
    });
    if !simple || requirements.is_empty() {
        return Segment::Other;
    }
    Segment::Work(Work::PythonPackages(
        requirements.into_iter().cloned().collect(),
    ))
}

/// `dnf|yum|apt-get|apt install [-y|-q|--assumeyes|--quiet] PACKAGE...`
fn os_install(manager: &str, args: &[String]) -> Segment {
    let Some((verb, rest)) = args.split_first() else {
        return Segment::Other;
    };
    if verb != "install" {
        return Segment::Other;
    }
    let (flags, packages): (Vec<&String>, Vec<&String>) =
        rest.iter().partition(|a| a.starts_with('-'));
    let simple = flags.iter().all(|f| {
        matches!(
            f.as_str(),
            "-y" | "-q" | "--assumeyes" | "--quiet" | "--yes"
        )
    });
    if !simple || packages.is_empty() {
        return Segment::Other;
    }
    Segment::Work(Work::OsPackages {
        manager: manager.to_owned(),
        packages: packages.into_iter().cloned().collect(),
    })
}

/// `1.45.1` from `.../aws-efa-installer-1.45.1.tar.gz`.
fn installer_version(arg: &str) -> Option<String> {
    let start = arg.find("aws-efa-installer-")? + "aws-efa-installer-".len();
    let rest = &arg[start..];
    let version = rest.strip_suffix(".tar.gz").unwrap_or(rest);
    let version = version.split('/').next().unwrap_or(version);
    (!version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .then(|| version.to_owned())
}

/// Whether the command is more than simple commands joined by `&&`, `||` and `;`: a pipe, a
/// redirection, a background `&`, a substitution or an expansion outside single quotes. Quoted
/// text is an argument, not shell syntax: `pip install 'boto3>=1.4.8'` has none. Such a
/// command is never dropped, since its words are not what runs.
fn has_shell_syntax(command: &str) -> bool {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let chars: Vec<char> = command.chars().collect();
    let mut quote = Quote::None;
    let mut i = 0;
    // A word boundary: the command's ends or blank space.
    let boundary = |at: Option<&char>| at.is_none_or(|c| c.is_whitespace());
    while i < chars.len() {
        let c = chars[i];
        match (&quote, c) {
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::Single, _) => {}
            (_, '\\') => i += 1,
            (Quote::None, '\'') => quote = Quote::Single,
            (Quote::None, '"') => quote = Quote::Double,
            (Quote::Double, '"') => quote = Quote::None,
            (_, '`') => return true,
            (_, '$') => return true,
            (Quote::Double, _) => {}
            (Quote::None, '&' | '|')
                if chars.get(i + 1) == Some(&c)
                    && boundary(i.checked_sub(1).and_then(|p| chars.get(p)))
                    && boundary(chars.get(i + 2)) =>
            {
                i += 1;
            }
            (Quote::None, ';')
                if boundary(i.checked_sub(1).and_then(|p| chars.get(p)))
                    && boundary(chars.get(i + 1)) => {}
            (Quote::None, '&' | '|' | '<' | '>' | ';' | '(' | ')' | '{' | '}' | '#') => {
                return true;
            }
            (Quote::None, _) => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replaceable(command: &str) -> Vec<Work> {
        match recognise(command) {
            Recognition::Replaceable(work) => work,
            other => panic!("{command}: {other:?}"),
        }
    }

    #[test]
    fn the_seed_commands_are_recognised() {
        assert_eq!(
            replaceable("sudo growpart /dev/xvda 1 || true"),
            [Work::GrowRoot]
        );
        assert_eq!(
            replaceable("sudo xfs_growfs -d / || true"),
            [Work::GrowRoot]
        );
        assert_eq!(
            replaceable("sudo resize2fs /dev/xvda1 || true"),
            [Work::GrowRoot]
        );
        assert_eq!(
            replaceable(
                "curl -O https://efa-installer.amazonaws.com/aws-efa-installer-1.45.1.tar.gz"
            ),
            [Work::InstallEfa {
                version: Some("1.45.1".into())
            }]
        );
        assert_eq!(
            replaceable("tar -xf aws-efa-installer-1.45.1.tar.gz"),
            [Work::InstallEfa {
                version: Some("1.45.1".into())
            }]
        );
        assert_eq!(
            replaceable("cd aws-efa-installer && sudo ./efa_installer.sh -y"),
            [Work::InstallEfa { version: None }]
        );
        assert_eq!(
            replaceable("sudo dnf install -y python3-pip"),
            [Work::OsPackages {
                manager: "dnf".into(),
                packages: vec!["python3-pip".into()]
            }]
        );
        assert_eq!(
            replaceable(r#"pip install -U "ray[default,data]" pandas pyarrow boto3"#),
            [Work::PythonPackages(vec![
                "ray[default,data]".into(),
                "pandas".into(),
                "pyarrow".into(),
                "boto3".into()
            ])]
        );
    }

    #[test]
    fn commands_that_do_more_are_kept() {
        assert!(matches!(
            recognise("sudo growpart /dev/xvda 1 && echo grown > /tmp/flag"),
            Recognition::Overlaps(_)
        ));
        assert!(matches!(
            recognise(
                "curl -sL https://efa-installer.amazonaws.com/aws-efa-installer-1.45.1.tar.gz | tar xz"
            ),
            Recognition::Overlaps(_)
        ));
        assert!(matches!(
            recognise("pip install -r requirements.txt"),
            Recognition::Unrelated
        ));
        assert!(matches!(
            recognise("sudo growpart /dev/xvda 1 || echo failed"),
            Recognition::Overlaps(_)
        ));
    }

    #[test]
    fn quoted_requirements_are_arguments_not_shell_syntax() {
        assert_eq!(
            replaceable("pip install 'boto3>=1.4.8'"),
            [Work::PythonPackages(vec!["boto3>=1.4.8".into()])]
        );
        assert_eq!(
            replaceable(
                r#"pip3 install -U "ray[default]<3" 'pandas>2|=x' && sudo dnf install -y git"#
            ),
            [
                Work::PythonPackages(vec!["ray[default]<3".into(), "pandas>2|=x".into()]),
                Work::OsPackages {
                    manager: "dnf".into(),
                    packages: vec!["git".into()]
                }
            ]
        );
        assert_eq!(
            replaceable("sudo growpart /dev/xvda 1 || true ; sudo xfs_growfs -d /"),
            [Work::GrowRoot, Work::GrowRoot]
        );
    }

    #[test]
    fn unquoted_or_expanded_syntax_keeps_the_command() {
        for command in [
            "pip install boto3>=1.4.8",
            "pip install \"$PACKAGE\"",
            "pip install $(cat reqs)",
            "pip install `cat reqs`",
            "pip install boto3 &",
            "pip install boto3 2>/dev/null",
            "pip install boto3 # pinned later",
            "pip install boto3; echo done",
        ] {
            assert!(
                matches!(recognise(command), Recognition::Overlaps(_)),
                "{command}: {:?}",
                recognise(command)
            );
        }
    }

    #[test]
    fn ordinary_commands_are_unrelated() {
        for command in [
            "echo hello",
            "mkdir -p ~/data && touch ~/data/ready",
            "ray stop",
            "true",
            "pip list",
        ] {
            assert_eq!(recognise(command), Recognition::Unrelated, "{command}");
        }
    }
}
