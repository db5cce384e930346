//! A local-provider cluster file in a scratch directory, driven through the real `rayefa`
//! binary and taken down when the test ends however it ends.
//!
//! The agent binary must be built first (`cargo build -p rayefa-agent`, which CI's script
//! does); `rayefa` finds it next to itself in `target/<profile>/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A cluster file whose `rayefa.local.cluster_dir` is `state`, beside the file.
pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
}

impl LocalCluster {
    /// Writes `text` as the cluster file of a fresh scratch directory.
    pub fn write(text: &str) -> Self {
        let agent = Path::new(env!("CARGO_BIN_EXE_rayefa")).with_file_name("rayefa-agent");
        assert!(
            agent.is_file(),
            "{} is missing: build it first with `cargo build -p rayefa-agent`",
            agent.display()
        );
        let dir = tempfile::tempdir().expect("scratch directory");
        let file = dir.path().join("cluster.yaml");
        std::fs::write(&file, text).expect("cluster file");
        Self { dir, file }
    }

    /// `rayefa ARGS FILE`.
    pub fn rayefa(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rayefa"))
            .args(args)
            .arg(&self.file)
            .env_remove("RAYEFA_AGENT")
            .output()
            .expect("rayefa runs")
    }

    /// Runs `rayefa ARGS FILE --output json`: its exit code and document.
    pub fn json(&self, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let output = self.rayefa(&all);
        let doc = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}):\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code(), doc)
    }

    /// Node `id`'s directory under the cluster directory.
    pub fn node_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join("state/nodes").join(id)
    }

    /// The pid recorded for node `id`.
    pub fn pid(&self, id: &str) -> i32 {
        let record = std::fs::read_to_string(self.node_dir(id).join("node.json")).expect("record");
        let record: serde_json::Value = serde_json::from_str(&record).expect("json");
        i32::try_from(record["pid"].as_i64().expect("pid")).expect("pid fits")
    }
}

/// Processes whose environment names a directory below `dir` as their node.
pub fn processes_of(dir: &Path) -> Vec<String> {
    let wanted = format!("RAYEFA_LOCAL_NODE={}", dir.display());
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|var| var.starts_with(wanted.as_bytes()))
            })
        })
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect()
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.rayefa(&["down", "-q"]);
    }
}
