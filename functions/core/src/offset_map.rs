//! Offset mapping runs: which target offset each replicated source offset
//! landed at, stored as `(source start, target start, length)` runs.

use serde::{Deserialize, Serialize};

/// `length` consecutive source offsets starting at `source_start` landed at
/// consecutive target offsets starting at `target_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRun {
    /// First source offset of the run.
    pub source_start: i64,
    /// Target offset of that record.
    pub target_start: i64,
    /// Number of records.
    pub length: i64,
}

impl OffsetRun {
    /// One past the last source offset.
    pub fn source_end(&self) -> i64 {
        self.source_start + self.length
    }

    /// One past the last target offset.
    pub fn target_end(&self) -> i64 {
        self.target_start + self.length
    }

    /// Whether `next` continues this run on both sides.
    pub fn is_continued_by(&self, next: &OffsetRun) -> bool {
        next.source_start == self.source_end() && next.target_start == self.target_end()
    }
}

/// Runs for records written contiguously on the target from `target_base`,
/// whose source offsets are `source_offsets` (strictly increasing, gaps
/// allowed, e.g. a compacted topic).
pub fn runs_for_append(source_offsets: &[i64], target_base: i64) -> Vec<OffsetRun> {
    let mut runs: Vec<OffsetRun> = Vec::new();
    for (i, &s) in source_offsets.iter().enumerate() {
        let t = target_base + i as i64;
        match runs.last_mut() {
            Some(last) if last.source_end() == s && last.target_end() == t => last.length += 1,
            _ => runs.push(OffsetRun {
                source_start: s,
                target_start: t,
                length: 1,
            }),
        }
    }
    runs
}

/// Append `new` runs to `runs`, merging where they continue each other.
pub fn coalesce(runs: &mut Vec<OffsetRun>, new: &[OffsetRun]) {
    for n in new {
        match runs.last_mut() {
            Some(last) if last.is_continued_by(n) => last.length += n.length,
            _ => runs.push(*n),
        }
    }
}

/// Translate a committed source offset (the next record a consumer wants)
/// to the target: the target offset of the first replicated record at or
/// after it. `None` when no replicated record is at or after it yet, so a
/// translation never points past a record that is not yet replicated.
pub fn translate(runs: &[OffsetRun], source_offset: i64) -> Option<i64> {
    // Runs are sorted by source_start and do not overlap.
    let idx = runs.partition_point(|r| r.source_end() <= source_offset);
    let run = runs.get(idx)?;
    if source_offset >= run.source_start {
        Some(run.target_start + (source_offset - run.source_start))
    } else {
        Some(run.target_start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contiguous_offsets_make_one_run() {
        assert_eq!(
            runs_for_append(&[10, 11, 12], 0),
            vec![OffsetRun {
                source_start: 10,
                target_start: 0,
                length: 3
            }]
        );
    }

    #[test]
    fn gaps_split_runs() {
        let runs = runs_for_append(&[10, 12, 13], 5);
        assert_eq!(runs.len(), 2);
        assert_eq!(translate(&runs, 11), Some(6));
        assert_eq!(translate(&runs, 14), None);
    }

    proptest! {
        /// Every replicated source offset translates to exactly where it
        /// landed; an unreplicated offset translates to the next replicated
        /// record; translation is monotone.
        #[test]
        fn translate_is_exact_and_monotone(gaps in proptest::collection::vec(1i64..4, 1..200), base in 0i64..1000) {
            let mut offsets = Vec::new();
            let mut o = 0;
            for g in gaps { o += g; offsets.push(o); }
            let mut runs = Vec::new();
            // Feed in two appends to exercise coalescing.
            let mid = offsets.len() / 2;
            coalesce(&mut runs, &runs_for_append(&offsets[..mid], base));
            coalesce(&mut runs, &runs_for_append(&offsets[mid..], base + mid as i64));
            for (i, s) in offsets.iter().enumerate() {
                prop_assert_eq!(translate(&runs, *s), Some(base + i as i64));
            }
            let mut prev = None;
            for s in 0..=o + 1 {
                let t = translate(&runs, s);
                if let (Some(p), Some(t)) = (prev, t) { prop_assert!(t >= p); }
                if let Some(t) = t {
                    let i = offsets.iter().position(|x| *x >= s).expect("a record at or after");
                    prop_assert_eq!(t, base + i as i64);
                } else {
                    prop_assert!(s > o);
                }
                prev = t.or(prev);
            }
        }
    }
}
