//! A round's reads and writes (the client routes them by leader), and the
//! read_committed view of what was fetched, with pass-through of whole
//! batches and the opposite flow's copies filtered.

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
    /// Stopped at a batch the round had no room left to hold (see
    /// [`Holding`]): the rest is fetched again from `next`.
    pub(super) out_of_room: bool,
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

/// What the reads of one round may hold. A fetch's size is counted in the
/// bytes on the wire, which records take many times once held: compressed
/// ones decompressed (JSON compresses twentyfold), small ones each with
/// its slot in the queue: a whole response held could be far more than
/// the invocation's memory. So each read takes what it
/// holds out of `room`, and a read that finds none left stops before the
/// batch: the rest is fetched again once produces drained what is held. At
/// most one batch goes past `room` in a round (the first read with room
/// left takes its batch whole), and a batch decompresses to no more than
/// [`batch::decompressed_cap`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Holding {
    pub(super) pass_through: PassThrough,
    /// Bytes the round may still hold.
    pub(super) room: usize,
    /// What the records decompressed take held ([`Pending::held`]), and
    /// the bytes on the wire they came from: how much a fetch's bytes grow
    /// once held.
    pub(super) decoded: usize,
    pub(super) compressed: usize,
}

impl Holding {
    /// A round that may hold `room` bytes.
    pub(super) fn new(pass_through: PassThrough, room: usize) -> Self {
        Self {
            pass_through,
            room,
            decoded: 0,
            compressed: 0,
        }
    }

    /// Reads bounded by their fetch alone, record by record (reconcile:
    /// one partition's reads, one at a time).
    pub(super) fn unbounded() -> Self {
        Self::new(PassThrough::NEVER, usize::MAX)
    }

    /// How many times its size on the wire a fetched byte takes once held,
    /// as the reads so far found it (at least 1).
    pub(super) fn growth(&self) -> usize {
        self.decoded.div_ceil(self.compressed.max(1)).max(1)
    }
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
    hold: &mut Holding,
) -> Result<CommittedRead, FerryError> {
    let pass_through = hold.pass_through;
    let wrap = |source| KafkaError::Batch {
        cluster: cluster.to_owned(),
        topic: tp.topic.clone(),
        partition: tp.partition,
        source,
    };
    let batches = fetched.read_committed().map_err(wrap)?;
    if let Some(f) = filter.as_mut() {
        f.learn(store, batches.iter().filter(|b| b.committed).map(|b| &b.batch)).await?;
    }
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
        out_of_room: false,
    };
    // Offsets accounted for so far, and those found empty since the last record.
    let mut pos = from;
    let mut removed: u64 = 0;
    for batch::ReadBatch { batch: b, committed } in batches {
        let h = b.header;
        if h.next_offset() <= out.next {
            continue;
        }
        // Offsets no batch covers: a whole batch the cleaner removed.
        let gap = u64::try_from(h.base_offset - pos).unwrap_or(0);
        removed += gap;
        pos = pos.max(h.base_offset);
        if !committed {
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
        } else if hold.room == 0 {
            // Read again from `out.next`: that gap is counted then.
            removed -= gap;
            out.out_of_room = true;
            break;
        } else if (pass_through.min_bytes..=pass_through.max_bytes).contains(&b.size)
            && batch::passes_through(&b, pass_through.codec, out.next)
        {
            // Passes through only without offset gaps: nothing removed in it.
            let item = Pending::Batch(b);
            hold.room = hold.room.saturating_sub(item.held());
            out.records.push(item);
            out.removed_before.push(removed);
            removed = 0;
        } else {
            let from = out.next;
            let records = batch::records(&b).map_err(wrap)?;
            let held = records.iter().map(|r| r.approx_size() + HELD_PER_ITEM).sum::<usize>();
            hold.room = hold.room.saturating_sub(held);
            hold.decoded = hold.decoded.saturating_add(held);
            hold.compressed = hold.compressed.saturating_add(b.size);
            for r in records.into_iter().filter(|r| r.offset >= from) {
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

/// Fetch the partitions `want` of `parts` from their positions (the
/// client routes by leader); each partition's result with its index.
pub(super) async fn fetch_round(
    source: &KafkaCluster,
    parts: &[Part],
    want: &[usize],
    max_bytes: (i32, i32),
    max_wait_ms: i32,
) -> Result<RoundResults<FetchedPartition>, KafkaError> {
    let positions: Vec<(TopicPartition, i64)> = want.iter().map(|&i| (parts[i].work.source.clone(), parts[i].fetch_pos)).collect();
    let fetched = source
        .fetch_across(&positions, max_bytes, max_wait_ms, Isolation::ReadCommitted)
        .await?;
    Ok(want.iter().copied().zip(fetched).collect())
}

/// Produce the in-flight batch of each of the partitions `to_send`; each
/// partition's result (the batch's base offset) with its index.
pub(super) async fn produce_round(target: &KafkaCluster, parts: &[Part], to_send: &[usize]) -> Result<RoundResults<i64>, KafkaError> {
    let (sent, batches): (Vec<usize>, Vec<(TopicPartition, Bytes)>) = to_send
        .iter()
        .filter_map(|&i| parts[i].inflight.as_ref().map(|(b, _)| (i, (parts[i].target.clone(), b.clone()))))
        .unzip();
    let produced = target.produce_across(&batches, 30_000).await?;
    Ok(sent.into_iter().zip(produced).collect())
}
