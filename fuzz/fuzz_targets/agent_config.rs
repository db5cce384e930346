//! The agent's configuration loader (TOML main file + one drop-in, merged, validated) on any
//! bytes. The input is the main file, or, when it holds a line `#%% drop-in`, the main file
//! up to that line and the drop-in after it.
//!
//! Properties: nothing panics; a refused configuration's message names one of the files.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rayefa_agent::harness::fuzz::{DROP_IN_FILE, MAIN_FILE, load_agent_config};

/// Separates the main file from the drop-in in an input (a TOML comment, so that seeds stay
/// valid TOML as a whole).
const SPLIT: &[u8] = b"\n#%% drop-in\n";

static SCRATCH: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    tempfile::Builder::new()
        .prefix("rayefa-fuzz-agent-")
        .tempdir()
        .expect("scratch directory")
});

fuzz_target!(|data: &[u8]| {
    let (main, drop_in) = match data.windows(SPLIT.len()).position(|w| w == SPLIT) {
        Some(at) => (&data[..at], Some(&data[at + SPLIT.len()..])),
        None => (data, None),
    };
    let loaded =
        load_agent_config(SCRATCH.path(), main, drop_in).expect("scratch directory writable");
    if let Err(message) = loaded {
        let names_a_file = message.contains(MAIN_FILE)
            || message.contains(DROP_IN_FILE)
            || message.starts_with("missing required value");
        assert!(
            names_a_file,
            "a configuration error names no file: {message}"
        );
    }
});
