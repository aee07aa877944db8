//! `ferry run`: plan and replicate in-process, round after round (the
//! engine's `run::Rounds`), with the group syncs alongside, until
//! interrupted or (--once) caught up; progress and exit codes.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ferry_engine::replicate::Budget;
use ferry_engine::run::Rounds;
use ferry_engine::{Ferry, Settings};

use crate::{build, describe, Common};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Exit 0 once every selected partition has reached the source end
    /// offset seen at start; non-zero on failure.
    #[arg(long)]
    once: bool,
    /// Length of one replicate round (a Lambda invocation's budget), in seconds.
    #[arg(long, default_value_t = 60)]
    round_seconds: u64,
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
        ..Settings::default()
    };
    let ferry = build(&args.common, settings).await?;
    ferry.store.ensure_tables().await.map_err(|e| e.to_string())?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("ferry: interrupted; finishing the current batch");
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    println!("ferry: {}", ferry.spec);
    let syncs_groups = ferry.spec.flows.iter().any(|f| f.groups.as_ref().is_some_and(|g| g.sync_offsets));
    if syncs_groups && !args.once {
        let (ferry, flag) = (ferry.clone(), interrupted.clone());
        let every = Duration::from_secs(args.group_sync_seconds.max(1));
        tokio::spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                sync_groups_once(&ferry).await;
                tokio::time::sleep(every).await;
            }
        });
    }
    let started = std::time::Instant::now();
    let mut rounds = Rounds::new(args.once);
    let mut total_records: u64 = 0;
    let mut total_bytes: u64 = 0;
    let mut failures = 0;
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let planning = std::time::Instant::now();
        let plan = match rounds.plan(&ferry).await {
            Ok(plan) => {
                tracing::debug!(ms = planning.elapsed().as_millis() as u64, "planned");
                failing_since = None;
                plan
            }
            // --once: a refused login (after one fresh read of the secret)
            // ends the run at once with the cause, as a deployed
            // invocation does; running on, Ferry waits for a fix instead.
            Err(e) if e.is_refusal() && args.once => return Err(describe(&e)),
            Err(e) if e.is_retryable() && !interrupted.load(Ordering::SeqCst) => {
                // A broker restarting or DynamoDB unavailable: wait and plan
                // again. With --once, give up after a while with the cause.
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                if args.once && since.elapsed() > Duration::from_secs(args.give_up_seconds) {
                    eprintln!("ferry: giving up after {} s: {}", args.give_up_seconds, describe(&e));
                    return Ok(ExitCode::from(1));
                }
                eprintln!("ferry: plan failed, retrying in 1 s: {}", describe(&e));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(describe(&e)),
        };
        if !plan.created_topics.is_empty() {
            println!("ferry: created target topics {}", plan.created_topics.join(", "));
        }
        for acl in &plan.copied_acls {
            println!("ferry: copied ACL: {acl}");
        }
        let (partitions, behind) = (plan.partitions(), plan.behind());
        let round_started = std::time::Instant::now();
        let budget = Budget {
            deadline: tokio::time::Instant::now() + Duration::from_secs(args.round_seconds),
            interrupted: interrupted.clone(),
        };
        let round = rounds.replicate(&ferry, &plan, &budget).await;
        for (tp, error) in &round.stopped {
            failures += 1;
            eprintln!("ferry: {tp} stopped: {error}");
        }
        for e in &round.failed {
            match e {
                // --once: a cluster that refused Ferry in the middle of the
                // copy (a re-authentication refused, credentials revoked)
                // ends the run with the cause, as a deployed invocation does.
                e if e.is_refusal() && args.once => return Err(describe(e)),
                e if e.is_retryable() => eprintln!("ferry: replicate will be retried: {}", describe(e)),
                e => {
                    failures += 1;
                    eprintln!("ferry: replicate failed: {}", describe(e));
                }
            }
        }
        let round_records = round.records;
        total_records += round_records;
        total_bytes += round.bytes;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        // Progress of a long copy: what is left of what the plan saw, at this round's pace.
        let to_go = behind.saturating_sub(round_records);
        let pace = round_records as f64 / round_started.elapsed().as_secs_f64().max(0.001);
        let eta = if to_go > 0 && pace > 0.0 {
            format!("; {to_go} records to go, ETA {}", format_duration(to_go as f64 / pace))
        } else {
            String::new()
        };
        println!(
            "ferry: {partitions} partitions; +{round_records} records this round{}{}; {total_records} records, {:.1} MB in {secs:.1} s ({:.1} MB/s){eta}",
            if round.reconciled > 0 {
                format!(" ({} already on the target, reconciled)", round.reconciled)
            } else {
                String::new()
            },
            if round.filtered > 0 {
                format!(
                    "; {} records ({} bytes) written by the opposite flow filtered",
                    round.filtered, round.filtered_bytes
                )
            } else {
                String::new()
            },
            total_bytes as f64 / 1e6,
            total_bytes as f64 / 1e6 / secs
        );
        if interrupted.load(Ordering::SeqCst) {
            return Ok(ExitCode::from(130));
        }
        if failures > 0 && args.once {
            eprintln!("ferry: {failures} failures; see the errors above and `ferry status`");
            return Ok(ExitCode::from(1));
        }
        if args.once && round.all_caught_up {
            println!("ferry: caught up with the source end offsets seen at start");
            if syncs_groups && !sync_groups_once(&ferry).await {
                return Ok(ExitCode::from(1));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if partitions == 0 || (!round.all_caught_up && round_records == 0) {
            // Nothing to do, or partitions leased elsewhere: wait a little.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// One consumer-group sync of every flow, reported on stdout; false on a
/// failure.
async fn sync_groups_once(ferry: &Ferry) -> bool {
    match ferry_engine::groups::sync_groups(ferry, None).await {
        Ok(out) => {
            let mut ok = true;
            for f in out.flows {
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
                for e in &f.failures {
                    eprintln!("ferry: group sync failure: {e}");
                    ok = false;
                }
            }
            ok
        }
        Err(e) => {
            eprintln!("ferry: group sync failed: {}", describe(&e));
            false
        }
    }
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
