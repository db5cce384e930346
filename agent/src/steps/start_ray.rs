//! `start-ray`: the role's start commands, with the variables Ray's launcher gives them; on
//! the head of a cluster that scales, Ray's autoscaler with rayefa's node provider.

mod autoscaling;

use std::collections::BTreeMap;

use async_trait::async_trait;
use rayefa_wire::Role;
use serde_json::{Map, Value, json};

use super::cluster_commands::{self, Listed};
use super::{PROBE_EFA, SETUP_COMMANDS, START_RAY};
use crate::config::Settings;
use crate::engine::{Check, Outcome, Step, StepContext, StepError};

/// Runs the role's start commands (Ray's defaults unless the cluster file has its own) with
/// `bash -c`, the virtualenv first on `PATH`, `RAY_HEAD_IP` on workers, and the node type's
/// resources and labels in `RAY_OVERRIDE_RESOURCES` / `RAY_OVERRIDE_LABELS` as Ray's launcher
/// sets them. `ray start` leaves its daemons running; the command runner lets them outlive the
/// command.
///
/// The check never answers "done". It runs only when the journal has no success for this
/// step: on first boot, after a crash in the middle of starting, or after a failed attempt. In
/// each case a Ray that happens to be running (started by the AMI, or half-started) may have
/// the wrong resources, labels or head, and a running raylet cannot be asked which it has
/// without Ray's own client. Ray's start commands begin with `ray stop`, so running them again
/// is what gives the node the configured Ray.
#[derive(Debug, Default)]
pub(crate) struct StartRay;

/// The variables of the start commands beyond [`cluster_commands::environment`].
fn ray_overrides(settings: &Settings) -> BTreeMap<String, String> {
    let node = &settings.node;
    let mut env = BTreeMap::new();
    if !node.resources.is_empty() {
        let resources: Map<String, Value> = node
            .resources
            .iter()
            .map(|(name, amount)| (name.clone(), resource_amount(*amount)))
            .collect();
        env.insert(
            "RAY_OVERRIDE_RESOURCES".to_owned(),
            Value::Object(resources).to_string(),
        );
    }
    if !node.labels.is_empty() {
        env.insert(
            "RAY_OVERRIDE_LABELS".to_owned(),
            json!(node.labels).to_string(),
        );
    }
    env
}

/// A resource amount as Ray's launcher writes it from the YAML: whole numbers as integers
/// (`{"CPU": 0}`, not `0.0`, which `ray start` reads as a float CPU count).
fn resource_amount(amount: f64) -> Value {
    // Whole amounts within ±2^53 are exactly representable as both f64 and i64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if amount.fract() == 0.0 && amount.abs() <= EXACT {
        json!(amount as i64)
    } else {
        json!(amount)
    }
}

fn listed(commands: &[String]) -> Vec<Listed<'_>> {
    commands
        .iter()
        .map(|text| Listed {
            kind: "start",
            text,
        })
        .collect()
}

#[async_trait]
impl Step for StartRay {
    fn name(&self) -> &str {
        START_RAY
    }

    fn depends_on(&self) -> &[&str] {
        &[SETUP_COMMANDS, PROBE_EFA]
    }

    /// Ray's daemons do not survive a reboot.
    fn once_per_boot(&self) -> bool {
        true
    }

    fn plan(&self, settings: &Settings) -> Vec<String> {
        let mut plan: Vec<String> = ray_overrides(settings)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if settings.node.role == Role::Worker
            && let Some(head) = &settings.node.head_address
        {
            plan.push(format!("RAY_HEAD_IP={head}"));
        }
        if settings.autoscaling.is_some() {
            plan.push(format!(
                "Ray's autoscaler: its configuration written for --autoscaling-config, rayefa's \
                 node provider ({}) into the virtualenv",
                autoscaling::PROVIDER_MODULE
            ));
        }
        let commands = listed(&settings.commands.start);
        let count = commands.len();
        plan.extend(
            commands
                .iter()
                .enumerate()
                .map(|(i, c)| format!("start command {} of {count}: bash -c {:?}", i + 1, c.text)),
        );
        plan
    }

    async fn check(&self, _ctx: &StepContext) -> Result<Check, StepError> {
        Ok(Check::NotDone)
    }

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        let overrides = ray_overrides(&ctx.settings);
        let mut env = cluster_commands::environment(ctx);
        env.extend(overrides.clone());
        // A worker's `ray start` fails while its head is still starting Ray; another attempt
        // after the back-off can succeed.
        let (commands, autoscaler) = match &ctx.settings.autoscaling {
            Some(config) => {
                let prepared = autoscaling::prepare(ctx, &ctx.settings.commands.start, config)?;
                let detail = json!({
                    "config": prepared.config_path,
                    "provider_module": prepared.modules,
                    "flag_added": prepared.flag_added,
                });
                if prepared.flag_added {
                    ctx.activity(format!(
                        "added --autoscaling-config={} to `ray start --head`",
                        prepared.config_path.display()
                    ));
                }
                (prepared.commands, Some(detail))
            }
            None => (ctx.settings.commands.start.clone(), None),
        };
        let ran = cluster_commands::run_in_order(ctx, &listed(&commands), &env, true).await?;
        let mut shown = overrides;
        if let Some(head) = env.get("RAY_HEAD_IP") {
            shown.insert("RAY_HEAD_IP".to_owned(), head.clone());
        }
        let mut detail = json!({ "commands": ran, "environment": shown });
        if let Some(autoscaler) = autoscaler {
            detail["autoscaling"] = autoscaler;
        }
        Ok(Outcome::Done(Some(detail)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::host::{HostRoot, SystemRunner};
    use crate::steps::testing::{context, settings};

    /// A `ray` in the scratch root's virtualenv that appends its arguments and the variables
    /// it was given to `calls`.
    fn fake_ray(root: &Path) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = root.join("opt/rayefa/venv/bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let calls = root.join("calls");
        let script = format!(
            "#!/bin/bash\n{{ echo \"ray $*\"; echo \"  head=${{RAY_HEAD_IP-}} home=$HOME\"; \
             echo \"  resources=${{RAY_OVERRIDE_RESOURCES-}} labels=${{RAY_OVERRIDE_LABELS-}}\"; }} \
             >> {}\n",
            calls.display()
        );
        let ray = bin.join("ray");
        std::fs::write(&ray, script).expect("ray");
        std::fs::set_permissions(&ray, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        calls
    }

    #[tokio::test]
    async fn a_worker_runs_rays_default_start_commands_with_its_overrides() {
        let root = tempfile::tempdir().expect("root");
        let calls = fake_ray(root.path());
        let t = context(
            START_RAY,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Worker,
                "[node.resources]\nCPU = 0\nIntel = 1\nGPU = 0.5\n[node.labels]\nzone = \"a\"\n",
            ),
        );
        assert_eq!(StartRay.check(&t.ctx).await.expect("check"), Check::NotDone);
        let Outcome::Done(Some(detail)) = StartRay.run(&t.ctx).await.expect("runs") else {
            panic!("no detail");
        };
        let home = std::env::var("HOME").expect("the test has a HOME");
        let resources = r#"{"CPU":0,"GPU":0.5,"Intel":1}"#;
        let env = format!(
            "  head=127.0.0.2 home={home}\n  resources={resources} labels={{\"zone\":\"a\"}}\n"
        );
        assert_eq!(
            std::fs::read_to_string(calls).expect("ray ran"),
            format!(
                "ray stop\n{env}ray start --address=127.0.0.2:6379 --object-manager-port=8076\n{env}"
            )
        );
        assert_eq!(detail["environment"]["RAY_OVERRIDE_RESOURCES"], resources);
        assert_eq!(detail["environment"]["RAY_HEAD_IP"], "127.0.0.2");
        assert_eq!(
            detail["commands"][1]["command"],
            t.ctx.settings.commands.start[1].as_str()
        );
    }

    #[tokio::test]
    async fn a_head_without_resources_gets_no_override_variables() {
        let root = tempfile::tempdir().expect("root");
        let calls = fake_ray(root.path());
        let t = context(
            START_RAY,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Head,
                "[commands]\nstart = [\"ray start --head --port=6380\"]\n",
            ),
        );
        StartRay.run(&t.ctx).await.expect("runs");
        let text = std::fs::read_to_string(calls).expect("ray ran");
        assert!(
            text.starts_with("ray start --head --port=6380\n  head= "),
            "{text}"
        );
        assert!(text.contains("resources= labels=\n"), "{text}");
    }

    const RAY_CONFIG: &str = r#"{"cluster_name": "test", "provider": {"type": "external"},
        "available_node_types": {}, "head_node_type": "head_type"}"#;

    #[tokio::test]
    async fn a_head_that_scales_runs_the_autoscaler_with_rayefas_provider() {
        let root = tempfile::tempdir().expect("root");
        let calls = fake_ray(root.path());
        let site = root
            .path()
            .join("opt/rayefa/venv/lib/python3.12/site-packages");
        std::fs::create_dir_all(&site).expect("site-packages");
        let t = context(
            START_RAY,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Head,
                &format!(
                    "[commands]\nstart = [\"ray start --head --port=6380\"]\n\
                     [autoscaling]\nray_config = '''{RAY_CONFIG}'''\n"
                ),
            ),
        );
        let Outcome::Done(Some(detail)) = StartRay.run(&t.ctx).await.expect("runs") else {
            panic!("no detail");
        };
        let written = root.path().join("var/lib/rayefa/ray_bootstrap_config.yaml");
        let text = std::fs::read_to_string(calls).expect("ray ran");
        assert!(
            text.starts_with(&format!(
                "ray start --head --autoscaling-config={} --port=6380\n",
                written.display()
            )),
            "{text}"
        );
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&written).expect("config"))
                .expect("JSON");
        assert_eq!(config["cluster_name"], "test");
        assert!(site.join("rayefa_autoscaler.py").is_file());
        assert_eq!(detail["autoscaling"]["flag_added"], true);
    }

    #[tokio::test]
    async fn a_named_autoscaling_config_is_written_where_the_command_says() {
        let root = tempfile::tempdir().expect("root");
        let home = tempfile::tempdir().expect("home");
        fake_ray(root.path());
        std::fs::create_dir_all(
            root.path()
                .join("opt/rayefa/venv/lib/python3.9/site-packages"),
        )
        .expect("site-packages");
        let t = context(
            START_RAY,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Head,
                &format!(
                    "[environment]\nHOME = \"{}\"\n[commands]\nstart = [\"ray start --head \
                     --autoscaling-config=~/ray_bootstrap_config.yaml\"]\n\
                     [autoscaling]\nray_config = '''{RAY_CONFIG}'''\n",
                    home.path().display()
                ),
            ),
        );
        let Outcome::Done(Some(detail)) = StartRay.run(&t.ctx).await.expect("runs") else {
            panic!("no detail");
        };
        assert!(home.path().join("ray_bootstrap_config.yaml").is_file());
        assert_eq!(detail["autoscaling"]["flag_added"], false);
    }

    #[tokio::test]
    async fn a_failing_start_is_retryable_and_named() {
        let root = tempfile::tempdir().expect("root");
        let t = context(
            START_RAY,
            HostRoot::new(root.path()),
            Arc::new(SystemRunner::default()),
            settings(
                Role::Head,
                "[commands]\nstart = [\"true\", \"echo 'GCS not reachable'; exit 1\"]\n",
            ),
        );
        let err = StartRay.run(&t.ctx).await.expect_err("fails");
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "`echo 'GCS not reachable'; exit 1` (start command 2 of 2) exited 1: GCS not reachable"
        );
    }

    #[test]
    fn resource_amounts_keep_whole_numbers_integral() {
        assert_eq!(resource_amount(0.0).to_string(), "0");
        assert_eq!(resource_amount(16.0).to_string(), "16");
        assert_eq!(resource_amount(0.25).to_string(), "0.25");
        assert!(
            resource_amount(1e300).is_f64(),
            "too large for an exact integer"
        );
    }

    #[test]
    fn start_ray_waits_for_the_setup_commands_and_the_efa_probe() {
        use crate::engine::{Check as C, Outcome as O, StepError as E, StepGraph};

        struct Named(&'static str, &'static [&'static str]);
        #[async_trait]
        impl Step for Named {
            fn name(&self) -> &str {
                self.0
            }
            fn depends_on(&self) -> &[&str] {
                self.1
            }
            async fn check(&self, _: &StepContext) -> Result<C, E> {
                Ok(C::NotDone)
            }
            async fn run(&self, _: &StepContext) -> Result<O, E> {
                Ok(O::Done(None))
            }
        }
        let without_probe = StepGraph::new(vec![
            Arc::new(Named(SETUP_COMMANDS, &[])),
            Arc::new(StartRay),
        ]);
        assert!(
            without_probe.is_err(),
            "start-ray must not run without the EFA probe"
        );
        let graph = StepGraph::new(vec![
            Arc::new(StartRay),
            Arc::new(Named(PROBE_EFA, &[])),
            Arc::new(Named(SETUP_COMMANDS, &[])),
        ])
        .expect("graph");
        assert_eq!(graph.index_of(START_RAY), Some(2));
    }
}
