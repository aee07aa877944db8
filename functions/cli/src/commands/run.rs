//! `ferry run`: the engine's loop (`ferry_engine::run`: plan and replicate
//! in-process, round after round, with the group syncs alongside, until
//! interrupted or (--once) caught up), its events shown on stdout and
//! stderr, and how it ended as the exit code.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ferry_engine::run::{Progress, RunEnd, RunEvent, RunOptions};
use ferry_engine::Settings;

use crate::{build, describe, Common};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Exit 0 once every selected partition has reached the source end
    /// offset seen at start and the groups are synced once more (a group
    /// another sync holds is tried again until --stall-seconds); non-zero
    /// on failure.
    #[arg(long)]
    once: bool,
    /// Length of one replicate round (a Lambda invocation's budget), in
    /// seconds: at least 3 (a round keeps 2 s in hand to checkpoint and
    /// release its partitions).
    #[arg(long, default_value_t = 60, value_parser = round_seconds)]
    round_seconds: u64,
    /// How often this replicator plans, in seconds, if not every round
    /// (`ferry run --once` started by cron, say): registered with its
    /// flows, for a flow back in another replicator to tell a replicator
    /// that plans seldom from one stopped (default: --round-seconds; with
    /// --once, none: the period registered before is kept).
    #[arg(long)]
    plans_every_seconds: Option<u64>,
    /// Lease duration in milliseconds (a crashed worker's partitions are
    /// taken over after this long).
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// Partitions per replicate batch.
    #[arg(long, default_value_t = ferry_core::plan::DEFAULT_MAX_PARTITIONS_PER_BATCH)]
    max_partitions_per_batch: usize,
    /// Uncompressed bytes per produced batch.
    #[arg(long, default_value_t = 900 * 1024)]
    produce_batch_max_bytes: usize,
    /// Source batches at least this large (up to --produce-batch-max-bytes),
    /// already in the target codec, are written as they are, their records
    /// never decompressed or re-encoded; smaller ones are merged. A value
    /// above --produce-batch-max-bytes turns this off.
    #[arg(long, default_value_t = Settings::default().pass_through_min_bytes)]
    pass_through_min_bytes: usize,
    /// Most bytes one fetch reads from one partition. Memory grows with
    /// this times the partitions of a batch.
    #[arg(long, default_value_t = Settings::default().fetch_partition_max_bytes)]
    fetch_partition_max_bytes: i32,
    /// Longest acknowledged records wait for their checkpoint (cursor and
    /// offset map in DynamoDB), in seconds.
    #[arg(long, default_value_t = Settings::default().checkpoint_interval.as_secs_f64())]
    checkpoint_seconds: f64,
    /// Acknowledged bytes per partition that make a checkpoint due sooner.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    checkpoint_max_bytes: u64,
    /// With --once: how long to keep retrying when a cluster or DynamoDB
    /// does not answer before exiting 1 with the cause.
    #[arg(long, default_value_t = 60)]
    give_up_seconds: u64,
    /// With --once: how long rounds may copy nothing while not caught up
    /// (partitions leased by another running replicator, paused, waiting)
    /// before exiting 1 with what they wait for.
    #[arg(long, default_value_t = 300)]
    stall_seconds: u64,
    /// When source records were deleted before Ferry replicated them, log
    /// the lost range and resume at the earliest offset instead of stopping.
    #[arg(long)]
    resume_after_data_loss: bool,
    /// Seconds between consumer-group offset syncs (flows with
    /// ConsumerGroupReplication), alongside replication.
    #[arg(long, default_value_t = 5)]
    group_sync_seconds: u64,
    /// How long one sync of a consumer group holds that group's lease: a
    /// sync that dies leaves the group to the syncs after this.
    #[arg(long, default_value_t = Settings::default().group_sync_lease.as_millis() as u64)]
    group_sync_lease_ms: u64,
    /// How long a producer item whose records are all gone from the
    /// target is kept before a plan deletes it (a reader that fetched one
    /// of them just before may look it up only now). Keep it above the
    /// longest a round can last; shorter only for tests.
    #[arg(long, default_value_t = Settings::default().producer_prune_grace.as_secs())]
    producer_prune_grace_seconds: u64,
}

pub(crate) async fn run(args: RunArgs) -> Result<ExitCode, String> {
    let settings = Settings {
        lease_duration: Duration::from_millis(args.lease_ms),
        max_partitions_per_batch: args.max_partitions_per_batch,
        produce_batch_max_bytes: args.produce_batch_max_bytes,
        pass_through_min_bytes: args.pass_through_min_bytes,
        fetch_partition_max_bytes: args.fetch_partition_max_bytes,
        checkpoint_interval: Duration::try_from_secs_f64(args.checkpoint_seconds).map_err(|e| {
            format!(
                "--checkpoint-seconds {}: {e}. Fix: give a number of seconds such as 2",
                args.checkpoint_seconds
            )
        })?,
        checkpoint_max_bytes: args.checkpoint_max_bytes,
        resume_after_data_loss: args.resume_after_data_loss,
        group_sync_lease: Duration::from_millis(args.group_sync_lease_ms),
        producer_prune_grace: Duration::from_secs(args.producer_prune_grace_seconds),
        // A plan a round, unless said otherwise; with --once, only what is
        // said (a catch-up by hand says nothing of the schedule, and keeps
        // the period registered before).
        plans_every: args
            .plans_every_seconds
            .or((!args.once).then_some(args.round_seconds))
            .map(Duration::from_secs),
        ..Settings::default()
    };
    let opts = RunOptions {
        once: args.once,
        round: Duration::from_secs(args.round_seconds),
        give_up_after: Duration::from_secs(args.give_up_seconds),
        stall_limit: Duration::from_secs(args.stall_seconds),
        group_sync_every: Duration::from_secs(args.group_sync_seconds),
    };
    let ferry = build(&args.common, settings).await?;
    ferry.store.ensure_tables().await.map_err(|e| e.to_string())?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("ferry: interrupted; finishing the current batch (Ctrl-C again to stop now)");
                flag.store(true, Ordering::SeqCst);
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "ferry: interrupted again; stopping now: the leases this run holds stay until they end, and the next \
                     run reconciles what it wrote"
                );
                std::process::exit(130);
            }
        });
    }
    println!("ferry: {}", ferry.spec);
    let end = ferry_engine::run::run(&ferry, &opts, interrupted, show)
        .await
        .map_err(|e| describe(&e))?;
    Ok(match end {
        RunEnd::CaughtUp => ExitCode::SUCCESS,
        RunEnd::Interrupted => ExitCode::from(130),
        RunEnd::GroupSyncFailed => ExitCode::from(1),
        RunEnd::Failed { failures } => {
            eprintln!("ferry: {failures} failures; see the errors above and `ferry status`");
            ExitCode::from(1)
        }
        RunEnd::Stalled { after, waiting } => {
            eprintln!(
                "ferry: not caught up, and nothing copied for {} s: {waiting}. See `ferry status`; --stall-seconds sets how long to wait",
                after.as_secs()
            );
            ExitCode::from(1)
        }
        RunEnd::GaveUp { after, error } => {
            eprintln!("ferry: giving up after {} s: {}", after.as_secs(), describe(&error));
            ExitCode::from(1)
        }
    })
}

/// One event of the loop, on stdout (progress) or stderr (failures).
fn show(event: RunEvent<'_>) {
    match event {
        RunEvent::Planned {
            created_topics,
            copied_acls,
        } => {
            if !created_topics.is_empty() {
                println!("ferry: created target topics {}", created_topics.join(", "));
            }
            for acl in copied_acls {
                println!("ferry: copied ACL: {acl}");
            }
        }
        RunEvent::PlanRetrying { error, wait } => {
            eprintln!("ferry: plan failed, retrying in {} s: {}", wait.as_secs(), describe(error))
        }
        RunEvent::PartitionStopped { tp, error } => eprintln!("ferry: {tp} stopped: {error}"),
        RunEvent::TopicRefused(r) => eprintln!("ferry: flow {}: topic {} not copied: {}", r.flow, r.topic, r.why),
        RunEvent::ReplicateRetrying(e) => eprintln!("ferry: replicate will be retried: {}", describe(e)),
        RunEvent::ReplicateFailed(e) => eprintln!("ferry: replicate failed: {}", describe(e)),
        RunEvent::RoundDone(p) => show_progress(&p),
        RunEvent::CaughtUp => println!("ferry: caught up with the source end offsets seen at start"),
        RunEvent::GroupsSynced(f) => {
            if f.committed > 0 || !f.failures.is_empty() {
                println!(
                    "ferry: groups {}: {} groups, {} offsets committed, {} up to date, {} active on the target, {} waiting, {} failures",
                    f.flow,
                    f.groups,
                    f.committed,
                    f.up_to_date,
                    f.active_on_target,
                    f.waiting,
                    f.failures.len()
                );
            }
        }
        RunEvent::GroupSyncFailure(e) => eprintln!("ferry: group sync failure: {e}"),
        RunEvent::GroupSyncFailed(e) => eprintln!("ferry: group sync failed: {}", describe(e)),
    }
}

/// A round's line: this round, the totals, and the progress of a long copy.
fn show_progress(p: &Progress) {
    let secs = p.elapsed.as_secs_f64().max(0.001);
    // Progress of a long copy: what is left of what the plan saw, at this round's pace.
    let to_go = p.behind.saturating_sub(p.records);
    let pace = p.records as f64 / p.round_elapsed.as_secs_f64().max(0.001);
    let eta = if to_go > 0 && pace > 0.0 {
        format!("; {to_go} records to go, ETA {}", format_duration(to_go as f64 / pace))
    } else {
        String::new()
    };
    println!(
        "ferry: {} partitions; +{} records this round{}{}; {} records, {:.1} MB in {secs:.1} s ({:.1} MB/s){eta}",
        p.partitions,
        p.records,
        if p.reconciled > 0 {
            format!(" ({} already on the target, reconciled)", p.reconciled)
        } else {
            String::new()
        },
        if p.filtered > 0 {
            format!(
                "; {} records ({} bytes) written by the opposite flow filtered",
                p.filtered, p.filtered_bytes
            )
        } else {
            String::new()
        },
        p.total_records,
        p.total_bytes as f64 / 1e6,
        p.total_bytes as f64 / 1e6 / secs
    );
}

/// `1h02m`, `3m05s` or `42s`.
fn format_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// `--round-seconds`: a round no longer than the time it keeps in hand to
/// checkpoint and release would copy nothing, round after round, and say
/// nothing; refused, saying why.
fn round_seconds(value: &str) -> Result<u64, String> {
    let secs: u64 = value.parse().map_err(|_| format!("{value:?} is not a whole number of seconds"))?;
    let margin = ferry_engine::replicate::DEADLINE_MARGIN.as_secs();
    if secs <= margin {
        return Err(format!(
            "a round of {secs} s copies nothing: each round keeps {margin} s in hand to checkpoint and release its \
             partitions. Fix: give at least {} (the default is 60)",
            margin + 1
        ));
    }
    Ok(secs)
}
