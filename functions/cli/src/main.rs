//! `ferry`: run the replicator's handlers in-process against the configured
//! clusters and the DynamoDB endpoint of the standard AWS environment, and
//! show replication state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferry_core::domain::{PlanInput, StopReason, TopicPartition};
use ferry_engine::replicate::Budget;
use ferry_engine::{Ferry, FerryError, Settings};

mod deploy;
mod report;

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
    Run(RunArgs),
    /// Per partition: source end offset, cursor, lag, last replicated record.
    Status(StatusArgs),
    /// Run the Plan step once (create target topics, copy configurations and
    /// ACLs, create cursors) and print its batches.
    Plan(PlanArgs),
    /// Start named topics from EARLIEST or a timestamp: in-process (then
    /// `ferry run` replicates them), or as a Step Functions execution.
    Backfill(BackfillArgs),
    /// May applications move to the target now? GO or NO-GO per published
    /// criterion with the measured number; exit 0 only on GO (3 on NO-GO).
    Readiness(report::ReadinessArgs),
    /// Measure and print the metrics (as the Report function publishes
    /// them); optionally send them to CloudWatch.
    Report(report::ReportArgs),
    /// Delete one flow's replication state (cursors, offset maps, group
    /// syncs) so that the next plan starts it as new, as after its source
    /// or target cluster was replaced. Refuses while a partition is leased;
    /// deletes only with --yes.
    ForgetFlow(ForgetFlowArgs),
    /// Check a replicator definition (and log-delivery.json) and print the
    /// `sam deploy` parameters for it: MSK clusters and secrets for the IAM
    /// policy, where the logs go.
    DeployParameters(deploy::DeployArgs),
}

#[derive(Debug, Args)]
struct ForgetFlowArgs {
    #[command(flatten)]
    common: Common,
    /// The flow, as `ferry status` names it: `<source alias>><target alias>`.
    #[arg(long)]
    flow: String,
    /// Delete. Without it, only say what would be deleted.
    #[arg(long)]
    yes: bool,
}

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

#[derive(Debug, Args)]
struct BackfillArgs {
    #[command(flatten)]
    common: Common,
    /// Source topics, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    topics: Vec<String>,
    /// EARLIEST, milliseconds since the epoch, or a UTC time (2026-11-25T08:00:00Z).
    #[arg(long, default_value = "EARLIEST")]
    from: String,
    /// Start an execution of this deployed state machine with the backfill
    /// as its input, instead of planning in-process.
    #[arg(long, value_name = "ARN")]
    state_machine_arn: Option<String>,
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

#[derive(Debug, Args)]
struct RunArgs {
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
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    common: Common,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
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
        Command::Run(args) => run(args).await,
        Command::Status(args) => status(args).await,
        Command::Backfill(args) => backfill(args).await,
        Command::Plan(args) => plan_once(args).await,
        Command::Readiness(args) => report::readiness(args).await,
        Command::Report(args) => report::report(args).await,
        Command::DeployParameters(args) => deploy::deploy_parameters(args),
        Command::ForgetFlow(args) => forget_flow(args).await,
    };
    match res {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("ferry: {msg}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> Result<ExitCode, String> {
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
    let mut start_ends: HashMap<(String, TopicPartition), i64> = HashMap::new();
    let mut total_records: u64 = 0;
    let mut total_bytes: u64 = 0;
    let mut failures = 0;
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let planning = std::time::Instant::now();
        let plan = match ferry_engine::plan::plan(&ferry, &PlanInput::default()).await {
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
        let mut batches = plan.batches;
        for b in &mut batches {
            b.stop_at_plan_end = args.once;
            for w in &mut b.partitions {
                // --once: the end offsets seen when the run started.
                let end = *start_ends.entry((b.flow.clone(), w.source.clone())).or_insert(w.end_offset);
                w.end_offset = end;
            }
        }
        let partitions: usize = batches.iter().map(|b| b.partitions.len()).sum();
        let behind: u64 = batches.iter().flat_map(|b| &b.partitions).map(|w| w.lag.max(0) as u64).sum();
        let round_started = std::time::Instant::now();
        let budget = Budget {
            deadline: tokio::time::Instant::now() + Duration::from_secs(args.round_seconds),
            interrupted: interrupted.clone(),
        };
        let results = futures::future::join_all(batches.iter().map(|b| ferry_engine::replicate::replicate(&ferry, b, &budget))).await;
        let mut all_caught_up = true;
        let mut round_records = 0;
        let mut round_bytes = 0;
        let mut reconciled = 0;
        let (mut filtered, mut filtered_bytes) = (0, 0);
        for res in results {
            match res {
                Ok(out) => {
                    for p in out.partitions {
                        round_records += p.records;
                        round_bytes += p.bytes;
                        reconciled += p.reconciled;
                        filtered += p.filtered_records;
                        filtered_bytes += p.filtered_bytes;
                        match p.stopped {
                            StopReason::CaughtUp => {}
                            StopReason::Error => {
                                all_caught_up = false;
                                failures += 1;
                                eprintln!("ferry: {} stopped: {}", p.source, p.error.unwrap_or_default());
                            }
                            _ => all_caught_up = false,
                        }
                    }
                }
                // --once: a cluster that refused Ferry in the middle of the
                // copy (a re-authentication refused, credentials revoked)
                // ends the run with the cause, as a deployed invocation does.
                Err(e) if e.is_refusal() && args.once => return Err(describe(&e)),
                Err(e) if e.is_retryable() => {
                    all_caught_up = false;
                    eprintln!("ferry: replicate will be retried: {}", describe(&e));
                }
                Err(e) => {
                    all_caught_up = false;
                    failures += 1;
                    eprintln!("ferry: replicate failed: {}", describe(&e));
                }
            }
        }
        total_records += round_records;
        total_bytes += round_bytes;
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
            if reconciled > 0 { format!(" ({reconciled} already on the target, reconciled)") } else { String::new() },
            if filtered > 0 {
                format!("; {filtered} records ({filtered_bytes} bytes) written by the opposite flow filtered")
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
        if args.once && all_caught_up {
            println!("ferry: caught up with the source end offsets seen at start");
            if syncs_groups && !sync_groups_once(&ferry).await {
                return Ok(ExitCode::from(1));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if partitions == 0 || (!all_caught_up && round_records == 0) {
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

async fn plan_once(args: PlanArgs) -> Result<ExitCode, String> {
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

async fn backfill(args: BackfillArgs) -> Result<ExitCode, String> {
    let from: ferry_core::domain::BackfillFrom = args.from.parse()?;
    // A backfill execution ends once caught up with what its plan saw; the
    // scheduled executions carry on from there.
    let input = PlanInput {
        backfill: Some(ferry_core::domain::Backfill {
            topics: args.topics.clone(),
            from,
        }),
        stop_at_plan_end: true,
        ..PlanInput::default()
    };
    if let Some(arn) = &args.state_machine_arn {
        let json = serde_json::to_string(&input).map_err(|e| e.to_string())?;
        let aws = ferry_adapters::aws::load().await;
        let out = aws_sdk_sfn::Client::new(&aws)
            .start_execution()
            .state_machine_arn(arn)
            .name(format!("backfill-{}", uuid::Uuid::new_v4().simple()))
            .input(&json)
            .send()
            .await
            .map_err(|e| format!("could not start an execution of {arn}: {}", ferry_adapters::aws::describe(&e)))?;
        println!("ferry: started backfill execution {} with input {json}", out.execution_arn());
        return Ok(ExitCode::SUCCESS);
    }
    let ferry = build(&args.common, Settings::default()).await?;
    ferry.store.ensure_tables().await.map_err(|e| e.to_string())?;
    let plan = ferry_engine::plan::plan(&ferry, &input).await.map_err(|e| describe(&e))?;
    let starts: Vec<String> = plan
        .batches
        .iter()
        .flat_map(|b| b.partitions.iter().filter(|w| args.topics.contains(&w.source.topic)))
        .map(|w| format!("{} ({} records to go)", w.source, w.lag))
        .collect();
    println!("ferry: backfill planned: {}", starts.join(", "));
    println!("ferry: `ferry run` (or the next scheduled execution) replicates them");
    Ok(ExitCode::SUCCESS)
}

fn describe(e: &FerryError) -> String {
    format!("{e} [{}]", e.error_type())
}

async fn forget_flow(args: ForgetFlowArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    let flow = ferry.flow(&args.flow).map_err(|e| describe(&e))?;
    let key = ferry.flow_key(flow);
    let state_error = |e: ferry_adapters::state::StateError| describe(&e.into());
    let cursors = ferry.store.list_cursors(&key).await.map_err(state_error)?;
    let now = ferry_adapters::state::now_ms();
    if let Some(c) = cursors.iter().find(|c| c.lease_owner.is_some() && c.lease_expires_ms > now) {
        return Err(format!(
            "flow {key}: partition {} is leased by {} for {} s more, so a replicator is running it; nothing was deleted. \
             Fix: stop it first (disable the Step Functions schedule, or stop `ferry run`), then run this again",
            c.tp,
            c.lease_owner.as_deref().unwrap_or_default(),
            (c.lease_expires_ms - now) / 1000 + 1
        ));
    }
    if !args.yes {
        println!(
            "ferry: would delete the state of flow {key}: {} partition cursors with their offset maps, the flow's marker and its \
             group syncs; the next plan then starts the flow at its StartingPosition. Nothing was deleted: add --yes to delete.",
            cursors.len()
        );
        return Ok(ExitCode::from(2));
    }
    let n = ferry.store.forget_flow(&key).await.map_err(state_error)?;
    println!("ferry: forgot flow {key} ({n} partitions); the next plan starts it as new, at its StartingPosition");
    Ok(ExitCode::SUCCESS)
}

async fn status(args: StatusArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    let st = ferry_engine::status::status(&ferry).await.map_err(|e| describe(&e))?;
    if !st.missing_tables.is_empty() {
        eprintln!(
            "ferry: nothing to show yet: table(s) {} do not exist. `ferry run` (or the Plan step) creates them; \
             if it has run, check --name and --table-prefix (now {:?}).",
            st.missing_tables.join(", "),
            args.common.table_prefix
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = st.partitions;
    println!(
        "{:<16} {:<24} {:>5} {:>12} {:>12} {:>10} {:>7} {:>9} {:>10}  {:<24} ERROR",
        "FLOW", "TOPIC", "PART", "SOURCE_END", "CURSOR", "LAG", "LAG_S", "REC/S", "BYTES/S", "LAST_RECORD"
    );
    for r in rows {
        let ts = r.last_record_timestamp_ms.map(format_ms).unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<24} {:>5} {:>12} {:>12} {:>10} {:>7} {:>9} {:>10}  {:<24} {}",
            r.flow,
            r.topic,
            r.partition,
            r.source_end_offset,
            r.cursor,
            r.lag,
            r.lag_seconds.map_or("-".into(), |s| s.to_string()),
            r.records_per_s,
            r.bytes_per_s,
            ts,
            r.last_error.unwrap_or_default()
        );
    }
    if !st.groups.is_empty() {
        println!();
        println!(
            "{:<16} {:<24} {:<24} {:>5} {:>12} {:>12} {:>12}  {:<18} {:<24} DETAIL",
            "FLOW", "GROUP", "TOPIC", "PART", "SOURCE", "TRANSLATED", "TARGET", "STATUS", "LAST_SYNC"
        );
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        for g in st.groups {
            println!(
                "{:<16} {:<24} {:<24} {:>5} {:>12} {:>12} {:>12}  {:<18} {:<24} {}",
                g.flow,
                g.group,
                g.topic,
                g.partition,
                g.source_offset,
                opt(g.translated_offset),
                opt(g.target_offset),
                g.status,
                format_ms(g.checked_ms),
                g.detail
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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

/// RFC 3339 UTC from milliseconds since the epoch, without a date crate.
fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}
