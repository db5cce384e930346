use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rayefa_wire::Role;

use super::*;
use crate::host::scripted::ScriptedRunner;
use crate::host::{HostRoot, SystemRunner};
use crate::steps::testing::{Recording, TestContext, context, settings};

const UBUNTU: &str = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n";

/// A scratch root with an os-release and a virtualenv whose interpreter exists (it is never
/// run: the scripted runner answers for it).
fn scratch_root(os_release: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("root");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    std::fs::write(root.path().join("etc/os-release"), os_release).expect("os-release");
    let bin = root.path().join("opt/rayefa/venv/bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::write(bin.join("python"), "").expect("python");
    std::fs::write(root.path().join("opt/rayefa/venv/.rayefa-complete"), "").expect("marker");
    root
}

fn report(satisfied: bool) -> String {
    let problems = if satisfied {
        "[]"
    } else {
        r#"["ray is not installed"]"#
    };
    let version = if satisfied { r#""2.49.1""# } else { "null" };
    format!(
        "rayefa-requirements: {{\"problems\": {problems}, \"satisfied\": {satisfied}, \
         \"unverifiable\": [], \"versions\": {{\"ray\": {version}}}}}\n"
    )
}

fn venv_python(root: &Path) -> String {
    root.join("opt/rayefa/venv/bin/python")
        .display()
        .to_string()
}

#[tokio::test]
async fn everything_present_is_already_done_without_running_a_manager() {
    let root = scratch_root(UBUNTU);
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("dpkg-query", 0, "install ok installed")
            .answer(&venv_python(root.path()), 0, &report(true)),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner.clone(),
        settings(Role::Head, "[packages]\npython = [\"ray[default]\"]\n"),
    );
    let Check::Done(Some(detail)) = InstallRay.check(&t.ctx).await.expect("check") else {
        panic!("not done");
    };
    assert_eq!(detail["os_packages"]["manager"], "apt");
    assert_eq!(
        detail["os_packages"]["packages"],
        json!(["python3-venv", "python3-pip"])
    );
    assert_eq!(detail["os_packages"]["installed_now"], json!([]));
    assert_eq!(detail["python_packages"]["ray"], "2.49.1");
    assert_eq!(detail["virtualenv"], "/opt/rayefa/venv");
    let calls = runner.calls();
    assert!(calls.iter().all(|c| !c.starts_with("apt-get")), "{calls:?}");
    assert!(
        calls.last().is_some_and(|c| c.ends_with(" 'ray[default]'")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn installed_os_packages_do_not_wait_for_the_lock() {
    let root = scratch_root(UBUNTU);
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("dpkg-query", 0, "install ok installed")
            .answer(&venv_python(root.path()), 0, &report(true)),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner,
        settings(Role::Head, ""),
    );
    let _held_by_the_efa_installer = t.ctx.package_lock.acquire().await;
    let run = tokio::time::timeout(Duration::from_secs(5), InstallRay.run(&t.ctx));
    let Outcome::Done(Some(detail)) = run.await.expect("no wait").expect("runs") else {
        panic!("no detail");
    };
    assert_eq!(detail["os_packages"]["installed_now"], json!([]));
}

#[tokio::test]
async fn a_missing_os_package_is_installed_under_the_lock() {
    let root = scratch_root(UBUNTU);
    let lists = root.path().join("var/lib/apt/lists");
    std::fs::create_dir_all(&lists).expect("lists");
    std::fs::write(
        lists.join("archive.ubuntu.com_ubuntu_dists_noble_main_binary-amd64_Packages"),
        "",
    )
    .expect("list");
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer(
                "dpkg-query -W '-f=${Status}' python3-venv",
                1,
                "dpkg-query: no packages found matching python3-venv",
            )
            .answer("dpkg-query", 0, "install ok installed")
            .answer("apt-get", 0, "Setting up python3-venv ...\n")
            .answer(&venv_python(root.path()), 0, &report(true)),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner.clone(),
        settings(Role::Head, ""),
    );
    assert_eq!(
        InstallRay.check(&t.ctx).await.expect("check"),
        Check::NotDone
    );

    let held = t.ctx.package_lock.clone();
    let guard = held.acquire().await;
    let run = tokio::spawn({
        let ctx = t.ctx.clone();
        async move { InstallRay.run(&ctx).await }
    });
    tokio::time::timeout(Duration::from_secs(5), async {
        while t.activity().as_deref() != Some("waiting for the package-manager lock") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the step says it waits for the lock");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        runner.calls().iter().all(|c| !c.starts_with("apt-get")),
        "installed without the lock"
    );
    drop(guard);

    let Outcome::Done(Some(detail)) = run.await.expect("joins").expect("runs") else {
        panic!("no detail");
    };
    assert_eq!(
        detail["os_packages"]["installed_now"],
        json!(["python3-venv"])
    );
    let installs: Vec<String> = runner
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("apt-get"))
        .collect();
    assert_eq!(
        installs,
        ["apt-get -o DPkg::Lock::Timeout=300 install -y python3-venv"]
    );
}

#[tokio::test]
async fn no_os_packages_needs_no_os_release_and_pip_runs_with_the_configured_args() {
    let root = tempfile::tempdir().expect("root without os-release");
    let python = venv_python(root.path());
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("python3 -m pip install", 0, "Successfully installed uv\n")
            .answer("python3 -m venv", 0, "")
            .answer(&format!("{python} -B -c"), 0, &report(false))
            .answer(
                &format!("{python} -m pip install"),
                0,
                "Successfully installed ray\n",
            ),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner.clone(),
        settings(
            Role::Head,
            "[packages]\nos = []\npython = [\"ray[default]\"]\npip_args = [\"--no-cache-dir\"]\n",
        ),
    );
    assert_eq!(
        InstallRay.check(&t.ctx).await.expect("check"),
        Check::NotDone
    );
    // The scripted check keeps answering "not met", as a broken index or a wrong marker would.
    let err = InstallRay.run(&t.ctx).await.expect_err("still not met");
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "pip install succeeded but the requirements are still not met: ray is not installed"
    );
    let calls = runner.calls();
    let venv = root.path().join("opt/rayefa/venv");
    // uv first, before the virtualenv, with the interpreter's own pip: its wheel goes into
    // the state directory with the same pip options.
    let uv_dir = root.path().join("var/lib/rayefa/uv");
    assert_eq!(
        calls[0],
        format!(
            "python3 -m pip install --upgrade --target {} --no-cache-dir uv",
            uv_dir.display()
        )
    );
    // Without uv, python makes the virtualenv.
    assert_eq!(calls[1], format!("python3 -m venv {}", venv.display()));
    // The stand-in installs no binary: pip does the work, and the log says why.
    assert_eq!(
        calls[3],
        format!("{python} -m pip install --no-cache-dir 'ray[default]'")
    );
    let pip = &runner.specs()[3];
    assert_eq!(pip.env["PIP_DISABLE_PIP_VERSION_CHECK"], "1");
    assert!(
        t.log_text()
            .contains("installing the Python packages with pip (not uv: the installed"),
        "{}",
        t.log_text()
    );
}

/// Amazon Linux 2023, as its AMI's os-release says.
const AL2023: &str = "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\n";

#[tokio::test]
async fn amazon_linux_2023_gets_python_3_12_and_uv_installs_with_the_pip_options_translated() {
    let root = tempfile::tempdir().expect("root");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    std::fs::write(root.path().join("etc/os-release"), AL2023).expect("os-release");
    // uv from an earlier attempt: the stand-in binary is never run, the script answers for it.
    let uv = root.path().join("var/lib/rayefa/uv/bin/uv");
    std::fs::create_dir_all(uv.parent().expect("bin")).expect("uv bin");
    std::fs::write(&uv, "").expect("uv");
    let uv = uv.display().to_string();
    let python = venv_python(root.path());
    let satisfied = report(true).replacen('{', "{\"ray_version\": \"2.60.0\", ", 1);
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("rpm -q --whatprovides python3-pip", 0, "python3-pip-21.3.1")
            .answer("rpm -q", 1, "no package provides python3.12")
            .answer("dnf install", 0, "Complete!\n")
            .answer(
                &format!("{uv} venv"),
                0,
                "Creating virtual environment with seed packages\n",
            )
            .answer(
                &format!("{uv} --version"),
                0,
                "uv 0.13.9 (x86_64-unknown-linux-gnu)\n",
            )
            .answer(&format!("{uv} pip install"), 0, "Installed 40 packages\n")
            .answer(&format!("{python} -B -c"), 0, &report(false)),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner.clone(),
        settings(
            Role::Head,
            "[packages]\npython = [\"ray==2.60.0\"]\npip_args = [\"--proxy\", \"http://169.254.100.1:8777\", \"--cache-dir\", \"/var/cache/pip\"]\n",
        ),
    );
    // The stand-in check answers "not met" throughout, so the step ends refusing; what it ran
    // on the way is what is checked here.
    let run = tokio::spawn({
        let ctx = t.ctx.clone();
        async move { InstallRay.run(&ctx).await }
    });
    let err = run
        .await
        .expect("joins")
        .expect_err("the stand-in check keeps saying not met");
    assert!(err.to_string().contains("still not met"), "{err}");
    let calls = runner.calls();
    assert!(
        calls.contains(&"dnf install -y python3.12 python3.12-pip".to_owned()),
        "{calls:?}"
    );
    let venv = root.path().join("opt/rayefa/venv");
    // uv makes the virtualenv with Python 3.12, never one of its own, with pip seeded from
    // the configured index through the proxy.
    let made = runner
        .specs()
        .into_iter()
        .find(|s| s.to_string().starts_with(&format!("{uv} venv")))
        .expect("uv venv ran");
    assert_eq!(
        made.to_string(),
        format!(
            "{uv} venv --color never --seed --no-project --python python3.12 \
             --python-preference only-system --cache-dir /var/cache/pip {}",
            venv.display()
        )
    );
    assert_eq!(made.env["HTTPS_PROXY"], "http://169.254.100.1:8777");
    assert_eq!(made.env["UV_PYTHON_DOWNLOADS"], "never");
    assert!(
        calls.iter().all(|c| !c.contains("-m venv")),
        "python made a virtualenv beside uv: {calls:?}"
    );
    let install = runner
        .specs()
        .into_iter()
        .find(|s| s.to_string().starts_with(&format!("{uv} pip install")))
        .expect("uv pip install ran");
    assert_eq!(
        install.to_string(),
        format!(
            "{uv} pip install --color never --python {python} --cache-dir /var/cache/pip ray==2.60.0"
        )
    );
    assert_eq!(install.env["HTTPS_PROXY"], "http://169.254.100.1:8777");
    assert!(
        calls.iter().all(|c| !c.contains("-m pip install")),
        "pip ran beside uv: {calls:?}"
    );
    assert!(
        t.log_text()
            .contains("python3.12 (Amazon Linux 2023's python3 is 3.9"),
        "{}",
        t.log_text()
    );
    assert!(
        t.log_text()
            .contains("installing the Python packages with uv 0.13.9"),
        "{}",
        t.log_text()
    );

    // Once met, the detail names the Ray version, the interpreter and uv.
    let done = ScriptedRunner::new()
        .answer("rpm -q", 0, "installed")
        .answer(&format!("{python} -B -c"), 0, &satisfied);
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        Arc::new(done),
        settings(Role::Head, "[packages]\npython = [\"ray==2.60.0\"]\n"),
    );
    std::fs::create_dir_all(venv.join("bin")).expect("venv bin");
    std::fs::write(venv.join("bin/python"), "").expect("venv python");
    let Check::Done(Some(detail)) = InstallRay.check(&t.ctx).await.expect("check") else {
        panic!("not done");
    };
    assert_eq!(detail["ray_version"], "2.60.0");
    assert_eq!(detail["python_interpreter"], "python3.12");
    assert_eq!(
        detail["os_packages"]["packages"],
        json!(["python3-pip", "python3.12", "python3.12-pip"])
    );
}

/// uv from the shared cache that `--cache-dir` names (no pip run for it), and a virtualenv
/// that uv cannot make (an index without pip to seed it from) made by `python -m venv`.
#[tokio::test]
async fn uv_comes_from_the_shared_cache_and_python_makes_the_virtualenv_when_uv_cannot() {
    let root = tempfile::tempdir().expect("root without os-release");
    let cache = root.path().join("shared-cache");
    let built = root.path().join("built-uv");
    std::fs::write(&built, "a uv binary").expect("uv");
    super::shared_uv::keep(&built, &cache).expect("an earlier node kept uv");
    let uv = root.path().join("var/lib/rayefa/uv/bin/uv");
    let uv = uv.display().to_string();
    let python = venv_python(root.path());
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer(
                &format!("{uv} --version"),
                0,
                "uv 0.13.9 (x86_64-unknown-linux-gnu)\n",
            )
            .answer(
                &format!("{uv} venv"),
                2,
                "error: Because pip was not found in the package registry, we can conclude \
                 that your requirements are unsatisfiable.\n",
            )
            .answer("python3 -m venv", 0, "")
            .answer(&format!("{python} -B -c"), 0, &report(true)),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner.clone(),
        settings(
            Role::Head,
            "[packages]\nos = []\npython = [\"ray\"]\npip_args = [\"--cache-dir\", \"/shared-cache\"]\n",
        ),
    );
    let Outcome::Done(Some(detail)) = InstallRay.run(&t.ctx).await.expect("runs") else {
        panic!("no detail");
    };
    assert_eq!(detail["virtualenv_made_with"], "python3 -m venv");
    assert_eq!(std::fs::read_to_string(&uv).expect("copied"), "a uv binary");
    let calls = runner.calls();
    assert!(
        calls.iter().all(|c| !c.contains("-m pip install")),
        "pip ran for uv although the cache had it: {calls:?}"
    );
    let venv = root.path().join("opt/rayefa/venv");
    assert!(
        calls.contains(&format!("python3 -m venv {}", venv.display())),
        "{calls:?}"
    );
    let log = t.log_text();
    assert!(log.contains("# uv copied from"), "{log}");
    assert!(
        log.contains("# uv venv failed, making the virtualenv with python3 -m venv"),
        "{log}"
    );
    assert!(venv.join(".rayefa-complete").is_file());
}

#[tokio::test]
async fn pip_network_failures_are_retryable_through_the_step() {
    let root = scratch_root(UBUNTU);
    let python = venv_python(root.path());
    let offline = "WARNING: Retrying (Retry(total=0)) after connection broken by \
        'NewConnectionError(... [Errno 101] Network is unreachable)': /simple/ray/\n\
        ERROR: No matching distribution found for ray\n";
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer(&format!("{python} -B -c"), 0, &report(false))
            .answer(&format!("{python} -m pip install"), 1, offline),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner,
        settings(Role::Head, "[packages]\nos = []\npython = [\"ray\"]\n"),
    );
    let err = InstallRay.run(&t.ctx).await.expect_err("offline");
    assert!(err.is_retryable());
    assert_eq!(err.exit_code(), Some(1));
}

/// Builds `name-version-py3-none-any.whl` in `dir` with `requires` (Requires-Dist lines) and
/// the extra `fast`, using the interpreter the agent would use.
fn build_wheel(dir: &Path, name: &str, version: &str, requires: &[&str]) {
    let script = r#"
import base64, hashlib, json, sys, zipfile
directory, name, version, requires = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
info = "%s-%s.dist-info" % (name, version)
metadata = "Metadata-Version: 2.1\nName: %s\nVersion: %s\nProvides-Extra: fast\n" % (name, version)
metadata += "".join("Requires-Dist: %s\n" % r for r in requires)
files = {
    "%s/__init__.py" % name: "VERSION = %r\n" % version,
    info + "/METADATA": metadata,
    info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: rayefa-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
def digest(text):
    raw = hashlib.sha256(text.encode()).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
record = "".join("%s,%s,%d\n" % (p, digest(t), len(t.encode())) for p, t in files.items())
files[info + "/RECORD"] = record + info + "/RECORD,,\n"
with zipfile.ZipFile("%s/%s-%s-py3-none-any.whl" % (directory, name, version), "w") as whl:
    for path, text in files.items():
        whl.writestr(path, text)
"#;
    let requires = serde_json::to_string(requires).expect("json");
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .args([name, version, &requires])
        .status()
        .expect("python3");
    assert!(status.success(), "wheel {name} built");
}

/// A local package index: `alpha 1.0` needs `beta>=2` for its extra `fast`; `beta 2.0`.
fn local_index() -> tempfile::TempDir {
    let index = tempfile::tempdir().expect("index");
    build_wheel(
        index.path(),
        "alpha",
        "1.0",
        &["beta>=2; extra == \"fast\""],
    );
    build_wheel(index.path(), "beta", "2.0", &[]);
    index
}

fn offline_context(
    root: &Path,
    index: &Path,
    python: &str,
) -> (TestContext, Arc<Recording<SystemRunner>>) {
    let runner = Arc::new(Recording::new(SystemRunner::default()));
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root),
        runner.clone(),
        settings(
            Role::Head,
            &format!(
                "[packages]\nos = []\npython = [{python}]\npip_args = [\"--no-index\", \"--find-links\", {:?}]\n",
                index.display().to_string()
            ),
        ),
    );
    (t, runner)
}

fn venv_pip(root: &Path, args: &[&str]) {
    let status = std::process::Command::new(root.join("opt/rayefa/venv/bin/python"))
        .args(["-m", "pip"])
        .args(args)
        .status()
        .expect("pip");
    assert!(status.success());
}

#[tokio::test]
#[ignore = "creates a real virtualenv with pip, about 15 s; run by tests/run"]
async fn a_real_virtualenv_gets_its_packages_from_a_local_index_and_then_is_done() {
    let root = tempfile::tempdir().expect("root");
    let index = local_index();
    let (t, runner) = offline_context(root.path(), index.path(), "\"alpha[fast]==1.0\"");
    assert_eq!(
        InstallRay.check(&t.ctx).await.expect("check"),
        Check::NotDone
    );
    let Outcome::Done(Some(detail)) = InstallRay.run(&t.ctx).await.expect("installs") else {
        panic!("no detail");
    };
    assert_eq!(detail["python_packages"], json!({ "alpha": "1.0" }));
    assert_eq!(detail["os_packages"], Value::Null);
    assert!(root.path().join("opt/rayefa/venv/bin/python").exists());
    assert!(
        runner
            .calls()
            .iter()
            .any(|c| c.contains("-m pip install --no-index"))
    );

    let Check::Done(Some(again)) = InstallRay.check(&t.ctx).await.expect("check") else {
        panic!("a second run has work to do");
    };
    assert_eq!(again["python_packages"], json!({ "alpha": "1.0" }));

    // The extra's dependency is part of the requirement: without it the work is not done.
    venv_pip(root.path(), &["uninstall", "-y", "-q", "beta"]);
    assert_eq!(
        InstallRay.check(&t.ctx).await.expect("check"),
        Check::NotDone
    );
    let (plain, _) = offline_context(root.path(), index.path(), "\"alpha\"");
    assert!(matches!(
        InstallRay.check(&plain.ctx).await.expect("check"),
        Check::Done(_)
    ));
    let (newer, _) = offline_context(root.path(), index.path(), "\"alpha>=2\"");
    assert_eq!(
        InstallRay.check(&newer.ctx).await.expect("check"),
        Check::NotDone
    );

    // A requirement by URL is pip's to judge: installed, but never claimed done by the check.
    let wheel = format!(
        "\"alpha @ file://{}/alpha-1.0-py3-none-any.whl\"",
        index.path().display()
    );
    let (by_url, _) = offline_context(root.path(), index.path(), &wheel);
    assert_eq!(
        InstallRay.check(&by_url.ctx).await.expect("check"),
        Check::NotDone
    );
    let Outcome::Done(Some(detail)) = InstallRay.run(&by_url.ctx).await.expect("pip judges") else {
        panic!("no detail");
    };
    assert_eq!(detail["python_packages"], json!({ "alpha": "1.0" }));

    // A version no index has is final: retrying cannot make it appear.
    let (absent, _) = offline_context(root.path(), index.path(), "\"beta==9.9\"");
    let err = InstallRay
        .run(&absent.ctx)
        .await
        .expect_err("no such version");
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("No matching distribution found for beta==9.9"),
        "{err}"
    );
}

fn system_context(venv: &Path, packages: &str) -> (TestContext, Arc<Recording<SystemRunner>>) {
    let runner = Arc::new(Recording::new(SystemRunner::default()));
    let t = context(
        INSTALL_RAY,
        HostRoot::system(),
        runner.clone(),
        settings(
            Role::Head,
            &format!(
                "[agent]\nstate_dir = {:?}\n\n[packages]\nvirtualenv = {:?}\n{packages}",
                venv.with_file_name("state").display().to_string(),
                venv.display().to_string()
            ),
        ),
    );
    (t, runner)
}

#[tokio::test]
#[ignore = "needs a Debian host's dpkg database; run by tests/run"]
async fn installed_debian_packages_are_found_and_nothing_is_installed() {
    let dir = tempfile::tempdir().expect("dir");
    let venv: PathBuf = dir.path().join("venv");
    let (t, runner) = system_context(&venv, "os = [\"coreutils\", \"bash\"]\npython = []\n");
    assert_eq!(
        InstallRay.check(&t.ctx).await.expect("check"),
        Check::NotDone,
        "no venv yet"
    );
    let Outcome::Done(Some(detail)) = InstallRay.run(&t.ctx).await.expect("runs") else {
        panic!("no detail");
    };
    assert_eq!(detail["os_packages"]["manager"], "apt");
    assert_eq!(detail["os_packages"]["installed_now"], json!([]));
    let calls = runner.calls();
    assert!(calls.iter().all(|c| !c.starts_with("apt-get")), "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c == "dpkg-query -W '-f=${Status}' coreutils"),
        "{calls:?}"
    );
    assert!(matches!(
        InstallRay.check(&t.ctx).await.expect("check"),
        Check::Done(_)
    ));

    let (missing, _) = system_context(&venv, "os = [\"rayefa-test-not-a-package\"]\npython = []\n");
    assert_eq!(
        InstallRay.check(&missing.ctx).await.expect("check"),
        Check::NotDone
    );
}

#[tokio::test]
#[ignore = "downloads from PyPI; run by tests/run"]
async fn packages_from_pypi_install_once() {
    let dir = tempfile::tempdir().expect("dir");
    let venv = dir.path().join("venv");
    let (t, _) = system_context(&venv, "os = []\npython = [\"six\", \"idna>=3\"]\n");
    let Outcome::Done(Some(detail)) = InstallRay.run(&t.ctx).await.expect("installs") else {
        panic!("no detail");
    };
    assert!(detail["python_packages"]["six"].is_string(), "{detail}");
    assert!(
        detail["python_installer"]
            .as_str()
            .is_some_and(|i| i.starts_with("uv ")),
        "uv from PyPI installs: {detail}"
    );
    assert!(
        detail["virtualenv_made_with"]
            .as_str()
            .is_some_and(|m| m.ends_with("(uv venv --seed)")),
        "uv makes the virtualenv: {detail}"
    );
    // `--seed` gives it pip, which users install with (issue 14).
    let pip = std::process::Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "--version"])
        .output()
        .expect("the virtualenv's python runs");
    assert!(pip.status.success(), "no pip in the virtualenv: {pip:?}");
    assert!(detail["python_packages"]["idna"].is_string(), "{detail}");
    assert!(matches!(
        InstallRay.check(&t.ctx).await.expect("check"),
        Check::Done(_)
    ));

    let (absent, _) = system_context(&venv, "os = []\npython = [\"six==0.0.0.1\"]\n");
    let err = InstallRay
        .run(&absent.ctx)
        .await
        .expect_err("no such version");
    assert!(!err.is_retryable(), "{err}");
}

/// A scratch root whose virtualenv is complete and meets the requirements, checked and run
/// with the cluster commands' user `ec2-user`; `find` answers `find_says`, `chown` `chown_code`.
fn with_commands_user(
    find_says: &str,
    chown_code: i32,
) -> (tempfile::TempDir, TestContext, Arc<ScriptedRunner>) {
    let root = scratch_root(UBUNTU);
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("dpkg-query", 0, "install ok installed")
            .answer(&venv_python(root.path()), 0, &report(true))
            .answer("find", 0, find_says)
            .answer("chown", chown_code, "chown: invalid user: 'ec2-user:'"),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner.clone(),
        settings(Role::Head, "[commands]\nuser = \"ec2-user\"\n"),
    );
    (root, t, runner)
}

#[tokio::test]
async fn with_a_commands_user_the_virtualenv_is_done_only_while_that_user_owns_all_of_it() {
    let (root, t, runner) = with_commands_user("", 0);
    let venv = root.path().join("opt/rayefa/venv").display().to_string();
    let Check::Done(Some(detail)) = InstallRay.check(&t.ctx).await.expect("check") else {
        panic!("not done");
    };
    assert_eq!(detail["virtualenv_owner"], "ec2-user");
    assert!(
        runner
            .calls()
            .contains(&format!("find {venv} '!' -user ec2-user -print -quit")),
        "{:?}",
        runner.calls()
    );

    // A file of root's (an install the agent made, a crash before the hand-over) is work left.
    let (root, t, runner) =
        with_commands_user(&format!("{venv}/lib/python3.12/site-packages/six.py\n"), 0);
    let venv = root.path().join("opt/rayefa/venv").display().to_string();
    assert_eq!(
        InstallRay.check(&t.ctx).await.expect("check"),
        Check::NotDone
    );
    assert!(
        t.log_text().contains("not yet ec2-user's"),
        "{}",
        t.log_text()
    );
    let Outcome::Done(Some(detail)) = InstallRay.run(&t.ctx).await.expect("runs") else {
        panic!("no detail");
    };
    assert_eq!(detail["virtualenv_owner"], "ec2-user");
    let chowns: Vec<String> = runner
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("chown"))
        .collect();
    assert_eq!(chowns, [format!("chown -R ec2-user: {venv}")]);

    // Without a user the virtualenv stays root's and nobody asks.
    let root = scratch_root(UBUNTU);
    let runner = Arc::new(
        ScriptedRunner::new()
            .answer("dpkg-query", 0, "install ok installed")
            .answer(&venv_python(root.path()), 0, &report(true)),
    );
    let t = context(
        INSTALL_RAY,
        HostRoot::new(root.path()),
        runner.clone(),
        settings(Role::Head, ""),
    );
    let Check::Done(Some(detail)) = InstallRay.check(&t.ctx).await.expect("check") else {
        panic!("not done");
    };
    assert!(detail.get("virtualenv_owner").is_none(), "{detail}");
    InstallRay.run(&t.ctx).await.expect("runs");
    assert!(
        runner
            .calls()
            .iter()
            .all(|c| !c.starts_with("find") && !c.starts_with("chown")),
        "{:?}",
        runner.calls()
    );
}

#[tokio::test]
async fn a_virtualenv_that_cannot_be_given_to_the_user_fails_naming_the_user() {
    let (_root, t, _) = with_commands_user("/x\n", 1);
    let err = InstallRay.run(&t.ctx).await.expect_err("chown fails");
    assert!(!err.is_retryable(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("commands.user (auth.ssh_user) `ec2-user`")
            && message.contains("invalid user"),
        "{message}"
    );
}

/// The cluster commands' user installs into the virtualenv the agent made, as Ray users do in
/// setup_commands; the agent's own later installs (as root) and an install interrupted before
/// the hand-over leave the virtualenv the user's again.
#[tokio::test]
#[ignore = "needs root: creates a user and a real virtualenv with pip, about 30 s"]
async fn the_commands_user_can_pip_install_into_the_virtualenv_and_keeps_owning_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use crate::steps::cluster_commands::{Listed, environment, run_in_order};

    const USER: &str = "rayefa-venv-test";
    let run = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .status()
            .expect("runs")
    };
    /// Removes the test's user however the test ends.
    struct Removed;
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::process::Command::new("userdel")
                .args(["-r", USER])
                .status();
        }
    }
    let _ = run(&["userdel", "-r", USER]);
    assert!(run(&["useradd", "-m", "-s", "/bin/bash", USER]).success());
    let _removed = Removed;
    let uid: u32 = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", USER])
            .output()
            .expect("id")
            .stdout,
    )
    .expect("UTF-8")
    .trim()
    .parse()
    .expect("a uid");

    let root = tempfile::tempdir().expect("root");
    let index = local_index();
    build_wheel(index.path(), "gamma", "1.0", &[]);
    build_wheel(index.path(), "delta", "1.0", &[]);
    // The user reads the index and walks to the virtualenv, as on a node (/opt is 0755), and
    // runs the system's interpreter (the test runner's own may be under /root, as pyenv's is).
    for dir in [root.path(), index.path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // The cluster commands find their user in the passwd file under the root.
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    std::fs::copy("/etc/passwd", root.path().join("etc/passwd")).expect("passwd");
    let venv = root.path().join("opt/rayefa/venv");
    let find_links = index.path().display().to_string();
    let step = |python: &str| {
        context(
            INSTALL_RAY,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Head,
                &format!(
                    "[packages]\nos = []\npython_interpreter = \"/usr/bin/python3\"\npython = [{python}]\npip_args = [\"--no-index\", \"--find-links\", {find_links:?}]\n\n[commands]\nuser = \"{USER}\"\n"
                ),
            ),
        )
    };
    let not_the_users = |dir: &Path| -> Vec<PathBuf> {
        let mut others = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.uid() != uid {
                others.push(path.clone());
            }
            if meta.is_dir() {
                for entry in std::fs::read_dir(&path).expect("read_dir") {
                    stack.push(entry.expect("entry").path());
                }
            }
        }
        others
    };

    {
        let t = step("\"alpha==1.0\"");
        let Outcome::Done(Some(detail)) = InstallRay.run(&t.ctx).await.expect("installs") else {
            panic!("no detail");
        };
        assert_eq!(detail["virtualenv_owner"], USER);
        assert_eq!(not_the_users(&venv), Vec::<PathBuf>::new());
        assert!(matches!(
            InstallRay.check(&t.ctx).await.expect("check"),
            Check::Done(_)
        ));

        // What the brief of the task asks for, word for word: the user's pip, no root.
        let pip = venv.join("bin/pip").display().to_string();
        let status = std::process::Command::new("runuser")
            .args(["-u", USER, "--", &pip, "install", "-q", "--no-index"])
            .args(["--find-links", &find_links, "beta==2.0"])
            .env("HOME", format!("/home/{USER}"))
            .status()
            .expect("runuser");
        assert!(status.success(), "the user's pip install failed");

        // And as a setup command runs it: the user's login shell, the virtualenv's pip first.
        let command = format!("pip install -q --no-index --find-links {find_links} delta==1.0");
        let listed = [Listed {
            kind: "setup",
            text: &command,
        }];
        run_in_order(&t.ctx, &listed, &environment(&t.ctx), true)
            .await
            .expect("a setup command's pip install works as the user");
        assert_eq!(not_the_users(&venv), Vec::<PathBuf>::new());
        assert!(matches!(
            InstallRay.check(&t.ctx).await.expect("check"),
            Check::Done(_)
        ));

        // The agent installs more as root: the user owns the result.
        let more = step("\"alpha==1.0\", \"gamma==1.0\"");
        assert_eq!(
            InstallRay.check(&more.ctx).await.expect("check"),
            Check::NotDone
        );
        InstallRay
            .run(&more.ctx)
            .await
            .expect("root installs gamma");
        assert_eq!(not_the_users(&venv), Vec::<PathBuf>::new());

        // An agent stopped between its install and the hand-over: the check sees root's files
        // and the next run gives them to the user.
        let python = venv.join("bin/python").display().to_string();
        assert!(
            run(&[&python, "-m", "pip", "uninstall", "-y", "-q", "gamma"]).success()
                && run(&[
                    &python,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--no-index",
                    "--find-links",
                    &find_links,
                    "gamma==1.0"
                ])
                .success()
        );
        assert!(
            !not_the_users(&venv).is_empty(),
            "root's install left root's files"
        );
        assert_eq!(
            InstallRay.check(&more.ctx).await.expect("check"),
            Check::NotDone
        );
        InstallRay.run(&more.ctx).await.expect("resumes");
        assert_eq!(not_the_users(&venv), Vec::<PathBuf>::new());
        assert!(matches!(
            InstallRay.check(&more.ctx).await.expect("check"),
            Check::Done(_)
        ));
    }
}
