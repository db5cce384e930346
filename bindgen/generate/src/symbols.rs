//! The symbol versions of libfabric's functions, read from a library's dynamic symbol table.
//!
//! libfabric versions `fi_getinfo`, `fi_dupinfo` and `fi_freeinfo` (`FABRIC_1.0` … `1.3` in
//! 1.17, up to `FABRIC_1.8` in 2.x): each version takes and returns the `struct fi_info` layout
//! of its time. The default version (`@@`, shown by objdump without parentheses) of the
//! library that belongs to the headers is the one whose layout the bindings describe.

use std::path::Path;
use std::process::Command;

/// `(function, default version)` for each of `names`, from `objdump -T` on `library`.
pub(crate) fn default_versions(
    library: &Path,
    names: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let output = Command::new("objdump")
        .arg("-T")
        .arg("--wide")
        .arg(library)
        .output()
        .map_err(|e| format!("cannot run objdump (binutils): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "objdump -T {} failed: {}",
            library.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let table = String::from_utf8_lossy(&output.stdout);
    names
        .iter()
        .map(|name| {
            default_version(&table, name)
                .map(|version| ((*name).to_owned(), version))
                .ok_or_else(|| format!("{} has no default version of `{name}`", library.display()))
        })
        .collect()
}

/// The default version of `name` in an `objdump -T` listing. Lines look like
/// `000000000001de50 g    DF .text  0000000000000b86  FABRIC_1.3  fi_getinfo`; hidden
/// (non-default) versions are in parentheses.
fn default_version(table: &str, name: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (symbol, version) = match fields.as_slice() {
            [.., version, symbol] => (*symbol, *version),
            _ => return None,
        };
        let defined = fields.contains(&"DF") && !fields.contains(&"*UND*");
        (defined && symbol == name && version.starts_with("FABRIC_")).then(|| version.to_owned())
    })
}

/// `symbols.rs`: one [`Symbol`] constant per function.
pub(crate) fn render(versions: &[(String, String)], header_version: &str) -> String {
    let mut text = format!(
        "//! The symbol version of each function the agent resolves, as libfabric {header_version}\n\
         //! (the release of the headers) exports it by default.\n\n\
         use crate::Symbol;\n"
    );
    for (name, version) in versions {
        text.push_str(&format!(
            "\n/// `{name}@{version}`.\n\
             pub const {upper}: Symbol = Symbol {{\n    name: c\"{name}\",\n    version: c\"{version}\",\n}};\n",
            upper = name.to_ascii_uppercase(),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
0000000000023920 g    DF .text\t000000000000006c (FABRIC_1.0) fi_getinfo
000000000001de50 g    DF .text\t0000000000000b86  FABRIC_1.3  fi_getinfo
0000000000023bb0 g    DF .text\t000000000000006c (FABRIC_1.2) fi_getinfo
0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.2.5) free
000000000001f300 g    DF .text\t0000000000000006  FABRIC_1.0  fi_version
";

    #[test]
    fn the_default_version_is_the_one_without_parentheses() {
        assert_eq!(
            default_version(LISTING, "fi_getinfo").as_deref(),
            Some("FABRIC_1.3")
        );
        assert_eq!(
            default_version(LISTING, "fi_version").as_deref(),
            Some("FABRIC_1.0")
        );
        assert_eq!(default_version(LISTING, "free"), None);
        assert_eq!(default_version(LISTING, "fi_fabric"), None);
    }
}
