//! The Replicate step for one batch of partitions: lease each partition,
//! reconcile what a previous holder wrote but did not checkpoint, then
//! fetch (read_committed) → produce (idempotent, acks=all, same partition)
//! → checkpoint (cursor and offset map, conditional on the lease), until
//! the batch is caught up or the time or byte budget is spent.
//!
//! The files follow an invocation: `lease` (with `handoff` and
//! `backfill`); the histories under the cursors (`source_history`,
//! `target_log`, `rewind`); `fence`; `reconcile` (with `takeover`);
//! `rounds` (with `io`, `pending` and `checkpoint`); `release`. `errors`
//! and `stops` are how a partition stops, `failpoint` the crash tests'
//! points.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_adapters::kafka::batch::{self, ProducerStamp, RawBatch, SourceRecord};
use ferry_adapters::kafka::txn::{transactional_id, with_grant_hint};
use ferry_adapters::kafka::{FetchedPartition, Isolation, KafkaCluster, KafkaError, OffsetSpec, ProduceRefusal};
use ferry_adapters::state::{now_ms, Checkpoint, CursorItem, Lease, ProducerRecord, Rate, StateError, StateStore};
use ferry_core::config::FlowSpec;
use ferry_core::domain::{PartitionProgress, PartitionWork, ReplicateInput, ReplicateOutput, StopReason, TopicPartition};
use ferry_core::offset_map::{runs_for_append, OffsetRun};
use futures::future::join_all;
use tokio::time::Instant;

use crate::context::Ferry;
use crate::error::FerryError;
use crate::loop_filter::LoopFilter;

mod backfill;
mod checkpoint;
mod errors;
mod failpoint;
mod fence;
mod handoff;
mod io;
mod lease;
mod pending;
mod reconcile;
mod release;
mod rewind;
mod rounds;
mod source_history;
mod stops;
mod takeover;
mod target_log;
#[cfg(test)]
mod tests;

use checkpoint::*;
use errors::*;
use fence::*;
use io::*;
use pending::*;
use reconcile::*;
use rewind::*;
use rounds::*;
use source_history::*;
use stops::*;
use target_log::*;

/// Offset-map runs one checkpoint may write (a DynamoDB transaction holds
/// at most 100 items; one is the cursor, one may close the newest run).
const MAX_RUNS_PER_CHECKPOINT: usize = 90;

/// Offset-map runs one produced batch may add. A checkpoint is due once a
/// partition's unsaved runs reach this, so it holds at most twice this
/// many, within `MAX_RUNS_PER_CHECKPOINT`.
const MAX_RUNS_PER_BATCH: usize = MAX_RUNS_PER_CHECKPOINT / 2;
const _: () = assert!(2 * MAX_RUNS_PER_BATCH <= MAX_RUNS_PER_CHECKPOINT);

/// The longest the loop sleeps when no partition has anything to do.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// How long a partition waits before reading again records the opposite
/// flow wrote but has not checkpointed yet: half its checkpoint interval
/// (the same setting as this flow's), so about two state-store reads per
/// checkpoint of the opposite flow.
fn unmapped_recheck(settings: &crate::context::Settings) -> Duration {
    (settings.checkpoint_interval / 2).max(Duration::from_millis(100))
}

/// How long a partition waits for the opposite flow's checkpoint before
/// the wait is logged at warning level.
const UNMAPPED_WAIT_WARNING: Duration = Duration::from_secs(30);
/// Bytes per fetch when Ferry reads back what it wrote since its last
/// checkpoint, after the target's leader changed (see
/// `lost_since_checkpoint`).
const READ_BACK_MAX_BYTES: i32 = 1 << 20;

/// Time kept in hand before the deadline to checkpoint and release.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// When and why to stop.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Hard deadline (the Lambda deadline, or the CLI's round length).
    pub deadline: Instant,
    /// Set to stop cleanly at the next round (Ctrl-C).
    pub interrupted: Arc<AtomicBool>,
}

/// One partition's working state.
struct Part {
    work: PartitionWork,
    target: TopicPartition,
    lease: Lease,
    /// Next source offset not yet replicated (what the store holds).
    cursor: i64,
    /// Next source offset to fetch (>= cursor).
    fetch_pos: i64,
    /// Fetch again no sooner than this (waiting for the opposite flow to
    /// checkpoint what it wrote at `fetch_pos`).
    fetch_after: Option<Instant>,
    /// Since when it has waited for that checkpoint, and whether the wait
    /// was reported at warning level (once per invocation).
    unmapped_since: Option<(Instant, bool)>,
    /// The last fetch returned nothing although the log has more: the
    /// next batch is larger than the fetch size (or the response filled
    /// up first). The broker returns an oversized batch only to the first
    /// partition of a request with data, so this one goes first next time.
    starved: bool,
    /// The invocation's round in which a fetch last brought it records (0:
    /// none yet): the partitions fed least recently are asked first.
    fed_round: u64,
    pending: VecDeque<Pending>,
    /// Their bytes in produced batches ([`Pending::size`]).
    pending_bytes: usize,
    /// A built batch awaiting a successful produce, with the number of
    /// `pending` items in it: retried byte for byte so the broker's
    /// idempotence can drop a copy.
    inflight: Option<(Bytes, usize)>,
    sequence: i32,
    /// This holder's producer is recorded under the lease: from then on a
    /// successor fences it unless the release says its writes settled.
    producer_recorded: bool,
    /// Records the target acknowledged that no checkpoint holds yet.
    unsaved: Option<Unsaved>,
    /// Records the target acknowledged were given up on without a
    /// checkpoint (it failed after the partition stopped, or the target
    /// lost them): the release does not call this holder's writes
    /// settled, so its successor fences and reconciles, and a backfill
    /// waits for that (see `StateStore::restart_cursor`).
    unsaved_dropped: bool,
    /// The offset past the last record this invocation wrote to the
    /// target partition (-1: none): where its producer's records end.
    written_end: i64,
    /// Checkpoint at the next chance (a gap in the source waits for it).
    flush_soon: bool,
    /// Checkpoints written by this invocation.
    checkpoints: u64,
    last_run: Option<OffsetRun>,
    target_end: i64,
    source_end: i64,
    records: u64,
    bytes: u64,
    last_ts: i64,
    done: Option<StopReason>,
    error: Option<String>,
    /// The refusal that stopped this partition (see `fail`); it ends the
    /// invocation.
    refused: Option<FerryError>,
    /// When our lease runs out unless renewed (ms since the epoch).
    lease_expires_hint: i64,
    /// Records found already written by a previous holder.
    reconciled: u64,
    /// Records (and bytes) the opposite flow wrote, not sent back.
    filtered_records: u64,
    filtered_bytes: u64,
    /// (next offset, largest timestamp) of each batch the opposite flow
    /// wrote that was passed over and not checkpointed yet: a checkpoint
    /// past it dates the cursor by it, as by a record replicated (else a
    /// flow that only passes over the opposite flow's copies would look
    /// ever further behind to ReplicationLatency).
    filtered_ts: VecDeque<(i64, i64)>,
    /// Records deleted on the source before they were replicated, skipped
    /// as the operator allowed (the DataLoss metric), and records copied
    /// from a source history that an unclean leader election replaced.
    lost_records: u64,
    /// The source leader epochs read below the cursor, as stored with it
    /// and validated (KIP-320): (first offset read in it, epoch), oldest
    /// first; the last one is the epoch of the batch holding `cursor - 1`.
    /// Empty when unknown. Ferry's own leader-epoch cache: where a
    /// replaced history parts from what Ferry read is found with it.
    history: Vec<(i64, i32)>,
    /// (base offset, leader epoch) of each source batch read past the
    /// cursor, oldest first: the epoch a checkpoint stores is the one of
    /// the batch holding its last offset.
    epochs: VecDeque<(i64, i32)>,
    /// The target's leader epoch stored with `target_end` (see
    /// [`CursorItem::target_leader_epoch`]).
    target_epoch: Option<i32>,
    /// The target's log lost records this invocation wrote: nothing more
    /// of it is checkpointed (the next invocation finds where the target's
    /// log parts from Ferry's copies).
    target_lost: bool,
    /// A checkpoint's check of the target failed (see
    /// `checkpoint::write_checkpoints`): its records stay unsaved for the
    /// next holder, and no checkpoint of it is tried again here.
    unchecked: bool,
}

/// What the target acknowledged since the partition's last checkpoint.
#[derive(Debug)]
struct Unsaved {
    /// Offset-map runs of those records, coalesced (not yet joined with the
    /// stored last run).
    runs: Vec<OffsetRun>,
    /// Cursor after them.
    to_source: i64,
    /// Target end offset after them.
    target_end: i64,
    records: i64,
    bytes: i64,
    last_ts: Option<i64>,
    /// This holder's next sequence number after them: stored with the
    /// checkpoint, so a successor knows where its records after the
    /// checkpoint start in its write stream.
    sequence: i32,
    /// When the first of them was acknowledged.
    since: Instant,
}

impl Unsaved {
    fn new() -> Self {
        Self {
            runs: Vec::new(),
            to_source: 0,
            target_end: 0,
            records: 0,
            bytes: 0,
            last_ts: None,
            sequence: 0,
            since: Instant::now(),
        }
    }

    /// These records followed by `later`, acknowledged after them.
    fn then(mut self, later: Unsaved) -> Self {
        ferry_core::offset_map::coalesce(&mut self.runs, &later.runs);
        self.to_source = later.to_source;
        self.target_end = later.target_end;
        self.records += later.records;
        self.bytes += later.bytes;
        self.last_ts = later.last_ts.or(self.last_ts);
        self.sequence = later.sequence;
        self
    }
}

impl Part {
    /// A leased partition's state at the start of an invocation, from its
    /// cursor item (`item`) and the newest offset-map run it keeps.
    fn new(work: PartitionWork, lease: Lease, item: &CursorItem, last_run: Option<OffsetRun>) -> Self {
        Part {
            target: TopicPartition::new(work.target_topic.clone(), work.source.partition),
            source_end: work.end_offset.max(item.source_end_offset),
            work,
            lease,
            cursor: item.next_source_offset,
            fetch_pos: item.next_source_offset,
            fetch_after: None,
            unmapped_since: None,
            starved: false,
            fed_round: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            inflight: None,
            sequence: 0,
            producer_recorded: false,
            unsaved: None,
            unsaved_dropped: false,
            written_end: -1,
            flush_soon: false,
            checkpoints: 0,
            last_run,
            target_end: item.next_target_offset.unwrap_or(-1),
            records: 0,
            bytes: 0,
            last_ts: item.last_record_timestamp_ms,
            done: None,
            error: None,
            refused: None,
            lease_expires_hint: item.lease_expires_ms,
            reconciled: 0,
            filtered_records: 0,
            filtered_bytes: 0,
            filtered_ts: VecDeque::new(),
            lost_records: 0,
            history: item.leader_epochs.clone(),
            epochs: VecDeque::new(),
            target_epoch: item.target_leader_epoch,
            target_lost: false,
            unchecked: false,
        }
    }

    /// Keep track of a wait for the opposite flow's checkpoint, and say so
    /// at warning level once it has lasted `UNMAPPED_WAIT_WARNING`: the
    /// opposite flow checkpoints every few seconds while it runs, so a
    /// longer wait means it stopped after writing (its worker died and
    /// nothing runs it), and this partition waits until it runs again.
    fn note_unmapped_wait(&mut self, flow: &FlowSpec, opposite: Option<&str>, unmapped: bool, at: i64) {
        if !unmapped {
            self.unmapped_since = None;
            return;
        }
        let (since, warned) = self.unmapped_since.get_or_insert((Instant::now(), false));
        if !*warned && since.elapsed() >= UNMAPPED_WAIT_WARNING {
            *warned = true;
            let opposite = opposite.unwrap_or("the opposite flow");
            tracing::warn!(
                flow = %flow.id(), topic = %self.work.source.topic, partition = self.work.source.partition, offset = at,
                waited_s = since.elapsed().as_secs(), opposite = %opposite,
                "waiting for {opposite} to checkpoint the records it wrote here: it checkpoints every few seconds while it runs, \
                 so it has stopped after writing them; this partition goes on once that flow (its replicator, if it is another) \
                 runs again, and reconciles them. Fix: run that replicator (once is enough: `ferry run --once` with its \
                 definition and --name); if that direction is retired for good, remove its state with `ferry forget-flow \
                 --flow <its flow> --yes --break-opposite-translation` under its --name (group positions among its copies \
                 are then no longer translated exactly)"
            );
        }
    }

    fn progress(&self) -> PartitionProgress {
        PartitionProgress {
            source: self.work.source.clone(),
            cursor: self.cursor,
            source_end: self.source_end,
            records: self.records,
            bytes: self.bytes,
            stopped: self.done.unwrap_or(StopReason::Budget),
            error: self.error.clone(),
            reconciled: self.reconciled,
            filtered_records: self.filtered_records,
            filtered_bytes: self.filtered_bytes,
            lost_records: self.lost_records,
            checkpoints: self.checkpoints,
        }
    }
}

impl Budget {
    /// Whether a clean stop was asked for (Ctrl-C).
    pub(crate) fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// The budget of a Lambda invocation: its deadline (from the Runtime
    /// API), capped at `max_seconds` when the input sets it. A deadline
    /// before 2001 is read as a duration from now: local Runtime API
    /// emulators (cargo-lambda's) send the function timeout, not an instant.
    pub fn for_lambda(deadline: std::time::SystemTime, max_seconds: Option<u64>) -> Self {
        let now = std::time::SystemTime::now();
        let since_epoch = deadline.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let left = if since_epoch < Duration::from_secs(978_307_200) {
            since_epoch
        } else {
            deadline.duration_since(now).unwrap_or_default()
        };
        let left = max_seconds.map_or(left, |m| left.min(Duration::from_secs(m)));
        Self {
            deadline: Instant::now() + left,
            interrupted: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What every step of one flow's Replicate invocation works with: the
/// replicator, the flow, its key in the state tables, and its two clusters.
#[derive(Clone, Copy)]
pub(super) struct FlowRun<'a> {
    pub(super) ferry: &'a Ferry,
    pub(super) flow: &'a FlowSpec,
    pub(super) key: &'a str,
    pub(super) source: &'a Arc<KafkaCluster>,
    pub(super) target: &'a Arc<KafkaCluster>,
}

/// Run one Replicate invocation.
pub async fn replicate(ferry: &Ferry, input: &ReplicateInput, budget: &Budget) -> Result<ReplicateOutput, FerryError> {
    let flow = ferry.flow(&input.flow)?.clone();
    let flow_key = ferry.flow_key(&flow);
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
    let started = std::time::Instant::now();
    let run = &FlowRun {
        ferry,
        flow: &flow,
        key: &flow_key,
        source: &source,
        target: &target,
    };
    let mut filter = LoopFilter::for_flow(ferry, &flow, &source, &target).await?;
    let partitions = crate::plan::batch_partitions(ferry, input).await?;

    // How long each step of the set-up took, for the log line that ends it
    // (a partition copies nothing until every step is done).
    let prepared_at = started.elapsed();
    // Lease every partition we can, all at once (after waiting for a
    // holder about to give its leases back); the others are someone
    // else's now.
    let lease::Leased {
        mut parts,
        skipped,
        mut to_reconcile,
        to_fence,
        waited_at,
    } = lease::lease_all(run, &partitions, budget, &owner, started).await?;
    let leased_at = started.elapsed();
    // The source's history since each cursor was stored: a log truncated
    // below it (an unclean leader election) is found before anything is
    // read, reconciled or written.
    // Boxed: rare, and deep (a DynamoDB transaction inside).
    Box::pin(validate_epochs(run, &mut parts)).await;
    fence_all(run, &mut parts, &to_fence).await;
    let fenced_at = started.elapsed();
    // The target's history under what Ferry copied: copies a truncated
    // target log lost are copied again (nothing of the holder's to
    // reconcile past the new end).
    let mut ends = target_ends(run, &mut parts).await;
    let rewound = Box::pin(check_target_logs(run, &mut parts, &mut ends)).await;
    to_reconcile.retain(|&(i, _)| parts[i].done.is_none() && !rewound.contains(&i));
    reconcile_all(run, &mut parts, &to_reconcile, &mut ends, &mut filter).await;
    let reconciled_at = started.elapsed();

    // What ends the invocation once the leases are back: a cluster's
    // refusal (met by any step, see `fail`), or an error of the producer's
    // set-up. Either way the leases are released first, so that the next
    // invocation, once the cause is fixed, finds them free.
    let mut ended: Option<FerryError> = parts.iter_mut().find_map(|p| p.refused.take());
    let mut written_with = None;
    if ended.is_none() && parts.iter().any(|p| p.done.is_none()) {
        // The Lambda's deadline (or the CLI round's): nothing is written after it.
        let writes_until_ms = now_ms() + budget.deadline.saturating_duration_since(Instant::now()).as_millis() as i64;
        match Box::pin(start_writing(run, &mut parts, filter.as_ref(), &owner, writes_until_ms)).await {
            Ok(stamp) => {
                written_with = Some(stamp.producer_id);
                let ms = |d: std::time::Duration| d.as_millis() as u64;
                let done = started.elapsed();
                tracing::info!(
                    replicator = %ferry.spec.name, flow = %flow.id(), partitions = parts.len(), reconciled = to_reconcile.len(),
                    ms = ms(done), prepare_ms = ms(prepared_at), wait_ms = ms(waited_at - prepared_at), lease_ms = ms(leased_at - waited_at),
                    fence_ms = ms(fenced_at - leased_at), reconcile_ms = ms(reconciled_at - fenced_at), producer_ms = ms(done - reconciled_at),
                    "leased, reconciled and producer recorded; replicating"
                );
                ended = run_rounds(run, &mut parts, input, budget, stamp, &mut filter).await;
            }
            Err(e) => ended = Some(e),
        }
    }

    // Give every lease back at once; one taken over meanwhile is simply gone.
    release::release_all(run, &parts, started, filter.as_ref(), written_with).await;
    let mut partitions: Vec<PartitionProgress> = parts.iter().map(Part::progress).collect();
    for p in &partitions {
        tracing::info!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.source.topic,
            partition = p.source.partition, records = p.records, bytes = p.bytes, cursor = p.cursor, source_end = p.source_end,
            reconciled = p.reconciled, filtered = p.filtered_records, checkpoints = p.checkpoints, stopped = ?p.stopped, "partition progress"
        );
    }
    if let Some(e) = ended.or_else(|| parts.iter_mut().find_map(|p| p.refused.take())) {
        // What was acknowledged is checkpointed and the leases are back;
        // the invocation ends with the cause (a refusal: Ferry.AuthError).
        return Err(e);
    }
    partitions.extend(skipped);
    Ok(ReplicateOutput { partitions })
}

/// One producer id for this invocation, of a transactional id of its own,
/// recorded under each lease before anything is written: it is the
/// provenance a later holder reconciles against, and what it fences.
async fn start_writing(
    run: &FlowRun<'_>,
    parts: &mut [Part],
    filter: Option<&LoopFilter>,
    owner: &str,
    writes_until_ms: i64,
) -> Result<ProducerStamp, FerryError> {
    let FlowRun {
        ferry,
        key: flow_key,
        target,
        ..
    } = *run;
    let txn_id = transactional_id(&ferry.spec.name, owner);
    let (pid, epoch) = target
        .init_transactional_producer(&txn_id)
        .await
        .map_err(|e| with_grant_hint(e, &ferry.spec.name))?;
    if let Some(f) = filter {
        let targets: Vec<TopicPartition> = parts.iter().map(|p| p.target.clone()).collect();
        f.register(&ferry.store, flow_key, pid, &targets, writes_until_ms).await?;
    }
    let need_end: Vec<TopicPartition> = parts.iter().filter(|p| p.target_end < 0).map(|p| p.target.clone()).collect();
    let target_ends = if need_end.is_empty() {
        HashMap::new()
    } else {
        target.list_offsets(&need_end, OffsetSpec::Latest, false).await?
    };
    for p in parts.iter_mut().filter(|p| p.done.is_none() && p.target_end < 0) {
        p.target_end = target_ends.get(&p.target).copied().unwrap_or(0);
    }
    let live: Vec<usize> = (0..parts.len()).filter(|&i| parts[i].done.is_none()).collect();
    let producer = ProducerRecord {
        producer_id: pid,
        producer_epoch: epoch,
        transactional_id: &txn_id,
    };
    let recorded = join_all(
        live.iter()
            .map(|&i| ferry.store.set_producer(flow_key, &parts[i].lease, &producer, parts[i].target_end)),
    )
    .await;
    for (i, res) in live.into_iter().zip(recorded) {
        match res {
            Ok(()) => parts[i].producer_recorded = true,
            Err(e) => fail(run, &mut parts[i], &e.into()).await,
        }
    }
    Ok(ProducerStamp {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: 0,
    })
}

fn lease_expires_at(settings: &crate::context::Settings) -> i64 {
    now_ms() + settings.lease_duration.as_millis() as i64
}
