//! A takeover: what the previous holder wrote on the target and did not
//! checkpoint, read back and placed against the source.

use super::*;

/// Reconcile the partitions `which` (index, previous holder): one
/// ListOffsets for all of them, then a read of the target only where it
/// holds records after the last checkpoint (after a clean release, none).
pub(super) async fn reconcile_all(
    run: &FlowRun<'_>,
    parts: &mut [Part],
    which: &[(usize, PrevHolder)],
    ends: &mut TargetEnds,
    filter: &mut Option<LoopFilter>,
) {
    let FlowRun { target, .. } = *run;
    for &(i, prev) in which {
        let p = &mut parts[i];
        // With the leader's epoch, read before the holder's records are:
        // what the reconcile finds below `end` is in that epoch's history
        // or an older one's (see `CursorItem::target_leader_epoch`).
        let (end, epoch) = match ends.remove(&p.target) {
            Some(Ok(found)) => found,
            Some(Err(e)) => {
                fail(run, p, &e.into()).await;
                continue;
            }
            None => {
                fail(run, p, &target.unknown_partition(&p.target).into()).await;
                continue;
            }
        };
        if end <= p.target_end {
            continue;
        }
        let epoch = (epoch >= 0).then_some(epoch);
        if let Err(e) = reconcile(run, p, prev, (end, epoch), filter).await {
            fail(run, p, &e).await;
        }
    }
}

/// The previous holder of a partition, as its cursor item records it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PrevHolder {
    /// Its producer id: the provenance of its records on the target.
    pub(super) producer_id: i64,
    /// Its next sequence number as of the checkpoint's target end; `None`
    /// in a cursor item written before Ferry stored it.
    pub(super) next_sequence: Option<i32>,
}

/// One batch of the previous holder's on the target.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeldBatch {
    pub(super) base_sequence: i32,
    pub(super) last_offset_delta: i32,
    pub(super) base_offset: i64,
}

/// What the target holds of the previous holder after the checkpoint.
#[derive(Debug, Default)]
pub(super) struct HolderOnTarget {
    /// Its data batches still there (possibly emptied in part by the cleaner).
    pub(super) batches: Vec<HeldBatch>,
    /// Its records still there: (target offset, sequence, tail, timestamp).
    pub(super) records: Vec<(i64, i32, Bytes, Option<i64>)>,
    /// Target offsets no batch covers after its last batch (or after the
    /// checkpoint, without one): whole batches removed by compaction or
    /// deleted by retention, which may have been its own.
    pub(super) missing_after_last: u64,
    /// Keys of every record read, any producer's (see
    /// [`takeover::HolderWrites::later_keys`]).
    pub(super) keys: HashSet<Bytes>,
}

impl HolderOnTarget {
    /// Its records by position in its write stream, counting from
    /// `first_sequence` (its next sequence at the checkpoint). Sequences
    /// wrap after i32::MAX to 0, as Kafka's do.
    pub(super) fn positions(&self, first_sequence: i32, span: i64) -> Result<takeover::HolderWrites, String> {
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
pub(super) async fn read_holder_writes(
    ferry: &Ferry,
    target: &KafkaCluster,
    p: &Part,
    prev_pid: i64,
    end: i64,
) -> Result<HolderOnTarget, FerryError> {
    let mut out = HolderOnTarget::default();
    let mut pos = p.target_end;
    while pos < end {
        let f = match target
            .fetch_partition(&p.target, pos, ferry.settings.fetch_partition_max_bytes, Isolation::ReadUncommitted)
            .await
        {
            Err(e) if e.is_offset_out_of_range() => {
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
            // Not the end of what the holder may have written: the rest
            // would count as never written (see `fetch_partition`).
            return Err(KafkaError::NoRecordsBelowEnd {
                cluster: target.alias().to_owned(),
                topic: p.target.topic.clone(),
                partition: p.target.partition,
                offset: pos,
                end,
            }
            .into());
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
pub(super) struct SourceRead {
    pub(super) window: takeover::SourceWindow,
    /// Where retention or DeleteRecords moved the source's start past the
    /// cursor: the earliest offset then.
    pub(super) deleted_to: Option<i64>,
    /// (base offset, leader epoch) of every batch read, in order.
    pub(super) epochs: Vec<(i64, i32)>,
}

pub(super) async fn read_source_window(
    run: &FlowRun<'_>,
    p: &Part,
    want: u64,
    filter: &mut Option<LoopFilter>,
) -> Result<SourceRead, FerryError> {
    let FlowRun { ferry, flow, source, .. } = *run;
    let mut out = SourceRead {
        window: takeover::SourceWindow::default(),
        deleted_to: None,
        epochs: Vec::new(),
    };
    let mut spos = p.cursor;
    let mut carried: u64 = 0;
    let wait_until = Instant::now() + 2 * ferry.settings.lease_duration;
    while (out.window.records.len() as u64) < want {
        let f = match source
            .fetch_partition(
                &p.work.source,
                spos,
                ferry.settings.fetch_partition_max_bytes,
                Isolation::ReadCommitted,
            )
            .await
        {
            Err(e) if e.is_offset_out_of_range() => {
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
        let read = read_committed(
            &ferry.store,
            &f,
            spos,
            source.alias(),
            &p.work.source,
            filter,
            &mut Holding::unbounded(),
        )
        .await?;
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

/// The previous holder's first sequence after the checkpoint, for a cursor
/// item written before Ferry stored it: 0 when its first batch there
/// starts at 0 (nothing of it can come before); otherwise that batch's
/// base sequence, which is only sure when no compaction can have removed
/// batches before it — both topics' cleanup.policy without compact.
pub(super) async fn legacy_first_sequence(
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
pub(super) async fn reconcile(
    run: &FlowRun<'_>,
    p: &mut Part,
    prev: PrevHolder,
    (end, end_epoch): (i64, Option<i32>),
    filter: &mut Option<LoopFilter>,
) -> Result<(), FerryError> {
    let FlowRun {
        ferry,
        flow,
        key: flow_key,
        source,
        target,
    } = *run;
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
    let read = read_source_window(run, p, holder.positions + holder.unseen_after, filter).await?;
    let a = match takeover::align(&holder, &read.window) {
        Ok(a) => a,
        Err(e) => {
            // No reading of the source matches what the holder wrote: the
            // source's log may have been truncated under its writes.
            let written = i64::try_from(holder.positions).unwrap_or(i64::MAX);
            if let Some(at) = Box::pin(replaced_under_holder(source, p, written)).await? {
                return Box::pin(holder_wrote_replaced(run, p, at, written, first_sequence, end)).await;
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
pub(super) async fn replaced_under_holder(source: &KafkaCluster, p: &Part, written: i64) -> Result<Option<i64>, FerryError> {
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
pub(super) async fn holder_wrote_replaced(
    run: &FlowRun<'_>,
    p: &mut Part,
    at: i64,
    written: i64,
    first_sequence: i32,
    end: i64,
) -> Result<(), FerryError> {
    let FlowRun {
        ferry,
        flow,
        key: flow_key,
        ..
    } = *run;
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
