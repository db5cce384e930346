use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::steps::install_efa::testkit::{Entry, tarball};

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn tarball(&self, entries: &[Entry]) -> PathBuf {
        let path = self.dir.path().join("in.tar.gz");
        std::fs::write(&path, tarball(entries)).expect("write tarball");
        path
    }

    /// The folder the tests unpack into, inside a parent holding nothing else, so that
    /// anything written outside it shows.
    fn dest(&self) -> PathBuf {
        self.dir.path().join("out").join("tree")
    }

    /// Everything in the parent of [`Scratch::dest`].
    fn parent_listing(&self) -> Vec<String> {
        let parent = self.dir.path().join("out");
        let mut names: Vec<String> = std::fs::read_dir(&parent)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn good_entries() -> Vec<Entry> {
    vec![
        Entry::Dir("./"),
        Entry::Dir("aws-efa-installer/"),
        Entry::file("aws-efa-installer/efa_installer.sh", 0o775, "#!/bin/bash\n"),
        Entry::Dir("aws-efa-installer/RPMS/"),
        Entry::file("aws-efa-installer/RPMS/efa.rpm", 0o666, vec![1u8; 5000]),
        Entry::Symlink("aws-efa-installer/current", "RPMS"),
        Entry::Symlink("aws-efa-installer/RPMS/self", "../RPMS/efa.rpm"),
        Entry::HardLink(
            "aws-efa-installer/efa-copy.rpm",
            "aws-efa-installer/RPMS/efa.rpm",
        ),
    ]
}

#[test]
fn unpacks_files_dirs_and_links_that_stay_inside() {
    let scratch = Scratch::new();
    let extracted =
        extract_fresh(&scratch.tarball(&good_entries()), &scratch.dest()).expect("unpacks");
    assert_eq!(
        extracted,
        Extracted {
            files: 2,
            directories: 2,
            links: 3,
            bytes: 12 + 5000,
        }
    );
    let tree = scratch.dest().join("aws-efa-installer");
    let script = std::fs::metadata(tree.join("efa_installer.sh")).expect("script");
    assert_eq!(
        script.permissions().mode() & 0o777,
        0o755,
        "exec kept, group write masked"
    );
    assert_eq!(
        std::fs::read(tree.join("current/efa.rpm")).expect("through the link"),
        vec![1u8; 5000]
    );
    assert_eq!(
        std::fs::read(tree.join("efa-copy.rpm"))
            .expect("hard link")
            .len(),
        5000
    );
    assert_eq!(scratch.parent_listing(), ["tree"], "no staging left");
}

fn assert_refused(entries: &[Entry], expect: impl Fn(&ExtractError) -> bool) {
    let scratch = Scratch::new();
    let err = extract_fresh(&scratch.tarball(entries), &scratch.dest()).expect_err("refused");
    assert!(expect(&err), "unexpected error: {err}");
    assert!(err.to_string().starts_with("unsafe archive"), "{err}");
    assert!(
        scratch.parent_listing().is_empty(),
        "left {:?}",
        scratch.parent_listing()
    );
    assert!(!scratch.dir.path().join("x").exists());
    assert!(!scratch.dir.path().join("out").join("x").exists());
}

#[test]
fn refuses_parent_dir_entries() {
    for name in [b"../x".as_slice(), b"aws-efa-installer/../../x", b"./../x"] {
        assert_refused(
            &[Entry::Dir("aws-efa-installer/"), Entry::RawFile(name)],
            |e| matches!(e, ExtractError::ParentDir { .. }),
        );
    }
}

#[test]
fn refuses_absolute_entries() {
    assert_refused(&[Entry::RawFile(b"/tmp/rayefa-absolute-x")], |e| {
        matches!(e, ExtractError::AbsolutePath { .. })
    });
    assert!(!Path::new("/tmp/rayefa-absolute-x").exists());
}

#[test]
fn refuses_symlinks_out() {
    for (path, target) in [
        ("evil", "../x"),
        ("aws-efa-installer/evil", "../../x"),
        ("evil", "/etc/passwd"),
        ("evil", "/"),
    ] {
        assert_refused(
            &[
                Entry::Dir("aws-efa-installer/"),
                Entry::Symlink(path, target),
            ],
            |e| matches!(e, ExtractError::LinkEscapes { .. }),
        );
    }
}

#[test]
fn refuses_a_chain_of_links_that_leads_out() {
    // Each link alone reads as inside; together `b` is the target's parent.
    assert_refused(
        &[Entry::Symlink("a", "."), Entry::Symlink("b", "a/..")],
        |e| matches!(e, ExtractError::LinkEscapes { .. }),
    );
}

#[test]
fn refuses_writing_through_a_link_that_leads_out() {
    // The link is refused first; without that check the file would land outside.
    assert_refused(
        &[
            Entry::Symlink("up", ".."),
            Entry::file("up/x", 0o644, "evil"),
        ],
        |e| matches!(e, ExtractError::LinkEscapes { .. }),
    );
}

#[test]
fn refuses_hard_links_out() {
    for target in ["../x", "/etc/passwd"] {
        assert_refused(&[Entry::HardLink("h", target)], |e| {
            matches!(e, ExtractError::LinkEscapes { .. })
        });
    }
}

#[test]
fn refuses_devices_and_pipes() {
    assert_refused(&[Entry::Fifo("pipe")], |e| {
        matches!(e, ExtractError::Unsupported { .. })
    });
}

#[test]
fn a_failure_leaves_the_previous_tree_alone() {
    let scratch = Scratch::new();
    extract_fresh(&scratch.tarball(&good_entries()), &scratch.dest()).expect("unpacks");
    let evil = scratch.tarball(&[Entry::file("new", 0o644, "n"), Entry::RawFile(b"../x")]);
    extract_fresh(&evil, &scratch.dest()).expect_err("refused");
    assert!(
        scratch
            .dest()
            .join("aws-efa-installer/efa_installer.sh")
            .exists()
    );
    assert!(!scratch.dest().join("new").exists());
    assert_eq!(scratch.parent_listing(), ["tree"]);
}

#[test]
fn a_second_unpack_replaces_the_tree() {
    let scratch = Scratch::new();
    extract_fresh(&scratch.tarball(&good_entries()), &scratch.dest()).expect("unpacks");
    std::fs::write(scratch.dest().join("stale"), "from before").expect("write");
    extract_fresh(&scratch.tarball(&good_entries()), &scratch.dest()).expect("unpacks again");
    assert!(!scratch.dest().join("stale").exists());
}

#[test]
fn a_damaged_archive_is_reported_and_cleaned_up() {
    let scratch = Scratch::new();
    let mut bytes = tarball(&good_entries());
    bytes.truncate(bytes.len() / 2);
    let path = scratch.dir.path().join("cut.tar.gz");
    std::fs::write(&path, bytes).expect("write");
    let err = extract_fresh(&path, &scratch.dest()).expect_err("damaged");
    assert!(
        matches!(err, ExtractError::Damaged(_) | ExtractError::Io { .. }),
        "{err}"
    );
    assert!(scratch.parent_listing().is_empty());
}

#[test]
fn link_arithmetic() {
    assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
    assert!(link_stays_inside(Path::new("a"), Path::new("./../a/./x")));
    assert!(!link_stays_inside(Path::new("a"), Path::new("../../x")));
    assert!(!link_stays_inside(Path::new(""), Path::new("..")));
    assert!(!link_stays_inside(Path::new("a"), Path::new("/a")));
}
