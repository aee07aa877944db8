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

/// The first source offset whose copy is at or past target offset
/// `target`: where the copies a target log that ends at `target` lost
/// begin (a partition's runs are in source order, and so in target
/// order). `None` when no run reaches that far.
pub fn first_source_at_or_past_target(runs: &[OffsetRun], target: i64) -> Option<i64> {
    runs.iter()
        .filter(|r| r.target_end() > target)
        .map(|r| r.source_start + (target - r.target_start).max(0))
        .min()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_copies_a_truncated_target_lost_begin_at_the_first_record_mapped_at_or_past_its_end() {
        let run = |source_start, target_start, length| OffsetRun {
            source_start,
            target_start,
            length,
        };
        // Source 0..99 at target 0..99, then (others' records at 100..109)
        // source 100..149 at target 110..159.
        let runs = [run(0, 0, 100), run(100, 110, 50)];
        assert_eq!(first_source_at_or_past_target(&runs, 50), Some(50));
        assert_eq!(
            first_source_at_or_past_target(&runs, 100),
            Some(100),
            "others' records lost: the next copy"
        );
        assert_eq!(first_source_at_or_past_target(&runs, 105), Some(100));
        assert_eq!(first_source_at_or_past_target(&runs, 120), Some(110));
        assert_eq!(first_source_at_or_past_target(&runs, 159), Some(149));
        assert_eq!(first_source_at_or_past_target(&runs, 160), None, "nothing of Ferry's lost");
        assert_eq!(first_source_at_or_past_target(&[], 0), None);
    }

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
        assert_eq!(
            runs,
            vec![
                OffsetRun {
                    source_start: 10,
                    target_start: 5,
                    length: 1
                },
                OffsetRun {
                    source_start: 12,
                    target_start: 6,
                    length: 2
                }
            ]
        );
    }

    proptest! {
        /// Two appends coalesced give the runs of one append: every source
        /// offset's target is where it landed.
        #[test]
        fn coalesced_appends_map_every_offset(gaps in proptest::collection::vec(1i64..4, 1..200), base in 0i64..1000) {
            let mut offsets = Vec::new();
            let mut o = 0;
            for g in gaps { o += g; offsets.push(o); }
            let mut runs = Vec::new();
            let mid = offsets.len() / 2;
            coalesce(&mut runs, &runs_for_append(&offsets[..mid], base));
            coalesce(&mut runs, &runs_for_append(&offsets[mid..], base + mid as i64));
            prop_assert_eq!(&runs, &runs_for_append(&offsets, base));
            for (i, s) in offsets.iter().enumerate() {
                let r = runs.iter().find(|r| r.source_start <= *s && *s < r.source_end()).expect("covered");
                prop_assert_eq!(r.target_start + (s - r.source_start), base + i as i64);
            }
        }
    }
}
