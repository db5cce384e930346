//! Where the node's virtualenv is, for the steps that create it and the steps that use it.

use std::path::PathBuf;

use crate::engine::StepContext;

/// The virtualenv's folder on this machine (the configured host path under the root).
pub(crate) fn dir(ctx: &StepContext) -> PathBuf {
    ctx.root.path(&ctx.settings.packages.virtualenv)
}

/// The virtualenv's `bin` folder, where `python`, `pip` and `ray` are.
pub(crate) fn bin_dir(ctx: &StepContext) -> PathBuf {
    dir(ctx).join("bin")
}

/// The virtualenv's interpreter.
pub(crate) fn python(ctx: &StepContext) -> PathBuf {
    bin_dir(ctx).join("python")
}
