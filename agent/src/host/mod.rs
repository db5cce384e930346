//! The agent's seams to the machine: a root under which every host path is read or written,
//! a runner through which every process is started, and the instance metadata service at the
//! endpoint the configuration names.

mod command;
mod imds;
mod leftovers;
mod root;
#[cfg(test)]
pub(crate) mod scripted;

pub(crate) use command::{
    ChildRegistry, CommandOutcome, CommandRunner, CommandSpec, OutputSink, SystemRunner, quote,
};
pub(crate) use imds::Imds;
pub(crate) use leftovers::GroupRecords;
pub(crate) use root::HostRoot;

/// The value of `key` in an os-release file, unquoted.
pub(crate) fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}
