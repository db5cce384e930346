//! `rayefa publish FILE PACKAGE...`: uploads the agent packages to the cluster file's
//! `rayefa.agent_store` and records them in its manifest, from which every launch hands each
//! node a presigned URL of its architecture's package. The orchestrator's own packages
//! (`rayefa`, from `packaging/build --with-rayefa`) go there too, for the head of a cluster
//! that autoscales.

use rayefa_cluster::rayefa::AgentStore;

use crate::cli::PublishArgs;
use crate::commands::aws_failed;
use crate::exit::{self, ExitCode};
use crate::provider::aws::{PublishReport, S3, StoreError, publish, read_packages};
use crate::provider::load_cluster;
use crate::view::{Output, OutputFormat, table};

/// Publishes the packages; exit code 2 for a file that is not a package or a cluster file
/// without a store, 3 when S3 refuses or fails.
pub(crate) async fn run(args: &PublishArgs, output: Output) -> Result<ExitCode, exit::Error> {
    let cluster = load_cluster(&args.file)?;
    let file = cluster.display_path();
    let store = cluster
        .spec
        .rayefa
        .as_ref()
        .and_then(|r| r.value.agent_store.as_ref())
        .ok_or_else(|| {
            exit::Error::Usage(format!(
                "{file}: rayefa.agent_store is not set: name the S3 location to publish to, for \
                 example `rayefa: {{agent_store: s3://BUCKET/rayefa}}`"
            ))
        })?;
    let store = AgentStore::parse(&store.value).map_err(|e| {
        exit::Error::Usage(format!(
            "{file}:{}: rayefa.agent_store: {e}",
            store.referenced.line()
        ))
    })?;
    let files = read_packages(&args.packages).map_err(|e| exit::Error::Usage(e.to_string()))?;
    let s3 = S3::load(cluster.spec.provider.value.region.as_deref())
        .await
        .map_err(|e| aws_failed(StoreError::from(e)))?;
    let report = publish(&s3, &store, files).await.map_err(aws_failed)?;
    match output.format {
        OutputFormat::Json => output.print_json(&report),
        OutputFormat::Table | OutputFormat::Env => print_table(&report),
    }
    Ok(ExitCode::Success)
}

fn print_table(report: &PublishReport) {
    let mut out = table(&["PACKAGE", "ARCH", "KIND", "OBJECT", "SHA-256", "RESULT"]);
    for package in &report.packages {
        out.add_row(vec![
            package.file.clone(),
            package.architecture.to_owned(),
            package.kind.to_owned(),
            package.object.clone(),
            package.sha256.clone(),
            match package.outcome {
                "skipped" => "skipped: same SHA-256 already there".to_owned(),
                outcome => format!("{outcome} ({} bytes)", package.size),
            },
        ]);
    }
    println!("{out}");
    println!(
        "manifest {}: {}",
        report.manifest,
        if report.manifest_written {
            "written"
        } else {
            "unchanged"
        }
    );
}
