//! The verdict on the sysfs fixture trees under `agent/tests/fixtures/efa/`, with the child's
//! answer scripted from each scenario's `probe.json` (no EFA hardware exists here).

use std::path::PathBuf;
use std::sync::Arc;

use rayefa_wire::{Ec2Facts, EfaReport, ExpectedFrom, FabricProbe, Role};

use super::*;
use crate::facts::Ec2Lookup;
use crate::host::HostRoot;
use crate::host::scripted::ScriptedRunner;
use crate::steps::testing::{self, TestContext};

const AGENT: &str = "/usr/bin/rayefa-agent";
const PROBE: &str = "/usr/bin/rayefa-agent probe-efa --json --provider efa";

fn fixture(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/efa")
        .join(scenario)
}

/// The scenario's recorded answer, as the child prints it: one line of JSON.
fn answer(scenario: &str) -> FabricProbe {
    let text = std::fs::read_to_string(fixture(scenario).join("probe.json")).expect("probe.json");
    serde_json::from_str(&text).expect("probe.json parses")
}

fn line(probe: &FabricProbe) -> String {
    format!("{}\n", serde_json::to_string(probe).expect("serialises"))
}

struct Scenario {
    test: TestContext,
    runner: Arc<ScriptedRunner>,
}

/// The step's context on `scenario`'s tree, with `efa_toml` as the `[efa]` table and the
/// child answering `output` with `code`.
fn scenario(scenario: &str, efa_toml: &str, code: i32, output: &str) -> Scenario {
    let runner = Arc::new(ScriptedRunner::new().answer(PROBE, code, output));
    let settings = testing::settings(Role::Worker, &format!("[efa]\n{efa_toml}"));
    let test = testing::context(
        PROBE_EFA,
        HostRoot::new(fixture(scenario)),
        runner.clone(),
        settings,
    );
    Scenario { test, runner }
}

/// The scenario with its own recorded answer.
fn recorded(name: &str, efa_toml: &str) -> Scenario {
    let probe = answer(name);
    scenario(name, efa_toml, probe.outcome.exit_code(), &line(&probe))
}

fn with_metadata(mut s: Scenario, interface_types: &[&str]) -> Scenario {
    s.test.ctx.ec2 = Ec2Lookup::known(Some(Ec2Facts {
        instance_id: "i-0123456789abcdef0".into(),
        instance_type: "c7i.48xlarge".into(),
        availability_zone: "ap-northeast-2a".into(),
        private_ip: Some("10.0.1.10".into()),
        interface_types: interface_types.iter().map(|t| (*t).to_owned()).collect(),
        ..Ec2Facts::default()
    }));
    s
}

/// The report the step left in status, whether it succeeded or failed.
fn report(s: &Scenario) -> EfaReport {
    let detail = s.test.board.snapshot().steps[0]
        .detail
        .clone()
        .expect("the step reports its findings");
    serde_json::from_value(detail).expect("detail is an EfaReport")
}

async fn run(s: &Scenario) -> Result<Outcome, StepError> {
    ProbeEfa::with_program(AGENT).run(&s.test.ctx).await
}

#[tokio::test]
async fn one_efa_device_with_its_entries_passes() {
    let s = recorded("one-efa", "mode = \"required\"\n");
    let outcome = run(&s).await.expect("passes");
    let Outcome::Done(Some(detail)) = outcome else {
        panic!("unexpected {outcome:?}");
    };
    let report: EfaReport = serde_json::from_value(detail).expect("report");
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.expected_from, ExpectedFrom::Unknown);
    assert_eq!(report.pci_devices.len(), 1);
    assert_eq!(report.pci_devices[0].address, "0000:00:06.0");
    assert_eq!(report.rdma_devices, ["rdmap0s6"]);
    assert!(report.module_loaded);
    assert_eq!(report.fabric_devices.len(), 1);
    assert_eq!(
        (report.fabric_devices[0].rdm, report.fabric_devices[0].dgram),
        (2, 1)
    );
    assert_eq!(s.runner.calls(), [PROBE]);
}

#[tokio::test]
async fn four_devices_pass_when_four_are_configured() {
    let s = recorded("four-efa", "expected_interfaces = 4\n");
    run(&s).await.expect("passes");
    let report = report(&s);
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.expected_interfaces, Some(4));
    assert_eq!(report.expected_from, ExpectedFrom::Configuration);
    assert_eq!(report.rdma_devices.len(), 4);
    assert!(
        report
            .fabric_devices
            .iter()
            .all(|d| d.rdm == 2 && d.dgram == 1)
    );
}

#[tokio::test]
async fn an_interface_count_mismatch_fails_for_good() {
    let s = recorded("four-efa", "expected_interfaces = 2\n");
    let err = run(&s).await.expect_err("mismatch");
    assert!(matches!(err, StepError::Fatal(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("2 EFA interfaces expected (efa.expected_interfaces), 4 EFA PCI devices"),
        "{message}"
    );
    let report = report(&s);
    assert!(!report.ok);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

#[tokio::test]
async fn the_metadata_count_is_used_when_none_is_configured() {
    let s = with_metadata(recorded("one-efa", ""), &["interface", "efa", "efa-only"]);
    let err = run(&s).await.expect_err("metadata says two");
    assert!(
        err.to_string()
            .contains("2 EFA interfaces expected (instance metadata), 1 EFA PCI"),
        "{err}"
    );
    assert_eq!(report(&s).expected_from, ExpectedFrom::InstanceMetadata);
}

#[tokio::test]
async fn metadata_without_interface_types_is_no_evidence() {
    let s = with_metadata(recorded("one-efa", ""), &["interface", "interface"]);
    run(&s)
        .await
        .expect("the PCI devices are taken as the truth");
    assert_eq!(report(&s).expected_from, ExpectedFrom::Unknown);
}

#[tokio::test]
async fn no_efa_device_fails_when_efa_is_required() {
    let s = recorded("no-efa", "mode = \"required\"\n");
    let err = run(&s).await.expect_err("no device");
    assert!(matches!(err, StepError::Fatal(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("no EFA interface attached"),
        "{err}"
    );
    let report = report(&s);
    assert!(report.pci_devices.is_empty() && !report.module_loaded);
    // libfabric's -61 follows from the missing device and is not reported as a second cause.
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.probe.is_some_and(|p| p.outcome.exit_code() == 1));
}

#[tokio::test]
async fn auto_mode_skips_a_node_without_efa_and_runs_nothing() {
    let s = recorded("no-efa", "mode = \"auto\"\n");
    let wanted = ProbeEfa::with_program(AGENT).wanted(&s.test.ctx).await;
    assert_eq!(wanted, Wanted::Skip("no EFA interface".into()));
    assert!(s.runner.calls().is_empty());
}

#[tokio::test]
async fn auto_mode_runs_when_interfaces_are_expected_but_absent() {
    let s = recorded("no-efa", "mode = \"auto\"\nexpected_interfaces = 1\n");
    let step = ProbeEfa::with_program(AGENT);
    assert_eq!(step.wanted(&s.test.ctx).await, Wanted::Yes);
    let err = run(&s).await.expect_err("expected one, found none");
    assert!(
        err.to_string()
            .contains("1 expected (efa.expected_interfaces)"),
        "{err}"
    );
}

#[tokio::test]
async fn auto_mode_runs_on_a_node_with_an_efa_device() {
    let s = recorded("one-efa", "mode = \"auto\"\n");
    assert_eq!(
        ProbeEfa::with_program(AGENT).wanted(&s.test.ctx).await,
        Wanted::Yes
    );
}

#[tokio::test]
async fn off_skips_whatever_the_hardware() {
    let s = recorded("four-efa", "mode = \"off\"\n");
    let wanted = ProbeEfa::with_program(AGENT).wanted(&s.test.ctx).await;
    assert_eq!(wanted, Wanted::Skip("EFA turned off".into()));
}

#[tokio::test]
async fn a_missing_module_names_the_pending_reboot() {
    let s = recorded("module-missing", "");
    let err = run(&s).await.expect_err("module missing");
    assert!(matches!(err, StepError::Fatal(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("efa kernel module is not loaded"),
        "{message}"
    );
    assert!(message.contains("reboot"), "{message}");
    assert!(message.contains("provider efa absent"), "{message}");
}

#[tokio::test]
async fn a_device_without_rdm_entries_is_worth_another_attempt() {
    let mut probe = answer("four-efa");
    probe
        .entries
        .retain(|e| !e.domain.starts_with("rdmap32s29"));
    let s = scenario("four-efa", "expected_interfaces = 4\n", 0, &line(&probe));
    let err = run(&s).await.expect_err("one device missing");
    assert!(matches!(err, StepError::Transient(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("RDM endpoints on 3 of 4 EFA devices"),
        "{err}"
    );
    assert_eq!(report(&s).fabric_devices.len(), 3);
}

#[tokio::test]
async fn a_missing_libfabric_points_at_the_installer() {
    let probe = FabricProbe {
        library: None,
        outcome: rayefa_wire::ProbeOutcome::LibraryMissing {
            message: "libfabric not found; tried libfabric.so.1 (cannot open)".into(),
        },
        entries: Vec::new(),
        ..answer("one-efa")
    };
    let s = scenario("one-efa", "", 2, &line(&probe));
    let err = run(&s).await.expect_err("no library");
    assert!(matches!(err, StepError::Fatal(_)), "{err:?}");
    assert!(
        err.to_string().contains("has the EFA installer run?"),
        "{err}"
    );
}

#[tokio::test]
async fn a_child_without_an_answer_is_retryable_and_its_output_shown() {
    let s = scenario("one-efa", "", 139, "Segmentation fault\n");
    let err = run(&s).await.expect_err("no answer");
    assert!(matches!(err, StepError::Transient(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("exited 139 without a JSON answer: Segmentation fault"),
        "{message}"
    );
    assert!(report(&s).probe.is_none());
}

#[tokio::test]
async fn libfabric_log_lines_around_the_answer_are_ignored() {
    let probe = answer("one-efa");
    let output = format!(
        "libfabric:1234:1700000000::core:core:ofi_hmem_init():418<warn> hmem disabled\n{}",
        line(&probe)
    );
    let s = scenario("one-efa", "", 0, &output);
    run(&s).await.expect("the JSON line is found");
}

#[tokio::test]
async fn a_configured_library_is_passed_through_the_root() {
    let probe = answer("one-efa");
    let s = scenario(
        "one-efa",
        "libfabric = \"/opt/custom/lib/libfabric.so.1\"\n",
        0,
        &line(&probe),
    );
    run(&s).await.expect("passes");
    let lib = fixture("one-efa").join("opt/custom/lib/libfabric.so.1");
    assert_eq!(
        s.runner.calls(),
        [format!("{PROBE} --lib {}", lib.display())]
    );
}

#[test]
fn the_plan_names_the_child_and_the_expectation() {
    let settings = testing::settings(Role::Worker, "[efa]\nexpected_interfaces = 2\n");
    let plan = ProbeEfa::new().plan(&settings).join("\n");
    assert!(
        plan.contains("rayefa-agent probe-efa --json --provider efa"),
        "{plan}"
    );
    assert!(plan.contains("2 EFA interfaces"), "{plan}");
}
