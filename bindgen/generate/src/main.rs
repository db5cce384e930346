//! Regenerates the committed declarations of `rayefa-libfabric-sys` from the libfabric headers
//! installed on this machine (Debian's `libfabric-dev`), or, with `--check`, fails when the
//! committed files differ from what the headers give now.
//!
//! Two files come out, both under `bindgen/src/`:
//! - `bindings.rs`: bindgen's translation of `bindgen/wrapper.h`;
//! - `symbols.rs`: the symbol version of every function the agent resolves, read from the
//!   library that belongs to those headers, so that a newer libfabric serves the structure
//!   layout the bindings describe.
//!
//! Usage: `cargo run -p rayefa-libfabric-generate [-- --check] [-- --library PATH]`.
//! Needs libclang (`libclang-dev`), `libfabric-dev`, a C compiler driver (`cc`) and `objdump`.

mod symbols;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};

use bindgen::callbacks::{IntKind, ParseCallbacks};
use bindgen::{EnumVariation, RustEdition, RustTarget};

/// The functions the agent resolves with `dlvsym`; each has a pointer type in `wrapper.h`.
const RESOLVED: [&str; 7] = [
    "fi_version",
    "fi_getinfo",
    "fi_freeinfo",
    "fi_dupinfo",
    "fi_strerror",
    "fi_tostr_r",
    "fi_fabric",
];

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("rayefa-libfabric-generate: {message}");
            ExitCode::from(2)
        }
    }
}

struct Options {
    check: bool,
    library: Option<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        check: false,
        library: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => options.check = true,
            "--library" => {
                let path = args.next().ok_or("--library needs a path")?;
                options.library = Some(PathBuf::from(path));
            }
            "-h" | "--help" => {
                return Err(
                    "usage: rayefa-libfabric-generate [--check] [--library PATH]".to_owned(),
                );
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

fn run() -> Result<ExitCode, String> {
    let options = options()?;
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the generator is not inside bindgen/")?
        .to_path_buf();
    let headers = Arc::new(Mutex::new(HeaderFacts::default()));
    let bindings = bindgen::Builder::default()
        .header(crate_dir.join("wrapper.h").display().to_string())
        .parse_callbacks(Box::new(Collect(headers.clone())))
        // The workspace's edition; 1.85 is the first Rust that has it.
        .rust_target(RustTarget::stable(85, 0).map_err(|e| format!("rust target: {e}"))?)
        .rust_edition(RustEdition::Edition2024)
        .wrap_unsafe_ops(true)
        .allowlist_type("fi_info")
        .allowlist_type("fi_.*_fn")
        .allowlist_type("fi_type")
        .allowlist_type("fi_mr_mode")
        // The ping-pong's objects and their tables of operations: the headers' inline
        // functions (fi_domain, fi_endpoint, fi_send, fi_cq_read, ...) call through these, and
        // so does the agent.
        .allowlist_type("fid_fabric|fid_domain|fid_ep|fid_av|fid_cq|fid_mr")
        .allowlist_type("fi_av_attr|fi_cq_attr|fi_cq_msg_entry|fi_cq_err_entry|fi_context2")
        .allowlist_var("FI_.*")
        // Functions are never declared as `extern` items: nothing links libfabric.
        .blocklist_function(".*")
        // A newer library may return enumerators these headers do not know; Rust enums would
        // make such a value undefined behaviour, integer constants do not.
        .default_enum_style(EnumVariation::ModuleConsts)
        // Anonymous enumerations (FI_ENABLE, FI_EAVAIL, ...) have no stable module name:
        // their enumerators become plain constants, matched by enumerator name.
        .constified_enum("FI_.*")
        .derive_debug(true)
        .derive_default(false)
        .generate_comments(false)
        .layout_tests(true)
        .generate()
        .map_err(|e| {
            format!(
                "bindgen failed on {}: {e}",
                crate_dir.join("wrapper.h").display()
            )
        })?;
    let facts = headers
        .lock()
        .map_err(|_| "a bindgen callback panicked")?
        .clone();
    let version = facts.version()?;
    facts.check_read_fabric_h()?;

    let library = match options.library {
        Some(path) => path,
        None => development_library()?,
    };
    let versions = symbols::default_versions(&library, &RESOLVED)?;

    let library_file = std::fs::canonicalize(&library)
        .map_err(|e| format!("cannot resolve {}: {e}", library.display()))?;
    let library_name = library_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Only file names, not folders, so that the check passes on any architecture's layout.
    let provenance = format!(
        "// @generated by `cargo run -p rayefa-libfabric-generate`; do not edit.\n\
         // libfabric headers {version} (<rdma/fabric.h>); symbol versions from {library_name}.\n"
    );
    let outputs = [
        (
            crate_dir.join("src/bindings.rs"),
            format!("{provenance}\n{}", bindings),
        ),
        (
            crate_dir.join("src/symbols.rs"),
            format!("{provenance}\n{}", symbols::render(&versions, &version)),
        ),
    ];

    if options.check {
        let stale: Vec<String> = outputs
            .iter()
            .filter(|(path, text)| std::fs::read_to_string(path).ok().as_deref() != Some(text))
            .map(|(path, _)| path.display().to_string())
            .collect();
        if stale.is_empty() {
            println!("bindings are current (libfabric headers {version})");
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "stale: {}; regenerate with `cargo run -p rayefa-libfabric-generate` and commit",
            stale.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    for (path, text) in &outputs {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// What the headers said about themselves while bindgen read them.
#[derive(Debug, Clone, Default)]
struct HeaderFacts {
    major: Option<i64>,
    minor: Option<i64>,
    revision: Option<i64>,
    included: BTreeSet<PathBuf>,
}

impl HeaderFacts {
    fn version(&self) -> Result<String, String> {
        match (self.major, self.minor, self.revision) {
            (Some(major), Some(minor), Some(revision)) => Ok(format!("{major}.{minor}.{revision}")),
            _ => Err("rdma/fabric.h defines no FI_MAJOR/MINOR/REVISION_VERSION".to_owned()),
        }
    }

    /// Fails unless the real `rdma/fabric.h` was read (and not, say, an empty stand-in).
    fn check_read_fabric_h(&self) -> Result<(), String> {
        if self.included.iter().any(|p| p.ends_with("rdma/fabric.h")) {
            Ok(())
        } else {
            Err("rdma/fabric.h was not read: is libfabric-dev installed?".to_owned())
        }
    }
}

#[derive(Debug)]
struct Collect(Arc<Mutex<HeaderFacts>>);

impl ParseCallbacks for Collect {
    fn int_macro(&self, name: &str, value: i64) -> Option<IntKind> {
        if let Ok(mut facts) = self.0.lock() {
            match name {
                "FI_MAJOR_VERSION" => facts.major = Some(value),
                "FI_MINOR_VERSION" => facts.minor = Some(value),
                "FI_REVISION_VERSION" => facts.revision = Some(value),
                _ => {}
            }
        }
        None
    }

    fn include_file(&self, filename: &str) {
        if let Ok(mut facts) = self.0.lock() {
            facts.included.insert(PathBuf::from(filename));
        }
    }
}

/// The development symlink `libfabric.so` that libfabric-dev installs beside the headers: the
/// library of the same release, whose default symbol versions match them.
fn development_library() -> Result<PathBuf, String> {
    let output = Command::new("cc")
        .arg("-print-file-name=libfabric.so")
        .output()
        .map_err(|e| format!("cannot run `cc -print-file-name=libfabric.so`: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if path.is_absolute() && path.exists() {
        Ok(path)
    } else {
        Err(
            "`cc` cannot find libfabric.so: is libfabric-dev installed? (or pass --library)"
                .to_owned(),
        )
    }
}
