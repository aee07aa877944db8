//! Which source records a crashed holder wrote to the target: its records
//! still on the target matched to the source by position and content, not
//! by count, so that compaction or retention on either side between the
//! crash and the takeover neither skips a record nor writes one twice.
//!
//! What the matching stands on (Kafka's record format and log cleaner):
//!
//! * The holder wrote consecutive committed source records from the cursor,
//!   in order, one idempotent producer per invocation whose sequence starts
//!   at 0 per partition and counts one per record. So the holder's records
//!   after the checkpoint form a stream of *positions* 0, 1, 2, … (sequence
//!   minus the sequence the cursor item holds), and position p is the p-th
//!   committed source record from the cursor as it was when written.
//! * Ferry's target record is byte-identical to its source record: the bytes
//!   after the offset delta (key, value, headers) and the absolute timestamp.
//! * The log cleaner removes records but never renumbers: a v2 batch it
//!   rewrites keeps its base offset, base sequence, producer id and last
//!   offset delta (`MemoryRecords.buildRetainedRecordsInto` overrides the
//!   last offset for this very reason), so a surviving record's sequence is
//!   its batch's base sequence plus its offset delta, and a batch's last
//!   position is known even when its last records are gone. A batch whose
//!   records are all removed disappears (the producer's last batch is kept
//!   only while it is the producer state's last data batch, and the fence's
//!   abort marker at a higher epoch clears that state), leaving a hole in
//!   the target's offsets.
//! * Compaction, retention and DeleteRecords only remove. So the committed
//!   source records now after the cursor are the ones the holder saw, less
//!   those removed since; each removal leaves offsets that no batch of the
//!   fetch covers, or a gap inside a surviving batch.
//!
//! So each position the holder wrote is, now: on both sides (the target
//! record equals its source record), on the target only (its source was
//! removed: a hole in the source offsets must be there to hold it), on the
//! source only (its copy was removed on the target: a position the target
//! no longer shows), or on neither. [`align`] finds every reading of the
//! evidence consistent with that and answers only when all of them agree on
//! what matters (which target record is which source record's copy, and
//! how many source records were written); otherwise it says where they
//! differ, and the partition stops for an operator.
//!
//! One choice is made rather than proven: a target record equal to the next
//! source record is that record's copy, not the copy of an identical record
//! (same key, value, headers and millisecond) removed just before it. The
//! two cannot be told apart by any evidence the logs keep.

use std::collections::HashSet;

use bytes::Bytes;
pub(super) use ferry_adapters::kafka::batch::key_and_tombstone;

/// Reading states the matching may visit before it gives up (memory and
/// time stay bounded; each state is 16 bytes).
const MAX_STATES: usize = 4_000_000;

/// One record of the previous holder still on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    /// Its position in the holder's write stream after the checkpoint.
    pub pos: u64,
    /// Its offset on the target.
    pub target_offset: i64,
    /// Key, value and headers as written (the bytes after the offset delta).
    pub tail: Bytes,
    /// Its timestamp; `None` in a batch the target broker stamped with its
    /// own append time (LogAppendTime topic), where it is not compared.
    pub timestamp: Option<i64>,
}

/// What the target shows of the previous holder's writes after the
/// checkpoint.
#[derive(Debug, Clone, Default)]
pub(super) struct HolderWrites {
    /// Its records still there, by strictly increasing position.
    pub records: Vec<Held>,
    /// One past the last position its surviving batches cover: the holder
    /// wrote at least this many records.
    pub positions: u64,
    /// Records it may have written after those, unseen: whole batches
    /// removed after its last surviving batch show only as that many
    /// missing target offsets (an upper bound).
    pub unseen_after: u64,
    /// Keys of the target's records after the checkpoint, any producer's.
    /// The cleaner removes a record only for a newer one with its key (or
    /// a tombstone past delete.retention.ms): an unseen record of the
    /// holder must have such a key, or be a tombstone.
    pub later_keys: HashSet<Bytes>,
}

/// One committed source record at or after the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SourceRec {
    /// Its offset.
    pub offset: i64,
    /// Key, value and headers as produced.
    pub tail: Bytes,
    /// Its timestamp as Ferry writes it.
    pub timestamp: i64,
    /// Offsets between the previous record (or the cursor) and this one
    /// that no longer hold anything: the most committed records that were
    /// removed there (compaction, retention) since the holder read them.
    pub removed_before: u64,
}

/// The committed source records from the cursor on, as far as read.
#[derive(Debug, Clone, Default)]
pub(super) struct SourceWindow {
    /// The records, in offset order.
    pub records: Vec<SourceRec>,
    /// Removed offsets after the last of them, up to where the read ended.
    pub removed_after: u64,
}

/// The one reading of the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Alignment {
    /// (source offset, target offset) of every holder record on the target
    /// whose source record is still there, in order.
    pub pairs: Vec<(i64, i64)>,
    /// How many of the window's records the holder wrote: the first
    /// `written`; the rest are still to be replicated.
    pub written: usize,
    /// Holder records on the target whose source record was removed.
    pub source_removed: usize,
}

/// Why no single reading was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum AlignError {
    /// No reading explains what both sides hold.
    #[error(
        "no reading matches the previous holder's record at position {pos} (target offset {target_offset:?}) to the source: \
         it is not the next committed source record and no removed source offsets are left to have held it"
    )]
    Inconsistent {
        /// The holder's position where every reading failed.
        pos: u64,
        /// The target record there, if it is still on the target.
        target_offset: Option<i64>,
    },
    /// Two readings disagree about a target record.
    #[error(
        "the previous holder's record at target offset {target_offset} is the copy of {}",
        describe(.choices)
    )]
    AmbiguousRecord {
        /// The target record.
        target_offset: i64,
        /// What it may be the copy of: a source offset, or `None` for a
        /// removed source record.
        choices: Vec<Option<i64>>,
    },
    /// Readings disagree about how many source records were written.
    #[error(
        "the previous holder wrote {} of the committed source records after the cursor (the target lost the evidence, e.g. whole batches removed by compaction)",
        describe_counts(.counts)
    )]
    AmbiguousCount {
        /// The counts that fit the evidence.
        counts: Vec<usize>,
    },
    /// Too many readings to follow within the bound.
    #[error("more than {MAX_STATES} readings of the evidence fit; too ambiguous to follow")]
    TooMany,
}

fn describe(choices: &[Option<i64>]) -> String {
    let each: Vec<String> = choices
        .iter()
        .map(|c| match c {
            Some(o) => format!("source offset {o}"),
            None => "a source record removed since".to_owned(),
        })
        .collect();
    format!("either {}", each.join(" or "))
}

fn describe_counts(counts: &[usize]) -> String {
    let each: Vec<String> = counts.iter().map(usize::to_string).collect();
    format!("either {}", each.join(" or "))
}

/// How a position of the holder's stream is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Move {
    /// Its target record is source record `i`'s copy.
    Match(usize),
    /// Its target record's source was removed.
    SourceRemoved,
    /// Source record `i` was written here; its copy was removed.
    TargetRemoved,
    /// Removed on both sides.
    BothRemoved,
}

/// A reading in progress: the next source record not yet placed, and how
/// many removed offsets before it this reading has used.
type State = (usize, u64);

/// Whether target record `held` can be source record `s`'s copy.
fn same(held: &Held, s: &SourceRec) -> bool {
    held.tail == s.tail && held.timestamp.is_none_or(|t| t == s.timestamp)
}

/// Whether source record `r` can be one the holder wrote after its last
/// batch seen, all of whose copies the cleaner then removed: only with a
/// newer record of its key on the target, or as a tombstone.
fn may_be_unseen(r: &SourceRec, later_keys: &HashSet<Bytes>) -> bool {
    match key_and_tombstone(&r.tail) {
        (_, true) => true,
        (Some(k), false) => later_keys.contains(&k),
        (None, false) => false,
    }
}

/// The readings that go on from `state` at a position showing `held` (or
/// nothing, when its record is gone from the target; `unseen` past the
/// positions the holder's batches show).
fn moves<'a>(
    held: Option<&Held>,
    unseen: bool,
    state: State,
    source: &SourceWindow,
    later_keys: &'a HashSet<Bytes>,
) -> impl Iterator<Item = (Move, State)> + 'a {
    let (i, used) = state;
    let rec = source.records.get(i);
    let room = used < rec.map_or(source.removed_after, |r| r.removed_before);
    let (a, b) = match held {
        Some(h) => {
            if rec.is_some_and(|r| same(h, r)) {
                // The copy of the next record, never the copy of an equal
                // removed one (see the module's note).
                (Some((Move::Match(i), (i + 1, 0))), None)
            } else {
                (None, room.then_some((Move::SourceRemoved, (i, used + 1))))
            }
        }
        None => (
            rec.filter(|r| !unseen || may_be_unseen(r, later_keys))
                .map(|_| (Move::TargetRemoved, (i + 1, 0))),
            room.then_some((Move::BothRemoved, (i, used + 1))),
        ),
    };
    a.into_iter().chain(b)
}

/// Match the holder's writes to the source window. The window must hold
/// every committed record that can be among them: at least
/// `positions + unseen_after` records, or all there are.
pub(super) fn align(holder: &HolderWrites, source: &SourceWindow) -> Result<Alignment, AlignError> {
    let n = holder.positions;
    let total = n + holder.unseen_after;
    let held_at = |k: u64, next: &mut usize| -> Option<&Held> {
        let h = holder.records.get(*next).filter(|h| h.pos == k);
        if h.is_some() {
            *next += 1;
        }
        h
    };
    // Forward: the states reachable at each position, sorted.
    let mut layers: Vec<Vec<State>> = vec![vec![(0, 0)]];
    let mut visited = 1usize;
    let mut next_held = 0;
    for k in 0..total {
        let held = if k < n { held_at(k, &mut next_held) } else { None };
        let mut next: Vec<State> = layers[k as usize]
            .iter()
            .flat_map(|&s| moves(held, k >= n, s, source, &holder.later_keys).map(|(_, to)| to))
            .collect();
        next.sort_unstable();
        next.dedup();
        if next.is_empty() {
            if k < n {
                return Err(AlignError::Inconsistent {
                    pos: k,
                    target_offset: held.map(|h| h.target_offset),
                });
            }
            // Past the positions seen, the unseen ones run out here.
            break;
        }
        visited += next.len();
        if visited > MAX_STATES {
            return Err(AlignError::TooMany);
        }
        layers.push(next);
    }
    // Backward: which states lie on a complete reading. Every state at a
    // position past the ones seen ends one.
    let mut alive: Vec<Vec<bool>> = layers.iter().map(|l| vec![false; l.len()]).collect();
    let mut held_of: Vec<Option<&Held>> = vec![None; layers.len()];
    let mut next_held = 0;
    for (k, slot) in held_of.iter_mut().enumerate().take(n.min(total) as usize) {
        *slot = held_at(k as u64, &mut next_held);
    }
    for k in (0..layers.len()).rev() {
        for (j, &s) in layers[k].iter().enumerate() {
            alive[k][j] = k as u64 >= n
                || layers.get(k + 1).is_some_and(|after| {
                    moves(held_of[k], k as u64 >= n, s, source, &holder.later_keys)
                        .any(|(_, to)| after.binary_search(&to).is_ok_and(|at| alive[k + 1][at]))
                });
        }
    }
    if !alive[0][0] {
        return Err(AlignError::Inconsistent {
            pos: 0,
            target_offset: None,
        });
    }
    // The written count: the same in every complete reading.
    let mut counts: Vec<usize> = layers
        .iter()
        .zip(&alive)
        .skip(n as usize)
        .flat_map(|(l, a)| l.iter().zip(a).filter(|(_, &ok)| ok).map(|(&(i, _), _)| i))
        .collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.len() > 1 {
        return Err(AlignError::AmbiguousCount { counts });
    }
    let written = counts.first().copied().unwrap_or(0);
    // Each target record: the same explanation in every complete reading.
    let mut pairs = Vec::new();
    let mut source_removed = 0;
    for k in 0..(n as usize).min(layers.len() - 1) {
        let Some(h) = held_of[k] else { continue };
        let mut seen: Vec<Move> = Vec::new();
        for (j, &s) in layers[k].iter().enumerate().filter(|(j, _)| alive[k][*j]) {
            let _ = j;
            for (m, to) in moves(Some(h), false, s, source, &holder.later_keys) {
                if layers[k + 1].binary_search(&to).is_ok_and(|at| alive[k + 1][at]) {
                    seen.push(m);
                }
            }
        }
        seen.sort_unstable();
        seen.dedup();
        match seen.as_slice() {
            [Move::Match(i)] => pairs.push((source.records[*i].offset, h.target_offset)),
            [Move::SourceRemoved] => source_removed += 1,
            _ => {
                return Err(AlignError::AmbiguousRecord {
                    target_offset: h.target_offset,
                    choices: seen
                        .iter()
                        .map(|m| match m {
                            Move::Match(i) => Some(source.records[*i].offset),
                            _ => None,
                        })
                        .collect(),
                })
            }
        }
    }
    Ok(Alignment {
        pairs,
        written,
        source_removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn src(offset: i64, removed_before: u64) -> SourceRec {
        SourceRec {
            offset,
            tail: Bytes::from(format!("record-{offset}")),
            timestamp: 1_000 + offset,
            removed_before,
        }
    }

    fn held(pos: u64, target_offset: i64, source_offset: i64) -> Held {
        Held {
            pos,
            target_offset,
            tail: Bytes::from(format!("record-{source_offset}")),
            timestamp: Some(1_000 + source_offset),
        }
    }

    #[test]
    fn nothing_removed_is_a_match_one_for_one() {
        let holder = HolderWrites {
            records: (0..3).map(|k| held(k, 100 + k as i64, k as i64)).collect(),
            positions: 3,
            unseen_after: 0,
            later_keys: HashSet::new(),
        };
        let source = SourceWindow {
            records: (0..5).map(|o| src(o, 0)).collect(),
            removed_after: 0,
        };
        let a = align(&holder, &source).expect("one reading fits");
        assert_eq!(a.pairs, vec![(0, 100), (1, 101), (2, 102)]);
        assert_eq!(a.written, 3);
    }

    #[test]
    fn a_source_record_removed_after_the_write_is_not_counted_twice() {
        // Holder wrote source 0..=3; source 1 was compacted away since.
        let holder = HolderWrites {
            records: (0..4).map(|k| held(k, 10 + k as i64, k as i64)).collect(),
            positions: 4,
            unseen_after: 0,
            later_keys: HashSet::new(),
        };
        let source = SourceWindow {
            records: vec![src(0, 0), src(2, 1), src(3, 0), src(4, 0)],
            removed_after: 0,
        };
        let a = align(&holder, &source).expect("one reading fits");
        assert_eq!(a.pairs, vec![(0, 10), (2, 12), (3, 13)]);
        assert_eq!(a.written, 3, "source 4 is next; count matching would have skipped it");
        assert_eq!(a.source_removed, 1);
    }

    #[test]
    fn a_copy_removed_on_the_target_is_still_written() {
        // Holder wrote source 0..=3; its copies of 1 and 3 were removed.
        let holder = HolderWrites {
            records: vec![held(0, 10, 0), held(2, 12, 2)],
            positions: 4,
            unseen_after: 0,
            later_keys: HashSet::new(),
        };
        let source = SourceWindow {
            records: (0..6).map(|o| src(o, 0)).collect(),
            removed_after: 0,
        };
        let a = align(&holder, &source).expect("one reading fits");
        assert_eq!(a.pairs, vec![(0, 10), (2, 12)]);
        assert_eq!(a.written, 4, "count matching would have written source 2 and 3 again");
    }

    /// Bytes after the offset delta: key, value, no headers.
    fn framed(key: &[u8], value: Option<&[u8]>) -> Bytes {
        fn zigzag(out: &mut Vec<u8>, v: i64) {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            while z >= 0x80 {
                out.push((z as u8) | 0x80);
                z >>= 7;
            }
            out.push(z as u8);
        }
        let mut out = Vec::new();
        zigzag(&mut out, key.len() as i64);
        out.extend_from_slice(key);
        match value {
            Some(v) => {
                zigzag(&mut out, v.len() as i64);
                out.extend_from_slice(v);
            }
            None => zigzag(&mut out, -1),
        }
        zigzag(&mut out, 0);
        Bytes::from(out)
    }

    #[test]
    fn keys_and_tombstones_are_read_from_the_record_bytes() {
        assert_eq!(
            key_and_tombstone(&framed(b"k1", Some(b"v"))),
            (Some(Bytes::from_static(b"k1")), false)
        );
        assert_eq!(key_and_tombstone(&framed(b"", None)), (Some(Bytes::new()), true));
        assert_eq!(
            key_and_tombstone(&Bytes::from_static(&[0x01, 0x00])),
            (None, false),
            "null key, empty value"
        );
        assert_eq!(
            key_and_tombstone(&Bytes::from_static(&[0x7e])),
            (None, false),
            "key longer than the record"
        );
    }

    #[test]
    fn batches_removed_after_the_last_one_seen_leave_the_count_open_only_where_keys_allow() {
        let rec = |o: i64, value: Option<&[u8]>| SourceRec {
            offset: o,
            tail: framed(format!("key-{o}").as_bytes(), value),
            timestamp: o,
            removed_before: 0,
        };
        let source = SourceWindow {
            records: vec![rec(0, Some(b"a")), rec(1, Some(b"b")), rec(2, None), rec(3, Some(b"d"))],
            removed_after: 0,
        };
        let mut holder = HolderWrites {
            records: vec![Held {
                pos: 0,
                target_offset: 10,
                tail: source.records[0].tail.clone(),
                timestamp: Some(0),
            }],
            positions: 1,
            unseen_after: 3,
            later_keys: HashSet::new(),
        };
        // No newer record of key-1 on the target: its copy cannot have
        // been removed, so the holder wrote only what is seen.
        assert_eq!(align(&holder, &source).map(|a| a.written), Ok(1));
        // With one, key-1 may be written and removed; key-2 is a tombstone
        // (it may have expired); key-3 has no newer record.
        holder.later_keys.insert(Bytes::from_static(b"key-1"));
        assert_eq!(align(&holder, &source), Err(AlignError::AmbiguousCount { counts: vec![1, 2, 3] }));
    }

    #[test]
    fn retention_before_the_source_start_is_a_removed_range() {
        // Holder wrote source 0..=4; DeleteRecords moved the start to 3.
        let holder = HolderWrites {
            records: (0..5).map(|k| held(k, 20 + k as i64, k as i64)).collect(),
            positions: 5,
            unseen_after: 0,
            later_keys: HashSet::new(),
        };
        let source = SourceWindow {
            records: (3..8).map(|o| src(o, if o == 3 { 3 } else { 0 })).collect(),
            removed_after: 0,
        };
        let a = align(&holder, &source).expect("one reading fits");
        assert_eq!(a.pairs, vec![(3, 23), (4, 24)]);
        assert_eq!((a.written, a.source_removed), (2, 3));
        // All of it deleted, and more: nothing on the source was written.
        let source = SourceWindow {
            records: (9..12).map(|o| src(o, if o == 9 { 9 } else { 0 })).collect(),
            removed_after: 0,
        };
        let a = align(&holder, &source).expect("one reading fits");
        assert_eq!((a.pairs.len(), a.written, a.source_removed), (0, 0, 5));
    }

    #[test]
    fn a_record_matching_nothing_with_no_room_is_inconsistent() {
        let holder = HolderWrites {
            records: vec![held(0, 10, 7)],
            positions: 1,
            unseen_after: 0,
            later_keys: HashSet::new(),
        };
        let source = SourceWindow {
            records: vec![src(0, 0)],
            removed_after: 0,
        };
        assert_eq!(
            align(&holder, &source),
            Err(AlignError::Inconsistent {
                pos: 0,
                target_offset: Some(10)
            })
        );
    }

    /// A world: committed source records 0..len (offsets spaced by `gaps`,
    /// as aborted or control records would), the holder wrote the first
    /// `w`, then some source records and some target copies are removed.
    #[derive(Debug, Clone)]
    struct World {
        offsets: Vec<i64>,
        w: usize,
        source_removed: Vec<bool>,
        target_removed: Vec<bool>,
        retention: usize,
    }

    fn world() -> impl Strategy<Value = World> {
        (1usize..40, 0usize..40).prop_flat_map(|(len, extra)| {
            let len = len + extra;
            (
                prop::collection::vec(1i64..3, len),
                0..=len,
                prop::collection::vec(prop::bool::weighted(0.25), len),
                prop::collection::vec(prop::bool::weighted(0.25), len),
                0..=len,
            )
                .prop_map(|(steps, w, source_removed, target_removed, retention)| {
                    let mut o = 0;
                    let offsets = steps
                        .iter()
                        .map(|s| {
                            o += s;
                            o
                        })
                        .collect();
                    World {
                        offsets,
                        w,
                        source_removed,
                        target_removed,
                        retention: retention / 3,
                    }
                })
        })
    }

    /// The evidence the world leaves: surviving target copies by position
    /// (the last written position's batch survives, so `positions` is `w`),
    /// surviving source records with the removed offsets before each.
    fn evidence(wd: &World) -> (HolderWrites, SourceWindow) {
        let records = (0..wd.w)
            .filter(|&k| !wd.target_removed[k] || k + 1 == wd.w)
            .map(|k| held(k as u64, 1_000 + k as i64, wd.offsets[k]))
            .collect();
        let holder = HolderWrites {
            records,
            positions: wd.w as u64,
            unseen_after: 0,
            later_keys: HashSet::new(),
        };
        let mut prev = 0;
        let mut removed = 0u64;
        let mut recs = Vec::new();
        for (k, &o) in wd.offsets.iter().enumerate() {
            // Offsets between records not removed since are aborted or
            // control records: present, not room for a removed record.
            let gone = k < wd.retention || wd.source_removed[k];
            if gone {
                removed += (o - prev) as u64;
            } else {
                recs.push(SourceRec {
                    removed_before: removed,
                    ..src(o, 0)
                });
                removed = 0;
            }
            prev = o;
        }
        (
            holder,
            SourceWindow {
                records: recs,
                removed_after: removed,
            },
        )
    }

    proptest! {
        /// Never a wrong answer: either the truth, or a refusal. And with
        /// removals on one side only, always the truth.
        #[test]
        fn the_answer_is_the_truth_or_a_refusal(wd in world()) {
            let (holder, source) = evidence(&wd);
            let gone = |k: usize| k < wd.retention || wd.source_removed[k];
            let truth_pairs: Vec<(i64, i64)> = (0..wd.w)
                .filter(|&k| !gone(k) && (!wd.target_removed[k] || k + 1 == wd.w))
                .map(|k| (wd.offsets[k], 1_000 + k as i64))
                .collect();
            let truth_written = (0..wd.w).filter(|&k| !gone(k)).count();
            match align(&holder, &source) {
                Ok(a) => {
                    prop_assert_eq!(a.pairs, truth_pairs);
                    prop_assert_eq!(a.written, truth_written);
                }
                Err(e) => {
                    let one_sided = !(0..wd.w).any(|k| wd.target_removed[k] && k + 1 != wd.w)
                        || !(0..wd.offsets.len()).any(gone);
                    prop_assert!(!one_sided, "refused a one-sided case: {}", e);
                }
            }
        }
    }
}
