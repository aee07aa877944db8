//! `ferry cost`: the project's monthly cost model (`ferry_core::cost`) for
//! a replicator of a given size and traffic, without clusters: how many
//! Replicates run, and what Lambda, Step Functions and DynamoDB cost.
//! `ferry plan --dry-run` gives the same model the shape and traffic it
//! observes on real clusters.

use std::process::ExitCode;

use clap::Args;
use ferry_core::cost::{estimate, CostEstimate, CostInputs};
use serde::Serialize;

#[derive(Debug, Args)]
pub(crate) struct CostArgs {
    /// Partitions replicated (all flows together), each receiving records.
    #[arg(long)]
    partitions: usize,
    /// Source traffic, MB/s, all partitions together.
    #[arg(long)]
    mb_per_s: f64,
    /// Minutes between executions (the template's ScheduleRate).
    #[arg(long, default_value_t = 1.0)]
    schedule_minutes: f64,
    /// The template's HandoffWaitSeconds.
    #[arg(long, default_value_t = ferry_engine::context::DEFAULT_HANDOFF_WAIT_SECONDS as f64)]
    handoff_wait_seconds: f64,
    /// What one Replicate invocation copies, MB/s: the plan makes more
    /// batches when the traffic needs them. The default is bench/throughput's
    /// steady-load figure for one core, scaled to the 0.58 vCPU of
    /// Replicate's 1,024 MB; measure yours with bench/throughput.
    #[arg(long, default_value_t = 20.0)]
    invocation_mb_per_s: f64,
    /// Partitions per batch at most (the plan's cap).
    #[arg(long, default_value_t = 64)]
    max_partitions_per_batch: usize,
    /// Group partitions synced on each execution: for example 10 groups
    /// that each read every partition are 10 × --partitions.
    #[arg(long, default_value_t = 0)]
    group_partitions: usize,
    /// Seconds between a busy partition's checkpoints.
    #[arg(long, default_value_t = 4.0)]
    checkpoint_seconds: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct CostOutput {
    partitions: usize,
    mb_per_s: f64,
    /// Replicate invocations running at once (the MaxConcurrency needed).
    batches: usize,
    dynamodb_write_units_per_partition_hour: f64,
    monthly: CostEstimate,
}

pub(crate) fn cost(args: CostArgs) -> Result<ExitCode, String> {
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(format!("--{name} is {v}: it must be a number above 0. Fix: give, for example, 1"))
        }
    };
    positive("mb-per-s", args.mb_per_s)?;
    positive("schedule-minutes", args.schedule_minutes)?;
    positive("invocation-mb-per-s", args.invocation_mb_per_s)?;
    positive("checkpoint-seconds", args.checkpoint_seconds)?;
    if args.partitions == 0 || args.max_partitions_per_batch == 0 {
        return Err("--partitions and --max-partitions-per-batch must be at least 1".into());
    }
    if !args.handoff_wait_seconds.is_finite() || args.handoff_wait_seconds < 0.0 {
        return Err(format!("--handoff-wait-seconds is {}: give 0 or more", args.handoff_wait_seconds));
    }
    let batches = args
        .partitions
        .div_ceil(args.max_partitions_per_batch)
        .max((args.mb_per_s / args.invocation_mb_per_s).ceil() as usize)
        .min(args.partitions);
    // A busy partition is checkpointed every interval, sooner past 8 MB.
    let per_partition_mb = args.mb_per_s / args.partitions as f64;
    let checkpoints_per_second = (1.0 / args.checkpoint_seconds).max(per_partition_mb / 8.0);
    let monthly = estimate(&CostInputs {
        schedule_minutes: args.schedule_minutes,
        batches,
        partitions: args.partitions,
        active_partitions: args.partitions,
        checkpoints_per_second,
        lease_seconds: ferry_engine::context::Settings::default().lease_duration.as_secs_f64(),
        handoff_wait_seconds: args.handoff_wait_seconds,
        group_partitions: args.group_partitions,
    });
    let out = CostOutput {
        partitions: args.partitions,
        mb_per_s: args.mb_per_s,
        batches,
        dynamodb_write_units_per_partition_hour: monthly.dynamodb_write_units / 730.0 / args.partitions as f64,
        monthly,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    } else {
        println!(
            "{} partitions at {} MB/s: {} Replicates at once; per month ${:.0} (Lambda ${:.0}, Step Functions ${:.0}, DynamoDB ${:.0})",
            out.partitions,
            out.mb_per_s,
            out.batches,
            out.monthly.total_usd,
            out.monthly.lambda_usd,
            out.monthly.step_functions_usd,
            out.monthly.dynamodb_usd
        );
        println!(
            "  busiest DynamoDB partition key: {:.0} write units a second of the {:.0} it allows",
            out.monthly.busiest_key_write_units_per_second,
            ferry_core::cost::KEY_WRITE_UNITS_PER_SECOND
        );
        for a in &out.monthly.assumptions {
            println!("  - {a}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
