//! The Replicate step for one batch of partitions: lease each partition,
//! reconcile what a previous holder wrote but did not checkpoint, then
//! fetch (read_committed) → produce (idempotent, acks=all, same partition)
//! → checkpoint (cursor and offset map, conditional on the lease), until
//! the batch is caught up or the time or byte budget is spent.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_adapters::kafka::batch::{self, ProducerStamp, RawBatch, SourceRecord};
use ferry_adapters::kafka::txn::{transactional_id, transactional_id_prefix};
use ferry_adapters::kafka::{FetchedPartition, Isolation, KafkaCluster, KafkaError, OffsetSpec};
use ferry_adapters::state::{now_ms, Checkpoint, Lease, ProducerRecord, Rate, StateError, StateStore};
use ferry_core::config::FlowSpec;
use ferry_core::domain::{PartitionProgress, PartitionWork, ReplicateInput, ReplicateOutput, StopReason, TopicPartition};
use ferry_core::offset_map::{runs_for_append, OffsetRun};
use futures::future::join_all;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use crate::context::Ferry;
use crate::error::FerryError;
use crate::loop_filter::LoopFilter;

mod takeover;

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
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// When and why to stop.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Hard deadline (the Lambda deadline, or the CLI's round length).
    pub deadline: Instant,
    /// Set to stop cleanly at the next round (Ctrl-C).
    pub interrupted: Arc<AtomicBool>,
}

/// What waits to be produced: a record, to be built into a batch with
/// others, or a whole source batch that goes to the target as it is (see
/// [`batch::passes_through`]).
#[derive(Debug, Clone)]
enum Pending {
    Record(SourceRecord),
    Batch(RawBatch),
}

impl Pending {
    fn first_offset(&self) -> i64 {
        match self {
            Pending::Record(r) => r.offset,
            Pending::Batch(b) => b.header.base_offset,
        }
    }
    fn last_offset(&self) -> i64 {
        match self {
            Pending::Record(r) => r.offset,
            Pending::Batch(b) => b.header.next_offset() - 1,
        }
    }
    /// Bytes it takes in a produced batch, roughly (for budgeting).
    fn size(&self) -> usize {
        match self {
            Pending::Record(r) => r.approx_size(),
            Pending::Batch(b) => b.size,
        }
    }
    /// The timestamp of its last record (of a whole batch: the batch's
    /// largest, which is the last one's for a producer with a clock that
    /// does not go back).
    fn timestamp(&self) -> i64 {
        match self {
            Pending::Record(r) => r.timestamp,
            Pending::Batch(b) => b.header.max_timestamp,
        }
    }
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
    pending: VecDeque<Pending>,
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
                 --flow <its flow> --yes` under its --name (a flow of another replicator no plan has registered for a week \
                 stops counting on its own)"
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

/// Run one Replicate invocation.
pub async fn replicate(ferry: &Ferry, input: &ReplicateInput, budget: &Budget) -> Result<ReplicateOutput, FerryError> {
    let flow = ferry.flow(&input.flow)?.clone();
    let flow_key = ferry.flow_key(&flow);
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
    let settings = &ferry.settings;
    let started = std::time::Instant::now();
    let mut filter = LoopFilter::for_flow(ferry, &flow, &source, &target).await?;
    let partitions = crate::plan::batch_partitions(ferry, input).await?;

    // Lease every partition we can, all at once; the others are someone
    // else's now.
    let leased = join_all(partitions.iter().map(|work| async {
        let (lease, item) = ferry
            .store
            .acquire_lease(&flow_key, &work.source, &owner, settings.lease_duration)
            .await?;
        // A rewind that stopped midway: its runs past the cursor go first.
        if item.map_trim_from.is_some() {
            ferry
                .store
                .trim_runs_past_cursor(&flow_key, &lease, item.next_source_offset)
                .await?;
        }
        // The lease's cursor item holds the newest run whole.
        let last_run = ferry.store.newest_stored_run(&flow_key, &work.source).await?.map(|mut run| {
            item.patch(&mut run);
            run
        });
        Ok::<_, StateError>((lease, item, last_run))
    }))
    .await;
    let mut parts: Vec<Part> = Vec::new();
    let mut skipped: Vec<PartitionProgress> = Vec::new();
    // Partitions a previous holder wrote to, with its producer id.
    let mut to_reconcile: Vec<(usize, PrevHolder)> = Vec::new();
    // Those whose holder may still have a write on its way, by its
    // transactional id and producer id: fenced before the reconcile reads.
    let mut to_fence: BTreeMap<(String, i64), Vec<usize>> = BTreeMap::new();
    for (work, res) in partitions.iter().zip(leased) {
        match res {
            Ok((lease, item, last_run)) => {
                parts.push(Part {
                    target: TopicPartition::new(work.target_topic.clone(), work.source.partition),
                    work: work.clone(),
                    lease,
                    cursor: item.next_source_offset,
                    fetch_pos: item.next_source_offset,
                    fetch_after: None,
                    unmapped_since: None,
                    starved: false,
                    pending: VecDeque::new(),
                    pending_bytes: 0,
                    inflight: None,
                    sequence: 0,
                    producer_recorded: false,
                    unsaved: None,
                    flush_soon: false,
                    checkpoints: 0,
                    last_run,
                    target_end: item.next_target_offset.unwrap_or(-1),
                    source_end: work.end_offset.max(item.source_end_offset),
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
                    history: item.leader_epochs,
                    epochs: VecDeque::new(),
                    target_epoch: item.target_leader_epoch,
                    target_lost: false,
                });
                // Remember who wrote what: reconcile needs the previous holder's producer id.
                if item.producer_id >= 0 && item.next_target_offset.is_some_and(|t| t >= 0) {
                    to_reconcile.push((
                        parts.len() - 1,
                        PrevHolder {
                            producer_id: item.producer_id,
                            next_sequence: item.producer_next_sequence,
                        },
                    ));
                }
                if let Some(id) = item.transactional_id.filter(|_| item.producer_id >= 0 && !item.writes_settled) {
                    to_fence.entry((id, item.producer_id)).or_default().push(parts.len() - 1);
                }
            }
            Err(StateError::LeaseHeld { tp, owner, .. }) => {
                tracing::info!(flow = %flow.id(), topic = %tp.topic, partition = tp.partition, holder = %owner, "partition leased by another worker; skipping");
                skipped.push(PartitionProgress {
                    source: work.source.clone(),
                    cursor: -1,
                    source_end: work.end_offset,
                    records: 0,
                    bytes: 0,
                    stopped: StopReason::LeaseHeld,
                    error: None,
                    reconciled: 0,
                    filtered_records: 0,
                    filtered_bytes: 0,
                    lost_records: 0,
                    checkpoints: 0,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The source's history since each cursor was stored: a log truncated
    // below it (an unclean leader election) is found before anything is
    // read, reconciled or written.
    // Boxed: rare, and deep (a DynamoDB transaction inside).
    Box::pin(validate_epochs(ferry, &flow, &flow_key, &source, &mut parts)).await;
    fence_all(ferry, &flow, &flow_key, &target, &mut parts, &to_fence).await;
    // The target's history under what Ferry copied: copies a truncated
    // target log lost are copied again (nothing of the holder's to
    // reconcile past the new end).
    let mut ends = target_ends(ferry, &flow, &flow_key, &target, &mut parts).await;
    let rewound = Box::pin(check_target_logs(ferry, &flow, &flow_key, &target, &mut parts, &mut ends)).await;
    to_reconcile.retain(|&(i, _)| parts[i].done.is_none() && !rewound.contains(&i));
    reconcile_all(
        ferry,
        &flow,
        &flow_key,
        &source,
        &target,
        &mut parts,
        &to_reconcile,
        &mut ends,
        &mut filter,
    )
    .await;

    // What ends the invocation once the leases are back: a cluster's
    // refusal (met by any step, see `fail`), or an error of the producer's
    // set-up. Either way the leases are released first, so that the next
    // invocation, once the cause is fixed, finds them free.
    let mut ended: Option<FerryError> = parts.iter_mut().find_map(|p| p.refused.take());
    if ended.is_none() && parts.iter().any(|p| p.done.is_none()) {
        match Box::pin(start_writing(ferry, &flow, &flow_key, &target, &mut parts, filter.as_ref(), &owner)).await {
            Ok(stamp) => {
                tracing::info!(
                    replicator = %ferry.spec.name, flow = %flow.id(), partitions = parts.len(), reconciled = to_reconcile.len(),
                    ms = started.elapsed().as_millis() as u64, "leased, reconciled and producer recorded; replicating"
                );
                ended = run_rounds(
                    ferry,
                    &flow,
                    &flow_key,
                    &source,
                    &target,
                    &mut parts,
                    input,
                    budget,
                    stamp,
                    &mut filter,
                )
                .await;
            }
            Err(e) => ended = Some(e),
        }
    }

    // Give every lease back at once; one taken over meanwhile is simply gone.
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let rate = |p: &Part| Rate {
        records_per_s: (p.records as f64 / secs).round() as i64,
        bytes_per_s: (p.bytes as f64 / secs).round() as i64,
    };
    let stopping = std::time::Instant::now();
    // A batch still in flight may yet be appended: its successor must fence.
    let released = join_all(parts.iter().map(|p| {
        ferry
            .store
            .release_lease(&flow_key, &p.lease, rate(p), p.producer_recorded && p.inflight.is_none())
    }))
    .await;
    tracing::debug!(flow = %flow.id(), ms = stopping.elapsed().as_millis() as u64, "leases released");
    for (p, res) in parts.iter().zip(released) {
        match res {
            Ok(()) | Err(StateError::LeaseLost { .. }) => {}
            Err(e) => {
                tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "could not release lease; it expires on its own")
            }
        }
    }
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
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    target: &KafkaCluster,
    parts: &mut [Part],
    filter: Option<&LoopFilter>,
    owner: &str,
) -> Result<ProducerStamp, FerryError> {
    let txn_id = transactional_id(&ferry.spec.name, owner);
    let (pid, epoch) = target
        .init_transactional_producer(&txn_id)
        .await
        .map_err(|e| with_grant_hint(e, &ferry.spec.name))?;
    if let Some(f) = filter {
        f.register(&ferry.store, flow_key, pid).await?;
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
            Err(e) => fail(ferry, flow, flow_key, &mut parts[i], &e.into()).await,
        }
    }
    Ok(ProducerStamp {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: 0,
    })
}

async fn fail(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, p: &mut Part, e: &FerryError) {
    if let Some(refusal) = e.refusal_copy() {
        // A cluster refused Ferry (after one fresh read of the
        // credentials): not this partition's fault, and not one that
        // passes. The invocation ends with it once the leases are back.
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), topic = %p.work.source.topic,
            partition = p.work.source.partition, cause = %e, error_type = e.error_type(), "partition stopped: a cluster refused Ferry"
        );
        p.done = Some(StopReason::Retry);
        p.refused.get_or_insert(refusal);
        return;
    }
    let lease_lost = matches!(e, FerryError::State(StateError::LeaseLost { .. }));
    if lease_lost || e.is_retryable() {
        // Not the partition's fault: another worker has it, or a broker or
        // DynamoDB is briefly away. The next invocation picks it up (and
        // reconciles whatever this one wrote without a checkpoint).
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), topic = %p.work.source.topic,
            partition = p.work.source.partition, cause = %e, error_type = e.error_type(), "partition paused until the next invocation"
        );
        p.done = Some(if lease_lost { StopReason::LeaseHeld } else { StopReason::Retry });
        return;
    }
    tracing::error!(
        replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias,
        topic = %p.work.source.topic, partition = p.work.source.partition, cause = %e,
        error_type = e.error_type(), "partition stopped"
    );
    p.done = Some(StopReason::Error);
    p.error = Some(e.to_string());
    if let Err(e2) = ferry.store.record_error(flow_key, &p.work.source, &e.to_string()).await {
        tracing::warn!(error = %e2, "could not record the error in the state table");
    }
}

/// What one fetch yields for replication.
struct CommittedRead {
    records: Vec<Pending>,
    /// For each of `records`, the offsets just before it (after `from` or
    /// the previous one) that hold nothing any more: committed records
    /// removed by compaction or retention, or whole batches of any kind
    /// removed. Offsets of control batches, aborted and filtered batches
    /// are not counted: they never held a record to replicate.
    removed_before: Vec<u64>,
    /// The same after the last of `records`, up to `next`.
    removed_after: u64,
    /// Next offset to fetch.
    next: i64,
    /// Records the opposite flow wrote, dropped (loop prevention).
    filtered_records: u64,
    /// Their bytes on the wire.
    filtered_bytes: u64,
    /// (next offset, largest timestamp) of each batch of theirs.
    filtered_ts: Vec<(i64, i64)>,
    /// Stopped at records the opposite flow wrote but has not checkpointed
    /// yet (see [`LoopFilter::mapped`]): read again a moment later.
    unmapped: bool,
    /// (base offset, partition leader epoch) of every batch read, of any
    /// kind, in order.
    epochs: Vec<(i64, i32)>,
}

/// Which fetched batches go to the target as they are: those already in
/// the flow's target codec, of `min_bytes` to `max_bytes` (a produce
/// request carries one batch per partition, so a small batch passed
/// through would cost a round trip for little: small ones are merged
/// instead; a larger one is split, as the target may refuse it).
#[derive(Debug, Clone, Copy)]
struct PassThrough {
    codec: ferry_core::config::Compression,
    min_bytes: usize,
    max_bytes: usize,
}

impl PassThrough {
    /// Every batch is split into records.
    const NEVER: PassThrough = PassThrough {
        codec: ferry_core::config::Compression::None,
        min_bytes: usize::MAX,
        max_bytes: 0,
    };
}

/// Per-fetch filter: drops control batches and the batches of aborted
/// transactions, as a read_committed consumer does, and (with a loop
/// filter) the batches the opposite flow wrote.
async fn read_committed(
    store: &StateStore,
    fetched: &FetchedPartition,
    from: i64,
    cluster: &str,
    tp: &TopicPartition,
    filter: &mut Option<LoopFilter>,
    pass_through: PassThrough,
) -> Result<CommittedRead, FerryError> {
    let wrap = |source| KafkaError::Batch {
        cluster: cluster.to_owned(),
        topic: tp.topic.clone(),
        partition: tp.partition,
        source,
    };
    let batches = batch::split_batches(fetched.records.clone()).map_err(wrap)?;
    if let Some(f) = filter.as_mut() {
        f.learn(store, &batches).await?;
    }
    let mut aborted: Vec<(i64, i64)> = fetched.aborted.clone();
    aborted.sort_by_key(|a| a.1);
    let mut aborted: VecDeque<(i64, i64)> = aborted.into();
    let mut open_aborts: HashSet<i64> = HashSet::new();
    let mut out = CommittedRead {
        records: Vec::new(),
        removed_before: Vec::new(),
        removed_after: 0,
        next: from,
        filtered_records: 0,
        filtered_bytes: 0,
        filtered_ts: Vec::new(),
        unmapped: false,
        epochs: Vec::new(),
    };
    // Offsets accounted for so far, and those found empty since the last record.
    let mut pos = from;
    let mut removed: u64 = 0;
    for b in batches {
        let h = b.header;
        if h.next_offset() <= out.next {
            continue;
        }
        // Offsets no batch covers: a whole batch the cleaner removed.
        let gap = u64::try_from(h.base_offset - pos).unwrap_or(0);
        removed += gap;
        pos = pos.max(h.base_offset);
        let last_offset = h.next_offset() - 1;
        while aborted.front().is_some_and(|a| a.1 <= last_offset) {
            if let Some((pid, _)) = aborted.pop_front() {
                open_aborts.insert(pid);
            }
        }
        if h.is_control() {
            if batch::is_abort_marker(&b).map_err(wrap)? {
                open_aborts.remove(&h.producer_id);
            }
        } else if h.is_transactional() && open_aborts.contains(&h.producer_id) {
            // Aborted: never replicated.
        } else if let Some(f) = filter.as_mut().filter(|f| f.drops(h.producer_id)) {
            if !f.mapped(store, tp, h.next_offset()).await? {
                // Read again from `out.next`: that gap is counted then.
                removed -= gap;
                out.unmapped = true;
                break;
            }
            out.filtered_records += u64::try_from(h.records_count).unwrap_or(0);
            out.filtered_bytes += b.size as u64;
            out.filtered_ts.push((h.next_offset(), h.max_timestamp));
        } else if (pass_through.min_bytes..=pass_through.max_bytes).contains(&b.size)
            && batch::passes_through(&b, pass_through.codec, out.next)
        {
            // Passes through only without offset gaps: nothing removed in it.
            out.records.push(Pending::Batch(b));
            out.removed_before.push(removed);
            removed = 0;
        } else {
            let from = out.next;
            for r in batch::records(&b).map_err(wrap)?.into_iter().filter(|r| r.offset >= from) {
                // A gap inside a committed batch: records the cleaner removed
                // (it keeps the batch's base and last offset).
                removed += u64::try_from(r.offset - pos).unwrap_or(0);
                pos = r.offset + 1;
                out.records.push(Pending::Record(r));
                out.removed_before.push(removed);
                removed = 0;
            }
            removed += u64::try_from(h.next_offset() - pos).unwrap_or(0);
        }
        pos = h.next_offset();
        out.next = h.next_offset();
        out.epochs.push((h.base_offset, h.partition_leader_epoch));
    }
    out.removed_after = removed;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn run_rounds(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    source: &Arc<KafkaCluster>,
    target: &Arc<KafkaCluster>,
    parts: &mut [Part],
    input: &ReplicateInput,
    budget: &Budget,
    stamp: ProducerStamp,
    filter: &mut Option<LoopFilter>,
) -> Option<FerryError> {
    let settings = &ferry.settings;
    let pass_through = PassThrough {
        codec: flow.compression,
        min_bytes: settings.pass_through_min_bytes,
        max_bytes: settings.produce_batch_max_bytes,
    };
    let mut invocation_bytes: u64 = 0;
    let mut backoff = Duration::from_millis(100);
    // A cluster that refused Ferry (credentials, TLS, the secret) after one
    // fresh read of the credentials: it ends the invocation (see
    // `KafkaError::is_refusal`), after what the target acknowledged is
    // checkpointed.
    let mut refused: Option<FerryError> = None;
    loop {
        if refused.is_none() {
            refused = parts.iter_mut().find_map(|p| p.refused.take());
        }
        if refused.is_some() {
            for p in parts.iter_mut().filter(|p| p.done.is_none()) {
                p.done = Some(StopReason::Retry);
            }
        }
        if budget.interrupted.load(Ordering::SeqCst) {
            for p in parts.iter_mut().filter(|p| p.done.is_none()) {
                p.done = Some(StopReason::Interrupted);
            }
        }
        if Instant::now() + DEADLINE_MARGIN >= budget.deadline || invocation_bytes >= settings.invocation_max_bytes {
            for p in parts.iter_mut().filter(|p| p.done.is_none()) {
                p.done = Some(StopReason::Budget);
            }
        }
        if input.stop_at_plan_end {
            for p in parts.iter_mut().filter(|p| p.done.is_none()) {
                if p.cursor >= p.work.end_offset && p.pending.is_empty() && p.inflight.is_none() && p.unsaved.is_none() {
                    p.done = Some(StopReason::CaughtUp);
                }
            }
        }
        if parts.iter().all(|p| p.done.is_some()) {
            // Whatever the target acknowledged is checkpointed before the
            // leases go back.
            save(ferry, flow, flow_key, (target, stamp.producer_id), parts, input).await;
            return refused;
        }
        let mut round_failed = false;

        // 1. Build one batch per partition from what was fetched.
        for p in parts
            .iter_mut()
            .filter(|p| p.done.is_none() && p.inflight.is_none() && !p.pending.is_empty())
        {
            let n = batch_len(&p.pending, settings.produce_batch_max_bytes);
            let st = ProducerStamp {
                base_sequence: p.sequence,
                ..stamp
            };
            let built = match p.pending.front() {
                Some(Pending::Batch(b)) => Ok(batch::restamp(b, st)),
                _ => {
                    let recs: Vec<SourceRecord> = p
                        .pending
                        .iter()
                        .take(n)
                        .filter_map(|item| match item {
                            Pending::Record(r) => Some(r.clone()),
                            Pending::Batch(_) => None,
                        })
                        .collect();
                    batch::build_batch(&recs, flow.compression, st)
                }
            };
            match built {
                Ok(bytes) => p.inflight = Some((bytes, n)),
                Err(e) => {
                    let e = KafkaError::Batch {
                        cluster: flow.target.alias.clone(),
                        topic: p.target.topic.clone(),
                        partition: p.target.partition,
                        source: e,
                    };
                    fail(ferry, flow, flow_key, p, &e.into()).await;
                }
            }
        }

        // 2. Produce the built batches and, at the same time, fetch for the
        //    partitions with room for more: the source is read while the
        //    target writes. Never write unless a third of the lease is left:
        //    a worker whose lease is about to lapse renews it first (with
        //    a checkpoint), so a worker that lost its lease cannot write after its
        //    successor reconciled.
        let guard_ms = settings.lease_duration.as_millis() as i64 / 3;
        let now = now_ms();
        let to_send: Vec<usize> = (0..parts.len())
            .filter(|&i| parts[i].done.is_none() && parts[i].inflight.is_some() && parts[i].lease_expires_hint - now > guard_ms)
            .collect();
        // Room for the batch in flight and the next one.
        let round_start = Instant::now();
        let mut want: Vec<usize> = (0..parts.len())
            .filter(|&i| {
                let p = &parts[i];
                p.done.is_none() && p.pending_bytes < 2 * settings.produce_batch_max_bytes && p.fetch_after.is_none_or(|t| t <= round_start)
            })
            .collect();
        want.sort_by_key(|&i| !parts[i].starved);
        // 3. Checkpoint what is due, renew leases, move idle cursors: written
        //    while the fetch and the produce are out, and settled before
        //    their results are (the acknowledgements of this round are the
        //    next checkpoint's).
        let due = due_checkpoints(settings, parts, input);
        if want.is_empty() && to_send.is_empty() && due.is_empty() {
            // Every partition waits for the opposite flow's checkpoint (or
            // for its lease to be renewed).
            let until = parts
                .iter()
                .filter_map(|p| p.fetch_after)
                .fold(round_start + IDLE_TICK, Instant::min);
            tokio::time::sleep_until(until).await;
        }
        let max_wait = if !due.is_empty()
            || parts
                .iter()
                .any(|p| p.done.is_none() && (!p.pending.is_empty() || p.inflight.is_some()))
        {
            0
        } else {
            settings.fetch_max_wait_ms
        };
        if !to_send.is_empty() {
            failpoint::before_produce().await;
        }
        let (fetched, produced, saved) = {
            let shared: &[Part] = parts;
            tokio::join!(
                async {
                    if want.is_empty() {
                        None
                    } else {
                        Some(fetch_round(source, shared, &want, settings.fetch_partition_max_bytes, max_wait).await)
                    }
                },
                async {
                    if to_send.is_empty() {
                        None
                    } else {
                        Some(produce_round(target, shared, &to_send).await)
                    }
                },
                write_checkpoints(&ferry.store, (target, stamp.producer_id), flow_key, shared, due)
            )
        };
        settle(ferry, flow, flow_key, target, parts, saved).await;

        match fetched {
            None => {}
            Some(Ok(results)) => {
                for (i, res) in results {
                    let p = &mut parts[i];
                    match res {
                        Ok(f) => {
                            p.source_end = f.last_stable_offset.max(0);
                            p.starved = f.records.is_empty() && f.last_stable_offset > p.fetch_pos;
                            let read = match read_committed(
                                &ferry.store,
                                &f,
                                p.fetch_pos,
                                source.alias(),
                                &p.work.source,
                                filter,
                                pass_through,
                            )
                            .await
                            {
                                // A newer leader epoch at the position: the
                                // log may have been truncated below it.
                                Ok(read) if p.epoch_changes_at(&read) => {
                                    match Box::pin(check_history(ferry, flow, flow_key, source, p)).await {
                                        Ok(true) => Ok(read),
                                        Ok(false) => continue,
                                        Err(e) if e.is_refusal() => {
                                            refused = Some(e);
                                            continue;
                                        }
                                        Err(e) if e.is_retryable() => {
                                            tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "leader epoch check failed; will retry");
                                            round_failed = true;
                                            continue;
                                        }
                                        Err(e) => {
                                            fail(ferry, flow, flow_key, p, &e).await;
                                            continue;
                                        }
                                    }
                                }
                                other => other,
                            };
                            match read {
                                Ok(read) => {
                                    if read.unmapped && p.fetch_after.is_none() {
                                        tracing::debug!(
                                            flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, offset = read.next,
                                            "waiting for the opposite flow to checkpoint the records it wrote here"
                                        );
                                    }
                                    p.fetch_after = read.unmapped.then(|| Instant::now() + unmapped_recheck(settings));
                                    p.note_unmapped_wait(flow, filter.as_ref().and_then(LoopFilter::opposite), read.unmapped, read.next);
                                    for item in read.records {
                                        p.pending_bytes += item.size();
                                        p.pending.push_back(item);
                                    }
                                    p.fetch_pos = read.next;
                                    p.note_epochs(&read.epochs);
                                    p.filtered_records += read.filtered_records;
                                    p.filtered_bytes += read.filtered_bytes;
                                    p.filtered_ts.extend(read.filtered_ts);
                                }
                                Err(e) if e.is_retryable() => {
                                    tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "loop-filter lookup failed; will retry");
                                    round_failed = true;
                                }
                                Err(e) => fail(ferry, flow, flow_key, p, &e).await,
                            }
                        }
                        Err(e) if e.is_refusal() => refused = Some(e.into()),
                        Err(e) if e.is_retryable() => {
                            tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "fetch failed; will retry");
                            round_failed = true;
                        }
                        Err(KafkaError::Broker {
                            error: ResponseError::OffsetOutOfRange,
                            ..
                        }) => {
                            if let Err(e) = out_of_range(ferry, flow, flow_key, source, p, lease_expires_at(settings)).await {
                                fail(ferry, flow, flow_key, p, &e).await;
                            }
                        }
                        Err(e) => fail(ferry, flow, flow_key, p, &e.into()).await,
                    }
                }
            }
            // The source's answer did not decode, or it does not speak the
            // fetch Ferry needs: the same request would get the same answer,
            // so each partition of the round stops, naming the cause, rather
            // than trying again for ever. (Other protocol errors, such as a
            // connection closed while it was being set up, can pass.)
            Some(Err(e @ (KafkaError::Undecodable { .. } | KafkaError::Unsupported { .. }))) => {
                let e = FerryError::from(e);
                for &i in &want {
                    fail(ferry, flow, flow_key, &mut parts[i], &e).await;
                }
            }
            Some(Err(e)) if e.is_refusal() => refused = Some(e.into()),
            Some(Err(e)) => {
                tracing::warn!(flow = %flow.id(), cluster = %flow.source.alias, error = %e, "fetch round failed; will retry");
                round_failed = true;
            }
        }

        let mut acked: Vec<(usize, i64)> = Vec::new();
        match produced {
            None => {}
            Some(Ok(results)) => {
                for (i, res) in results {
                    match res {
                        Ok(base) => acked.push((i, base)),
                        Err(e) if e.is_refusal() => refused = Some(e.into()),
                        Err(e) if e.is_retryable() => {
                            tracing::warn!(flow = %flow.id(), topic = %parts[i].target.topic, partition = parts[i].target.partition, error = %e, "produce failed; will retry");
                            round_failed = true;
                        }
                        Err(e) => produce_failed(ferry, flow, flow_key, &mut parts[i], e).await,
                    }
                }
            }
            Some(Err(e)) if e.is_refusal() => refused = Some(e.into()),
            Some(Err(e)) => {
                tracing::warn!(flow = %flow.id(), cluster = %flow.target.alias, error = %e, "produce round failed; will retry");
                round_failed = true;
            }
        }
        if !acked.is_empty() {
            failpoint::after_produce();
        }
        // The target has these records: they wait in `unsaved` for the next
        // checkpoint.
        for (i, base) in acked {
            let p = &mut parts[i];
            if p.target_lost {
                continue;
            }
            // Other producers' records only ever push a batch further on;
            // one placed before the end of what Ferry wrote means the
            // target's log lost that (see `target_lost_midway`).
            let expected = p.unsaved.as_ref().map_or(p.target_end, |u| u.target_end);
            if base < expected {
                target_lost_midway(ferry, flow, flow_key, target, p, base, expected).await;
                continue;
            }
            let Some((bytes, n)) = p.inflight.take() else { continue };
            let items: Vec<Pending> = p.pending.drain(..n).collect();
            p.pending_bytes -= items.iter().map(Pending::size).sum::<usize>();
            let offsets: Vec<i64> = items.iter().flat_map(|item| item.first_offset()..=item.last_offset()).collect();
            p.sequence = batch::next_sequence(p.sequence, offsets.len() as i32);
            let to = p.pending.front().map(Pending::first_offset).unwrap_or(p.fetch_pos);
            let u = p.unsaved.get_or_insert_with(Unsaved::new);
            ferry_core::offset_map::coalesce(&mut u.runs, &runs_for_append(&offsets, base));
            u.to_source = to;
            u.target_end = base + offsets.len() as i64;
            u.records += offsets.len() as i64;
            u.bytes += bytes.len() as i64;
            u.last_ts = items.last().map(Pending::timestamp);
            u.sequence = p.sequence;
            invocation_bytes += bytes.len() as u64;
        }

        if round_failed && refused.is_none() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(100);
        }
    }
}

/// How many of the first `pending` items go into one produced batch: a
/// source batch passed through goes alone; records are built into one at
/// most `max_bytes` (at least one record), and at most
/// `MAX_RUNS_PER_BATCH` offset-map runs (a gap in source offsets, from
/// compaction or aborted transactions, starts a new run).
fn batch_len(pending: &VecDeque<Pending>, max_bytes: usize) -> usize {
    if let Some(Pending::Batch(_)) = pending.front() {
        return 1;
    }
    let mut n = 0;
    let mut size = 0;
    let mut runs = 0;
    let mut prev: Option<i64> = None;
    for item in pending {
        let Pending::Record(r) = item else { break };
        let new_run = prev.is_none_or(|o| o + 1 != r.offset);
        if n > 0 && (size + r.approx_size() > max_bytes || (new_run && runs >= MAX_RUNS_PER_BATCH)) {
            break;
        }
        runs += usize::from(new_run);
        prev = Some(r.offset);
        size += r.approx_size();
        n += 1;
    }
    n
}

/// A checkpoint to write, with the acknowledged records it covers (taken
/// out of the partition until it is written).
struct Due {
    part: usize,
    cp: Checkpoint,
    covers: Option<Unsaved>,
}

/// Write the checkpoints that are due, all at once (see [`due_checkpoints`]).
async fn save(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    (target, pid): (&KafkaCluster, i64),
    parts: &mut [Part],
    input: &ReplicateInput,
) {
    let due = due_checkpoints(&ferry.settings, parts, input);
    if due.is_empty() {
        return;
    }
    let saved = write_checkpoints(&ferry.store, (target, pid), flow_key, parts, due).await;
    settle(ferry, flow, flow_key, target, parts, saved).await;
}

/// The checkpoints due now: a partition's acknowledged records once they
/// reach `checkpoint_max_bytes`, wait `checkpoint_interval`, fill half a
/// transaction with runs, reach the plan's end offset, or the partition
/// stops; a lease half spent; a cursor that can move over skipped
/// (control, aborted, filtered) records. When one is due, the partitions
/// whose records are halfway there come along: they go in the same
/// DynamoDB transaction (see [`StateStore::checkpoint_all`]), and the
/// partitions' checkpoints stay in step instead of each costing a request
/// of its own.
fn due_checkpoints(settings: &crate::context::Settings, parts: &mut [Part], input: &ReplicateInput) -> Vec<Due> {
    let lease_expires_ms = lease_expires_at(settings);
    let idle = |p: &Part| p.pending.is_empty() && p.inflight.is_none();
    let ripe = |p: &Part, share: u32| {
        p.unsaved.as_ref().is_some_and(|u| {
            u.bytes as u64 >= settings.checkpoint_max_bytes / u64::from(share) || u.since.elapsed() >= settings.checkpoint_interval / share
        })
    };
    let due: Vec<bool> = parts
        .iter()
        .map(|p| {
            if p.target_lost {
                return false;
            }
            let due = p.unsaved.as_ref().is_some_and(|u| {
                p.done.is_some()
                    || p.flush_soon
                    || ripe(p, 1)
                    || u.runs.len() >= MAX_RUNS_PER_BATCH
                    || (input.stop_at_plan_end && idle(p) && p.fetch_pos >= p.work.end_offset)
            });
            // A partition that stopped cleanly still moves its cursor over the
            // records it skipped: the next invocation would read (and count)
            // them again.
            let idle_move = p.done.is_none_or(stopped_cleanly) && p.unsaved.is_none() && idle(p) && p.fetch_pos > p.cursor;
            let renew = p.done.is_none() && p.lease_renewal_due(settings.lease_duration);
            due || idle_move || renew
        })
        .collect();
    let any = due.iter().any(|&d| d);
    let mut due_now = Vec::new();
    for (i, p) in parts.iter_mut().enumerate() {
        if !(due[i] || (any && ripe(p, 2) && !p.target_lost)) {
            continue;
        }
        let to = match &p.unsaved {
            _ if idle(p) && p.fetch_pos > p.cursor => p.fetch_pos,
            Some(u) => u.to_source,
            None => p.cursor,
        };
        let cp = checkpoint_for(p, to, lease_expires_ms);
        due_now.push(Due {
            part: i,
            cp,
            covers: p.unsaved.take(),
        });
    }
    due_now
}

/// What a round of checkpoints did.
struct Saved {
    due: Vec<Due>,
    results: Vec<Result<(), StateError>>,
    /// Checkpoints not written: the target's end (the second value) was
    /// below the records they cover.
    lost: Vec<(Due, i64)>,
}

/// Write the due checkpoints, each checkpoint of records with the
/// target's leader epoch read after those records were acknowledged
/// (see [`CursorItem::target_leader_epoch`]). A checkpoint is not written
/// when the target lost what Ferry wrote (see [`lost_since_checkpoint`]).
async fn write_checkpoints(
    store: &StateStore,
    (target, pid): (&KafkaCluster, i64),
    flow_key: &str,
    parts: &[Part],
    mut due: Vec<Due>,
) -> Saved {
    let with_records: Vec<TopicPartition> = due
        .iter()
        .filter(|d| d.cp.records > 0)
        .map(|d| parts[d.part].target.clone())
        .collect();
    let ends = if with_records.is_empty() {
        HashMap::new()
    } else {
        match target.list_offsets_with_epochs(&with_records, OffsetSpec::Latest, false).await {
            Ok(ends) => ends,
            Err(e) => {
                tracing::warn!(cluster = %target.alias(), error = %e, "could not read the target's leader epochs; these checkpoints store none");
                HashMap::new()
            }
        }
    };
    let verdicts = join_all(due.iter().map(|d| {
        let p = &parts[d.part];
        let now = ends.get(&p.target).copied().filter(|_| d.cp.records > 0);
        async move {
            match now {
                Some((end, epoch)) => Some(lost_since_checkpoint(target, pid, p, d, end, epoch).await),
                None => None,
            }
        }
    }))
    .await;
    let mut lost = Vec::new();
    let mut kept = Vec::with_capacity(due.len());
    for (mut d, verdict) in due.drain(..).zip(verdicts) {
        match verdict {
            None if d.cp.records > 0 => d.cp.target_leader_epoch = Some(None),
            None => {}
            Some(Ok(TargetHolds::All(epoch))) => d.cp.target_leader_epoch = Some(epoch),
            Some(Ok(TargetHolds::LostFrom(at))) => {
                lost.push((d, at));
                continue;
            }
            Some(Err(e)) => {
                let p = &parts[d.part];
                tracing::warn!(
                    cluster = %target.alias(), topic = %p.target.topic, partition = p.target.partition, error = %e,
                    "could not check the target's log after a leader change; this checkpoint stores no leader epoch"
                );
                d.cp.target_leader_epoch = Some(None);
            }
        }
        kept.push(d);
    }
    let cps: Vec<(&Lease, &Checkpoint)> = kept.iter().map(|d| (&parts[d.part].lease, &d.cp)).collect();
    let results = store.checkpoint_all(flow_key, &cps).await;
    Saved { due: kept, results, lost }
}

/// What the target holds of what a checkpoint covers.
enum TargetHolds {
    /// All of it; the leader epoch to store with the checkpoint.
    All(Option<i32>),
    /// Not what Ferry wrote from this offset on.
    LostFrom(i64),
}

/// Whether the target still holds what Ferry wrote to `p` below the end
/// `d` checkpoints, given the target's end and current leader epoch read
/// after those records were acknowledged.
///
/// The same epoch as the one stored with the last checkpoint: the leader
/// has not changed since, and a leader never truncates its own log. A
/// different one (or none stored): the leader changed, and an unclean
/// election may have dropped records Ferry wrote before it, then other
/// producers may have written past Ferry's end. So Ferry asks the leader
/// where the stored epoch ends (what the last checkpoint covers), and
/// reads back what it wrote since: an offset the checkpoint maps that now
/// holds another producer's batch was lost. An offset no batch holds is
/// not: the log cleaner removes a compacted topic's batches whole once
/// their keys are written again, and never renumbers what it keeps.
async fn lost_since_checkpoint(
    target: &KafkaCluster,
    pid: i64,
    p: &Part,
    d: &Due,
    end: i64,
    epoch: i32,
) -> Result<TargetHolds, KafkaError> {
    let epoch = (epoch >= 0).then_some(epoch);
    if end < d.cp.target_end {
        return Ok(TargetHolds::LostFrom(end));
    }
    if epoch.is_some() && epoch == p.target_epoch {
        return Ok(TargetHolds::All(epoch));
    }
    if let Some(stored) = p.target_epoch {
        let answer = target.offset_for_leader_epoch(&p.target, stored).await?;
        if answer.end_offset >= 0 && answer.end_offset < p.target_end {
            return Ok(TargetHolds::LostFrom(answer.end_offset));
        }
    }
    let mine = d.covers.as_ref().map(|u| u.runs.as_slice()).unwrap_or_default();
    let Some(from) = mine.first().map(|r| r.target_start) else {
        return Ok(TargetHolds::All(epoch));
    };
    // Other producers' batches (and markers) from the first record Ferry
    // wrote since.
    let mut others: Vec<(i64, i64)> = Vec::new();
    let mut pos = from;
    while pos < d.cp.target_end {
        let f = fetch_one(target, &p.target, pos, READ_BACK_MAX_BYTES, Isolation::ReadUncommitted).await?;
        let batches = batch::split_batches(f.records).map_err(|source| KafkaError::Batch {
            cluster: target.alias().to_owned(),
            topic: p.target.topic.clone(),
            partition: p.target.partition,
            source,
        })?;
        let Some(last) = batches.last().map(|b| b.header.next_offset()).filter(|&l| l > pos) else {
            break;
        };
        others.extend(
            batches
                .iter()
                .filter(|b| b.header.producer_id != pid || b.header.is_control())
                .map(|b| (b.header.base_offset, b.header.next_offset())),
        );
        pos = pos.max(last);
    }
    let first_missing = mine.iter().find_map(|r| {
        others
            .iter()
            .filter(|&&(a, b)| a < r.target_end() && b > r.target_start)
            .map(|&(a, _)| a.max(r.target_start))
            .min()
    });
    Ok(match first_missing {
        Some(at) => TargetHolds::LostFrom(at),
        None => TargetHolds::All(epoch),
    })
}

/// Stopped with nothing in doubt: its fetch position is sound to checkpoint.
fn stopped_cleanly(reason: StopReason) -> bool {
    matches!(reason, StopReason::CaughtUp | StopReason::Budget | StopReason::Interrupted)
}

/// The target's log of `p` lost records this invocation had written
/// (`at`: the target's end, or where Ferry's next batch landed; `written`:
/// the end of what Ferry wrote). Nothing more of it is checkpointed or
/// written here. What its last checkpoint holds is checked as at the start
/// of an invocation (see [`check_target_logs`]), and the cursor and the
/// target end stored move back to where the target's log parts from
/// Ferry's, or to `at` if that is sooner: the next invocation copies from
/// there, and reconciles nothing. What the target still holds of the
/// records acknowledged since that checkpoint, and any batch it took
/// after the loss, is then copied once more (none of it is in an offset
/// map): records twice, none skipped.
async fn target_lost_midway(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, target: &KafkaCluster, p: &mut Part, at: i64, written: i64) {
    tracing::error!(
        replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topic = %p.target.topic,
        partition = p.target.partition, at, written_to = written,
        "TargetTruncated: the target log of {} lost records Ferry wrote up to offset {} (its end or Ferry's next batch is at \
         offset {at}: an unclean leader election made a replica that lacked them the leader); this invocation writes no more \
         to it",
        p.target, written - 1
    );
    p.target_lost = true;
    p.unsaved = None;
    p.done = Some(StopReason::Retry);
    let moved = match target_parting(flow, target, p, at).await {
        Ok(parted) => Box::pin(target_truncated(ferry, flow, flow_key, p, parted.min(at), at)).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = moved {
        tracing::warn!(
            flow = %flow.id(), topic = %p.target.topic, partition = p.target.partition, error = %e,
            "could not move the cursor back yet; the next invocation checks the target's log from the last checkpoint"
        );
    }
}

/// Apply what the checkpoint writes did.
async fn settle(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, target: &KafkaCluster, parts: &mut [Part], saved: Saved) {
    for (d, end) in saved.lost {
        target_lost_midway(ferry, flow, flow_key, target, &mut parts[d.part], end, d.cp.target_end).await;
    }
    for (d, res) in saved.due.into_iter().zip(saved.results) {
        let p = &mut parts[d.part];
        match res {
            Ok(()) => p.apply(&d.cp),
            Err(e) if p.done.is_some() => {
                // Already stopped; its records are on the target and the
                // next holder reconciles them.
                tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "could not checkpoint a stopped partition; the next invocation reconciles");
                p.unsaved = None;
            }
            Err(e) => {
                // Not stored: those records are unsaved again, ahead of any
                // acknowledged since (the stop's checkpoint tries them once
                // more). Unknown outcome on a DynamoDB error: the next
                // holder reconciles from the target, so stop this partition.
                if let Some(u) = d.covers {
                    p.unsaved = Some(match p.unsaved.take() {
                        Some(later) => u.then(later),
                        None => u,
                    });
                }
                fail(ferry, flow, flow_key, p, &e.into()).await;
            }
        }
    }
}

impl Part {
    /// The leader epochs read below `to` (see [`Part::history`]), for a
    /// cursor moved to `to` over what was read.
    fn history_before(&self, to: i64) -> Vec<(i64, i32)> {
        let mut h = self.history.clone();
        for &(base, epoch) in self.epochs.iter().filter(|&&(base, _)| base < to) {
            if h.last().map(|&(_, e)| e) != Some(epoch) {
                h.push((base, epoch));
            }
        }
        bound_history(h)
    }

    /// The leader epoch of the batch holding offset `to - 1`.
    #[cfg(test)]
    fn epoch_before(&self, to: i64) -> Option<i32> {
        self.history_before(to).last().map(|&(_, e)| e)
    }

    /// Ferry's leader-epoch cache up to `fetch_pos`: what was read below
    /// the cursor and past it.
    fn read_history(&self) -> Vec<(i64, i32)> {
        self.history_before(i64::MAX)
    }

    /// Remember the epochs of batches read: only where the epoch changes
    /// (a partition reads thousands of batches between two checkpoints).
    /// A batch without one (an old message format: -1) changes nothing.
    fn note_epochs(&mut self, read: &[(i64, i32)]) {
        for &(base, epoch) in read {
            if epoch >= 0 && self.last_epoch() != Some(epoch) {
                self.epochs.push_back((base, epoch));
            }
        }
    }

    /// The leader epoch of the last batch read (before `fetch_pos`).
    fn last_epoch(&self) -> Option<i32> {
        self.epochs.back().or(self.history.last()).map(|&(_, e)| e)
    }

    /// Whether `read` starts in another leader epoch than the last batch
    /// read: the moment to ask whether the log still holds what was read
    /// (KIP-320). Not on every fetch: only when the epoch moves. An older
    /// epoch after a newer one is never one log (a leader stamps its
    /// batches with its own epoch, and epochs only grow): it is asked
    /// about too.
    fn epoch_changes_at(&self, read: &CommittedRead) -> bool {
        let first = read.epochs.iter().map(|&(_, e)| e).find(|&e| e >= 0);
        match (self.last_epoch(), first) {
            (Some(last), Some(first)) => first != last,
            _ => false,
        }
    }

    fn lease_renewal_due(&self, duration: Duration) -> bool {
        self.lease_expires_hint - now_ms() < (duration.as_millis() as i64) / 2
    }

    fn apply(&mut self, cp: &Checkpoint) {
        self.cursor = cp.to_source;
        self.target_end = cp.target_end;
        self.records += cp.records as u64;
        self.bytes += cp.bytes as u64;
        if cp.records > 0 || cp.last_timestamp_ms > self.last_ts {
            self.last_ts = cp.last_timestamp_ms;
        }
        while self.filtered_ts.front().is_some_and(|&(next, _)| next <= cp.to_source) {
            self.filtered_ts.pop_front();
        }
        if let Some(last) = cp.runs.last() {
            self.last_run = Some(*last);
        }
        self.history.clone_from(&cp.leader_epochs);
        self.epochs.retain(|&(base, _)| base >= cp.to_source);
        if let Some(epoch) = cp.target_leader_epoch {
            self.target_epoch = epoch;
        }
        self.lease_expires_hint = cp.lease_expires_ms;
        self.flush_soon = false;
        self.checkpoints += 1;
    }
}

/// The checkpoint that moves `p`'s cursor to `to` with what it has
/// unsaved (nothing, for a lease renewal or a cursor moving over skipped
/// records).
fn checkpoint_for(p: &Part, to: i64, lease_expires_ms: i64) -> Checkpoint {
    let (mut runs, target_end, records, bytes, last_ts, sequence) = match &p.unsaved {
        Some(u) => (u.runs.clone(), u.target_end, u.records, u.bytes, u.last_ts, Some(u.sequence)),
        None => (Vec::new(), p.target_end, 0, 0, None, None),
    };
    join_last_run(p.last_run, &mut runs);
    Checkpoint {
        from_source: p.cursor,
        to_source: to,
        target_end,
        runs,
        prev_run: p.last_run,
        records,
        bytes,
        last_timestamp_ms: p
            .filtered_ts
            .iter()
            .take_while(|&&(next, _)| next <= to)
            .map(|&(_, ts)| ts)
            .fold(last_ts.unwrap_or(p.last_ts), i64::max),
        source_end: p.source_end,
        lease_expires_ms,
        producer_sequence: sequence,
        leader_epochs: p.history_before(to),
        // Read when the checkpoint is written (see `write_checkpoints`).
        target_leader_epoch: None,
    }
}

/// How many leader epochs a cursor keeps (see [`Part::history`]).
const MAX_EPOCHS: usize = 32;

/// `h` with at most [`MAX_EPOCHS`] entries: the oldest one stays (where
/// Ferry's reading began) and the ones after it go, oldest first. An
/// epoch dropped so counts as the one before it: asked about, the leader's
/// history parts from Ferry's no later than it really does (a record
/// copied again, never one skipped).
fn bound_history(mut h: Vec<(i64, i32)>) -> Vec<(i64, i32)> {
    if h.len() > MAX_EPOCHS {
        h.drain(1..=h.len() - MAX_EPOCHS);
    }
    h
}

type RoundResults<T> = Vec<(usize, Result<T, KafkaError>)>;

/// Group the partitions `idx` by their leader on `cluster`, make one call per
/// leader (all at once), and hand back each partition's own result.
async fn per_leader<T, F, Fut>(
    cluster: &KafkaCluster,
    parts: &[Part],
    idx: &[usize],
    tp_of: fn(&Part) -> &TopicPartition,
    call: F,
) -> Result<RoundResults<T>, KafkaError>
where
    F: Fn(i32, Vec<usize>) -> Fut,
    Fut: std::future::Future<Output = Result<HashMap<TopicPartition, Result<T, KafkaError>>, KafkaError>>,
{
    let tps: Vec<TopicPartition> = idx.iter().map(|&i| tp_of(&parts[i]).clone()).collect();
    let leaders = cluster.leaders(&tps).await?;
    let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for &i in idx {
        by_leader.entry(leaders[tp_of(&parts[i])]).or_default().push(i);
    }
    let calls = by_leader.into_iter().map(|(leader, idx)| {
        let fut = call(leader, idx.clone());
        async move { (idx, fut.await) }
    });
    let mut out = Vec::new();
    for (idx, res) in join_all(calls).await {
        let mut map = res.inspect_err(|e| {
            if e.breaks_connection() {
                cluster.invalidate_leaders();
            }
        })?;
        for i in idx {
            let tp = tp_of(&parts[i]);
            let r = map.remove(tp).unwrap_or_else(|| Err(unknown_partition(cluster, tp)));
            out.push((i, r));
        }
    }
    Ok(out)
}

async fn fetch_round(
    source: &KafkaCluster,
    parts: &[Part],
    want: &[usize],
    max_bytes: i32,
    max_wait_ms: i32,
) -> Result<RoundResults<FetchedPartition>, KafkaError> {
    per_leader(
        source,
        parts,
        want,
        |p| &p.work.source,
        |leader, idx| {
            let positions: Vec<(TopicPartition, i64)> = idx.iter().map(|&i| (parts[i].work.source.clone(), parts[i].fetch_pos)).collect();
            async move {
                source
                    .fetch(leader, &positions, max_bytes, max_wait_ms, Isolation::ReadCommitted)
                    .await
            }
        },
    )
    .await
}

async fn produce_round(target: &KafkaCluster, parts: &[Part], to_send: &[usize]) -> Result<RoundResults<i64>, KafkaError> {
    per_leader(
        target,
        parts,
        to_send,
        |p| &p.target,
        |leader, idx| {
            let batches: Vec<(TopicPartition, Bytes)> = idx
                .iter()
                .filter_map(|&i| parts[i].inflight.as_ref().map(|(b, _)| (parts[i].target.clone(), b.clone())))
                .collect();
            async move { target.produce(leader, batches, 30_000).await }
        },
    )
    .await
}

/// One partition's fetch from `pos` (no waiting), for reconcile.
async fn fetch_one(
    cluster: &KafkaCluster,
    tp: &TopicPartition,
    pos: i64,
    max_bytes: i32,
    isolation: Isolation,
) -> Result<FetchedPartition, KafkaError> {
    let leader = cluster.leaders(std::slice::from_ref(tp)).await?[tp];
    let mut res = cluster.fetch(leader, &[(tp.clone(), pos)], max_bytes, 0, isolation).await?;
    res.remove(tp).unwrap_or_else(|| Err(unknown_partition(cluster, tp)))
}

/// A partition a response or a metadata answer left out.
fn unknown_partition(cluster: &KafkaCluster, tp: &TopicPartition) -> KafkaError {
    KafkaError::UnknownPartition {
        cluster: cluster.alias().to_owned(),
        topic: tp.topic.clone(),
        partition: tp.partition,
    }
}

/// Merge the first of `runs` into the partition's newest run when it
/// continues it.
fn join_last_run(last: Option<OffsetRun>, runs: &mut [OffsetRun]) {
    if let (Some(prev), Some(first)) = (last, runs.first_mut()) {
        if prev.is_continued_by(first) {
            *first = OffsetRun {
                source_start: prev.source_start,
                target_start: prev.target_start,
                length: prev.length + first.length,
            };
        }
    }
}

/// Fence the previous holders that may still have a write on its way to
/// the partitions taken from them (see `kafka::txn`): one sequence per
/// holder, all holders at once. A partition that cannot be fenced is not
/// reconciled or written.
async fn fence_all(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    target: &KafkaCluster,
    parts: &mut [Part],
    which: &BTreeMap<(String, i64), Vec<usize>>,
) {
    let results = join_all(which.iter().map(|((id, pid), idx)| {
        let tps: Vec<TopicPartition> = idx.iter().map(|&i| parts[i].target.clone()).collect();
        async move { target.fence(id, *pid, &tps).await }
    }))
    .await;
    for (((id, pid), idx), res) in which.iter().zip(results) {
        match res {
            Ok(fenced) => {
                let failed = fenced.failed.len();
                for (tp, e) in fenced.failed {
                    let e = FerryError::from(with_grant_hint(e, &ferry.spec.name));
                    if let Some(&i) = idx.iter().find(|&&i| parts[i].target == tp) {
                        fail(ferry, flow, flow_key, &mut parts[i], &e).await;
                    }
                }
                tracing::info!(
                    replicator = %ferry.spec.name, flow = %flow.id(), transactional_id = %id, producer_id = pid,
                    partitions = idx.len() - failed, fenced = fenced.same_producer,
                    "fenced the previous holder on the partitions taken from it"
                );
            }
            Err(e) => {
                let e = FerryError::from(with_grant_hint(e, &ferry.spec.name));
                for &i in idx {
                    fail(ferry, flow, flow_key, &mut parts[i], &e).await;
                }
            }
        }
    }
}

/// An error refusing Ferry a transactional id, with the grant to add.
fn with_grant_hint(e: KafkaError, replicator: &str) -> KafkaError {
    match e {
        KafkaError::Broker {
            cluster,
            op,
            topic,
            partition,
            error: error @ ResponseError::TransactionalIdAuthorizationFailed,
            detail,
        } => {
            let prefix = transactional_id_prefix(replicator);
            KafkaError::Broker {
                detail: format!(
                    "{detail}. Fix: grant Ferry's principal WRITE and DESCRIBE on transactional ids prefixed {prefix} on cluster {cluster} \
                     (kafka-acls --add --allow-principal <principal> --operation Write --operation Describe --transactional-id {prefix} \
                     --resource-pattern-type prefixed; with MSK IAM, kafka-cluster:AlterTransactionalId and DescribeTransactionalId on \
                     transactional-id/<cluster>/<uuid>/{prefix}*, which the template grants)"
                ),
                cluster,
                op,
                topic,
                partition,
                error,
            }
        }
        e => e,
    }
}

/// The previous holder of a partition, as its cursor item records it.
#[derive(Debug, Clone, Copy)]
struct PrevHolder {
    /// Its producer id: the provenance of its records on the target.
    producer_id: i64,
    /// Its next sequence number as of the checkpoint's target end; `None`
    /// in a cursor item written before Ferry stored it.
    next_sequence: Option<i32>,
}

/// Reconcile the partitions `which` (index, previous holder): one
/// ListOffsets for all of them, then a read of the target only where it
/// holds records after the last checkpoint (after a clean release, none).
#[allow(clippy::too_many_arguments)]
async fn reconcile_all(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    source: &KafkaCluster,
    target: &KafkaCluster,
    parts: &mut [Part],
    which: &[(usize, PrevHolder)],
    ends: &mut TargetEnds,
    filter: &mut Option<LoopFilter>,
) {
    for &(i, prev) in which {
        let p = &mut parts[i];
        // With the leader's epoch, read before the holder's records are:
        // what the reconcile finds below `end` is in that epoch's history
        // or an older one's (see `CursorItem::target_leader_epoch`).
        let (end, epoch) = match ends.remove(&p.target) {
            Some(Ok(found)) => found,
            Some(Err(e)) => {
                fail(ferry, flow, flow_key, p, &e.into()).await;
                continue;
            }
            None => {
                fail(ferry, flow, flow_key, p, &unknown_partition(target, &p.target).into()).await;
                continue;
            }
        };
        if end <= p.target_end {
            continue;
        }
        let epoch = (epoch >= 0).then_some(epoch);
        if let Err(e) = reconcile(ferry, flow, flow_key, source, target, p, prev, (end, epoch), filter).await {
            fail(ferry, flow, flow_key, p, &e).await;
        }
    }
}

/// One batch of the previous holder's on the target.
#[derive(Debug, Clone, Copy)]
struct HeldBatch {
    base_sequence: i32,
    last_offset_delta: i32,
    base_offset: i64,
}

/// What the target holds of the previous holder after the checkpoint.
#[derive(Debug, Default)]
struct HolderOnTarget {
    /// Its data batches still there (possibly emptied in part by the cleaner).
    batches: Vec<HeldBatch>,
    /// Its records still there: (target offset, sequence, tail, timestamp).
    records: Vec<(i64, i32, Bytes, Option<i64>)>,
    /// Target offsets no batch covers after its last batch (or after the
    /// checkpoint, without one): whole batches removed by compaction or
    /// deleted by retention, which may have been its own.
    missing_after_last: u64,
    /// Keys of every record read, any producer's (see
    /// [`takeover::HolderWrites::later_keys`]).
    keys: HashSet<Bytes>,
}

impl HolderOnTarget {
    /// Its records by position in its write stream, counting from
    /// `first_sequence` (its next sequence at the checkpoint). Sequences
    /// wrap after i32::MAX to 0, as Kafka's do.
    fn positions(&self, first_sequence: i32, span: i64) -> Result<takeover::HolderWrites, String> {
        let pos_of = |seq: i32| (i64::from(seq) - i64::from(first_sequence)).rem_euclid(1 << 31) as u64;
        let mut out = takeover::HolderWrites {
            later_keys: self.keys.clone(),
            ..takeover::HolderWrites::default()
        };
        for b in &self.batches {
            out.positions = out.positions.max(pos_of(b.base_sequence) + b.last_offset_delta as u64 + 1);
        }
        let mut by_batch = self.batches.iter().peekable();
        for (offset, _, tail, timestamp) in &self.records {
            // The batch holding it: its position is its batch's base
            // position plus its offset delta (the cleaner keeps both).
            while by_batch
                .peek()
                .is_some_and(|b| b.base_offset + i64::from(b.last_offset_delta) < *offset)
            {
                by_batch.next();
            }
            let Some(b) = by_batch.peek() else { break };
            let pos = pos_of(b.base_sequence) + (offset - b.base_offset) as u64;
            if out.records.last().is_some_and(|prev: &takeover::Held| prev.pos >= pos) {
                return Err(format!(
                    "the previous holder's sequence numbers on the target go back at offset {offset} (sequence {}, its stream started at {first_sequence})",
                    b.base_sequence
                ));
            }
            out.records.push(takeover::Held {
                pos,
                target_offset: *offset,
                tail: tail.clone(),
                timestamp: *timestamp,
            });
        }
        // It cannot have written more records than there are offsets.
        out.unseen_after = self
            .missing_after_last
            .min(u64::try_from(span).unwrap_or(0).saturating_sub(out.positions));
        if out.positions > u64::try_from(span).unwrap_or(0) {
            return Err(format!(
                "the previous holder's sequence numbers say it wrote {} records after the checkpoint, more than the {span} target offsets there (its stream started at {first_sequence})",
                out.positions
            ));
        }
        Ok(out)
    }
}

/// Read the target from the checkpoint to `end` for the previous holder's
/// batches. Read uncommitted, up to the high watermark `end`: the previous
/// holder's batches are not transactional, but another producer's open
/// transaction on this partition (an application already moved here, the
/// opposite flow's source) holds the last stable offset below them, and a
/// read_committed fetch would hide them.
async fn read_holder_writes(ferry: &Ferry, target: &KafkaCluster, p: &Part, prev_pid: i64, end: i64) -> Result<HolderOnTarget, FerryError> {
    let mut out = HolderOnTarget::default();
    let mut pos = p.target_end;
    while pos < end {
        let f = match fetch_one(
            target,
            &p.target,
            pos,
            ferry.settings.fetch_partition_max_bytes,
            Isolation::ReadUncommitted,
        )
        .await
        {
            Err(KafkaError::Broker {
                error: ResponseError::OffsetOutOfRange,
                ..
            }) => {
                // Retention or DeleteRecords on the target removed the
                // start of the range: like batches the cleaner removed,
                // what was there shows as missing offsets.
                let tp = std::slice::from_ref(&p.target);
                let earliest = target.list_offsets(tp, OffsetSpec::Earliest, false).await?[&p.target];
                if earliest <= pos {
                    return Err(FerryError::NotReady(format!(
                        "reconcile of {}: the target answered OffsetOutOfRange at offset {pos}, inside [{earliest}, {end})",
                        p.work.source
                    )));
                }
                out.missing_after_last += u64::try_from(earliest.min(end) - pos).unwrap_or(0);
                pos = earliest;
                continue;
            }
            res => res?,
        };
        let wrap = |source| KafkaError::Batch {
            cluster: target.alias().to_owned(),
            topic: p.target.topic.clone(),
            partition: p.target.partition,
            source,
        };
        let batches = batch::split_batches(f.records).map_err(wrap)?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            let h = b.header;
            if h.next_offset() <= pos {
                continue;
            }
            out.missing_after_last += u64::try_from(h.base_offset.min(end) - pos).unwrap_or(0);
            if !h.is_control() && h.producer_id != prev_pid {
                for r in batch::records(&b).map_err(wrap)? {
                    if let (Some(k), _) = takeover::key_and_tombstone(&r.tail) {
                        out.keys.insert(k);
                    }
                }
            }
            if h.producer_id == prev_pid && !h.is_control() {
                out.missing_after_last = 0;
                out.batches.push(HeldBatch {
                    base_sequence: h.base_sequence,
                    last_offset_delta: h.last_offset_delta,
                    base_offset: h.base_offset,
                });
                // The broker stamps a LogAppendTime topic's batches with its
                // own time: only key, value and headers are compared there.
                let own_time = !h.is_log_append_time();
                for r in batch::records(&b).map_err(wrap)? {
                    if let (Some(k), _) = takeover::key_and_tombstone(&r.tail) {
                        out.keys.insert(k);
                    }
                    if r.offset >= p.target_end {
                        let seq = batch::next_sequence(h.base_sequence, (r.offset - h.base_offset) as i32);
                        out.records.push((r.offset, seq, r.tail, own_time.then_some(r.timestamp)));
                    }
                }
            }
            pos = h.next_offset();
        }
    }
    // Offsets missing between the last batch read and the end.
    out.missing_after_last += u64::try_from(end - pos).unwrap_or(0);
    Ok(out)
}

/// The committed source records from the cursor, enough to hold every one
/// the previous holder can have written.
struct SourceRead {
    window: takeover::SourceWindow,
    /// Where retention or DeleteRecords moved the source's start past the
    /// cursor: the earliest offset then.
    deleted_to: Option<i64>,
    /// (base offset, leader epoch) of every batch read, in order.
    epochs: Vec<(i64, i32)>,
}

async fn read_source_window(
    ferry: &Ferry,
    flow: &FlowSpec,
    source: &KafkaCluster,
    p: &Part,
    want: u64,
    filter: &mut Option<LoopFilter>,
) -> Result<SourceRead, FerryError> {
    let mut out = SourceRead {
        window: takeover::SourceWindow::default(),
        deleted_to: None,
        epochs: Vec::new(),
    };
    let mut spos = p.cursor;
    let mut carried: u64 = 0;
    let wait_until = Instant::now() + 2 * ferry.settings.lease_duration;
    while (out.window.records.len() as u64) < want {
        let f = match fetch_one(
            source,
            &p.work.source,
            spos,
            ferry.settings.fetch_partition_max_bytes,
            Isolation::ReadCommitted,
        )
        .await
        {
            Err(KafkaError::Broker {
                error: ResponseError::OffsetOutOfRange,
                ..
            }) => {
                // Retention or DeleteRecords removed what the previous
                // holder was copying: a removed range before the earliest
                // offset, matched like any other (see `takeover`).
                let tp = std::slice::from_ref(&p.work.source);
                let earliest = source.list_offsets(tp, OffsetSpec::Earliest, false).await?[&p.work.source];
                let latest = source.list_offsets(tp, OffsetSpec::Latest, false).await?[&p.work.source];
                if spos > latest {
                    return Err(past_the_end(flow, p, spos, latest));
                }
                if earliest <= spos {
                    return Err(FerryError::NotReady(format!(
                        "reconcile of {}: the source answered OffsetOutOfRange at offset {spos}, inside [{earliest}, {latest})",
                        p.work.source
                    )));
                }
                carried += u64::try_from(earliest - spos).unwrap_or(0);
                out.deleted_to = Some(earliest);
                spos = earliest;
                continue;
            }
            res => res?,
        };
        // Record by record: reconcile matches records.
        let read = read_committed(&ferry.store, &f, spos, source.alias(), &p.work.source, filter, PassThrough::NEVER).await?;
        if read.next == spos && read.unmapped {
            if Instant::now() >= wait_until {
                return Err(FerryError::NotReady(format!(
                    "reconcile of {} waits for the opposite flow to checkpoint the records it wrote at offset {spos}",
                    p.work.source
                )));
            }
            tokio::time::sleep(unmapped_recheck(&ferry.settings)).await;
            continue;
        }
        if read.next == spos {
            // The source's end: what is not here was never there or is gone.
            break;
        }
        for (item, removed) in read.records.into_iter().zip(read.removed_before) {
            let Pending::Record(r) = item else { continue };
            out.window.records.push(takeover::SourceRec {
                offset: r.offset,
                tail: r.tail,
                timestamp: r.timestamp,
                removed_before: carried + removed,
            });
            carried = 0;
        }
        carried += read.removed_after;
        spos = read.next;
        out.epochs.extend(read.epochs);
    }
    out.window.removed_after = carried;
    Ok(out)
}

/// What the source's leader says of the history Ferry read up to a
/// position (KIP-320), found as a Kafka follower finds where to truncate
/// its log (KIP-279): with Ferry's own leader-epoch cache.
#[derive(Debug, Clone, PartialEq, Eq)]
enum History {
    /// The leader's log holds what Ferry read, up to the position.
    Same,
    /// The leader's log left Ferry's history at `at`, below the position:
    /// the records from `at` were replaced (an unclean leader election).
    /// `below`: the leader epochs of the history both share, below `at`
    /// (what the cursor keeps when it moves back there).
    Diverged { at: i64, below: Vec<(i64, i32)> },
    /// The leader knows no epoch at or below the one asked for: nothing
    /// to compare (its log start passed all of it).
    Unknown,
}

/// One step of finding where the leader's log parts from Ferry's.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Done(History),
    /// Ask again, about the last epoch of `cache[..upto]`, Ferry's log now
    /// counted as ending at `end`.
    Ask {
        upto: usize,
        end: i64,
    },
}

/// The leader's answer `answer` (OffsetForLeaderEpoch: the largest epoch
/// it has at or below the one asked for, and where that epoch ends in its
/// log) about the last epoch of `cache[..upto]` (Ferry's epochs, oldest
/// first, as (first offset read in it, epoch)), with Ferry's log counted
/// as ending at `end`, for what was read up to `position`.
///
/// The follower's rule: take Ferry's largest epoch at or below the one the
/// leader answered with. The same epoch: the logs part at the smaller of
/// the two ends of it. An older one (Ferry never read the leader's epoch,
/// or the leader never had Ferry's: two unclean elections can do that):
/// Ferry's records from the end of that older epoch on are not the
/// leader's, and the leader is asked again, about that epoch. None (the
/// leader's epoch is older than all Ferry kept): the leader's end, no later
/// than the first offset Ferry read in its oldest epoch when that is known.
/// Kafka's consumer takes the leader's end offset even when the epoch it
/// answers with is an older one than asked for; with a record of what it
/// read, Ferry can do better, and must: that end offset may lie past
/// where Ferry's history left the leader's, or past the position itself.
fn judge(cache: &[(i64, i32)], upto: usize, end: i64, answer: ferry_adapters::kafka::EpochEnd, position: i64) -> Step {
    if answer.end_offset < 0 {
        return Step::Done(History::Unknown);
    }
    let mine = &cache[..upto.min(cache.len())];
    let verdict = |at: i64, below: Vec<(i64, i32)>| {
        let at = at.min(end);
        Step::Done(if at < position {
            History::Diverged {
                at,
                below: below.into_iter().filter(|&(o, _)| o < at).collect(),
            }
        } else {
            History::Same
        })
    };
    let found = if answer.leader_epoch >= 0 {
        mine.iter().rposition(|&(_, e)| e <= answer.leader_epoch)
    } else {
        None
    };
    let Some(i) = found else {
        let first = mine.first().map(|&(o, _)| o).filter(|&o| o >= 0).unwrap_or(i64::MAX);
        let at = answer.end_offset.min(first);
        // The record before `at` is the leader's, in its epoch.
        let below = if answer.leader_epoch >= 0 && at == answer.end_offset {
            vec![(-1, answer.leader_epoch)]
        } else {
            Vec::new()
        };
        return verdict(at, below);
    };
    let ferry_end = mine.get(i + 1).map_or(end, |&(o, _)| o).min(end);
    // The same epoch; or a newer one than asked for, which a leader does
    // not answer with: its end is compared all the same, never asked again.
    if mine[i].1 == answer.leader_epoch || i + 1 >= mine.len() {
        verdict(answer.end_offset.min(ferry_end), mine[..=i].to_vec())
    } else {
        Step::Ask {
            upto: i + 1,
            end: ferry_end,
        }
    }
}

/// Where the source's leader's log parts from what Ferry read up to
/// `position`, in the leader epochs `cache` (see [`judge`]): one
/// OffsetForLeaderEpoch request, and one more for each epoch one of them
/// never had.
async fn find_divergence(source: &KafkaCluster, tp: &TopicPartition, cache: &[(i64, i32)], position: i64) -> Result<History, KafkaError> {
    let (mut upto, mut end) = (cache.len(), position);
    loop {
        let Some(&(_, asked)) = cache[..upto].last() else {
            return Ok(History::Same);
        };
        let answer = source.offset_for_leader_epoch(tp, asked).await?;
        match judge(cache, upto, end, answer, position) {
            Step::Done(h) => return Ok(h),
            Step::Ask { upto: u, end: e } => (upto, end) = (u, e),
        }
    }
}

/// The same as [`check_history`] for every partition at the start of an
/// invocation that has leader epochs stored with its cursor, all at once.
async fn validate_epochs(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, source: &KafkaCluster, parts: &mut [Part]) {
    let which: Vec<usize> = (0..parts.len())
        .filter(|&i| parts[i].done.is_none() && parts[i].cursor > 0 && !parts[i].history.is_empty())
        .collect();
    if which.is_empty() {
        return;
    }
    let answers = join_all(which.iter().map(|&i| {
        let p = &parts[i];
        let cache = p.read_history();
        async move { find_divergence(source, &p.work.source, &cache, p.fetch_pos).await }
    }))
    .await;
    for (i, res) in which.into_iter().zip(answers) {
        let p = &mut parts[i];
        if let Err(e) = on_history(ferry, flow, flow_key, p, res).await {
            fail(ferry, flow, flow_key, p, &e).await;
        }
    }
}

/// Ask the source's leader whether its log still holds what `p` read up
/// to its fetch position (in the epochs read). `Ok(true)`: go on.
/// `Ok(false)`: it does not, and the partition was handled (moved back to
/// where the histories part, or paused until the next invocation does
/// that). An error stops the partition (see `diverged`).
async fn check_history(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, source: &KafkaCluster, p: &mut Part) -> Result<bool, FerryError> {
    let cache = p.read_history();
    if cache.is_empty() {
        return Ok(true);
    }
    let res = find_divergence(source, &p.work.source, &cache, p.fetch_pos).await;
    on_history(ferry, flow, flow_key, p, res).await
}

async fn on_history(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    p: &mut Part,
    res: Result<History, KafkaError>,
) -> Result<bool, FerryError> {
    let history = match res {
        Ok(h) => h,
        Err(e @ KafkaError::Unsupported { .. }) => {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
                partition = p.work.source.partition, error = %e,
                "the source does not answer OffsetForLeaderEpoch: a log truncated by an unclean leader election cannot be detected"
            );
            return Ok(true);
        }
        Err(e) => return Err(e.into()),
    };
    match history {
        History::Same => Ok(true),
        History::Unknown => {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
                partition = p.work.source.partition, leader_epoch = p.last_epoch().unwrap_or(-1), position = p.fetch_pos,
                "the source's leader no longer knows the leader epoch of the last record read; its history cannot be checked"
            );
            Ok(true)
        }
        History::Diverged { at, below } => {
            Box::pin(diverged(ferry, flow, flow_key, p, at, below)).await?;
            Ok(false)
        }
    }
}

/// The leader epochs Ferry read records in from `at` up to `upto`, for
/// messages: "epoch 4", "epochs 2, 4".
fn epochs_read(cache: &[(i64, i32)], at: i64, upto: i64) -> String {
    let mut seen: Vec<i32> = Vec::new();
    for (i, &(o, e)) in cache.iter().enumerate() {
        let next = cache.get(i + 1).map_or(i64::MAX, |&(n, _)| n);
        if o < upto && next > at && !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [] => "an unknown leader epoch".to_owned(),
        [e] => format!("leader epoch {e}"),
        more => format!(
            "leader epochs {}",
            more.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// What a truncated source log did to a partition, for messages.
fn truncation_what(tp: &TopicPartition, cluster: &str, read_epochs: &str, at: i64, upto: i64, cursor: i64, now: Option<i32>) -> String {
    let copied = if cursor > at {
        format!(
            "source offsets {at}..{} of the old history are on the target (the offset map maps them)",
            cursor - 1
        )
    } else {
        "none of them was checkpointed as copied".to_owned()
    };
    format!(
        "the source log of {tp} on cluster {cluster} was truncated: Ferry read source offsets {at}..{} in {read_epochs}, \
         but the partition's leader now ends that history at offset {at}{} and holds other records from there \
         (an unclean leader election made a replica that lacked them the leader; the source lost them); {copied}, \
         and the source's new records from offset {at} on were not copied",
        upto - 1,
        now.map(|e| format!(" (its record before it is in leader epoch {e})"))
            .unwrap_or_default(),
    )
}

/// The source's log no longer holds what `p` read from `at` (`below`:
/// the leader epochs both histories share below `at`). Never silently:
/// unless the operator allowed resuming after data loss, the partition
/// stops with the range and what to run. Allowed, Ferry follows the new
/// history: the cursor moves back to `at`, the offset map from `at` is
/// dropped (the old records stay on the target, mapped no more), an
/// error-level `DataLoss` line names the range and the DataLoss metric
/// counts the records replaced. Mid-invocation, with records of the old
/// history read or in flight, the partition pauses (what the target
/// acknowledged is checkpointed) and the next invocation moves it back.
async fn diverged(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, p: &mut Part, at: i64, below: Vec<(i64, i32)>) -> Result<(), FerryError> {
    let upto = p.fetch_pos.max(p.cursor);
    let read_epoch = p.last_epoch().unwrap_or(-1);
    let now = below.last().map(|&(_, e)| e);
    let read_epochs = epochs_read(&p.read_history(), at, upto);
    let what = truncation_what(&p.work.source, &flow.source.alias, &read_epochs, at, upto, p.cursor, now);
    // None of the replaced records was one this flow copies (with both
    // directions, only the opposite flow's copies, which it drops, and
    // transaction markers: that flow writes them again if its own target
    // lost them): the source lost nothing of this flow's, and its new
    // history is followed without the operator's word.
    let nothing_of_ours = !copied_from(p, at);
    if !ferry.settings.resume_after_data_loss && !nothing_of_ours {
        return Err(truncation_stop(
            p,
            flow,
            what,
            &format!(
                "it moves this partition's cursor back to offset {at}, drops its offset map from there and copies the new records \
                 (the old ones stay on the target)"
            ),
        ));
    }
    let clean = p.pending.is_empty() && p.inflight.is_none() && p.unsaved.is_none() && p.fetch_pos == p.cursor;
    if !clean {
        tracing::error!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
            partition = p.work.source.partition, diverged_at = at, read_to = upto, leader_epoch = read_epoch,
            "LogTruncated: {what}; pausing the partition: what the target acknowledged is checkpointed and the next invocation \
             follows the new history"
        );
        // Nothing more is built or fetched for it in this invocation.
        p.done = Some(StopReason::Retry);
        return Ok(());
    }
    if nothing_of_ours {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
            partition = p.work.source.partition, diverged_at = at, read_to = upto, leader_epoch = read_epoch,
            "LogTruncated: the source log of {} on cluster {} was truncated at offset {at} (an unclean leader election), but \
             none of the records it replaced (offsets {at}..{}) was one this flow copies (the opposite flow's copies, which it \
             drops): nothing of this flow's was lost, and it follows the new history from {at}",
            p.work.source, flow.source.alias, upto - 1
        );
    }
    let lost = if nothing_of_ours { 0 } else { p.cursor - at };
    if !nothing_of_ours {
        tracing::error!(
        replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
        partition = p.work.source.partition, lost_from = at, lost_to = p.cursor, lost_records = lost, leader_epoch = read_epoch,
        "DataLoss: {what}; following the new history as configured (--resume-after-data-loss): the cursor moves back to {at}"
        );
    }
    rewind(ferry, flow_key, p, at, below, None).await?;
    p.lost_records += lost as u64;
    Ok(())
}

/// Move `p`'s cursor back to `to` under its lease, with the offset map
/// from there dropped (see [`StateStore::rewind_cursor`]): `below`, the
/// source leader epochs read below `to`; `target_end`, the target's new
/// end when its log lost Ferry's copies (its stored epoch is then gone).
async fn rewind(
    ferry: &Ferry,
    flow_key: &str,
    p: &mut Part,
    to: i64,
    below: Vec<(i64, i32)>,
    target_end: Option<i64>,
) -> Result<(), StateError> {
    p.last_run = ferry
        .store
        .rewind_cursor(flow_key, &p.lease, p.cursor, to, p.last_run, &below, target_end)
        .await?;
    p.cursor = to;
    p.fetch_pos = to;
    p.history = below;
    p.epochs.clear();
    if let Some(end) = target_end {
        p.target_end = end;
        p.target_epoch = None;
    }
    Ok(())
}

/// Each target partition's end offset and its leader's epoch, read once
/// at the start of an invocation (after the fences, before anything is
/// written) for the partitions with a stored target end: the target's log
/// check and the takeover's reconcile both go by it.
type TargetEnds = HashMap<TopicPartition, Result<(i64, i32), KafkaError>>;

/// [`TargetEnds`]: one request per leader; after an error, each partition
/// alone, so that one the target refuses (its topic deleted, say) does
/// not stop the others. A refusal stops every partition (the invocation
/// ends with it, see `fail`).
async fn target_ends(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, target: &KafkaCluster, parts: &mut [Part]) -> TargetEnds {
    let which: Vec<usize> = (0..parts.len())
        .filter(|&i| parts[i].done.is_none() && parts[i].target_end >= 0)
        .collect();
    if which.is_empty() {
        return HashMap::new();
    }
    let tps: Vec<TopicPartition> = which.iter().map(|&i| parts[i].target.clone()).collect();
    match target.list_offsets_with_epochs(&tps, OffsetSpec::Latest, false).await {
        Ok(ends) => ends.into_iter().map(|(tp, found)| (tp, Ok(found))).collect(),
        Err(e) if e.is_refusal() => {
            let e = FerryError::from(e);
            for &i in &which {
                fail(ferry, flow, flow_key, &mut parts[i], &e).await;
            }
            HashMap::new()
        }
        Err(_) => join_all(tps.iter().map(|tp| async move {
            let one = target
                .list_offsets_with_epochs(std::slice::from_ref(tp), OffsetSpec::Latest, false)
                .await;
            (
                tp.clone(),
                one.and_then(|m| m.get(tp).copied().ok_or_else(|| unknown_partition(target, tp))),
            )
        }))
        .await
        .into_iter()
        .collect(),
    }
}

/// Whether the target's log still holds what Ferry copied below each
/// partition's stored target end, at the start of an invocation: its end
/// offset (a log that ends below it lost Ferry's copies), and where the
/// target's leader ends the leader epoch stored with the checkpoint
/// (OffsetForLeaderEpoch; this also finds a truncated log that other
/// producers have written past since). Where it does not, the copies it
/// lost are copied again (see [`target_truncated`]). Returns the
/// partitions moved back.
async fn check_target_logs(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    target: &KafkaCluster,
    parts: &mut [Part],
    ends: &mut TargetEnds,
) -> Vec<usize> {
    let which: Vec<usize> = (0..parts.len())
        .filter(|&i| parts[i].done.is_none() && parts[i].target_end > 0)
        .collect();
    let parted = join_all(which.iter().map(|&i| {
        let p = &parts[i];
        let now = ends.get(&p.target).and_then(|r| r.as_ref().ok()).copied();
        async move {
            match now {
                // The leader of the stored epoch leads still: a leader never
                // truncates its own log, so only the end is compared.
                Some((end, epoch)) if epoch >= 0 && p.target_epoch == Some(epoch) => Some(Ok((end, end))),
                Some((end, _)) => Some(target_parting(flow, target, p, end).await.map(|at| (at, end))),
                // Not read: the reconcile, or the first write, meets why.
                None => None,
            }
        }
    }))
    .await;
    let mut rewound = Vec::new();
    for (i, res) in which.into_iter().zip(parted) {
        let p = &mut parts[i];
        // Refused: said now, before a later call meets only the client's
        // back-off and takes it for a passing error.
        if ends.get(&p.target).is_some_and(|r| r.as_ref().is_err_and(KafkaError::is_refusal)) {
            if let Some(Err(e)) = ends.remove(&p.target) {
                fail(ferry, flow, flow_key, p, &e.into()).await;
            }
            continue;
        }
        let (at, end) = match res {
            None => continue,
            Some(Ok((at, _))) if at >= p.target_end => continue,
            Some(Ok(found)) => found,
            Some(Err(e)) if e.is_refusal() => {
                fail(ferry, flow, flow_key, p, &e.into()).await;
                continue;
            }
            Some(Err(e)) => {
                // Not checked now: the steps that write meet the cause
                // themselves, and a checkpoint of records asks about the
                // stored epoch before it stores another (see
                // `lost_since_checkpoint`).
                tracing::warn!(
                    flow = %flow.id(), cluster = %flow.target.alias, topic = %p.target.topic, partition = p.target.partition,
                    error = %e, "could not check the target's log at the start; the next checkpoint of records checks it"
                );
                continue;
            }
        };
        match Box::pin(target_truncated(ferry, flow, flow_key, p, at, end)).await {
            Ok(()) => rewound.push(i),
            Err(e) => fail(ferry, flow, flow_key, p, &e).await,
        }
    }
    rewound
}

/// Where the target's log of `p` parts from what Ferry wrote, given its
/// end offset `end` now: the smaller of that end and where the target's
/// leader ends the leader epoch stored with the last checkpoint
/// (OffsetForLeaderEpoch: every record Ferry wrote below the stored
/// target end is in that epoch or an older one, so a leader whose history
/// of it ends sooner lacks them, whoever wrote after).
async fn target_parting(flow: &FlowSpec, target: &KafkaCluster, p: &Part, end: i64) -> Result<i64, KafkaError> {
    let Some(epoch) = p.target_epoch else {
        return Ok(end);
    };
    match target.offset_for_leader_epoch(&p.target, epoch).await {
        Ok(answer) if answer.end_offset >= 0 => Ok(answer.end_offset.min(end)),
        Ok(_) => Ok(end),
        Err(e @ KafkaError::Unsupported { .. }) => {
            tracing::warn!(cluster = %flow.target.alias, topic = %p.target.topic, partition = p.target.partition, error = %e, "the target does not answer OffsetForLeaderEpoch: only its end offset is checked");
            Ok(end)
        }
        Err(e) => Err(e),
    }
}

/// The target's log of `p` parts from what Ferry copied at offset `at`
/// (`end`: its end offset now): the copies at or past `at` are gone, lost
/// with the records an unclean leader election dropped (or the topic was
/// deleted and created again); other producers' records may stand in
/// their place. Nothing the source holds is lost: the cursor moves back to
/// the first source record whose copy was there, the offset map from there
/// is dropped, an error-level `TargetTruncated` line names both ranges, and
/// those records are copied again (after the target's end). A group whose
/// translation pointed there translates again once they are.
async fn target_truncated(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, p: &mut Part, at: i64, end: i64) -> Result<(), FerryError> {
    let mut runs = ferry.store.runs(flow_key, &p.work.source).await?;
    if let Some(open) = p.last_run {
        for r in runs.iter_mut().filter(|r| r.source_start == open.source_start) {
            r.length = r.length.max(open.length);
        }
    }
    let from = ferry_core::offset_map::first_source_at_or_past_target(&runs, at).map_or(p.cursor, |o| o.min(p.cursor));
    let below: Vec<(i64, i32)> = p.history.iter().copied().filter(|&(o, _)| o < from).collect();
    if at < p.target_end {
        let copies = if from < p.cursor {
            format!("the copies of source offsets {from}..{} are gone; copying them again", p.cursor - 1)
        } else {
            "none of them was a copy of Ferry's".to_owned()
        };
        tracing::error!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topic = %p.target.topic,
            partition = p.target.partition, parted_at = at, target_end = end, copied_to = p.target_end, lost_from = from, lost_to = p.cursor,
            "TargetTruncated: the target log of {} on cluster {} no longer holds what Ferry wrote from offset {at} up to offset {} \
             (its leader's history parts from Ferry's there{}: an unclean leader election made a replica that lacked them the \
             leader, or the topic was deleted and created again); {copies}",
            p.target, flow.target.alias, p.target_end - 1,
            if end > at { format!(", and other records follow up to its end {end}") } else { String::new() },
        );
    }
    Ok(rewind(ferry, flow_key, p, from, below, Some(at)).await?)
}

/// Whether `p` copied (or holds to copy) any source record at or past
/// `at`: in its offset map (its newest run is the last one, in source
/// order), acknowledged and not yet checkpointed, or read and waiting to
/// be written.
fn copied_from(p: &Part, at: i64) -> bool {
    !p.pending.is_empty()
        || p.inflight.is_some()
        || p.unsaved.as_ref().is_some_and(|u| u.records > 0)
        || p.last_run.is_some_and(|r| r.source_end() > at)
}

/// A cursor past the source's end: the partition's history was replaced.
fn past_the_end(flow: &FlowSpec, p: &Part, at: i64, latest: i64) -> FerryError {
    FerryError::PartitionStopped {
        tp: p.work.source.clone(),
        cluster: flow.source.alias.clone(),
        what: format!(
            "the cursor {at} is past the source end offset {latest}: the topic was deleted and recreated, or the log was truncated"
        ),
        fix: "if the topic was recreated on purpose, delete this partition's item from the cursors table to start it again".into(),
    }
}

/// The previous holder's first sequence after the checkpoint, for a cursor
/// item written before Ferry stored it: 0 when its first batch there
/// starts at 0 (nothing of it can come before); otherwise that batch's
/// base sequence, which is only sure when no compaction can have removed
/// batches before it — both topics' cleanup.policy without compact.
async fn legacy_first_sequence(
    flow: &FlowSpec,
    source: &KafkaCluster,
    target: &KafkaCluster,
    p: &Part,
    held: &HolderOnTarget,
) -> Result<i32, FerryError> {
    let Some(first) = held.batches.first() else { return Ok(0) };
    if first.base_sequence == 0 {
        return Ok(0);
    }
    let compacted = |cfgs: &HashMap<String, ferry_adapters::kafka::TopicConfig>, topic: &str| {
        cfgs.get(topic)
            .and_then(|c| c.effective.get("cleanup.policy"))
            .is_some_and(|v| v.contains("compact"))
    };
    let src_cfg = source.topic_configs(std::slice::from_ref(&p.work.source.topic)).await?;
    let dst_cfg = target.topic_configs(std::slice::from_ref(&p.target.topic)).await?;
    if compacted(&src_cfg, &p.work.source.topic) || compacted(&dst_cfg, &p.target.topic) {
        return Err(FerryError::PartitionStopped {
            tp: p.work.source.clone(),
            cluster: flow.target.alias.clone(),
            what: format!(
                "the cursor item was written by a Ferry release that did not store its producer's sequence, and the topics are compacted: \
                 the previous holder's first batch after target offset {} (at offset {}, sequence {}) may not be its first, so what it \
                 wrote after the checkpoint cannot be told exactly",
                p.target_end, first.base_offset, first.base_sequence
            ),
            fix: "run the Ferry release that wrote this cursor item once more (it reconciles the partition and checkpoints), then this one"
                .into(),
        });
    }
    Ok(first.base_sequence)
}

/// After taking over a partition: find what the previous holder wrote to
/// the target after the last checkpoint, match it to the source records
/// after the cursor by position and content (see [`takeover`]), and move
/// the cursor over the ones written, so nothing is written twice, nothing
/// is skipped, and each mapped source offset points at its own copy.
#[allow(clippy::too_many_arguments)]
async fn reconcile(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    source: &KafkaCluster,
    target: &KafkaCluster,
    p: &mut Part,
    prev: PrevHolder,
    (end, end_epoch): (i64, Option<i32>),
    filter: &mut Option<LoopFilter>,
) -> Result<(), FerryError> {
    let held = read_holder_writes(ferry, target, p, prev.producer_id, end).await?;
    if held.batches.is_empty() && held.missing_after_last == 0 {
        return Ok(());
    }
    let stop = |what: String, fix: &str| FerryError::PartitionStopped {
        tp: p.work.source.clone(),
        cluster: flow.target.alias.clone(),
        what,
        fix: fix.to_owned(),
    };
    const FIX_LOOK: &str = "compare target partition's records after the checkpoint's target offset with the source's after the cursor \
                            (`ferry status` shows both), then either let a later run try again once compaction has settled, or start \
                            the partition afresh from a chosen position (ferry forget-flow, then a backfill)";
    let first_sequence = match prev.next_sequence {
        Some(s) => s,
        None => legacy_first_sequence(flow, source, target, p, &held).await?,
    };
    let holder = held
        .positions(first_sequence, end - p.target_end)
        .map_err(|what| stop(format!("reconcile: {what}"), FIX_LOOK))?;
    let read = read_source_window(ferry, flow, source, p, holder.positions + holder.unseen_after, filter).await?;
    let a = match takeover::align(&holder, &read.window) {
        Ok(a) => a,
        Err(e) => {
            // No reading of the source matches what the holder wrote: the
            // source's log may have been truncated under its writes.
            let written = i64::try_from(holder.positions).unwrap_or(i64::MAX);
            if let Some(at) = Box::pin(replaced_under_holder(source, p, written)).await? {
                return Box::pin(holder_wrote_replaced(ferry, flow, flow_key, p, at, written, first_sequence, end)).await;
            }
            return Err(stop(
                format!(
                    "reconcile after taking the partition over: the previous holder wrote records after target offset {} and source offset {} \
                     that were not checkpointed, and since then compaction or retention removed some of them on the source or the target: {e}",
                    p.target_end, p.cursor
                ),
                FIX_LOOK,
            ));
        }
    };
    let recs = &read.window.records;
    // The cursor after what was written.
    let mut to_source = match a.written.checked_sub(1).map(|i| &recs[i]) {
        Some(last) => last.offset + 1,
        None => p.cursor,
    };
    let last_ts = a.written.checked_sub(1).map_or(p.last_ts, |i| recs[i].timestamp);
    // Retention removed records before the first one on the source: those
    // the holder wrote are on the target (not lost, not to be written
    // again); lost is only what is on neither side.
    if let Some(earliest) = read.deleted_to.filter(|_| a.written == 0) {
        let lost = (earliest - p.cursor)
            .saturating_sub(i64::try_from(holder.positions).unwrap_or(i64::MAX))
            .max(0);
        if lost > 0 && !ferry.settings.resume_after_data_loss {
            return Err(FerryError::PartitionStopped {
                tp: p.work.source.clone(),
                cluster: flow.source.alias.clone(),
                what: format!(
                    "source offsets {}..{earliest} were deleted (retention or DeleteRecords) before Ferry replicated them; the previous \
                     holder had written the first {} records from {} to the target, so up to {lost} records would be lost",
                    p.cursor, holder.positions, p.cursor
                ),
                fix: "raise the source topic's retention and replicate faster, or accept the loss with --resume-after-data-loss (a deployed stack: its ResumeAfterDataLoss parameter, for one execution)".into(),
            });
        }
        if lost > 0 {
            tracing::error!(
                replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
                partition = p.work.source.partition, lost_from = p.cursor, lost_to = earliest, lost_records = lost,
                written_before = holder.positions,
                "DataLoss: source records were deleted before replication; resuming at the earliest offset as configured"
            );
            p.lost_records += lost as u64;
        }
        to_source = earliest;
    }
    if a.pairs.is_empty() && to_source == p.cursor && holder.positions == 0 {
        return Ok(());
    }
    // The source's epochs of what the holder wrote (read now, after the
    // stored ones were validated): the checkpoints below keep those of the
    // records they pass (the rest are dropped after them). Past records
    // deleted before they were copied, what came before is not known.
    if read.deleted_to.is_some() {
        p.history.clear();
    }
    p.note_epochs(&read.epochs);
    // Offset-map runs of the matched records, with each one's position
    // (for the sequence a partial checkpoint stores).
    let pos_of = |t: i64| {
        holder
            .records
            .binary_search_by_key(&t, |h| h.target_offset)
            .map(|i| holder.records[i].pos)
            .unwrap_or(0)
    };
    let mut runs: Vec<OffsetRun> = Vec::new();
    for &(s, t) in &a.pairs {
        ferry_core::offset_map::coalesce(
            &mut runs,
            &[OffsetRun {
                source_start: s,
                target_start: t,
                length: 1,
            }],
        );
    }
    // One checkpoint per chunk of runs: a DynamoDB transaction has an item
    // limit. The last one ends at the target end read: everything of the
    // previous holder is before it (it is fenced).
    let lease_expires_ms = now_ms() + ferry.settings.lease_duration.as_millis() as i64;
    let mut start = 0;
    loop {
        let stop_at = (start + MAX_RUNS_PER_CHECKPOINT).min(runs.len());
        let mut chunk: Vec<OffsetRun> = runs[start..stop_at].to_vec();
        let last_chunk = stop_at == runs.len();
        let (to, target_end, sequence) = if last_chunk {
            let written = i32::try_from(holder.positions % (1 << 31)).unwrap_or(0);
            (to_source, end, batch::next_sequence(first_sequence, written))
        } else {
            let last = chunk[chunk.len() - 1];
            let after = i32::try_from((pos_of(last.target_end() - 1) + 1) % (1 << 31)).unwrap_or(0);
            (
                runs[stop_at].source_start,
                last.target_end(),
                batch::next_sequence(first_sequence, after),
            )
        };
        join_last_run(p.last_run, &mut chunk);
        let cp = Checkpoint {
            from_source: p.cursor,
            to_source: to,
            target_end,
            runs: chunk,
            prev_run: p.last_run,
            records: 0,
            bytes: 0,
            last_timestamp_ms: last_ts,
            source_end: p.source_end,
            lease_expires_ms,
            producer_sequence: Some(sequence),
            leader_epochs: p.history_before(to),
            // The target's epoch when its end was read (before the read
            // that found the holder's records below it).
            target_leader_epoch: Some(end_epoch),
        };
        ferry.store.checkpoint(flow_key, &p.lease, &cp).await?;
        p.apply(&cp);
        if last_chunk {
            break;
        }
        start = stop_at;
    }
    tracing::info!(
        replicator = %ferry.spec.name, flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition,
        reconciled = holder.positions, on_target = holder.records.len(), matched = a.pairs.len(), source_removed = a.source_removed,
        source_written = a.written, to = p.cursor, "reconciled records the previous holder wrote but did not checkpoint"
    );
    p.last_ts = last_ts;
    p.fetch_pos = p.cursor;
    p.epochs.clear();
    p.reconciled = holder.positions;
    Ok(())
}

/// Whether the source's log was truncated under what a crashed holder
/// wrote past the cursor: it read `written` records from the cursor on,
/// in the last epoch stored or a later one. Asked about Ferry's stored
/// epochs with its log counted as ending there, a leader whose log parts
/// from that history below it says the holder copied records the source
/// no longer has. `Some(at)`: where the histories part.
async fn replaced_under_holder(source: &KafkaCluster, p: &Part, written: i64) -> Result<Option<i64>, FerryError> {
    if written <= 0 || p.history.is_empty() {
        return Ok(None);
    }
    let upto = p.cursor.saturating_add(written);
    match find_divergence(source, &p.work.source, &p.history, upto).await {
        Ok(History::Diverged { at, .. }) => Ok(Some(at.max(p.cursor))),
        Ok(_) | Err(KafkaError::Unsupported { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A crashed holder wrote `written` records read from the cursor on
/// (target offsets up to `end`), and the source's log was truncated at
/// `at` under them: they are copies of records the source lost. Never
/// silently: unless the operator allowed resuming after data loss, the
/// partition stops with the range and what to run. Allowed, Ferry follows
/// the new history from the cursor: the holder's writes stay on the
/// target, in no offset map (a checkpoint moves the target end past them,
/// not the cursor), an error-level `DataLoss` line names the range and the
/// DataLoss metric counts the records the source lost. Those the holder
/// copied below `at` (the same in both histories) are copied again.
#[allow(clippy::too_many_arguments)]
async fn holder_wrote_replaced(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    p: &mut Part,
    at: i64,
    written: i64,
    first_sequence: i32,
    end: i64,
) -> Result<(), FerryError> {
    let upto = p.cursor + written;
    let what = format!(
        "the source log of {} on cluster {} was truncated: a worker that stopped before its checkpoint had copied source \
         offsets {}..{} (to target offsets {}..{}), but the partition's leader now ends the history they were read from at \
         offset {at} and holds other records from there (an unclean leader election made a replica that lacked them the \
         leader; the source lost them); the source's new records from offset {at} on were not copied",
        p.work.source,
        flow.source.alias,
        p.cursor,
        upto - 1,
        p.target_end,
        end - 1
    );
    if !ferry.settings.resume_after_data_loss {
        return Err(truncation_stop(
            p,
            flow,
            what,
            &format!(
                "it leaves those copies on the target, in no offset map, and copies the source's records from offset {} on",
                p.cursor
            ),
        ));
    }
    let lost = upto - at;
    tracing::error!(
        replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
        partition = p.work.source.partition, lost_from = at, lost_to = upto, lost_records = lost, copied_again = at - p.cursor,
        "DataLoss: {what}; following the new history as configured (--resume-after-data-loss) from source offset {}: the \
         copies stay on the target, in no offset map",
        p.cursor
    );
    let mut cp = checkpoint_for(p, p.cursor, lease_expires_at(&ferry.settings));
    cp.target_end = end;
    cp.producer_sequence = Some(batch::next_sequence(
        first_sequence,
        i32::try_from(written % (1 << 31)).unwrap_or(0),
    ));
    ferry.store.checkpoint(flow_key, &p.lease, &cp).await?;
    p.apply(&cp);
    p.fetch_pos = p.cursor;
    p.epochs.clear();
    p.lost_records += u64::try_from(lost).unwrap_or(0);
    Ok(())
}

/// The stop of a partition whose source log was truncated under what
/// Ferry read (`what`), when the operator has not allowed resuming after
/// data loss; `resuming`: what a run that is allowed does.
fn truncation_stop(p: &Part, flow: &FlowSpec, what: String, resuming: &str) -> FerryError {
    FerryError::PartitionStopped {
        tp: p.work.source.clone(),
        cluster: flow.source.alias.clone(),
        what,
        fix: format!(
            "to follow the source's new history, {}: {resuming}. To copy the partition afresh instead: `ferry forget-flow`, then a \
             backfill",
            resume_once()
        ),
    }
}

/// What an operator runs to let one execution follow a source's new
/// history (or go past deleted records), for the fixes of stops.
fn resume_once() -> &'static str {
    "run Ferry once with --resume-after-data-loss (`ferry run --once --resume-after-data-loss` with this replicator's \
     arguments; for a deployed stack, `sam deploy` with `--parameter-overrides ResumeAfterDataLoss=true`, let one \
     scheduled execution pass, then deploy again with ResumeAfterDataLoss=false)"
}

fn lease_expires_at(settings: &crate::context::Settings) -> i64 {
    now_ms() + settings.lease_duration.as_millis() as i64
}

/// The target refused a batch. Producer-state faults (the broker lost or
/// fenced Ferry's producer, e.g. after a restart) end this invocation for
/// the partition; the next one reconciles. Anything else stops the
/// partition with what to change, naming the source offsets involved.
async fn produce_failed(ferry: &Ferry, flow: &FlowSpec, flow_key: &str, p: &mut Part, e: KafkaError) {
    let KafkaError::Broker { error, detail, .. } = &e else {
        fail(ferry, flow, flow_key, p, &e.into()).await;
        return;
    };
    let n = p.inflight.as_ref().map(|(_, n)| *n).unwrap_or(0);
    let records: i64 = p
        .pending
        .iter()
        .take(n)
        .map(|item| item.last_offset() - item.first_offset() + 1)
        .sum();
    let first = p.pending.front().map(Pending::first_offset).unwrap_or(p.cursor);
    let last = p.pending.get(n.saturating_sub(1)).map(Pending::last_offset).unwrap_or(first);
    let batch_bytes = p.inflight.as_ref().map(|(b, _)| b.len()).unwrap_or(0);
    let fix = match error {
        ResponseError::OutOfOrderSequenceNumber
        | ResponseError::UnknownProducerId
        | ResponseError::InvalidProducerEpoch
        | ResponseError::ProducerFenced => {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topic = %p.target.topic,
                partition = p.target.partition, cause = %e,
                "target refused this producer: fenced by a worker that took the partition over, or the target lost its state; the batch was not written, and the partition resumes after a reconcile"
            );
            p.done = Some(StopReason::Retry);
            return;
        }
        ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => format!(
            "raise max.message.bytes on target topic {} above {batch_bytes} bytes{}",
            p.target.topic,
            if records > 1 {
                format!(", or lower --produce-batch-max-bytes below it ({records} records were in one batch; a source batch that size is then split)")
            } else {
                " (a source record is that large)".to_owned()
            }
        ),
        ResponseError::InvalidTimestamp => format!(
            "the record timestamps are outside target topic {}'s message.timestamp.before.max.ms / message.timestamp.after.max.ms: widen them",
            p.target.topic
        ),
        ResponseError::TopicAuthorizationFailed | ResponseError::ClusterAuthorizationFailed => format!(
            "grant Ferry's principal WRITE (and IDEMPOTENT_WRITE on the cluster for Kafka before 3.0) on target topic {}",
            p.target.topic
        ),
        ResponseError::InvalidRecord | ResponseError::CorruptMessage => {
            format!("the target refused the records ({detail}); check target topic {}'s settings such as cleanup.policy=compact needing keys", p.target.topic)
        }
        _ => format!("see the broker's message ({detail})"),
    };
    let stopped = FerryError::PartitionStopped {
        tp: p.work.source.clone(),
        cluster: flow.target.alias.clone(),
        what: format!(
            "target topic {} partition {} refused source offsets {first}..={last}: {error}",
            p.target.topic, p.target.partition
        ),
        fix,
    };
    fail(ferry, flow, flow_key, p, &stopped).await;
}

/// The cursor points at source records that no longer exist. Never skip
/// silently: stop with the lost range, unless the operator allowed resuming.
async fn out_of_range(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    source: &KafkaCluster,
    p: &mut Part,
    lease_expires_ms: i64,
) -> Result<(), FerryError> {
    if !p.pending.is_empty() || p.unsaved.is_some() {
        // Records fetched before the gap go out first; the gap is handled
        // once they are checkpointed, which is asked for now.
        p.flush_soon = true;
        return Ok(());
    }
    let tp = std::slice::from_ref(&p.work.source);
    let earliest = source.list_offsets(tp, OffsetSpec::Earliest, false).await?[&p.work.source];
    let latest = source.list_offsets(tp, OffsetSpec::Latest, false).await?[&p.work.source];
    if p.fetch_pos > latest {
        // Past the end: a truncated log says where it diverged.
        if p.last_epoch().is_some() && !Box::pin(check_history(ferry, flow, flow_key, source, p)).await? {
            return Ok(());
        }
        return Err(past_the_end(flow, p, p.fetch_pos, latest));
    }
    if !ferry.settings.resume_after_data_loss {
        return Err(FerryError::PartitionStopped {
            tp: p.work.source.clone(),
            cluster: flow.source.alias.clone(),
            what: format!(
                "source offsets {}..{earliest} were deleted (retention or DeleteRecords) before Ferry replicated them; {} records would be lost",
                p.fetch_pos,
                earliest - p.fetch_pos
            ),
            fix: "raise the source topic's retention and replicate faster, or accept the loss with --resume-after-data-loss (a deployed stack: its ResumeAfterDataLoss parameter, for one execution)".into(),
        });
    }
    tracing::error!(
        replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
        partition = p.work.source.partition, lost_from = p.fetch_pos, lost_to = earliest, lost_records = earliest - p.fetch_pos,
        "DataLoss: source records were deleted before replication; resuming at the earliest offset as configured"
    );
    let mut cp = checkpoint_for(p, earliest, lease_expires_ms);
    // The epoch of the record before `earliest` is not known (deleted).
    cp.leader_epochs = Vec::new();
    ferry.store.checkpoint(flow_key, &p.lease, &cp).await?;
    p.apply(&cp);
    p.lost_records += (earliest - p.fetch_pos) as u64;
    p.fetch_pos = earliest;
    Ok(())
}

/// Fault injection for the crash tests: `FERRY_FAILPOINT=crash-after-produce:N`
/// aborts the process right after its N-th acknowledged produce round and
/// before that round's checkpoint, the exact window reconcile exists for;
/// `stall-before-produce:S` stops the whole process for S seconds once,
/// after a lease check and before the send, the window fencing exists for.
/// Unset (always, outside tests) it costs a relaxed load or two per round.
mod failpoint {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static ROUNDS: AtomicU64 = AtomicU64::new(0);
    static STALL: OnceLock<Option<u64>> = OnceLock::new();
    static STALLED: AtomicBool = AtomicBool::new(false);

    /// The number after `name:` in FERRY_FAILPOINT.
    fn arg(name: &str) -> Option<u64> {
        std::env::var("FERRY_FAILPOINT").ok().and_then(|v| {
            v.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|n| n.parse().ok())
        })
    }

    /// `stall-before-produce:<seconds>`: the first time a batch is about
    /// to be sent (its lease checked), do nothing for that long, as a
    /// process paused by its host would; then send it.
    pub(super) async fn before_produce() {
        if let Some(secs) = *STALL.get_or_init(|| arg("stall-before-produce")) {
            if !STALLED.swap(true, Ordering::Relaxed) {
                eprintln!("ferry: failpoint stall-before-produce:{secs} reached; stalling with a batch ready to send");
                std::thread::sleep(Duration::from_secs(secs));
                eprintln!("ferry: failpoint stall-before-produce:{secs} over; sending the batch");
            }
        }
    }

    /// `crash-after-produce:<n>`: abort after the n-th produce round.
    pub(super) fn after_produce() {
        let limit = LIMIT.get_or_init(|| arg("crash-after-produce"));
        if let Some(limit) = limit {
            if ROUNDS.fetch_add(1, Ordering::Relaxed) + 1 >= *limit {
                eprintln!("ferry: failpoint crash-after-produce:{limit} reached; aborting before the checkpoint");
                std::process::abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use bytes::Bytes;
    use ferry_adapters::kafka::batch::{self, SourceRecord};

    use ferry_core::offset_map::OffsetRun;

    use ferry_adapters::state::Lease;
    use ferry_core::domain::{PartitionWork, ReplicateInput, StopReason, TopicPartition};

    use super::{
        batch_len, bound_history, checkpoint_for, due_checkpoints, epochs_read, judge, now_ms, truncation_what, Budget, CommittedRead,
        History, Part, Pending, Step, Unsaved, MAX_EPOCHS, MAX_RUNS_PER_BATCH,
    };
    use crate::context::Settings;
    use ferry_adapters::kafka::EpochEnd;

    fn rec(offset: i64, tail_len: usize) -> Pending {
        Pending::Record(SourceRecord {
            offset,
            timestamp: 0,
            attributes: 0,
            tail: Bytes::from(vec![0u8; tail_len]),
        })
    }

    fn unsaved(source_start: i64, target_start: i64, length: i64, last_ts: Option<i64>) -> Unsaved {
        Unsaved {
            runs: vec![OffsetRun {
                source_start,
                target_start,
                length,
            }],
            to_source: source_start + length,
            target_end: target_start + length,
            records: length,
            bytes: 10 * length,
            last_ts,
            ..Unsaved::new()
        }
    }

    #[test]
    fn records_put_back_after_a_failed_checkpoint_come_before_the_later_ones() {
        // Contiguous: one run.
        let u = unsaved(0, 100, 5, Some(7)).then(unsaved(5, 105, 3, None));
        assert_eq!(
            u.runs,
            vec![OffsetRun {
                source_start: 0,
                target_start: 100,
                length: 8
            }]
        );
        assert_eq!((u.to_source, u.target_end, u.records, u.bytes, u.last_ts), (8, 108, 8, 80, Some(7)));
        // A gap in the source (compaction) starts a new run.
        let u = unsaved(0, 100, 5, Some(7)).then(unsaved(9, 105, 3, Some(9)));
        assert_eq!(u.runs.len(), 2);
        assert_eq!((u.to_source, u.target_end, u.last_ts), (12, 108, Some(9)));
    }

    /// A partition whose loop has read (and skipped) up to `fetch_pos` with
    /// nothing left to write, its cursor at `cursor`.
    fn read_past_cursor(cursor: i64, fetch_pos: i64, done: Option<StopReason>) -> Part {
        let tp = TopicPartition::new("t", 0);
        Part {
            work: PartitionWork {
                source: tp.clone(),
                target_topic: "t".into(),
                end_offset: cursor,
                lag: 0,
            },
            target: tp.clone(),
            lease: Lease {
                tp,
                owner: "test".into(),
                epoch: 1,
            },
            cursor,
            fetch_pos,
            fetch_after: None,
            unmapped_since: None,
            starved: false,
            pending: VecDeque::new(),
            pending_bytes: 0,
            inflight: None,
            sequence: 0,
            producer_recorded: true,
            unsaved: None,
            flush_soon: false,
            checkpoints: 0,
            last_run: None,
            target_end: 0,
            source_end: fetch_pos,
            records: 0,
            bytes: 0,
            last_ts: 0,
            done,
            error: None,
            refused: None,
            lease_expires_hint: now_ms() + 60_000,
            reconciled: 0,
            filtered_records: 0,
            filtered_bytes: 0,
            filtered_ts: VecDeque::new(),
            lost_records: 0,
            history: Vec::new(),
            epochs: VecDeque::new(),
            target_epoch: None,
            target_lost: false,
        }
    }

    #[test]
    fn a_stopped_partition_still_checkpoints_the_records_it_skipped() {
        let settings = Settings::default();
        let input = ReplicateInput {
            stored: None,
            flow: "a>b".into(),
            partitions: Vec::new(),
            stop_at_plan_end: true,
            max_seconds: None,
        };
        for done in [
            None,
            Some(StopReason::CaughtUp),
            Some(StopReason::Budget),
            Some(StopReason::Interrupted),
        ] {
            let mut parts = [read_past_cursor(10, 25, done)];
            let due = due_checkpoints(&settings, &mut parts, &input);
            assert_eq!(due.len(), 1, "{done:?}");
            assert_eq!(
                (due[0].cp.from_source, due[0].cp.to_source, due[0].cp.records),
                (10, 25, 0),
                "{done:?}"
            );
        }
        // A failed partition's position is in doubt: the next holder
        // reconciles instead.
        for done in [Some(StopReason::Error), Some(StopReason::Retry), Some(StopReason::LeaseHeld)] {
            let mut parts = [read_past_cursor(10, 25, done)];
            assert!(due_checkpoints(&settings, &mut parts, &input).is_empty(), "{done:?}");
        }
        // Nothing skipped: nothing to write.
        let mut parts = [read_past_cursor(25, 25, Some(StopReason::CaughtUp))];
        assert!(due_checkpoints(&settings, &mut parts, &input).is_empty());
    }

    #[test]
    fn a_due_checkpoint_takes_the_partitions_halfway_there_along() {
        let settings = Settings::default();
        let input = ReplicateInput {
            stored: None,
            flow: "a>b".into(),
            partitions: Vec::new(),
            stop_at_plan_end: false,
            max_seconds: None,
        };
        let aged = |p: &mut Part, age: Duration| {
            p.pending.push_back(rec(10, 10)); // still busy: not an idle move
            p.unsaved = Some(Unsaved {
                since: tokio::time::Instant::now() - age,
                ..unsaved(0, 0, 10, None)
            });
        };
        let interval = settings.checkpoint_interval;
        let mut parts = [
            read_past_cursor(0, 10, None),
            read_past_cursor(0, 10, None),
            read_past_cursor(0, 10, None),
        ];
        aged(&mut parts[0], interval * 6 / 10);
        aged(&mut parts[1], interval / 10);
        aged(&mut parts[2], interval * 6 / 10);
        // Nothing due yet: nothing written, however ripe.
        assert!(due_checkpoints(&settings, &mut parts, &input).is_empty());
        // Partition 2 is due: partition 0, past half the interval, comes
        // along; partition 1 waits.
        aged(&mut parts[2], interval);
        let due: Vec<usize> = due_checkpoints(&settings, &mut parts, &input).iter().map(|d| d.part).collect();
        assert_eq!(due, vec![0, 2]);
        assert!(parts[0].unsaved.is_none() && parts[1].unsaved.is_some() && parts[2].unsaved.is_none());
    }

    #[test]
    fn a_batch_stops_at_its_byte_limit_but_always_takes_one_record() {
        let pending: VecDeque<Pending> = (0..10).map(|o| rec(o, 88)).collect(); // 100 B each
        assert_eq!(batch_len(&pending, 350), 3);
        assert_eq!(batch_len(&pending, 10_000), 10);
        let big: VecDeque<Pending> = [rec(0, 5_000), rec(1, 10)].into();
        assert_eq!(batch_len(&big, 100), 1, "a record larger than the limit still goes, alone");
    }

    #[test]
    fn a_source_batch_passed_through_goes_alone() {
        let whole = |base: i64| {
            let recs: Vec<SourceRecord> = (0..4)
                .map(|o| match rec(o, 10) {
                    Pending::Record(r) => r,
                    Pending::Batch(_) => unreachable!(),
                })
                .collect();
            let stamp = ferry_adapters::kafka::batch::ProducerStamp {
                producer_id: 1,
                producer_epoch: 0,
                base_sequence: 0,
            };
            let bytes = batch::build_batch(&recs, ferry_core::config::Compression::None, stamp).expect("build");
            let mut b = batch::split_batches(bytes).expect("split").remove(0);
            b.header.base_offset = base;
            Pending::Batch(b)
        };
        let pending: VecDeque<Pending> = [whole(0), rec(4, 10), rec(5, 10), whole(6), rec(10, 10)].into();
        assert_eq!(batch_len(&pending, usize::MAX), 1);
        let after: VecDeque<Pending> = pending.iter().skip(1).cloned().collect();
        assert_eq!(batch_len(&after, usize::MAX), 2, "records stop at the next whole batch");
        assert_eq!((pending[3].first_offset(), pending[3].last_offset()), (6, 9));
    }

    #[test]
    fn a_batch_adds_at_most_half_a_checkpoint_of_runs() {
        // Every other offset: each record starts a run.
        let pending: VecDeque<Pending> = (0..200).map(|k| rec(2 * k, 10)).collect();
        assert_eq!(batch_len(&pending, usize::MAX), MAX_RUNS_PER_BATCH);
        let contiguous: VecDeque<Pending> = (0..200).map(|o| rec(o, 10)).collect();
        assert_eq!(batch_len(&contiguous, usize::MAX), 200);
    }

    #[test]
    fn a_leader_epoch_ending_below_the_position_is_a_truncated_log() {
        let end = |leader_epoch, end_offset| EpochEnd { leader_epoch, end_offset };
        let one = |cache: &[(i64, i32)], position, answer| judge(cache, cache.len(), position, answer, position);
        let done = |h| Step::Done(h);
        let diverged = |at, below: &[(i64, i32)]| Step::Done(History::Diverged { at, below: below.to_vec() });
        // The epoch goes on past the position (the current epoch: the log end).
        assert_eq!(one(&[(0, 3)], 150, end(3, 180)), done(History::Same));
        // It ends exactly at the position: a later epoch starts there.
        assert_eq!(one(&[(0, 3)], 150, end(3, 150)), done(History::Same));
        // It ends below: the leader's log left the history read at 100.
        assert_eq!(one(&[(0, 0), (90, 1)], 150, end(1, 100)), diverged(100, &[(0, 0), (90, 1)]));
        // No epoch at or below the one asked for: nothing to compare.
        assert_eq!(one(&[(-1, 1)], 150, end(-1, -1)), done(History::Unknown));
        // An epoch older than every one Ferry kept: the leader's end.
        assert_eq!(one(&[(-1, 1)], 150, end(-1, 40)), diverged(40, &[]));
        assert_eq!(one(&[(-1, 1)], 150, end(0, 40)), diverged(40, &[(-1, 0)]));
        // ... no later than where Ferry began reading, when that is known.
        assert_eq!(one(&[(60, 1)], 150, end(0, 100)), diverged(60, &[]));
    }

    /// Two unclean elections: Ferry read 0..79 in epoch 0 and 80..129 in
    /// epoch 2 (from a leader that lacked the records 80..99 of epoch 0
    /// another replica had); that replica leads again (epoch 3) and never
    /// had epoch 2. Asked about 2 it answers with epoch 0 ending at 100:
    /// not where the histories part (80), and with that replica's epoch 0
    /// longer still (200), past the position itself.
    #[test]
    fn a_leader_that_never_had_the_epoch_read_is_judged_by_ferrys_own_epochs() {
        let end = |leader_epoch, end_offset| EpochEnd { leader_epoch, end_offset };
        let cache = [(0, 0), (80, 2)];
        for leaders_end in [100, 200] {
            assert_eq!(
                judge(&cache, 2, 130, end(0, leaders_end), 130),
                Step::Done(History::Diverged {
                    at: 80,
                    below: vec![(0, 0)]
                }),
                "epoch 0 of the leader ends at {leaders_end}"
            );
        }
        // The leader's epoch is one Ferry never read (1, between its 0 and
        // 2): Ferry's records from the end of its epoch 0 on are not the
        // leader's; the leader is asked again, about epoch 0.
        assert_eq!(judge(&cache, 2, 130, end(1, 100), 130), Step::Ask { upto: 1, end: 80 });
        assert_eq!(
            judge(&cache, 1, 80, end(0, 80), 130),
            Step::Done(History::Diverged {
                at: 80,
                below: vec![(0, 0)]
            })
        );
        // Ferry's epoch 0 goes on in the leader's log past Ferry's end of it.
        assert_eq!(
            judge(&cache, 1, 80, end(0, 120), 130),
            Step::Done(History::Diverged {
                at: 80,
                below: vec![(0, 0)]
            })
        );
        // A sound log: asked about 2, the leader has it to its end.
        assert_eq!(judge(&cache, 2, 130, end(2, 300), 130), Step::Done(History::Same));
        // An answer newer than asked for ends the search rather than loop.
        assert_eq!(judge(&cache, 2, 130, end(3, 300), 130), Step::Done(History::Same));
        assert_eq!(
            judge(&cache, 2, 130, end(3, 110), 130),
            Step::Done(History::Diverged {
                at: 110,
                below: cache.to_vec()
            })
        );
    }

    #[test]
    fn a_cursor_keeps_a_bounded_history_of_epochs_its_first_one_kept() {
        let h: Vec<(i64, i32)> = (0..40).map(|i| (i64::from(i) * 10, i)).collect();
        let b = bound_history(h);
        assert_eq!(b.len(), MAX_EPOCHS);
        assert_eq!(b[0], (0, 0));
        assert_eq!(b[1], (90, 9));
        assert_eq!(b.last(), Some(&(390, 39)));
    }

    #[test]
    fn a_checkpoint_stores_the_epoch_of_the_batch_holding_its_last_offset() {
        let mut p = read_past_cursor(100, 100, None);
        p.history = vec![(40, 1)];
        // Batches read past the cursor: 100.. in epoch 1, 110.. and 120.. in epoch 4.
        p.epochs.extend([(100, 1), (110, 4), (120, 4)]);
        assert_eq!(p.epoch_before(100), Some(1), "nothing new: the stored one");
        assert_eq!(p.epoch_before(105), Some(1), "inside the first batch");
        assert_eq!(p.epoch_before(110), Some(1), "110 - 1 is still the first batch's");
        assert_eq!(p.epoch_before(111), Some(4));
        assert_eq!(p.last_epoch(), Some(4));
        let cp = checkpoint_for(&p, 115, now_ms() + 60_000);
        assert_eq!(cp.leader_epochs, [(40, 1), (110, 4)]);
        p.apply(&cp);
        // What is behind the cursor is stored; the batch it is inside is the last epoch stored.
        assert_eq!(p.history, [(40, 1), (110, 4)]);
        assert_eq!(p.epochs, [(120, 4)]);
        assert_eq!(p.epoch_before(118), Some(4));
        // A partition that never stored an epoch has none to store.
        let fresh = read_past_cursor(0, 0, None);
        assert!(checkpoint_for(&fresh, 0, now_ms()).leader_epochs.is_empty());
    }

    #[test]
    fn only_another_epoch_at_the_position_asks_the_leader() {
        let read = |epochs: Vec<(i64, i32)>| CommittedRead {
            records: Vec::new(),
            removed_before: Vec::new(),
            removed_after: 0,
            next: 0,
            filtered_records: 0,
            filtered_bytes: 0,
            filtered_ts: Vec::new(),
            unmapped: false,
            epochs,
        };
        let mut p = read_past_cursor(100, 100, None);
        assert!(!p.epoch_changes_at(&read(vec![(100, 7)])), "no epoch known yet: nothing to check");
        p.history = vec![(0, 3)];
        assert!(
            !p.epoch_changes_at(&read(vec![(100, 3), (110, 5)])),
            "a change inside what was read is the log's own"
        );
        assert!(
            p.epoch_changes_at(&read(vec![(100, 2)])),
            "an older epoch after a newer one is another history"
        );
        assert!(!p.epoch_changes_at(&read(vec![(100, -1)])), "an old message format has none");
        assert!(!p.epoch_changes_at(&read(Vec::new())));
        assert!(p.epoch_changes_at(&read(vec![(100, 4)])));
        p.epochs.push_back((100, 4));
        assert!(
            !p.epoch_changes_at(&read(vec![(110, 4)])),
            "the last batch read counts, not the stored epoch"
        );
    }

    #[test]
    fn only_epoch_changes_are_remembered() {
        let mut p = read_past_cursor(100, 100, None);
        p.note_epochs(&[(100, 2), (110, 2), (120, 2)]);
        assert_eq!(p.epochs, [(100, 2)], "the first epoch seen, once");
        p.note_epochs(&[(130, 2), (140, 5), (150, 5)]);
        assert_eq!(p.epochs, [(100, 2), (140, 5)]);
        assert_eq!(
            (p.epoch_before(140), p.epoch_before(141), p.epoch_before(160)),
            (Some(2), Some(5), Some(5))
        );
        // With the stored epoch the same as what is read, nothing to add.
        let mut q = read_past_cursor(100, 100, None);
        q.history = vec![(50, 5)];
        q.note_epochs(&[(100, 5), (110, 5)]);
        assert!(q.epochs.is_empty());
        assert_eq!(q.epoch_before(115), Some(5));
    }

    #[test]
    fn a_truncation_names_the_offsets_the_epochs_and_the_cause() {
        let tp = TopicPartition::new("orders", 3);
        let what = truncation_what(&tp, "onprem", &epochs_read(&[(0, 0), (90, 1)], 100, 150), 100, 150, 150, Some(0));
        for want in [
            "orders-3",
            "onprem",
            "100..149 in leader epoch 1",
            "ends that history at offset 100",
            "leader epoch 0",
            "unclean leader election",
            "100..149 of the old history are on the target",
            "from offset 100 on were not copied",
        ] {
            assert!(what.contains(want), "{want:?} missing from {what}");
        }
        // Only read, none checkpointed yet.
        let what = truncation_what(&tp, "onprem", "leader epoch 1", 100, 150, 90, None);
        assert!(what.contains("none of them was checkpointed"), "{what}");
    }

    fn left(b: &Budget) -> Duration {
        b.deadline.saturating_duration_since(tokio::time::Instant::now())
    }

    #[tokio::test]
    async fn lambda_budgets() {
        // A real deadline: an instant.
        let b = Budget::for_lambda(SystemTime::now() + Duration::from_secs(100), None);
        assert!((98..=100).contains(&left(&b).as_secs()), "{:?}", left(&b));
        // Capped by the input.
        let b = Budget::for_lambda(SystemTime::now() + Duration::from_secs(100), Some(10));
        assert!(left(&b) <= Duration::from_secs(10));
        // An emulator's deadline header holding the timeout itself.
        let b = Budget::for_lambda(UNIX_EPOCH + Duration::from_millis(600_000), None);
        assert!((598..=600).contains(&left(&b).as_secs()), "{:?}", left(&b));
        // Already past: nothing left.
        let b = Budget::for_lambda(SystemTime::now() - Duration::from_secs(5), None);
        assert_eq!(left(&b), Duration::ZERO);
    }
}
