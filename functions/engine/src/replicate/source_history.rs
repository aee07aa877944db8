//! The source's history: leader epochs checked against what was read,
//! and a log truncated by an unclean leader election followed.

use super::*;

/// What the source's leader says of the history Ferry read up to a
/// position (KIP-320), found as a Kafka follower finds where to truncate
/// its log (KIP-279): with Ferry's own leader-epoch cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum History {
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
pub(super) enum Step {
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
pub(super) fn judge(cache: &[(i64, i32)], upto: usize, end: i64, answer: ferry_adapters::kafka::EpochEnd, position: i64) -> Step {
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
pub(super) async fn find_divergence(
    source: &KafkaCluster,
    tp: &TopicPartition,
    cache: &[(i64, i32)],
    position: i64,
) -> Result<History, KafkaError> {
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
pub(super) async fn validate_epochs(run: &FlowRun<'_>, parts: &mut [Part]) {
    let FlowRun { source, .. } = *run;
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
        if let Err(e) = on_history(run, p, res).await {
            fail(run, p, &e).await;
        }
    }
}

/// Ask the source's leader whether its log still holds what `p` read up
/// to its fetch position (in the epochs read). `Ok(true)`: go on.
/// `Ok(false)`: it does not, and the partition was handled (moved back to
/// where the histories part, or paused until the next invocation does
/// that). An error stops the partition (see `diverged`).
pub(super) async fn check_history(run: &FlowRun<'_>, p: &mut Part) -> Result<bool, FerryError> {
    let FlowRun { source, .. } = *run;
    let cache = p.read_history();
    if cache.is_empty() {
        return Ok(true);
    }
    let res = find_divergence(source, &p.work.source, &cache, p.fetch_pos).await;
    on_history(run, p, res).await
}

pub(super) async fn on_history(run: &FlowRun<'_>, p: &mut Part, res: Result<History, KafkaError>) -> Result<bool, FerryError> {
    let FlowRun { ferry, flow, .. } = *run;
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
            Box::pin(diverged(run, p, at, below)).await?;
            Ok(false)
        }
    }
}

/// The leader epochs Ferry read records in from `at` up to `upto`, for
/// messages: "epoch 4", "epochs 2, 4".
pub(super) fn epochs_read(cache: &[(i64, i32)], at: i64, upto: i64) -> String {
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
pub(super) fn truncation_what(
    tp: &TopicPartition,
    cluster: &str,
    read_epochs: &str,
    at: i64,
    upto: i64,
    cursor: i64,
    now: Option<i32>,
) -> String {
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
pub(super) async fn diverged(run: &FlowRun<'_>, p: &mut Part, at: i64, below: Vec<(i64, i32)>) -> Result<(), FerryError> {
    let FlowRun { ferry, flow, .. } = *run;
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
    rewind(run, p, at, below, None).await?;
    p.lost_records += lost as u64;
    Ok(())
}
