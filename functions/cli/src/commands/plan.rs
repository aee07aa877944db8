//! `ferry plan`: the Plan step once, or its dry run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ferry_core::domain::PlanInput;
use ferry_engine::{Ferry, Settings};

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
    /// With --dry-run: the stack's CheckpointSeconds (1 to 15), for the cost estimate.
    #[arg(long, default_value_t = 4)]
    pub(crate) checkpoint_seconds: u64,
    /// With --dry-run: the stack's HandoffWaitSeconds, for the cost estimate.
    #[arg(long, default_value_t = ferry_engine::context::DEFAULT_HANDOFF_WAIT_SECONDS)]
    pub(crate) handoff_wait_seconds: u64,
}

pub(crate) async fn plan_once(args: PlanArgs) -> Result<ExitCode, String> {
    // The stack's settings, for the dry run's cost estimate.
    if args.dry_run && !(1..=15).contains(&args.checkpoint_seconds) {
        return Err(format!(
            "--checkpoint-seconds is {}: give the stack's CheckpointSeconds, 1 to 15 (4 by default)",
            args.checkpoint_seconds
        ));
    }
    let settings = Settings {
        checkpoint_interval: Duration::from_secs(args.checkpoint_seconds),
        handoff_wait: Duration::from_secs(args.handoff_wait_seconds),
        ..Settings::default()
    };
    let ferry = build(&args.common, settings).await?;
    if args.dry_run {
        return dry_run(&ferry, &args).await;
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

/// `ferry plan --dry-run`: what a plan would do; nothing is written.
async fn dry_run(ferry: &Ferry, args: &PlanArgs) -> Result<ExitCode, String> {
    let input = PlanInput {
        max_partitions_per_batch: Some(args.max_partitions_per_batch),
        ..PlanInput::default()
    };
    let opts = ferry_engine::plan::DryRunOptions {
        observe: std::time::Duration::from_secs(args.observe_seconds),
        schedule_minutes: args.schedule_minutes,
        replicate_records_per_s: args.replicate_records_per_second,
    };
    let dry = ferry_engine::plan::dry_run(ferry, &input, &opts).await.map_err(|e| describe(&e))?;
    // A topic a plan would refuse fails the dry run (a check before a
    // deployment), once all of it is said.
    let refused = dry.flows.iter().any(|f| !f.topics_refused.is_empty());
    let code = if refused { ExitCode::from(1) } else { ExitCode::SUCCESS };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&dry).map_err(|e| e.to_string())?);
        return Ok(code);
    }
    println!("ferry: dry run of replicator {}: nothing was written", dry.replicator);
    for f in &dry.flows {
        println!(
            "flow {}{}",
            f.flow,
            if f.first_plan {
                " (first plan: StartingPosition applies)"
            } else {
                ""
            }
        );
        for t in &f.topics_to_create {
            let rf = t.replication_factor.map_or("the target's default".to_owned(), |r| r.to_string());
            println!(
                "  create topic {} with {} partitions, replication factor {rf}, configurations {:?}",
                t.topic, t.partitions, t.configs
            );
        }
        for p in &f.partitions_to_add {
            println!("  add partitions to {}: {} -> {}", p.topic, p.from, p.to);
        }
        for c in &f.configs_to_change {
            println!("  change configurations of {}: set {:?}, remove {:?}", c.topic, c.set, c.delete);
        }
        for t in &f.target_topics_to_delete {
            println!("  delete target topic {t} (its source topic was deleted; PropagateTopicDeletions)");
        }
        let mut starts: std::collections::BTreeMap<(&str, &str), (usize, i64)> = Default::default();
        for p in &f.partitions_to_start {
            let e = starts.entry((&p.topic, &p.why)).or_default();
            e.0 += 1;
            e.1 += p.records;
        }
        for ((topic, why), (partitions, records)) in starts {
            println!("  start {partitions} partitions of {topic} ({records} records to copy): {why}");
        }
        println!(
            "  {} partitions, {} records behind, {} Replicate invocations per execution",
            f.partitions, f.records_behind, f.batches
        );
        for a in &f.acls_to_copy {
            println!("  copy ACL: {a}");
        }
        for a in &f.acls_not_copied {
            println!("  ACL not copied: {}: {}", a.acl, a.why);
        }
        for r in &f.record_size_risks {
            println!(
                "  record size: {} allows {} bytes, {} on the target {} bytes: {}",
                r.topic, r.source_max_message_bytes, r.target_topic, r.target_max_message_bytes, r.fix
            );
        }
        for r in &f.topics_refused {
            println!("  topic {} not copied: {}", r.topic, r.why);
        }
        for g in &f.groups_active_on_target {
            println!("  group {g} has members on the target: its offsets are not synced until they leave");
        }
        println!(
            "  source throughput: {:.1} records/s (watched {:.1} s): {} Replicate batches of at most {} partitions keep up at {} records/s each",
            f.observed_records_per_second,
            dry.observed_seconds,
            f.batches_to_keep_up,
            f.partitions_per_batch_to_keep_up,
            args.replicate_records_per_second
        );
    }
    let c = &dry.monthly_cost;
    println!(
        "estimated monthly AWS cost, deployed: ${:.2} (Lambda ${:.2}, Step Functions ${:.2}, DynamoDB ${:.2}), assuming:",
        c.total_usd, c.lambda_usd, c.step_functions_usd, c.dynamodb_usd
    );
    for a in &c.assumptions {
        println!("  - {a}");
    }
    if refused {
        eprintln!("ferry: a plan would refuse some topics (`not copied` above): mend what each names, or exclude the topic");
    }
    Ok(code)
}
