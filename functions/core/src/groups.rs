//! Consumer-group offset translation and the decision to commit it.
//!
//! A flow X→Y translates a group's committed offset `c` on X into an offset
//! `d` on Y: the lowest offset on Y whose record the group has not
//! consumed. The group consumed exactly the records before `c` on X. The
//! records on Y are of three kinds:
//! - copies the flow X→Y wrote of records produced on X (its own runs,
//!   `forward`: consumed when their X offset is below `c`);
//! - records produced on Y, which the opposite flow Y→X copies into X
//!   (ENHANCED mode; its runs, `reverse`, looked up by their X offset:
//!   consumed when that X offset is below `c`; not yet copied, never
//!   consumed);
//! - control markers and aborted records, which no consumer reads.
//!
//! When producers write to both clusters, the two logs hold the same
//! records in different orders, and a consumed record can sit on Y after
//! one the group never read. Then `d` errs on re-delivery, never on a
//! skip: it is the first unconsumed record, the consumed records after it
//! are delivered again (`redelivered` counts them), and the translation is
//! not exact.

use serde::{Deserialize, Serialize};

use crate::offset_map::OffsetRun;

/// Where a committed offset lands on the other cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    /// The offset to commit on the other cluster.
    pub offset: i64,
    /// No record before `offset` on Y is one the group has not consumed,
    /// and no record it consumed is at or after it. When false, `offset`
    /// still skips nothing: records the group consumed (or records not
    /// replicated yet) may be delivered again, and a later sync moves it
    /// forward as replication goes on.
    pub exact: bool,
}

/// Which coordinate of a run is X's.
#[derive(Clone, Copy)]
enum XIs {
    /// X is the run's source (the forward flow's runs).
    Source,
    /// X is the run's target (the opposite flow's runs).
    Target,
}

impl XIs {
    fn x(self, r: &OffsetRun) -> i64 {
        match self {
            XIs::Source => r.source_start,
            XIs::Target => r.target_start,
        }
    }

    fn y(self, r: &OffsetRun) -> i64 {
        match self {
            XIs::Source => r.target_start,
            XIs::Target => r.source_start,
        }
    }
}

/// The first record at or after `c` (by X offset) that has a counterpart
/// on Y, as (X offset, Y offset), from runs sorted by the X coordinate.
fn first_at_or_after(runs: &[OffsetRun], c: i64, xs: XIs) -> Option<(i64, i64)> {
    let idx = runs.partition_point(|r| xs.x(r) + r.length <= c);
    let r = runs.get(idx)?;
    let x = c.max(xs.x(r));
    Some((x, xs.y(r) + (x - xs.x(r))))
}

/// The Y offset just after the counterparts of the records before `c`.
fn end_before(runs: &[OffsetRun], c: i64, xs: XIs) -> Option<i64> {
    let idx = runs.partition_point(|r| xs.x(r) < c);
    let r = runs.get(idx.checked_sub(1)?)?;
    Some(xs.y(r) + (c - xs.x(r)).min(r.length))
}

/// What the flow X→Y knows of partition p.
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a> {
    /// Its runs around `c` by source (X) offset, sorted: at least the run
    /// starting before `c` (it holds the group's last record, or ends
    /// before it) and the first two after it.
    pub runs: &'a [OffsetRun],
    /// Its cursor: every X offset below it was copied, filtered or skipped.
    pub cursor: i64,
    /// The Y end offset after its last checkpointed write: what it wrote
    /// and has not checkpointed yet is at or after this.
    pub target_end: i64,
    /// Whether X may hold records at or after `cursor`, up to its end or
    /// `c`, that this flow copies (not the opposite flow's copies, which
    /// it filters): then the flow may have written some of them past
    /// `target_end` already, and the group may have consumed some.
    pub behind: bool,
    /// The lowest Y offset a write of this flow not yet checkpointed can
    /// hold: `target_end`, or past it over the records the opposite flow's
    /// runs show were produced on Y (no copy of this flow's is there).
    pub next_write: i64,
}

/// What the opposite flow Y→X knows of the same partition (ENHANCED).
#[derive(Debug, Clone, Copy)]
pub struct Reverse<'a> {
    /// Its runs around `c` by their target (X) offset, sorted by target.
    pub runs: &'a [OffsetRun],
    /// Its cursor, a Y offset: every Y record below it was copied into X,
    /// filtered (a copy X→Y wrote) or skipped (a marker, an aborted record).
    pub cursor: i64,
    /// The X→Y runs by target (Y) offset from the one holding `cursor` on,
    /// sorted by target: the Y offsets at or after `cursor` they do not
    /// cover may hold records produced on Y that no flow has copied yet.
    pub forward_from_cursor: &'a [OffsetRun],
}

/// The first offset in `[from, until)` that no run of `runs` (sorted by
/// target) covers on its target side.
pub fn first_uncovered(runs: &[OffsetRun], from: i64, until: i64) -> Option<i64> {
    first_gap(runs.iter().map(|r| (r.target_start, r.target_end())), from, until)
}

/// The same on the runs' source side (`runs` sorted by source).
pub fn first_uncovered_source(runs: &[OffsetRun], from: i64, until: i64) -> Option<i64> {
    first_gap(runs.iter().map(|r| (r.source_start, r.source_end())), from, until)
}

fn first_gap(spans: impl Iterator<Item = (i64, i64)>, from: i64, until: i64) -> Option<i64> {
    let mut y = from;
    for (start, end) in spans {
        if end <= y {
            continue;
        }
        if start > y {
            break;
        }
        y = end;
    }
    (y < until).then_some(y)
}

/// Translate committed offset `c` on X to Y. `reverse` is the opposite
/// flow's knowledge (ENHANCED mode with an opposite flow), else `None`:
/// then only the records X→Y copied are known on Y. `None` when nothing
/// has been replicated around `c` yet.
pub fn translate(c: i64, forward: &Forward<'_>, reverse: Option<&Reverse<'_>>) -> Option<Translation> {
    // The first copy of a record the group has not consumed: the runs'
    // first record at or after `c`; when there is none and X holds records
    // this flow copies past its cursor, it may have written some of them
    // from `next_write` on.
    //
    // One way (no opposite flow knows the records produced on Y), the
    // offsets between the copy of the group's last record and the next
    // copy may hold records others wrote on Y after it: the group resumes
    // just after that copy, and reads them (and markers, which consumers
    // pass over). With an opposite flow, its runs and `u` place them.
    let after_last = reverse.is_none().then(|| end_before(forward.runs, c, XIs::Source)).flatten();
    let f1 = after_last
        .or_else(|| first_at_or_after(forward.runs, c, XIs::Source).map(|(_, y)| y))
        .or_else(|| forward.behind.then_some(forward.next_write));
    // The first record produced on Y that reached X at or after `c`.
    let r1 = reverse.and_then(|r| first_at_or_after(r.runs, c, XIs::Target)).map(|(_, y)| y);
    // The first Y offset that may hold a record produced on Y and not yet
    // copied to X (or one this flow wrote and has not checkpointed).
    let u = reverse.and_then(|r| first_uncovered(r.forward_from_cursor, r.cursor, forward.target_end));
    let d = [f1, r1, u].into_iter().flatten().min().or_else(|| {
        // Every known record on Y was consumed: just after the last one.
        let rev_end = reverse.and_then(|r| end_before(r.runs, c, XIs::Target));
        match (end_before(forward.runs, c, XIs::Source), rev_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    })?;
    // Every record below `c` is known: below the cursor, or past it but
    // only the opposite flow's copies (which it knows).
    let exact = (c <= forward.cursor || !forward.behind) && u.is_none_or(|u| u > d);
    Some(Translation { offset: d, exact })
}

/// How many records the group consumed on X sit at or after `d` on Y
/// (delivered again there): copies X→Y wrote of records below `c`, from
/// `forward` (X→Y runs sorted by target, from the one holding `d` on), and
/// records produced on Y that reached X below `c`, from `reverse` (Y→X
/// runs sorted by source, from the one holding `d` on).
pub fn redelivered(d: i64, c: i64, forward: &[OffsetRun], reverse: &[OffsetRun]) -> i64 {
    let fwd: i64 = forward
        .iter()
        .map(|r| {
            let skip = (d - r.target_start).clamp(0, r.length);
            (c.min(r.source_end()) - (r.source_start + skip)).max(0)
        })
        .sum();
    let rev: i64 = reverse
        .iter()
        .map(|r| {
            let skip = (d - r.source_start).clamp(0, r.length);
            (c.min(r.target_end()) - (r.target_start + skip)).max(0)
        })
        .sum();
    fwd + rev
}

/// What to do with one partition of a group on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncDecision {
    /// Commit this offset.
    Commit(i64),
    /// The target already holds this offset.
    UpToDate,
    /// The target is ahead (the group moved on there): never move it back.
    TargetAhead {
        /// What the target holds.
        current: i64,
        /// What the translation says.
        translated: i64,
    },
    /// Nothing is replicated around the committed offset yet.
    NothingReplicated,
    /// The target holds a lower commit that Ferry did not write (an
    /// operator's reset, a consumer that commits without joining the
    /// group): never overwritten.
    ForeignCommit {
        /// What the target holds.
        current: i64,
        /// What the translation says.
        translated: i64,
    },
}

/// Who wrote the target's current commit, as far as Ferry can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOwner {
    /// Nobody: the target holds no commit for this partition.
    Nobody,
    /// Ferry, or the group going on from Ferry's commit: at or past the
    /// offset this flow last committed there, or the group's own commit
    /// that the opposite flow carried over to the other cluster (the group
    /// lived on the target and moved away).
    Ferry,
    /// Someone else: below what this flow last committed (an operator's
    /// reset, a consumer that commits without joining), or a commit Ferry
    /// never wrote to at all.
    Other,
}

/// Decide for one partition, given the translation, the target's current
/// committed offset (if any) and who wrote it.
pub fn decide(translated: Option<Translation>, current: Option<i64>, owner: CommitOwner) -> SyncDecision {
    let Some(t) = translated else {
        return SyncDecision::NothingReplicated;
    };
    match current {
        Some(cur) if cur == t.offset => SyncDecision::UpToDate,
        Some(cur) if cur > t.offset => SyncDecision::TargetAhead {
            current: cur,
            translated: t.offset,
        },
        Some(cur) if owner == CommitOwner::Other => SyncDecision::ForeignCommit {
            current: cur,
            translated: t.offset,
        },
        _ => SyncDecision::Commit(t.offset),
    }
}

#[cfg(test)]
mod tests;
