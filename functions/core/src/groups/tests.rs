//! Translation checked against a model of two clusters' logs: producers
//! write to both clusters in any order, each flow copies, filters and
//! checkpoints at its own pace (so the two logs hold the same records in
//! different orders), and markers and aborted records leave gaps.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::offset_map::coalesce;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A record, by id, and whether it was produced on X.
    Record(u32, bool),
    /// A control marker or aborted record: an offset with nothing to replicate.
    Gap,
}

/// One flow's progress: where it has read its source up to, and what it
/// has stored (cursor, runs, target end) at its last checkpoint.
#[derive(Debug, Default, Clone)]
struct Flow {
    pos: i64,
    runs: Vec<OffsetRun>,
    target_end: i64,
    stored_cursor: i64,
    stored_runs: Vec<OffsetRun>,
    stored_target_end: i64,
}

#[derive(Debug, Default)]
struct World {
    x: Vec<Entry>,
    y: Vec<Entry>,
    /// X→Y (source X) and Y→X (source Y).
    xy: Flow,
    yx: Flow,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    /// Produce on X (`true`) or Y a record (or, `true`, a gap).
    Produce(bool, bool),
    /// The flow from X (`true`) or Y reads up to this many entries on.
    Step(bool, u8),
    /// The flow from X (`true`) or Y checkpoints.
    Checkpoint(bool),
}

fn apply(w: &mut World, ev: Event, next_id: &mut u32) {
    match ev {
        Event::Produce(on_x, gap) => {
            let log = if on_x { &mut w.x } else { &mut w.y };
            log.push(if gap {
                Entry::Gap
            } else {
                *next_id += 1;
                Entry::Record(*next_id, on_x)
            });
        }
        Event::Step(from_x, k) => {
            let (from, to, flow) = if from_x {
                (&w.x, &mut w.y, &mut w.xy)
            } else {
                (&w.y, &mut w.x, &mut w.yx)
            };
            flow.target_end = flow.target_end.max(to.len() as i64);
            for _ in 0..k {
                let Some(&e) = from.get(flow.pos as usize) else { break };
                // Copies records produced on its source; filters the copies
                // the opposite flow wrote there; skips gaps.
                if let Entry::Record(id, on_x) = e {
                    if on_x == from_x {
                        let run = OffsetRun {
                            source_start: flow.pos,
                            target_start: to.len() as i64,
                            length: 1,
                        };
                        to.push(Entry::Record(id, on_x));
                        coalesce(&mut flow.runs, &[run]);
                        flow.target_end = to.len() as i64;
                    }
                }
                flow.pos += 1;
            }
        }
        Event::Checkpoint(from_x) => {
            let flow = if from_x { &mut w.xy } else { &mut w.yx };
            flow.stored_cursor = flow.pos;
            flow.stored_runs = flow.runs.clone();
            flow.stored_target_end = flow.target_end;
        }
    }
}

fn consumed(log: &[Entry], end: i64) -> BTreeSet<u32> {
    log.iter()
        .take(end as usize)
        .filter_map(|e| match e {
            Entry::Record(r, _) => Some(*r),
            Entry::Gap => None,
        })
        .collect()
}

fn by_target(runs: &[OffsetRun]) -> Vec<OffsetRun> {
    let mut v = runs.to_vec();
    v.sort_by_key(|r| r.target_start);
    v
}

/// What the state store hands over: the run starting at or before `c`
/// and the first one starting after it.
fn window(runs: &[OffsetRun], c: i64, key: fn(&OffsetRun) -> i64) -> Vec<OffsetRun> {
    let idx = runs.partition_point(|r| key(r) <= c);
    runs[idx.saturating_sub(1)..(idx + 1).min(runs.len())].to_vec()
}

/// The runs from the one holding `at` (by `key`) on.
fn from(runs: &[OffsetRun], at: i64, key: fn(&OffsetRun) -> i64) -> Vec<OffsetRun> {
    let idx = runs.partition_point(|r| key(r) <= at);
    runs[idx.saturating_sub(1)..].to_vec()
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let ev = prop_oneof![
        4 => (any::<bool>(), prop::bool::weighted(0.15)).prop_map(|(x, g)| Event::Produce(x, g)),
        2 => (any::<bool>(), 1u8..6).prop_map(|(x, k)| Event::Step(x, k)),
        1 => any::<bool>().prop_map(Event::Checkpoint),
    ];
    prop::collection::vec(ev, 0..60)
}

/// The stored runs as a reader that read `cursor` first sees them: the
/// store cuts away what checkpoints after that read added.
fn as_of(runs: &[OffsetRun], cursor: i64) -> Vec<OffsetRun> {
    runs.iter()
        .filter(|r| r.source_start < cursor)
        .map(|r| OffsetRun {
            length: r.length.min(cursor - r.source_start),
            ..*r
        })
        .collect()
}

/// Each flow's stored cursor and target end at one moment: the sync reads
/// every cursor before it reads any run, and checkpoints go on meanwhile.
#[derive(Debug, Clone, Copy, Default)]
struct Cursors {
    xy: (i64, i64),
    yx: (i64, i64),
}

fn cursors_now(w: &World) -> Cursors {
    Cursors {
        xy: (w.xy.stored_cursor, w.xy.stored_target_end),
        yx: (w.yx.stored_cursor, w.yx.stored_target_end),
    }
}

/// Translate commit `c` on X as the engine does, from the stored state,
/// with the windows the store hands over.
fn translate_in(w: &World, c: i64, enhanced: bool) -> (Option<Translation>, i64) {
    translate_with(w, cursors_now(w), c, enhanced)
}

/// The same, with the cursors read at an earlier moment than the runs.
fn translate_with(w: &World, at: Cursors, c: i64, enhanced: bool) -> (Option<Translation>, i64) {
    let xy_runs = as_of(&w.xy.stored_runs, at.xy.0);
    let yx_runs = as_of(&w.yx.stored_runs, at.yx.0);
    let rev_by_target = by_target(&yx_runs);
    let fwd_by_target = by_target(&xy_runs);
    let fwd_window = window(&xy_runs, c, |r| r.source_start);
    // X's end is read after the cursors: it is the log as it is now.
    let x_end = (w.x.len() as i64).max(c);
    let behind = if enhanced {
        first_uncovered(&from(&rev_by_target, at.xy.0, |r| r.target_start), at.xy.0, x_end).is_some()
    } else {
        c > at.xy.0
    };
    let next_write = if enhanced && behind {
        first_uncovered_source(&from(&yx_runs, at.xy.1, |r| r.source_start), at.xy.1, i64::MAX).unwrap_or(at.xy.1)
    } else {
        at.xy.1
    };
    let forward = Forward {
        runs: &fwd_window,
        cursor: at.xy.0,
        target_end: at.xy.1,
        behind,
        next_write,
    };
    let rev_window = window(&rev_by_target, c, |r| r.target_start);
    let fwd_from = from(&fwd_by_target, at.yx.0, |r| r.target_start);
    let reverse = Reverse {
        runs: &rev_window,
        cursor: at.yx.0,
        forward_from_cursor: &fwd_from,
    };
    let t = translate(c, &forward, enhanced.then_some(&reverse));
    let rev_from: Vec<OffsetRun> = if enhanced { yx_runs.clone() } else { Vec::new() };
    let again = t.map_or(0, |t| {
        redelivered(
            t.offset,
            c,
            &from(&fwd_by_target, t.offset, |r| r.target_start),
            &from(&rev_from, t.offset, |r| r.source_start),
        )
    });
    (t, again)
}

proptest! {
    /// ENHANCED, both ways, producers on both clusters in any order: for
    /// every committed offset on X, no record before the translation on Y
    /// is one the group has not consumed (never a skip); an exact one
    /// delivers nothing twice; the count of records delivered again is
    /// what the logs say whenever it is exact or the flows are at rest; the
    /// translation never moves back as the group moves forward.
    #[test]
    fn enhanced_translation_never_skips(evs in events(), settle in any::<bool>()) {
        let mut w = World::default();
        let mut id = 0;
        for ev in evs {
            apply(&mut w, ev, &mut id);
        }
        if settle {
            // Both flows copy everything and checkpoint.
            for _ in 0..2 {
                for from_x in [true, false] {
                    apply(&mut w, Event::Step(from_x, u8::MAX), &mut id);
                    apply(&mut w, Event::Checkpoint(from_x), &mut id);
                }
            }
        }
        let mut prev: Option<i64> = None;
        for c in 0..=w.x.len() as i64 {
            let (t, again) = translate_in(&w, c, true);
            let Some(t) = t else { continue };
            let consumed = consumed(&w.x, c);
            let before = consumed_check(&w.y, t.offset);
            prop_assert!(before.is_subset(&consumed), "c={} d={} skips {:?}", c, t.offset, before.difference(&consumed).collect::<Vec<_>>());
            let after: BTreeSet<u32> = w.y.iter().skip(t.offset as usize).filter_map(|e| match e {
                Entry::Record(r, _) => Some(*r),
                Entry::Gap => None,
            }).collect();
            let truly_again = consumed.intersection(&after).count() as i64;
            if t.exact && again == 0 {
                prop_assert_eq!(truly_again, 0, "c={} d={} exact but delivers again", c, t.offset);
            }
            if settle {
                prop_assert_eq!(again, truly_again, "c={} d={}", c, t.offset);
                prop_assert_eq!(t.exact, true, "c={} d={}: at rest every translation is known", c, t.offset);
            }
            if let Some(p) = prev {
                prop_assert!(t.offset >= p, "not monotone at c={}", c);
            }
            prev = Some(t.offset);
        }
    }

    /// The sync reads the cursors, then the runs, while both flows go on
    /// copying and checkpointing: what it reads of the runs is cut back to
    /// the cursors it read. It still never skips, and an exact translation
    /// still delivers nothing twice in the logs as they are by then.
    #[test]
    fn cursors_read_before_later_checkpoints_never_skip(evs in events(), then in events()) {
        let mut w = World::default();
        let mut id = 0;
        for ev in evs {
            apply(&mut w, ev, &mut id);
        }
        let at = cursors_now(&w);
        let x_then = w.x.len() as i64;
        // The group is stopped at some `c` on X as it was; producers, flows
        // and checkpoints go on before the runs are read.
        for ev in then {
            apply(&mut w, ev, &mut id);
        }
        for c in 0..=x_then {
            let (t, again) = translate_with(&w, at, c, true);
            let Some(t) = t else { continue };
            let consumed = consumed(&w.x, c);
            let before = consumed_check(&w.y, t.offset);
            prop_assert!(before.is_subset(&consumed), "c={} d={} skips {:?}", c, t.offset, before.difference(&consumed).collect::<Vec<_>>());
            if t.exact && again == 0 {
                let after: BTreeSet<u32> = w.y.iter().skip(t.offset as usize).filter_map(|e| match e {
                    Entry::Record(r, _) => Some(*r),
                    Entry::Gap => None,
                }).collect();
                prop_assert_eq!(consumed.intersection(&after).count(), 0, "c={} d={} exact but delivers again", c, t.offset);
            }
        }
    }

    /// A cursor of X→Y that lags only over the opposite flow's copies (it
    /// filters them, and checkpoints later) hides nothing: with Y→X at rest,
    /// every translation is exact and counts what is delivered again as
    /// the logs do. Seen in the migration story: producers moved to Y, the
    /// group still on X reading Y's records, and X→Y's stored cursor always
    /// a checkpoint behind them.
    #[test]
    fn a_cursor_behind_only_the_opposite_copies_is_exact(evs in events(), tail in 0u8..20) {
        let mut w = World::default();
        let mut id = 0;
        for ev in evs {
            apply(&mut w, ev, &mut id);
        }
        // X→Y copies all and checkpoints; then only Y produces, and Y→X
        // copies all of it and checkpoints: X→Y's cursor lags over copies.
        apply(&mut w, Event::Step(true, u8::MAX), &mut id);
        apply(&mut w, Event::Step(true, u8::MAX), &mut id);
        apply(&mut w, Event::Checkpoint(true), &mut id);
        for _ in 0..tail {
            apply(&mut w, Event::Produce(false, false), &mut id);
        }
        for _ in 0..4 {
            apply(&mut w, Event::Step(false, u8::MAX), &mut id);
        }
        apply(&mut w, Event::Checkpoint(false), &mut id);
        for c in 0..=w.x.len() as i64 {
            let (t, again) = translate_in(&w, c, true);
            let consumed = consumed(&w.x, c);
            let Some(t) = t else {
                prop_assert!(consumed.is_empty() && w.y.iter().all(|e| *e == Entry::Gap), "c={}: no translation with records on both sides", c);
                continue;
            };
            let before = consumed_check(&w.y, t.offset);
            prop_assert!(before.is_subset(&consumed), "c={} d={} skips", c, t.offset);
            let after: BTreeSet<u32> = w.y.iter().skip(t.offset as usize).filter_map(|e| match e {
                Entry::Record(r, _) => Some(*r),
                Entry::Gap => None,
            }).collect();
            prop_assert!(t.exact, "c={} d={}: X→Y's cursor {} lags over copies only", c, t.offset, w.xy.stored_cursor);
            prop_assert_eq!(again, consumed.intersection(&after).count() as i64, "c={} d={}", c, t.offset);
        }
    }

    /// One way (X→Y only, the flow's own map: LEGACY or no opposite flow):
    /// never a skip of a record X→Y copied, exact once replicated.
    #[test]
    fn one_way_translation_is_exact(evs in events()) {
        let mut w = World::default();
        let mut id = 0;
        for ev in evs {
            let ev = match ev {
                Event::Produce(_, gap) => Event::Produce(true, gap),
                Event::Step(_, k) => Event::Step(true, k),
                Event::Checkpoint(_) => Event::Checkpoint(true),
            };
            apply(&mut w, ev, &mut id);
        }
        for c in 0..=w.x.len() as i64 {
            let (t, again) = translate_in(&w, c, false);
            let Some(t) = t else { continue };
            let consumed = consumed(&w.x, c);
            let before = consumed_check(&w.y, t.offset);
            prop_assert!(before.is_subset(&consumed), "c={} d={}", c, t.offset);
            if c <= w.xy.stored_cursor {
                prop_assert!(t.exact);
                prop_assert_eq!(again, 0);
                prop_assert_eq!(before, consumed.intersection(&consumed_check(&w.y, w.y.len() as i64)).copied().collect::<BTreeSet<_>>());
            }
        }
    }
}

fn consumed_check(log: &[Entry], end: i64) -> BTreeSet<u32> {
    consumed(log, end)
}

#[test]
fn decisions() {
    let t = |offset| Some(Translation { offset, exact: true });
    let ferry = CommitOwner::Ferry;
    assert_eq!(decide(None, Some(3), ferry), SyncDecision::NothingReplicated);
    assert_eq!(decide(t(5), None, CommitOwner::Nobody), SyncDecision::Commit(5));
    assert_eq!(decide(t(5), Some(4), ferry), SyncDecision::Commit(5));
    assert_eq!(decide(t(5), Some(5), ferry), SyncDecision::UpToDate);
    assert_eq!(
        decide(t(5), Some(9), ferry),
        SyncDecision::TargetAhead { current: 9, translated: 5 }
    );
    // A lower commit someone else made is never overwritten...
    assert_eq!(
        decide(t(5), Some(4), CommitOwner::Other),
        SyncDecision::ForeignCommit { current: 4, translated: 5 }
    );
    // ...and one at or above the translation is what it always was.
    assert_eq!(decide(t(5), Some(5), CommitOwner::Other), SyncDecision::UpToDate);
    assert_eq!(
        decide(t(5), Some(7), CommitOwner::Other),
        SyncDecision::TargetAhead { current: 7, translated: 5 }
    );
}

#[test]
fn interleaved_logs_translate_to_the_first_record_not_consumed() {
    // X: [0..4) records produced on Y (Y 2..6), then X 4, 5 produced on X
    // and copied to Y 0, 1. The two logs hold them in different orders.
    let fwd = [OffsetRun {
        source_start: 4,
        target_start: 0,
        length: 2,
    }];
    let rev = [OffsetRun {
        source_start: 2,
        target_start: 0,
        length: 4,
    }];
    let forward = Forward {
        runs: &fwd,
        cursor: 6,
        target_end: 6,
        behind: false,
        next_write: 6,
    };
    let reverse = Reverse {
        runs: &rev,
        cursor: 6,
        forward_from_cursor: &[],
    };
    // c=1: the group read Y 2 only. Y 0 (X 4) is the first it has not read;
    // Y 2 comes again.
    let t = translate(1, &forward, Some(&reverse)).expect("runs");
    assert_eq!(t.offset, 0);
    assert_eq!(redelivered(0, 1, &fwd, &rev), 1);
    // c=5: everything but X 5 (Y 1) was read; Y 2..6 come again.
    let t = translate(5, &forward, Some(&reverse)).expect("runs");
    assert_eq!(t.offset, 1);
    assert_eq!(redelivered(1, 5, &fwd, &rev), 4);
    // c=6: all read; the end.
    assert_eq!(translate(6, &forward, Some(&reverse)), Some(Translation { offset: 6, exact: true }));
    assert_eq!(redelivered(6, 6, &fwd, &rev), 0);
}

#[test]
fn a_stale_target_end_gives_way_to_the_records_produced_on_y_since() {
    // X: [0..128) produced on X, copied to Y [0..128); [128..615) copies of
    // Y [128..615), produced there; [615..774) written since, not yet
    // accounted for by any checkpoint. X→Y last wrote at Y 128; Y→X has read
    // Y up to 615. The group read X up to 709.
    let fwd = [OffsetRun {
        source_start: 0,
        target_start: 0,
        length: 128,
    }];
    let rev = [OffsetRun {
        source_start: 128,
        target_start: 128,
        length: 487,
    }];
    let next_write = first_uncovered_source(&rev, 128, i64::MAX).expect("the runs end somewhere");
    assert_eq!(next_write, 615);
    let forward = Forward {
        runs: &fwd,
        cursor: 615,
        target_end: 128,
        behind: first_uncovered(&rev, 615, 774).is_some(),
        next_write,
    };
    let reverse = Reverse {
        runs: &rev,
        cursor: 615,
        forward_from_cursor: &[],
    };
    let t = translate(709, &forward, Some(&reverse)).expect("records around 709 are replicated");
    // Y's records before 615 were all consumed; what X→Y may still write
    // lands at or after 615, and X [615..709) is not known yet.
    assert_eq!(t, Translation { offset: 615, exact: false });
    assert_eq!(redelivered(615, 709, &[], &rev), 0);
}
