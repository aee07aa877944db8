//! Checkpoints: when one is due, writing the cursor and offset map under
//! the lease, and what an acknowledged write tells about the target's log.

use super::*;

/// A checkpoint to write, with the acknowledged records it covers (taken
/// out of the partition until it is written).
pub(super) struct Due {
    pub(super) part: usize,
    pub(super) cp: Checkpoint,
    pub(super) covers: Option<Unsaved>,
}

/// Write the checkpoints that are due, all at once (see [`due_checkpoints`]).
pub(super) async fn save(run: &FlowRun<'_>, (target, pid): (&KafkaCluster, i64), parts: &mut [Part], input: &ReplicateInput) {
    let FlowRun { ferry, key: flow_key, .. } = *run;
    let due = due_checkpoints(&ferry.settings, parts, input);
    if due.is_empty() {
        return;
    }
    let saved = write_checkpoints(&ferry.store, (target, pid), flow_key, parts, due).await;
    settle(run, parts, saved).await;
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
pub(super) fn due_checkpoints(settings: &crate::context::Settings, parts: &mut [Part], input: &ReplicateInput) -> Vec<Due> {
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
            if p.target_lost || p.unchecked {
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
        if !(due[i] || (any && ripe(p, 2) && !p.target_lost && !p.unchecked)) {
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
pub(super) struct Saved {
    pub(super) due: Vec<Due>,
    pub(super) results: Vec<Result<(), StateError>>,
    /// Checkpoints not written: the target's end (the second value) was
    /// below the records they cover.
    pub(super) lost: Vec<(Due, i64)>,
    /// Checkpoints of records not written: whether the target still holds
    /// them could not be checked, for this reason.
    pub(super) unchecked: Vec<(Due, FerryError)>,
}

/// Write the due checkpoints, each checkpoint of records with the
/// target's leader epoch read after those records were acknowledged
/// (see [`CursorItem::target_leader_epoch`]). A checkpoint is not written
/// when the target lost what Ferry wrote (see [`lost_since_checkpoint`]).
pub(super) async fn write_checkpoints(
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
    let mut ends = if with_records.is_empty() {
        HashMap::new()
    } else {
        match ends_each(target, &with_records).await {
            Ok(ends) => ends,
            Err(refused) => with_records
                .iter()
                .map(|tp| {
                    (
                        tp.clone(),
                        Err(refused.refusal_copy().unwrap_or_else(|| target.unknown_partition(tp))),
                    )
                })
                .collect(),
        }
    };
    let verdicts = join_all(due.iter().map(|d| {
        let p = &parts[d.part];
        let now = (d.cp.records > 0).then(|| match ends.remove(&p.target) {
            Some(found) => found.map_err(FerryError::from),
            None => Err(FerryError::NotReady(format!(
                "the target's answer left out {} (its end and leader epoch)",
                p.target
            ))),
        });
        async move {
            match now? {
                Ok((end, epoch)) => Some(lost_since_checkpoint(target, pid, p, d, end, epoch).await.map_err(FerryError::from)),
                Err(e) => Some(Err(e)),
            }
        }
    }))
    .await;
    let mut lost = Vec::new();
    let mut unchecked = Vec::new();
    let mut kept = Vec::with_capacity(due.len());
    for (mut d, verdict) in due.drain(..).zip(verdicts) {
        match verdict {
            None => {}
            Some(Ok(TargetHolds::All(epoch))) => d.cp.target_leader_epoch = Some(epoch),
            Some(Ok(TargetHolds::LostFrom(at))) => {
                lost.push((d, at));
                continue;
            }
            Some(Err(e)) => {
                // Written unchecked, the checkpoint would map these source
                // offsets onto whatever the target holds there, and store
                // no epoch for a later check to ask about: a loss nothing
                // would find again. Not written, and the partition stops
                // (see `settle`).
                let p = &parts[d.part];
                tracing::warn!(
                    cluster = %target.alias(), topic = %p.target.topic, partition = p.target.partition, error = %e,
                    "could not check that the target still holds what Ferry wrote since the last checkpoint; not checkpointed: \
                     the partition stops, and the next invocation reconciles what the target holds"
                );
                unchecked.push((d, e));
                continue;
            }
        }
        kept.push(d);
    }
    let cps: Vec<(&Lease, &Checkpoint)> = kept.iter().map(|d| (&parts[d.part].lease, &d.cp)).collect();
    let results = store.checkpoint_all(flow_key, &cps).await;
    Saved {
        due: kept,
        results,
        lost,
        unchecked,
    }
}

/// What the target holds of what a checkpoint covers.
pub(super) enum TargetHolds {
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
pub(super) async fn lost_since_checkpoint(
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
        match target.offset_for_leader_epoch(&p.target, stored).await {
            Ok(answer) if answer.end_offset >= 0 && answer.end_offset < p.target_end => {
                return Ok(TargetHolds::LostFrom(answer.end_offset));
            }
            Ok(_) => {}
            // Not asked: the read-back below still finds another producer's
            // batches where Ferry's were.
            Err(KafkaError::Unsupported { .. }) => {}
            Err(e) => return Err(e),
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
        let f = target
            .fetch_partition(&p.target, pos, READ_BACK_MAX_BYTES, Isolation::ReadUncommitted)
            .await?;
        let batches = batch::split_batches(f.records).map_err(|source| KafkaError::Batch {
            cluster: target.alias().to_owned(),
            topic: p.target.topic.clone(),
            partition: p.target.partition,
            source,
        })?;
        // An empty answer below the end is no end (see `fetch_partition`).
        let Some(last) = batches.last().map(|b| b.header.next_offset()).filter(|&l| l > pos) else {
            return Err(KafkaError::NoRecordsBelowEnd {
                cluster: target.alias().to_owned(),
                topic: p.target.topic.clone(),
                partition: p.target.partition,
                offset: pos,
                end: d.cp.target_end,
            });
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
pub(super) fn stopped_cleanly(reason: StopReason) -> bool {
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
pub(super) async fn target_lost_midway(run: &FlowRun<'_>, p: &mut Part, at: i64, written: i64) {
    let FlowRun { ferry, flow, target, .. } = *run;
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
    p.unsaved_dropped = true;
    p.done = Some(StopReason::Retry);
    let moved = match target_parting(flow, target, p, at).await {
        Ok(parted) => Box::pin(target_truncated(run, p, parted.min(at), at)).await,
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
pub(super) async fn settle(run: &FlowRun<'_>, parts: &mut [Part], saved: Saved) {
    let FlowRun { flow, .. } = *run;
    for (d, end) in saved.lost {
        target_lost_midway(run, &mut parts[d.part], end, d.cp.target_end).await;
    }
    for (d, e) in saved.unchecked {
        // Stopped with them unsaved, and never due again here: the next
        // holder fences and reconciles them. Held for a later checkpoint
        // instead, they would hold back the lease's renewal, grow past what
        // one checkpoint may hold while the check kept failing, and have
        // every round wait on the check again.
        let p = &mut parts[d.part];
        p.unsave(d.covers);
        p.unchecked = true;
        fail(run, p, &e).await;
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
                p.unsaved_dropped = true;
            }
            Err(e) => {
                // Not stored: those records are unsaved again, ahead of any
                // acknowledged since (the stop's checkpoint tries them once
                // more). Unknown outcome on a DynamoDB error: the next
                // holder reconciles from the target, so stop this partition.
                p.unsave(d.covers);
                fail(run, p, &e.into()).await;
            }
        }
    }
}

impl Part {
    /// Records a checkpoint covered and did not store: unsaved again, ahead
    /// of any acknowledged since.
    fn unsave(&mut self, covers: Option<Unsaved>) {
        if let Some(u) = covers {
            self.unsaved = Some(match self.unsaved.take() {
                Some(later) => u.then(later),
                None => u,
            });
        }
    }

    /// The leader epochs read below `to` (see [`Part::history`]), for a
    /// cursor moved to `to` over what was read.
    pub(super) fn history_before(&self, to: i64) -> Vec<(i64, i32)> {
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
    pub(super) fn epoch_before(&self, to: i64) -> Option<i32> {
        self.history_before(to).last().map(|&(_, e)| e)
    }

    /// Ferry's leader-epoch cache up to `fetch_pos`: what was read below
    /// the cursor and past it.
    pub(super) fn read_history(&self) -> Vec<(i64, i32)> {
        self.history_before(i64::MAX)
    }

    /// Remember the epochs of batches read: only where the epoch changes
    /// (a partition reads thousands of batches between two checkpoints).
    /// A batch without one (an old message format: -1) changes nothing.
    pub(super) fn note_epochs(&mut self, read: &[(i64, i32)]) {
        for &(base, epoch) in read {
            if epoch >= 0 && self.last_epoch() != Some(epoch) {
                self.epochs.push_back((base, epoch));
            }
        }
    }

    /// The leader epoch of the last batch read (before `fetch_pos`).
    pub(super) fn last_epoch(&self) -> Option<i32> {
        self.epochs.back().or(self.history.last()).map(|&(_, e)| e)
    }

    /// Whether `read` starts in another leader epoch than the last batch
    /// read: the moment to ask whether the log still holds what was read
    /// (KIP-320). Not on every fetch: only when the epoch moves. An older
    /// epoch after a newer one is never one log (a leader stamps its
    /// batches with its own epoch, and epochs only grow): it is asked
    /// about too.
    pub(super) fn epoch_changes_at(&self, read: &CommittedRead) -> bool {
        let first = read.epochs.iter().map(|&(_, e)| e).find(|&e| e >= 0);
        match (self.last_epoch(), first) {
            (Some(last), Some(first)) => first != last,
            _ => false,
        }
    }

    pub(super) fn lease_renewal_due(&self, duration: Duration) -> bool {
        self.lease_expires_hint - now_ms() < (duration.as_millis() as i64) / 2
    }

    pub(super) fn apply(&mut self, cp: &Checkpoint) {
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
pub(super) fn checkpoint_for(p: &Part, to: i64, lease_expires_ms: i64) -> Checkpoint {
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
pub(super) const MAX_EPOCHS: usize = 32;

/// `h` with at most [`MAX_EPOCHS`] entries: the oldest one stays (where
/// Ferry's reading began) and the ones after it go, oldest first. An
/// epoch dropped so counts as the one before it: asked about, the leader's
/// history parts from Ferry's no later than it really does (a record
/// copied again, never one skipped).
pub(super) fn bound_history(mut h: Vec<(i64, i32)>) -> Vec<(i64, i32)> {
    if h.len() > MAX_EPOCHS {
        h.drain(1..=h.len() - MAX_EPOCHS);
    }
    h
}

/// Merge the first of `runs` into the partition's newest run when it
/// continues it.
pub(super) fn join_last_run(last: Option<OffsetRun>, runs: &mut [OffsetRun]) {
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
