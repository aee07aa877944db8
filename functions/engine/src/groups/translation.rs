//! A group's commit translated through the offset maps of the flow and,
//! both ways, of the opposite flow.

use super::*;

/// At most this many runs are read for one lookup of a translation (the
/// runs between two clusters' orders of one partition): past it, the
/// translation is not called exact.
pub(super) const RUNS_PER_LOOKUP: i32 = 100;

/// Translate commit `c` of source partition `tp` (target `target_tp`),
/// with how many records the group consumed will be delivered again.
pub(super) async fn translation(
    ferry: &Ferry,
    flow_key: &str,
    cursor: &CursorItem,
    opposite: Option<&Opposite>,
    tp: &TopicPartition,
    target_tp: &TopicPartition,
    c: i64,
) -> Result<Option<(Translation, i64)>, FerryError> {
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
        return Ok(translate(c, &forward, None).map(|t| (t, 0)));
    };
    let ocursor = Some(oc);
    let gc = oc.next_source_offset;
    let rev = store.runs_around(&o.flow_key, target_tp, RunKey::Target, c, ocursor).await?;
    let fwd_from_gc = store
        .runs_from(flow_key, tp, RunKey::Target, gc, RUNS_PER_LOOKUP, Some(cursor))
        .await?;
    // A lookup cut at the limit covers only as far as its last run.
    let until = |runs: &[OffsetRun], end: i64| {
        if runs.len() > RUNS_PER_LOOKUP as usize {
            runs.last().map_or(end, |r| r.target_end().min(end))
        } else {
            end
        }
    };
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
        let rev_from_fc = store
            .runs_from(&o.flow_key, target_tp, RunKey::Target, fc, RUNS_PER_LOOKUP, ocursor)
            .await?;
        forward.behind =
            first_uncovered(&rev_from_fc, fc, until(&rev_from_fc, source_end)).is_some() || rev_from_fc.len() > RUNS_PER_LOOKUP as usize;
    }
    // This flow's next write lands on the target after the records
    // produced there that the opposite flow has copied since (the target
    // went on growing while this flow's checkpoint stayed put).
    if forward.behind {
        let rev_from_te = store
            .runs_from(&o.flow_key, target_tp, RunKey::Source, target_end, RUNS_PER_LOOKUP, ocursor)
            .await?;
        forward.next_write = first_uncovered_source(&rev_from_te, target_end, i64::MAX).unwrap_or(target_end);
    }
    let reverse = Reverse {
        runs: &rev,
        cursor: gc,
        forward_from_cursor: &fwd_from_gc,
    };
    let cut = fwd_from_gc.len() > RUNS_PER_LOOKUP as usize && until(&fwd_from_gc, target_end) < target_end;
    let Some(mut t) = translate(c, &forward, Some(&reverse)) else {
        return Ok(None);
    };
    // What the group read that sits at or after the translation.
    let fwd_from_d = store
        .runs_from(flow_key, tp, RunKey::Target, t.offset, RUNS_PER_LOOKUP, Some(cursor))
        .await?;
    let rev_from_d = store
        .runs_from(&o.flow_key, target_tp, RunKey::Source, t.offset, RUNS_PER_LOOKUP, ocursor)
        .await?;
    let again = redelivered(t.offset, c, &fwd_from_d, &rev_from_d);
    let counted = fwd_from_d.len() <= RUNS_PER_LOOKUP as usize && rev_from_d.len() <= RUNS_PER_LOOKUP as usize;
    t.exact &= again == 0 && counted && !cut;
    Ok(Some((t, again)))
}
