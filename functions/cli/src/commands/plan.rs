//! `ferry plan`: the Plan step once, or its dry run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ferry_core::domain::PlanInput;
use ferry_engine::Settings;

use super::report;
use crate::{build, describe, Common};

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    common: Common,
    /// Partitions per replicate batch.
    #[arg(long, default_value_t = ferry_core::plan::DEFAULT_MAX_PARTITIONS_PER_BATCH)]
    pub(crate) max_partitions_per_batch: usize,
    /// Print the Plan step's output (the state machine's Map input) as JSON;
    /// with --dry-run, the dry run's findings.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write nothing (no topic, configuration, ACL or state change) and say
    /// what a plan would do, what it would not copy and why, the record-size
    /// and group risks, and the source throughput.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// With --dry-run: how long to watch the source end offsets to measure throughput.
    #[arg(long, default_value_t = 5)]
    pub(crate) observe_seconds: u64,
    /// With --dry-run: minutes between scheduled executions, for the cost estimate
    /// (the template's ScheduleRate).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) schedule_minutes: f64,
    /// With --dry-run: records per second one Replicate invocation copies, to
    /// size the batches (default: bench/replicate's single-process rate on a
    /// 2-core machine; measure yours).
    #[arg(long, default_value_t = 28_000.0)]
    pub(crate) replicate_records_per_second: f64,
}

pub(crate) async fn plan_once(args: PlanArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    if args.dry_run {
        return report::dry_run(&ferry, &args).await;
    }
    ferry.store.ensure_tables().await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let input = PlanInput {
        max_partitions_per_batch: Some(args.max_partitions_per_batch),
        ..PlanInput::default()
    };
    // Passing faults (a broker still loading new partitions, DynamoDB
    // briefly away) are retried for a minute, as Step Functions would.
    let plan = loop {
        match ferry_engine::plan::plan(&ferry, &input).await {
            Ok(plan) => break plan,
            Err(e) if e.is_retryable() && started.elapsed() < Duration::from_secs(60) => {
                eprintln!("ferry: plan failed, retrying in 1 s: {}", describe(&e));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(describe(&e)),
        }
    };
    let elapsed = started.elapsed();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?);
        return Ok(ExitCode::SUCCESS);
    }
    let partitions: usize = plan.batches.iter().map(|b| b.partitions.len()).sum();
    let lag: i64 = plan.batches.iter().flat_map(|b| &b.partitions).map(|w| w.lag).sum();
    println!(
        "ferry: planned {partitions} partitions ({lag} records behind) in {} batches in {:.1} s; created {} target topics, copied {} ACLs",
        plan.batches.len(),
        elapsed.as_secs_f64(),
        plan.created_topics.len(),
        plan.copied_acls.len()
    );
    Ok(ExitCode::SUCCESS)
}
