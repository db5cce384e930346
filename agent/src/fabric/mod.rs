//! libfabric through FFI: the one module that calls into `rayefa-libfabric-sys`.
//!
//! libfabric is opened at run time, never linked, because the agent starts before the EFA
//! installer has put it on the node. Each function is resolved with `dlvsym` at the symbol
//! version of the headers the bindings came from, so that a newer libfabric (2.x) hands back
//! the structure layout the bindings describe. Everything libfabric returns is copied into
//! owned values and freed before the call returns. libfabric reads its providers once per
//! process, so a probe belongs in a fresh process (`rayefa-agent probe-efa`).

mod endpoint;
mod info;
mod library;
pub(crate) mod pingpong;

use std::fmt;
use std::path::Path;

use rayefa_libfabric_sys as sys;
use rayefa_wire::{FabricLibrary, FabricProbe, FabricQuery, ProbeOutcome};

pub(crate) use library::Libfabric;

/// One place libfabric was looked for, and why it did not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadAttempt {
    pub(crate) path: String,
    pub(crate) reason: String,
}

/// Why a probe found nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FabricError {
    /// No candidate could be opened.
    #[error("libfabric not found; tried {}", Tried(.tried))]
    NotFound { tried: Vec<LoadAttempt> },
    /// The library lacks a function at the version the bindings need.
    #[error(
        "{library} has no `{symbol}@{version}` (too old, or built without symbol versions): {reason}"
    )]
    SymbolMissing {
        library: String,
        symbol: String,
        version: String,
        reason: String,
    },
    /// `-FI_ENODATA`: no provider matches the query.
    #[error("fi_getinfo: -{} ({text}){}", sys::FI_ENODATA, ProviderSuffix(.provider.as_deref()))]
    NoProvider {
        provider: Option<String>,
        text: String,
    },
    /// A call answered another fi_errno.
    #[error("{function}: {code} ({text})")]
    Call {
        function: &'static str,
        /// The negative fi_errno the call returned.
        code: i32,
        /// `fi_strerror`'s text for it.
        text: String,
    },
    /// libfabric or the C allocator could not allocate.
    #[error("{0}: out of memory")]
    OutOfMemory(&'static str),
    /// The provider leaves an operation the ping-pong needs out of its tables.
    #[error("the provider does not implement {0}")]
    Unsupported(&'static str),
    /// `fi_av_insert` took no address from these bytes.
    #[error("not a fabric address of this provider: {0}")]
    BadAddress(String),
    /// An operation was posted on a buffer whose previous one had not completed.
    #[error("a message buffer was reused before its operation completed")]
    Busy,
    /// The deadline passed with no completion.
    #[error("no completion of {waiting} before the deadline")]
    Timeout { waiting: &'static str },
    /// An operation completed with an error.
    #[error("completion error {code} ({text}){}", if provider.is_empty() { String::new() } else { format!(": {provider}") })]
    Completion {
        /// The negative fi_errno.
        code: i32,
        /// `fi_strerror`'s text for it.
        text: String,
        /// The provider's own words (`fi_cq_strerror`), possibly empty.
        provider: String,
    },
}

struct Tried<'a>(&'a [LoadAttempt]);

impl fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, attempt) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} ({})", attempt.path, attempt.reason)?;
        }
        Ok(())
    }
}

struct ProviderSuffix<'a>(Option<&'a str>);

impl fmt::Display for ProviderSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(provider) => write!(f, ": no provider `{provider}` here"),
            None => f.write_str(": no provider here"),
        }
    }
}

impl FabricError {
    /// The outcome a probe that ended with this error reports.
    fn outcome(&self) -> ProbeOutcome {
        let message = self.to_string();
        match self {
            FabricError::NotFound { .. } => ProbeOutcome::LibraryMissing { message },
            FabricError::NoProvider { .. } => ProbeOutcome::NoProvider { message },
            FabricError::Call { code, .. } => ProbeOutcome::Failed {
                code: Some(*code),
                message,
            },
            FabricError::Completion { code, .. } => ProbeOutcome::Failed {
                code: Some(*code),
                message,
            },
            FabricError::SymbolMissing { .. }
            | FabricError::OutOfMemory(_)
            | FabricError::Unsupported(_)
            | FabricError::BadAddress(_)
            | FabricError::Busy
            | FabricError::Timeout { .. } => ProbeOutcome::Failed {
                code: None,
                message,
            },
        }
    }
}

/// Loads libfabric (`library`, or the search order) and runs `fi_getinfo` for `query`; every
/// way it can end is in the answer.
pub(crate) fn probe(library: Option<&Path>, query: FabricQuery) -> FabricProbe {
    let lib = match Libfabric::load(library) {
        Ok(lib) => lib,
        Err(err) => {
            return FabricProbe {
                query,
                library: None,
                outcome: err.outcome(),
                entries: Vec::new(),
            };
        }
    };
    let version = |v: u32| format!("{}.{}", sys::FI_MAJOR(v), sys::FI_MINOR(v));
    let described = FabricLibrary {
        path: lib.path().to_owned(),
        file: lib.file().map(|f| f.display().to_string()),
        version: version(lib.version()),
        api_version: version(lib.api_version()),
    };
    let (outcome, entries) = match lib.getinfo(&query) {
        Ok(entries) => (ProbeOutcome::Found, entries),
        Err(err) => (err.outcome(), Vec::new()),
    };
    FabricProbe {
        query,
        library: Some(described),
        outcome,
        entries,
    }
}

#[cfg(test)]
mod tests {
    //! Against the machine's real libfabric (Debian's libfabric1 1.17 in CI).

    use rayefa_wire::EndpointType;

    use super::*;

    fn query(provider: &str, endpoint_type: Option<EndpointType>) -> FabricQuery {
        FabricQuery {
            provider: Some(provider.to_owned()),
            endpoint_type,
        }
    }

    #[test]
    fn the_system_library_loads_with_the_headers_symbol_versions() {
        let lib = Libfabric::load(None).expect("libfabric1 is installed");
        assert!(lib.path().ends_with("libfabric.so.1"), "{}", lib.path());
        assert!(lib.file().is_some_and(Path::is_absolute));
        assert!(lib.version() >= sys::FI_VERSION(1, 17));
        assert_eq!(
            lib.api_version(),
            sys::HEADER_API_VERSION.min(lib.version())
        );
        assert_eq!(lib.strerror(sys::FI_ENODATA as i32), "No data available");
    }

    #[test]
    fn tcp_entries_are_copied_out_whole() {
        let probe = probe(None, query("tcp", None));
        assert_eq!(probe.outcome, ProbeOutcome::Found, "{probe:?}");
        assert!(!probe.entries.is_empty());
        for entry in &probe.entries {
            assert_eq!(entry.core_provider(), "tcp", "{entry:?}");
            assert!(
                !entry.fabric.is_empty() && !entry.domain.is_empty(),
                "{entry:?}"
            );
            assert!(entry.protocol.starts_with("FI_PROTO_"), "{entry:?}");
            assert!(
                entry.capabilities.iter().any(|c| c == "FI_MSG"),
                "{entry:?}"
            );
            assert!(entry.address_format.starts_with("FI_"), "{entry:?}");
        }
        // fi_info lists layered RDM (tcp;ofi_rxm) and native MSG endpoints for tcp.
        assert!(
            probe
                .entries
                .iter()
                .any(|e| e.endpoint_type == EndpointType::Rdm)
        );
        assert!(
            probe
                .entries
                .iter()
                .any(|e| e.endpoint_type == EndpointType::Msg)
        );
        let library = probe.library.expect("loaded");
        assert_eq!(library.api_version, "1.17");
    }

    #[test]
    fn the_endpoint_type_filter_reaches_libfabric() {
        let probe = probe(None, query("tcp", Some(EndpointType::Msg)));
        assert_eq!(probe.outcome, ProbeOutcome::Found, "{probe:?}");
        assert!(
            probe
                .entries
                .iter()
                .all(|e| e.endpoint_type == EndpointType::Msg)
        );
    }

    #[test]
    fn an_absent_provider_is_enodata() {
        let probe = probe(None, query("efa", None));
        assert_eq!(probe.outcome.exit_code(), 1, "{probe:?}");
        let message = probe.outcome.message().expect("message");
        assert!(
            message.contains("-61") && message.contains("`efa`"),
            "{message}"
        );
        assert!(probe.entries.is_empty());
    }

    #[test]
    fn an_explicit_path_is_the_only_one_tried() {
        let missing = Path::new("/nonexistent/libfabric.so.1");
        let err = Libfabric::load(Some(missing)).expect_err("no such file");
        let FabricError::NotFound { tried } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(tried.len(), 1);
        assert_eq!(tried[0].path, missing.display().to_string());
        assert!(err.to_string().contains("No such file"), "{err}");
    }

    #[test]
    fn a_library_without_the_versioned_symbols_is_refused() {
        // libc is a real shared object that exports no fi_* symbols at all.
        let err = Libfabric::load(Some(Path::new("libc.so.6"))).expect_err("not libfabric");
        assert!(
            matches!(&err, FabricError::SymbolMissing { symbol, version, .. }
                if symbol == "fi_version" && version == "FABRIC_1.0"),
            "{err:?}"
        );
    }
}
