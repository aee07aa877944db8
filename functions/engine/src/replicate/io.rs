//! Reads and writes across the partitions' leaders: read_committed
//! fetches with pass-through of the opposite flow's copies, produce rounds.

use super::*;

/// What one fetch yields for replication.
pub(super) struct CommittedRead {
    pub(super) records: Vec<Pending>,
    /// For each of `records`, the offsets just before it (after `from` or
    /// the previous one) that hold nothing any more: committed records
    /// removed by compaction or retention, or whole batches of any kind
    /// removed. Offsets of control batches, aborted and filtered batches
    /// are not counted: they never held a record to replicate.
    pub(super) removed_before: Vec<u64>,
    /// The same after the last of `records`, up to `next`.
    pub(super) removed_after: u64,
    /// Next offset to fetch.
    pub(super) next: i64,
    /// Records the opposite flow wrote, dropped (loop prevention).
    pub(super) filtered_records: u64,
    /// Their bytes on the wire.
    pub(super) filtered_bytes: u64,
    /// (next offset, largest timestamp) of each batch of theirs.
    pub(super) filtered_ts: Vec<(i64, i64)>,
    /// Stopped at records the opposite flow wrote but has not checkpointed
    /// yet (see [`LoopFilter::mapped`]): read again a moment later.
    pub(super) unmapped: bool,
    /// (base offset, partition leader epoch) of every batch read, of any
    /// kind, in order.
    pub(super) epochs: Vec<(i64, i32)>,
}

/// Which fetched batches go to the target as they are: those already in
/// the flow's target codec, of `min_bytes` to `max_bytes` (a produce
/// request carries one batch per partition, so a small batch passed
/// through would cost a round trip for little: small ones are merged
/// instead; a larger one is split, as the target may refuse it).
#[derive(Debug, Clone, Copy)]
pub(super) struct PassThrough {
    pub(super) codec: ferry_core::config::Compression,
    pub(super) min_bytes: usize,
    pub(super) max_bytes: usize,
}

impl PassThrough {
    /// Every batch is split into records.
    pub(super) const NEVER: PassThrough = PassThrough {
        codec: ferry_core::config::Compression::None,
        min_bytes: usize::MAX,
        max_bytes: 0,
    };
}

/// Per-fetch filter: drops control batches and the batches of aborted
/// transactions, as a read_committed consumer does, and (with a loop
/// filter) the batches the opposite flow wrote.
pub(super) async fn read_committed(
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
    let mut txns = batch::Transactions::new(&fetched.aborted);
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
        if txns.kind(&b).map_err(wrap)? != batch::BatchKind::Committed {
            // A marker, or a batch of an aborted transaction: never replicated.
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

pub(super) type RoundResults<T> = Vec<(usize, Result<T, KafkaError>)>;

/// Group the partitions `idx` by their leader on `cluster`, make one call per
/// leader (all at once), and hand back each partition's own result.
pub(super) async fn per_leader<T, F, Fut>(
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

pub(super) async fn fetch_round(
    source: &KafkaCluster,
    parts: &[Part],
    want: &[usize],
    (max_bytes, request_max_bytes): (i32, i32),
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
                    .fetch_capped(
                        leader,
                        &positions,
                        max_bytes,
                        request_max_bytes,
                        max_wait_ms,
                        Isolation::ReadCommitted,
                    )
                    .await
            }
        },
    )
    .await
}

pub(super) async fn produce_round(target: &KafkaCluster, parts: &[Part], to_send: &[usize]) -> Result<RoundResults<i64>, KafkaError> {
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
pub(super) async fn fetch_one(
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
pub(super) fn unknown_partition(cluster: &KafkaCluster, tp: &TopicPartition) -> KafkaError {
    KafkaError::UnknownPartition {
        cluster: cluster.alias().to_owned(),
        topic: tp.topic.clone(),
        partition: tp.partition,
    }
}
