//! Consumer-group offset translation and the decision to commit it.
//!
//! A flow X→Y translates a group's committed offset `c` on X (the next
//! record the group wants) into an offset `d` on Y such that the records
//! before `d` on Y are exactly the records before `c` on X. Two maps say
//! where each record of X is on Y:
//! - `forward`: the flow X→Y's own runs (source = X, target = Y), for the
//!   records produced on X;
//! - `reverse`: the opposite flow Y→X's runs (source = Y, target = X), for
//!   the records that flow wrote into X (ENHANCED mode only). They are
//!   looked up by their X (target) offsets.
//!
//! Exactness needs the two clusters' logs to hold the common records in the
//! same order, which holds when each topic is produced to on one cluster at
//! a time and a producer is moved only once its records are replicated.

use serde::{Deserialize, Serialize};

use crate::offset_map::OffsetRun;

/// Where a committed offset lands on the other cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    /// The offset to commit on the other cluster.
    pub offset: i64,
    /// Every record before `c` has been looked at by the flow, so the
    /// translation is exact. When false, records before `c` are not yet
    /// replicated: `offset` points where they will arrive (they will be
    /// delivered again), and a later sync moves it forward.
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

/// Translate committed offset `c` on X to Y.
///
/// `forward` are the X→Y runs sorted by source offset; `reverse` the Y→X
/// runs sorted by target offset (empty in LEGACY mode or without an
/// opposite flow); `forward_cursor` is the X→Y flow's cursor (every X
/// offset below it has been replicated, filtered or skipped). Either slice
/// may be just the runs around `c`: the run before it and the one at or
/// after it. `None` when nothing has been replicated around `c` yet.
pub fn translate(c: i64, forward: &[OffsetRun], reverse: &[OffsetRun], forward_cursor: i64) -> Option<Translation> {
    let exact = c <= forward_cursor;
    let fwd = first_at_or_after(forward, c, XIs::Source);
    // A record the opposite flow wrote is usable only where the forward
    // flow has looked: before its cursor no record of X is unaccounted for.
    let rev = first_at_or_after(reverse, c, XIs::Target).filter(|(x, _)| *x < forward_cursor);
    let first = match (fwd, rev) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    if let Some((_, y)) = first {
        return Some(Translation { offset: y, exact });
    }
    let end = match (end_before(forward, c, XIs::Source), end_before(reverse, c, XIs::Target)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }?;
    Some(Translation { offset: end, exact })
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
    /// Ferry: this flow committed that very offset, or it is the group's
    /// own commit that the opposite flow carried over to the other cluster
    /// (the group lived on the target and moved away).
    Ferry,
    /// Someone else, since Ferry's last write.
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
