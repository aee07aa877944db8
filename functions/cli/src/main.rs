//! `ferry`: run the replicator's handlers in-process against the configured
//! clusters and the DynamoDB endpoint of the standard AWS environment, and
//! show replication state.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferry_engine::{Ferry, FerryError, Settings};

mod commands;

use commands::{backfill, cost, deploy, forget_flow, move_app, plan, report, run, status};

/// Ferry: a serverless Kafka-to-Kafka replicator. These commands run the
/// same handlers as the Lambda functions, locally.
#[derive(Debug, Parser)]
#[command(name = "ferry", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Plan and replicate, in-process, until interrupted (or once with --once).
    Run(run::RunArgs),
    /// Per partition: source end offset, cursor, lag, last replicated record.
    Status(status::StatusArgs),
    /// Run the Plan step once (create target topics, copy configurations and
    /// ACLs, create cursors) and print its batches.
    Plan(plan::PlanArgs),
    /// Start named topics from EARLIEST or a timestamp: in-process (then
    /// `ferry run` replicates them), or as a Step Functions execution.
    Backfill(backfill::BackfillArgs),
    /// May applications move to the target now? GO or NO-GO per published
    /// criterion with the measured number; exit 0 only on GO (3 on NO-GO).
    Readiness(report::ReadinessArgs),
    /// May this application (its consumer groups, the topics it produces)
    /// start on the other cluster now, and where will it resume? Refuses
    /// while it runs; waits for replication; syncs its groups and reads
    /// them back; GO (exit 0) or NO-GO with what to do (exit 3). Recorded:
    /// the move the other way is the rollback.
    Move(move_app::MoveArgs),
    /// Measure and print the metrics (as the Report function publishes
    /// them); optionally send them to CloudWatch.
    Report(report::ReportArgs),
    /// Delete one flow's replication state (cursors, offset maps, group
    /// syncs) so that the next plan starts it as new, as after its source
    /// or target cluster was replaced. Refuses while a partition is leased;
    /// deletes only with --yes.
    ForgetFlow(forget_flow::ForgetFlowArgs),
    /// Check a replicator definition (and log-delivery.json) and print the
    /// `sam deploy` parameters for it: MSK clusters and secrets for the IAM
    /// policy, where the logs go.
    DeployParameters(deploy::DeployArgs),
    /// The monthly cost model for a replicator of a given size and
    /// traffic (no clusters needed): Replicates at once, Lambda, Step
    /// Functions and DynamoDB.
    Cost(cost::CostArgs),
}

#[derive(Debug, Args)]
pub(crate) struct Common {
    /// kafka-clusters.json, as `aws kafka create-replicator --kafka-clusters` takes it.
    #[arg(long, value_name = "FILE")]
    kafka_clusters: PathBuf,
    /// replication-info.json, as `aws kafka create-replicator --replication-info-list` takes it.
    #[arg(long, value_name = "FILE")]
    replication_info: PathBuf,
    /// Replicator name (state keys and metrics).
    #[arg(long, default_value = "ferry")]
    name: String,
    /// DynamoDB table prefix.
    #[arg(long, default_value = "ferry", env = "FERRY_TABLE_PREFIX")]
    table_prefix: String,
}

pub(crate) fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}. Fix: give the path of an existing JSON file", path.display()))
}

/// The two files of a replicator definition, read and validated; with
/// their text, which `ferry deploy-parameters` passes on.
pub(crate) struct Definition {
    pub(crate) spec: ferry_core::config::ReplicatorSpec,
    pub(crate) clusters_json: String,
    pub(crate) info_json: String,
}

pub(crate) fn load_definition(name: &str, kafka_clusters: &Path, replication_info: &Path) -> Result<Definition, String> {
    let clusters_json = read(kafka_clusters)?;
    let info_json = read(replication_info)?;
    let spec = ferry_core::config::load(
        name,
        &kafka_clusters.display().to_string(),
        &clusters_json,
        &replication_info.display().to_string(),
        &info_json,
    )
    .map_err(|e| e.to_string())?;
    Ok(Definition {
        spec,
        clusters_json,
        info_json,
    })
}

async fn build(common: &Common, settings: Settings) -> Result<Ferry, String> {
    let spec = load_definition(&common.name, &common.kafka_clusters, &common.replication_info)?.spec;
    let aws = ferry_adapters::aws::load().await;
    Ferry::new(
        spec,
        &aws,
        Settings {
            table_prefix: common.table_prefix.clone(),
            // Every batch in this one process (see calls.rs).
            state_calls_in_flight: Some(ferry_adapters::state::CALLS_IN_FLIGHT),
            ..settings
        },
    )
    .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .finish()
            // Never the debug and trace events that carry credentials.
            .with(tracing_subscriber::filter::filter_fn(ferry_adapters::aws::may_log))
            .init();
    }
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Backfill(args) => backfill::backfill(args).await,
        Command::Plan(args) => plan::plan_once(args).await,
        Command::Readiness(args) => report::readiness(args).await,
        Command::Report(args) => report::report(args).await,
        Command::Move(args) => move_app::move_cmd(args).await,
        Command::DeployParameters(args) => deploy::deploy_parameters(args),
        Command::ForgetFlow(args) => forget_flow::forget_flow(args).await,
        Command::Cost(args) => cost::cost(args),
    };
    match res {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("ferry: {msg}");
            ExitCode::from(2)
        }
    }
}

fn describe(e: &FerryError) -> String {
    format!("{e} [{}]", e.error_type())
}
