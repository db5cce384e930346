//! The public surface for benchmarks (`benches/`): a few entry points into code that is
//! otherwise `pub(crate)`. Not an API: nothing outside this repository should depend on it.
#![doc(hidden)]
pub mod bench_poll;
