use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_adapters::kafka::batch::{self, SourceRecord};

use ferry_core::offset_map::OffsetRun;

use ferry_adapters::state::{CursorItem, Lease};
use ferry_core::domain::{PartitionWork, ReplicateInput, StopReason, TopicPartition};

use super::{
    batch_len, bound_history, checkpoint_for, due_checkpoints, epochs_read, judge, now_ms, truncation_what, Budget, CommittedRead, History,
    Part, Pending, Step, Unsaved, MAX_EPOCHS, MAX_RUNS_PER_BATCH,
};
use crate::context::Settings;
use ferry_adapters::kafka::EpochEnd;

fn rec(offset: i64, tail_len: usize) -> Pending {
    Pending::Record(SourceRecord {
        offset,
        timestamp: 0,
        attributes: 0,
        tail: Bytes::from(vec![0u8; tail_len]),
    })
}

fn unsaved(source_start: i64, target_start: i64, length: i64, last_ts: Option<i64>) -> Unsaved {
    Unsaved {
        runs: vec![OffsetRun {
            source_start,
            target_start,
            length,
        }],
        to_source: source_start + length,
        target_end: target_start + length,
        records: length,
        bytes: 10 * length,
        last_ts,
        ..Unsaved::new()
    }
}

#[test]
fn records_put_back_after_a_failed_checkpoint_come_before_the_later_ones() {
    // Contiguous: one run.
    let u = unsaved(0, 100, 5, Some(7)).then(unsaved(5, 105, 3, None));
    assert_eq!(
        u.runs,
        vec![OffsetRun {
            source_start: 0,
            target_start: 100,
            length: 8
        }]
    );
    assert_eq!((u.to_source, u.target_end, u.records, u.bytes, u.last_ts), (8, 108, 8, 80, Some(7)));
    // A gap in the source (compaction) starts a new run.
    let u = unsaved(0, 100, 5, Some(7)).then(unsaved(9, 105, 3, Some(9)));
    assert_eq!(u.runs.len(), 2);
    assert_eq!((u.to_source, u.target_end, u.last_ts), (12, 108, Some(9)));
}

/// A partition whose loop has read (and skipped) up to `fetch_pos` with
/// nothing left to write, its cursor at `cursor`.
fn read_past_cursor(cursor: i64, fetch_pos: i64, done: Option<StopReason>) -> Part {
    let tp = TopicPartition::new("t", 0);
    let work = PartitionWork {
        source: tp.clone(),
        target_topic: "t".into(),
        end_offset: cursor,
        lag: 0,
    };
    let lease = Lease {
        tp,
        owner: "test".into(),
        epoch: 1,
    };
    let item = CursorItem {
        next_source_offset: cursor,
        next_target_offset: Some(0),
        source_end_offset: fetch_pos,
        lease_expires_ms: now_ms() + 60_000,
        ..CursorItem::default()
    };
    Part {
        fetch_pos,
        producer_recorded: true,
        done,
        ..Part::new(work, lease, &item, None)
    }
}

#[test]
fn a_stopped_partition_still_checkpoints_the_records_it_skipped() {
    let settings = Settings::default();
    let input = ReplicateInput {
        stored: None,
        flow: "a>b".into(),
        partitions: Vec::new(),
        stop_at_plan_end: true,
        max_seconds: None,
    };
    for done in [
        None,
        Some(StopReason::CaughtUp),
        Some(StopReason::Budget),
        Some(StopReason::Interrupted),
    ] {
        let mut parts = [read_past_cursor(10, 25, done)];
        let due = due_checkpoints(&settings, &mut parts, &input);
        assert_eq!(due.len(), 1, "{done:?}");
        assert_eq!(
            (due[0].cp.from_source, due[0].cp.to_source, due[0].cp.records),
            (10, 25, 0),
            "{done:?}"
        );
    }
    // A failed partition's position is in doubt: the next holder
    // reconciles instead.
    for done in [Some(StopReason::Error), Some(StopReason::Retry), Some(StopReason::LeaseHeld)] {
        let mut parts = [read_past_cursor(10, 25, done)];
        assert!(due_checkpoints(&settings, &mut parts, &input).is_empty(), "{done:?}");
    }
    // Nothing skipped: nothing to write.
    let mut parts = [read_past_cursor(25, 25, Some(StopReason::CaughtUp))];
    assert!(due_checkpoints(&settings, &mut parts, &input).is_empty());
}

#[test]
fn a_due_checkpoint_takes_the_partitions_halfway_there_along() {
    let settings = Settings::default();
    let input = ReplicateInput {
        stored: None,
        flow: "a>b".into(),
        partitions: Vec::new(),
        stop_at_plan_end: false,
        max_seconds: None,
    };
    let aged = |p: &mut Part, age: Duration| {
        p.pending.push_back(rec(10, 10)); // still busy: not an idle move
        p.unsaved = Some(Unsaved {
            since: tokio::time::Instant::now() - age,
            ..unsaved(0, 0, 10, None)
        });
    };
    let interval = settings.checkpoint_interval;
    let mut parts = [
        read_past_cursor(0, 10, None),
        read_past_cursor(0, 10, None),
        read_past_cursor(0, 10, None),
    ];
    aged(&mut parts[0], interval * 6 / 10);
    aged(&mut parts[1], interval / 10);
    aged(&mut parts[2], interval * 6 / 10);
    // Nothing due yet: nothing written, however ripe.
    assert!(due_checkpoints(&settings, &mut parts, &input).is_empty());
    // Partition 2 is due: partition 0, past half the interval, comes
    // along; partition 1 waits.
    aged(&mut parts[2], interval);
    let due: Vec<usize> = due_checkpoints(&settings, &mut parts, &input).iter().map(|d| d.part).collect();
    assert_eq!(due, vec![0, 2]);
    assert!(parts[0].unsaved.is_none() && parts[1].unsaved.is_some() && parts[2].unsaved.is_none());
}

#[test]
fn a_batch_stops_at_its_byte_limit_but_always_takes_one_record() {
    let pending: VecDeque<Pending> = (0..10).map(|o| rec(o, 88)).collect(); // 100 B each
    assert_eq!(batch_len(&pending, 350), 3);
    assert_eq!(batch_len(&pending, 10_000), 10);
    let big: VecDeque<Pending> = [rec(0, 5_000), rec(1, 10)].into();
    assert_eq!(batch_len(&big, 100), 1, "a record larger than the limit still goes, alone");
}

#[test]
fn a_source_batch_passed_through_goes_alone() {
    let whole = |base: i64| {
        let recs: Vec<SourceRecord> = (0..4)
            .map(|o| match rec(o, 10) {
                Pending::Record(r) => r,
                Pending::Batch(_) => unreachable!(),
            })
            .collect();
        let stamp = ferry_adapters::kafka::batch::ProducerStamp {
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: 0,
        };
        let bytes = batch::build_batch(&recs, ferry_core::config::Compression::None, stamp).expect("build");
        let mut b = batch::split_batches(bytes).expect("split").remove(0);
        b.header.base_offset = base;
        Pending::Batch(b)
    };
    let pending: VecDeque<Pending> = [whole(0), rec(4, 10), rec(5, 10), whole(6), rec(10, 10)].into();
    assert_eq!(batch_len(&pending, usize::MAX), 1);
    let after: VecDeque<Pending> = pending.iter().skip(1).cloned().collect();
    assert_eq!(batch_len(&after, usize::MAX), 2, "records stop at the next whole batch");
    assert_eq!((pending[3].first_offset(), pending[3].last_offset()), (6, 9));
}

#[test]
fn a_batch_adds_at_most_half_a_checkpoint_of_runs() {
    // Every other offset: each record starts a run.
    let pending: VecDeque<Pending> = (0..200).map(|k| rec(2 * k, 10)).collect();
    assert_eq!(batch_len(&pending, usize::MAX), MAX_RUNS_PER_BATCH);
    let contiguous: VecDeque<Pending> = (0..200).map(|o| rec(o, 10)).collect();
    assert_eq!(batch_len(&contiguous, usize::MAX), 200);
}

#[test]
fn a_leader_epoch_ending_below_the_position_is_a_truncated_log() {
    let end = |leader_epoch, end_offset| EpochEnd { leader_epoch, end_offset };
    let one = |cache: &[(i64, i32)], position, answer| judge(cache, cache.len(), position, answer, position);
    let done = |h| Step::Done(h);
    let diverged = |at, below: &[(i64, i32)]| Step::Done(History::Diverged { at, below: below.to_vec() });
    // The epoch goes on past the position (the current epoch: the log end).
    assert_eq!(one(&[(0, 3)], 150, end(3, 180)), done(History::Same));
    // It ends exactly at the position: a later epoch starts there.
    assert_eq!(one(&[(0, 3)], 150, end(3, 150)), done(History::Same));
    // It ends below: the leader's log left the history read at 100.
    assert_eq!(one(&[(0, 0), (90, 1)], 150, end(1, 100)), diverged(100, &[(0, 0), (90, 1)]));
    // No epoch at or below the one asked for: nothing to compare.
    assert_eq!(one(&[(-1, 1)], 150, end(-1, -1)), done(History::Unknown));
    // An epoch older than every one Ferry kept: the leader's end.
    assert_eq!(one(&[(-1, 1)], 150, end(-1, 40)), diverged(40, &[]));
    assert_eq!(one(&[(-1, 1)], 150, end(0, 40)), diverged(40, &[(-1, 0)]));
    // ... no later than where Ferry began reading, when that is known.
    assert_eq!(one(&[(60, 1)], 150, end(0, 100)), diverged(60, &[]));
}

/// Two unclean elections: Ferry read 0..79 in epoch 0 and 80..129 in
/// epoch 2 (from a leader that lacked the records 80..99 of epoch 0
/// another replica had); that replica leads again (epoch 3) and never
/// had epoch 2. Asked about 2 it answers with epoch 0 ending at 100:
/// not where the histories part (80), and with that replica's epoch 0
/// longer still (200), past the position itself.
#[test]
fn a_leader_that_never_had_the_epoch_read_is_judged_by_ferrys_own_epochs() {
    let end = |leader_epoch, end_offset| EpochEnd { leader_epoch, end_offset };
    let cache = [(0, 0), (80, 2)];
    for leaders_end in [100, 200] {
        assert_eq!(
            judge(&cache, 2, 130, end(0, leaders_end), 130),
            Step::Done(History::Diverged {
                at: 80,
                below: vec![(0, 0)]
            }),
            "epoch 0 of the leader ends at {leaders_end}"
        );
    }
    // The leader's epoch is one Ferry never read (1, between its 0 and
    // 2): Ferry's records from the end of its epoch 0 on are not the
    // leader's; the leader is asked again, about epoch 0.
    assert_eq!(judge(&cache, 2, 130, end(1, 100), 130), Step::Ask { upto: 1, end: 80 });
    assert_eq!(
        judge(&cache, 1, 80, end(0, 80), 130),
        Step::Done(History::Diverged {
            at: 80,
            below: vec![(0, 0)]
        })
    );
    // Ferry's epoch 0 goes on in the leader's log past Ferry's end of it.
    assert_eq!(
        judge(&cache, 1, 80, end(0, 120), 130),
        Step::Done(History::Diverged {
            at: 80,
            below: vec![(0, 0)]
        })
    );
    // A sound log: asked about 2, the leader has it to its end.
    assert_eq!(judge(&cache, 2, 130, end(2, 300), 130), Step::Done(History::Same));
    // An answer newer than asked for ends the search rather than loop.
    assert_eq!(judge(&cache, 2, 130, end(3, 300), 130), Step::Done(History::Same));
    assert_eq!(
        judge(&cache, 2, 130, end(3, 110), 130),
        Step::Done(History::Diverged {
            at: 110,
            below: cache.to_vec()
        })
    );
}

#[test]
fn a_cursor_keeps_a_bounded_history_of_epochs_its_first_one_kept() {
    let h: Vec<(i64, i32)> = (0..40).map(|i| (i64::from(i) * 10, i)).collect();
    let b = bound_history(h);
    assert_eq!(b.len(), MAX_EPOCHS);
    assert_eq!(b[0], (0, 0));
    assert_eq!(b[1], (90, 9));
    assert_eq!(b.last(), Some(&(390, 39)));
}

#[test]
fn a_checkpoint_stores_the_epoch_of_the_batch_holding_its_last_offset() {
    let mut p = read_past_cursor(100, 100, None);
    p.history = vec![(40, 1)];
    // Batches read past the cursor: 100.. in epoch 1, 110.. and 120.. in epoch 4.
    p.epochs.extend([(100, 1), (110, 4), (120, 4)]);
    assert_eq!(p.epoch_before(100), Some(1), "nothing new: the stored one");
    assert_eq!(p.epoch_before(105), Some(1), "inside the first batch");
    assert_eq!(p.epoch_before(110), Some(1), "110 - 1 is still the first batch's");
    assert_eq!(p.epoch_before(111), Some(4));
    assert_eq!(p.last_epoch(), Some(4));
    let cp = checkpoint_for(&p, 115, now_ms() + 60_000);
    assert_eq!(cp.leader_epochs, [(40, 1), (110, 4)]);
    p.apply(&cp);
    // What is behind the cursor is stored; the batch it is inside is the last epoch stored.
    assert_eq!(p.history, [(40, 1), (110, 4)]);
    assert_eq!(p.epochs, [(120, 4)]);
    assert_eq!(p.epoch_before(118), Some(4));
    // A partition that never stored an epoch has none to store.
    let fresh = read_past_cursor(0, 0, None);
    assert!(checkpoint_for(&fresh, 0, now_ms()).leader_epochs.is_empty());
}

#[test]
fn only_another_epoch_at_the_position_asks_the_leader() {
    let read = |epochs: Vec<(i64, i32)>| CommittedRead {
        records: Vec::new(),
        removed_before: Vec::new(),
        removed_after: 0,
        next: 0,
        filtered_records: 0,
        filtered_bytes: 0,
        filtered_ts: Vec::new(),
        unmapped: false,
        epochs,
        out_of_room: false,
    };
    let mut p = read_past_cursor(100, 100, None);
    assert!(!p.epoch_changes_at(&read(vec![(100, 7)])), "no epoch known yet: nothing to check");
    p.history = vec![(0, 3)];
    assert!(
        !p.epoch_changes_at(&read(vec![(100, 3), (110, 5)])),
        "a change inside what was read is the log's own"
    );
    assert!(
        p.epoch_changes_at(&read(vec![(100, 2)])),
        "an older epoch after a newer one is another history"
    );
    assert!(!p.epoch_changes_at(&read(vec![(100, -1)])), "an old message format has none");
    assert!(!p.epoch_changes_at(&read(Vec::new())));
    assert!(p.epoch_changes_at(&read(vec![(100, 4)])));
    p.epochs.push_back((100, 4));
    assert!(
        !p.epoch_changes_at(&read(vec![(110, 4)])),
        "the last batch read counts, not the stored epoch"
    );
}

#[test]
fn only_epoch_changes_are_remembered() {
    let mut p = read_past_cursor(100, 100, None);
    p.note_epochs(&[(100, 2), (110, 2), (120, 2)]);
    assert_eq!(p.epochs, [(100, 2)], "the first epoch seen, once");
    p.note_epochs(&[(130, 2), (140, 5), (150, 5)]);
    assert_eq!(p.epochs, [(100, 2), (140, 5)]);
    assert_eq!(
        (p.epoch_before(140), p.epoch_before(141), p.epoch_before(160)),
        (Some(2), Some(5), Some(5))
    );
    // With the stored epoch the same as what is read, nothing to add.
    let mut q = read_past_cursor(100, 100, None);
    q.history = vec![(50, 5)];
    q.note_epochs(&[(100, 5), (110, 5)]);
    assert!(q.epochs.is_empty());
    assert_eq!(q.epoch_before(115), Some(5));
}

#[test]
fn a_truncation_names_the_offsets_the_epochs_and_the_cause() {
    let tp = TopicPartition::new("orders", 3);
    let what = truncation_what(&tp, "onprem", &epochs_read(&[(0, 0), (90, 1)], 100, 150), 100, 150, 150, Some(0));
    for want in [
        "orders-3",
        "onprem",
        "100..149 in leader epoch 1",
        "ends that history at offset 100",
        "leader epoch 0",
        "unclean leader election",
        "100..149 of the old history are on the target",
        "from offset 100 on were not copied",
    ] {
        assert!(what.contains(want), "{want:?} missing from {what}");
    }
    // Only read, none checkpointed yet.
    let what = truncation_what(&tp, "onprem", "leader epoch 1", 100, 150, 90, None);
    assert!(what.contains("none of them was checkpointed"), "{what}");
}

fn left(b: &Budget) -> Duration {
    b.deadline.saturating_duration_since(tokio::time::Instant::now())
}

#[tokio::test]
async fn lambda_budgets() {
    // A real deadline: an instant.
    let b = Budget::for_lambda(SystemTime::now() + Duration::from_secs(100), None);
    assert!((98..=100).contains(&left(&b).as_secs()), "{:?}", left(&b));
    // Capped by the input.
    let b = Budget::for_lambda(SystemTime::now() + Duration::from_secs(100), Some(10));
    assert!(left(&b) <= Duration::from_secs(10));
    // An emulator's deadline header holding the timeout itself.
    let b = Budget::for_lambda(UNIX_EPOCH + Duration::from_millis(600_000), None);
    assert!((598..=600).contains(&left(&b).as_secs()), "{:?}", left(&b));
    // Already past: nothing left.
    let b = Budget::for_lambda(SystemTime::now() - Duration::from_secs(5), None);
    assert_eq!(left(&b), Duration::ZERO);
}
