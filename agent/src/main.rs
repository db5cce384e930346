//! `rayefa-agent`: bootstraps a Ray node with EFA and serves its readiness.

mod clock;
mod config;
mod engine;
mod facts;
mod host;
mod steps;

fn main() {}
