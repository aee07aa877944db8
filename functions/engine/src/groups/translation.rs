//! A group's commit translated through the offset maps of the flow and,
//! both ways, of the opposite flow.

use super::*;

/// Runs are read this many at a time at first: most lookups of a
/// translation end in that read.
const RUNS_PER_LOOKUP: i32 = 100;

/// A lookup pages on past the first read (a compacted source makes a run
/// of each record the cleaner left between two it removed) up to this
/// many runs; past it, the translation is not called exact.
const MAX_RUNS_PER_LOOKUP: usize = 20_000;

/// The runs of `flow` from the one holding `at` (by `by`) on, read until
/// `answered` says they answer the lookup: with `true` when it stopped at
/// [`MAX_RUNS_PER_LOOKUP`] instead.
async fn lookup(
    store: &ferry_adapters::state::StateStore,
    flow: &str,
    tp: &TopicPartition,
    by: RunKey,
    at: i64,
    cursor: Option<&CursorItem>,
    answered: impl Fn(&[OffsetRun]) -> bool,
) -> Result<(Vec<OffsetRun>, bool), FerryError> {
    Ok(store
        .runs_from_until(flow, tp, by, at, RUNS_PER_LOOKUP, MAX_RUNS_PER_LOOKUP, cursor, answered)
        .await?)
}

/// Whether `runs` (sorted by target) answer "the first offset in
/// `[from, until)` that no run covers": one falls between them, or they
/// cover all of it.
fn coverage_known(runs: &[OffsetRun], from: i64, until: i64) -> bool {
    first_uncovered(runs, from, until).is_none_or(|y| runs.last().is_some_and(|r| y < r.target_end()))
}

/// The same on the runs' source side (`runs` sorted by source).
fn source_coverage_known(runs: &[OffsetRun], from: i64, until: i64) -> bool {
    first_uncovered_source(runs, from, until).is_none_or(|y| runs.last().is_some_and(|r| y < r.source_end()))
}

/// Translate commit `c` of source partition `tp` (target `target_tp`),
/// with how many records the group consumed will be delivered again, and,
/// when it is not exact for want of them, the target offset from which
/// the opposite flow has not read the target yet (records produced there
/// may sit before the translation).
pub(super) async fn translation(
    ferry: &Ferry,
    flow_key: &str,
    cursor: &CursorItem,
    opposite: Option<&Opposite>,
    tp: &TopicPartition,
    target_tp: &TopicPartition,
    c: i64,
) -> Result<Option<(Translation, i64, Option<i64>)>, FerryError> {
    let store = &ferry.store;
    // From the run holding the group's last record (below `c`), which
    // may end where the next starts, at `c`: one way, the group resumes
    // just after its copy.
    let fwd = store.runs_from(flow_key, tp, RunKey::Source, c - 1, 2, Some(cursor)).await?;
    let target_end = cursor.next_target_offset.unwrap_or(0);
    let fc = cursor.next_source_offset;
    // Without an opposite flow, the records past the cursor are this
    // flow's to copy: behind when the group consumed some of them.
    let mut forward = Forward {
        runs: &fwd,
        cursor: fc,
        target_end,
        behind: c > fc,
        next_write: target_end,
    };
    // The opposite flow counts only if it copies this partition back into
    // this very topic (it may select other topics, or name them otherwise).
    let ocursor = opposite.and_then(|o| o.cursors.get(target_tp).filter(|oc| oc.target_topic == tp.topic));
    let (Some(o), Some(oc)) = (opposite, ocursor) else {
        return Ok(translate(c, &forward, None).map(|t| (t, 0, None)));
    };
    let ocursor = Some(oc);
    let gc = oc.next_source_offset;
    let rev = store.runs_around(&o.flow_key, target_tp, RunKey::Target, c, ocursor).await?;
    let (fwd_from_gc, gc_cut) = lookup(store, flow_key, tp, RunKey::Target, gc, Some(cursor), |runs| {
        coverage_known(runs, gc, target_end)
    })
    .await?;
    // Source offsets past this flow's cursor (up to the source's end, or
    // `c` if the group read further than that end was) that no record of
    // the opposite flow accounts for: records this flow may have written
    // and not checkpointed yet. Only the opposite flow's copies there (a
    // cursor that lags while it filters them) leave nothing to write.
    // No end read for the partition: count everything past the cursor as
    // possibly this flow's (never exact, never a skip).
    let source_end = o.source_ends.get(tp).copied().unwrap_or(i64::MAX).max(c);
    forward.behind = false;
    if source_end > fc {
        let (rev_from_fc, fc_cut) = lookup(store, &o.flow_key, target_tp, RunKey::Target, fc, ocursor, |runs| {
            coverage_known(runs, fc, source_end)
        })
        .await?;
        forward.behind = fc_cut || first_uncovered(&rev_from_fc, fc, source_end).is_some();
    }
    // This flow's next write lands on the target after the records
    // produced there that the opposite flow has copied since (the target
    // went on growing while this flow's checkpoint stayed put).
    if forward.behind {
        let (rev_from_te, _) = lookup(store, &o.flow_key, target_tp, RunKey::Source, target_end, ocursor, |runs| {
            source_coverage_known(runs, target_end, i64::MAX)
        })
        .await?;
        // Cut short, it errs low: on re-delivery, never a skip.
        forward.next_write = first_uncovered_source(&rev_from_te, target_end, i64::MAX).unwrap_or(target_end);
    }
    let reverse = Reverse {
        runs: &rev,
        cursor: gc,
        forward_from_cursor: &fwd_from_gc,
    };
    let Some(mut t) = translate(c, &forward, Some(&reverse)) else {
        return Ok(None);
    };
    // What the group read that sits at or after the translation. A flow
    // writes its copies in source order (a backfill only starts a
    // partition it has written nothing of, a recreated topic's map is
    // forgotten, a rewind deletes the runs it copies again), so by target
    // its runs go up in source offset too: past the first one at or after
    // `c` (by X offset), none is a record the group read. Read that far,
    // not to the partition's end (a lagging group on a compacted topic
    // has a run per kept record after it).
    let (fwd_from_d, fwd_cut) = lookup(store, flow_key, tp, RunKey::Target, t.offset, Some(cursor), |runs| {
        runs.last().is_some_and(|r| r.source_start >= c)
    })
    .await?;
    let (rev_from_d, rev_cut) = lookup(store, &o.flow_key, target_tp, RunKey::Source, t.offset, ocursor, |runs| {
        runs.last().is_some_and(|r| r.target_start >= c)
    })
    .await?;
    let again = redelivered(t.offset, c, &fwd_from_d, &rev_from_d);
    let counted = !fwd_cut && !rev_cut;
    t.exact &= again == 0 && counted && !gc_cut;
    let u = first_uncovered(&fwd_from_gc, gc, target_end);
    let unread = if gc_cut {
        Some(u.unwrap_or(gc))
    } else {
        u.filter(|&u| u <= t.offset)
    };
    Ok(Some((t, again, unread.filter(|_| !t.exact))))
}
