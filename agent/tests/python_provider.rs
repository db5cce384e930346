//! The node provider Ray's autoscaler loads on the head (`agent/python/rayefa_autoscaler.py`,
//! embedded in the agent) is tested with Python's unittest against a fake `rayefa` at the
//! process seam; this runs that suite with the machine's `python3` (Ray is not needed).

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_node_provider_passes_its_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let run = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
