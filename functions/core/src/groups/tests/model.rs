//! The model: two clusters' logs, producers on both, and each flow's
//! progress and checkpoints; and the translation as the engine asks for it.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    /// A record, by id, and whether it was produced on X.
    Record(u32, bool),
    /// A control marker or aborted record: an offset with nothing to replicate.
    Gap,
    /// A record of a transaction still open: past the last stable
    /// offset, which read_committed readers (the flows) stop at.
    Pending(u32, bool),
}

/// One flow's progress: where it has read its source up to, and what it
/// has stored (cursor, runs, target end) at its last checkpoint.
#[derive(Debug, Default, Clone)]
pub(super) struct Flow {
    pub(super) pos: i64,
    pub(super) runs: Vec<OffsetRun>,
    pub(super) target_end: i64,
    pub(super) stored_cursor: i64,
    pub(super) stored_runs: Vec<OffsetRun>,
    pub(super) stored_target_end: i64,
    pub(super) started: bool,
}

#[derive(Debug, Default)]
pub(super) struct World {
    pub(super) x: Vec<Entry>,
    pub(super) y: Vec<Entry>,
    /// X→Y (source X) and Y→X (source Y).
    pub(super) xy: Flow,
    pub(super) yx: Flow,
    /// Flows as the engine runs them: the stored target end is where the
    /// flow's own last write ended (the target's end only at its first
    /// step), and a flow moves over the opposite flow's copies only once
    /// that flow's checkpointed target end has passed them
    /// (`LoopFilter::mapped`).
    pub(super) engine: bool,
    /// With `engine`: which flows wait for the opposite flow's
    /// checkpoint (only those that sync groups through it): X→Y, Y→X.
    pub(super) ungated: (bool, bool),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    /// Produce on X (`true`) or Y a record (or, `true`, a gap).
    Produce(bool, bool),
    /// The flow from X (`true`) or Y reads up to this many entries on.
    Step(bool, u8),
    /// The flow from X (`true`) or Y checkpoints.
    Checkpoint(bool),
    /// A producer on X (`true`) or Y writes a record in its open
    /// transaction.
    Txn(bool),
    /// That transaction ends: committed (`true`) or aborted; its
    /// marker follows.
    EndTxn(bool, bool),
}

pub(super) fn apply(w: &mut World, ev: Event, next_id: &mut u32) {
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
            let engine = w.engine;
            let gate_off = if from_x { w.ungated.0 } else { w.ungated.1 };
            let opposite_mapped = if from_x { w.yx.stored_target_end } else { w.xy.stored_target_end };
            let (from, to, flow) = if from_x {
                (&w.x, &mut w.y, &mut w.xy)
            } else {
                (&w.y, &mut w.x, &mut w.yx)
            };
            if !engine {
                flow.target_end = flow.target_end.max(to.len() as i64);
            } else if !flow.started {
                flow.started = true;
                flow.target_end = to.len() as i64;
            }
            for _ in 0..k {
                let Some(&e) = from.get(flow.pos as usize) else { break };
                if matches!(e, Entry::Pending(..)) {
                    // read_committed: the last stable offset.
                    break;
                }
                if engine && !gate_off && matches!(e, Entry::Record(_, on_x) if on_x != from_x) && opposite_mapped <= flow.pos {
                    break;
                }
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
        Event::Txn(on_x) => {
            let log = if on_x { &mut w.x } else { &mut w.y };
            *next_id += 1;
            log.push(Entry::Pending(*next_id, on_x));
        }
        Event::EndTxn(on_x, commit) => {
            let log = if on_x { &mut w.x } else { &mut w.y };
            if log.iter().any(|e| matches!(e, Entry::Pending(..))) {
                for e in log.iter_mut() {
                    if let Entry::Pending(id, o) = *e {
                        *e = if commit { Entry::Record(id, o) } else { Entry::Gap };
                    }
                }
                log.push(Entry::Gap);
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

pub(super) fn consumed(log: &[Entry], end: i64) -> BTreeSet<u32> {
    log.iter()
        .take(end as usize)
        .filter_map(|e| match e {
            Entry::Record(r, _) => Some(*r),
            _ => None,
        })
        .collect()
}

pub(super) fn by_target(runs: &[OffsetRun]) -> Vec<OffsetRun> {
    let mut v = runs.to_vec();
    v.sort_by_key(|r| r.target_start);
    v
}

/// What the state store hands over: the run starting at or before `c`
/// and the first one starting after it.
pub(super) fn window(runs: &[OffsetRun], c: i64, key: fn(&OffsetRun) -> i64) -> Vec<OffsetRun> {
    let idx = runs.partition_point(|r| key(r) <= c);
    runs[idx.saturating_sub(1)..(idx + 1).min(runs.len())].to_vec()
}

/// The runs from the one holding `at` (by `key`) on.
pub(super) fn from(runs: &[OffsetRun], at: i64, key: fn(&OffsetRun) -> i64) -> Vec<OffsetRun> {
    let idx = runs.partition_point(|r| key(r) <= at);
    runs[idx.saturating_sub(1)..].to_vec()
}

pub(super) fn events() -> impl Strategy<Value = Vec<Event>> {
    let ev = prop_oneof![
        4 => (any::<bool>(), prop::bool::weighted(0.15)).prop_map(|(x, g)| Event::Produce(x, g)),
        2 => (any::<bool>(), 1u8..6).prop_map(|(x, k)| Event::Step(x, k)),
        1 => any::<bool>().prop_map(Event::Checkpoint),
    ];
    prop::collection::vec(ev, 0..60)
}

/// The stored runs as a reader that read `cursor` first sees them: the
/// store cuts away what checkpoints after that read added.
pub(super) fn as_of(runs: &[OffsetRun], cursor: i64) -> Vec<OffsetRun> {
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
pub(super) struct Cursors {
    pub(super) xy: (i64, i64),
    pub(super) yx: (i64, i64),
}

pub(super) fn cursors_now(w: &World) -> Cursors {
    Cursors {
        xy: (w.xy.stored_cursor, w.xy.stored_target_end),
        yx: (w.yx.stored_cursor, w.yx.stored_target_end),
    }
}

/// Translate commit `c` on X as the engine does, from the stored state,
/// with the windows the store hands over.
pub(super) fn translate_in(w: &World, c: i64, enhanced: bool) -> (Option<Translation>, i64) {
    translate_with(w, cursors_now(w), c, enhanced)
}

/// The same, with the cursors read at an earlier moment than the runs.
pub(super) fn translate_with(w: &World, at: Cursors, c: i64, enhanced: bool) -> (Option<Translation>, i64) {
    let xy_runs = as_of(&w.xy.stored_runs, at.xy.0);
    let yx_runs = as_of(&w.yx.stored_runs, at.yx.0);
    let rev_by_target = by_target(&yx_runs);
    let fwd_by_target = by_target(&xy_runs);
    // As the engine asks the store: from the run starting before `c`, three.
    let fwd_window: Vec<OffsetRun> = from(&xy_runs, c - 1, |r| r.source_start).into_iter().take(3).collect();
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
