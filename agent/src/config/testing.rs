//! Settings for unit tests, from TOML text, through the same parsing and validation as the
//! agent's own files.

use std::path::Path;

use super::load::{ConfigSource, parse};
use super::{Settings, validate};

impl Settings {
    /// Parses and validates `toml` as if it were the only configuration file.
    ///
    /// # Panics
    /// When the text does not parse or validate: a test's own configuration is wrong.
    pub(crate) fn for_tests(toml: &str) -> Self {
        let path = Path::new("/etc/rayefa/agent.toml");
        let layer = parse(path, toml).expect("test configuration parses");
        let source = ConfigSource {
            path: path.to_owned(),
            text: toml.to_owned(),
            layer,
        };
        validate::validate(&[source]).expect("test configuration validates")
    }
}
