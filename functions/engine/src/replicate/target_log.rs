//! The target's log: its end and leader epoch against what Ferry wrote,
//! and copies a truncated target lost written again.

use super::*;

/// Each target partition's end offset and its leader's epoch, read once
/// at the start of an invocation (after the fences, before anything is
/// written) for the partitions with a stored target end: the target's log
/// check and the takeover's reconcile both go by it.
pub(super) type TargetEnds = HashMap<TopicPartition, Result<(i64, i32), KafkaError>>;

/// [`TargetEnds`] (see [`ends_each`]). A refusal stops every partition
/// (the invocation ends with it, see `fail`).
pub(super) async fn target_ends(run: &FlowRun<'_>, parts: &mut [Part]) -> TargetEnds {
    let FlowRun { target, .. } = *run;
    let which: Vec<usize> = (0..parts.len())
        .filter(|&i| parts[i].done.is_none() && parts[i].target_end >= 0)
        .collect();
    if which.is_empty() {
        return HashMap::new();
    }
    let tps: Vec<TopicPartition> = which.iter().map(|&i| parts[i].target.clone()).collect();
    match ends_each(target, &tps).await {
        Ok(ends) => ends,
        Err(e) => {
            let e = FerryError::from(e);
            for &i in &which {
                fail(run, &mut parts[i], &e).await;
            }
            HashMap::new()
        }
    }
}

/// The end offset and leader epoch of each of `tps` on the target: one
/// request per leader; after an error, each partition alone, so that one
/// leader's fault (a topic deleted, a leader throttling Ferry) is only its
/// partitions'. A refusal (credentials, ACLs) is everyone's: returned as is.
pub(super) async fn ends_each(target: &KafkaCluster, tps: &[TopicPartition]) -> Result<TargetEnds, KafkaError> {
    match target.list_offsets_with_epochs(tps, OffsetSpec::Latest, false).await {
        Ok(ends) => Ok(ends.into_iter().map(|(tp, found)| (tp, Ok(found))).collect()),
        Err(e) if e.is_refusal() => Err(e),
        Err(_) => Ok(join_all(tps.iter().map(|tp| async move {
            let one = target
                .list_offsets_with_epochs(std::slice::from_ref(tp), OffsetSpec::Latest, false)
                .await;
            (
                tp.clone(),
                one.and_then(|m| m.get(tp).copied().ok_or_else(|| target.unknown_partition(tp))),
            )
        }))
        .await
        .into_iter()
        .collect()),
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
pub(super) async fn check_target_logs(run: &FlowRun<'_>, parts: &mut [Part], ends: &mut TargetEnds) -> Vec<usize> {
    let FlowRun { flow, target, .. } = *run;
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
                fail(run, p, &e.into()).await;
            }
            continue;
        }
        let (at, end) = match res {
            None => continue,
            Some(Ok((at, _))) if at >= p.target_end => continue,
            Some(Ok(found)) => found,
            Some(Err(e)) if e.is_refusal() => {
                fail(run, p, &e.into()).await;
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
        match Box::pin(target_truncated(run, p, at, end)).await {
            Ok(()) => rewound.push(i),
            Err(e) => fail(run, p, &e).await,
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
pub(super) async fn target_parting(flow: &FlowSpec, target: &KafkaCluster, p: &Part, end: i64) -> Result<i64, KafkaError> {
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
pub(super) async fn target_truncated(run: &FlowRun<'_>, p: &mut Part, at: i64, end: i64) -> Result<(), FerryError> {
    let FlowRun {
        ferry,
        flow,
        key: flow_key,
        ..
    } = *run;
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
    Ok(rewind(run, p, from, below, Some(at)).await?)
}

/// Whether `p` copied (or holds to copy) any source record at or past
/// `at`: in its offset map (its newest run is the last one, in source
/// order), acknowledged and not yet checkpointed, or read and waiting to
/// be written.
pub(super) fn copied_from(p: &Part, at: i64) -> bool {
    !p.pending.is_empty()
        || p.inflight.is_some()
        || p.unsaved.as_ref().is_some_and(|u| u.records > 0)
        || p.last_run.is_some_and(|r| r.source_end() > at)
}

/// A cursor past the source's end: the partition's history was replaced.
pub(super) fn past_the_end(flow: &FlowSpec, p: &Part, at: i64, latest: i64) -> FerryError {
    FerryError::PartitionStopped {
        tp: p.work.source.clone(),
        cluster: flow.source.alias.clone(),
        what: format!(
            "the cursor {at} is past the source end offset {latest}: the topic was deleted and recreated, or the log was truncated"
        ),
        fix: "if the topic was recreated on purpose, delete this partition's item from the cursors table to start it again".into(),
    }
}
