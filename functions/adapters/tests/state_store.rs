//! The DynamoDB state store against moto's real DynamoDB API: leases are
//! exclusive, fenced by epoch, and checkpoints move the cursor atomically
//! with the offset map.

use std::time::Duration;

use ferry_adapters::state::{now_ms, Checkpoint, GroupSyncItem, GroupSyncStatus, MoveItem, ProducerRecord, Rate, RunKey, StateError};
use ferry_core::domain::TopicPartition;
use ferry_core::offset_map::OffsetRun;

mod support;

use support::{cp, gapped_runs, leased, leased_with_runs, store, sync};

#[tokio::test]
async fn lease_is_exclusive_and_a_taken_over_holder_is_fenced() {
    let s = store().await;
    let tp = TopicPartition::new("orders", 0);
    assert!(s.init_cursor("r/f", &tp, "orders", 0).await.expect("init"));
    assert!(
        !s.init_cursor("r/f", &tp, "orders", 99).await.expect("init again"),
        "a second init must not clobber"
    );
    // The same init again (the SDK's copy of it after a lost answer) finds
    // the cursor it would have made: done.
    assert!(s.init_cursor("r/f", &tp, "orders", 0).await.expect("the same init again"));

    let (a, item) = s
        .acquire_lease("r/f", &tp, "worker-a", Duration::from_millis(300))
        .await
        .expect("a takes it");
    assert_eq!(item.next_source_offset, 0);
    assert!(
        !s.init_cursor("r/f", &tp, "orders", 0).await.expect("init after a lease"),
        "a cursor a holder leased is not one an init made, wherever it stands"
    );
    match s.acquire_lease("r/f", &tp, "worker-b", Duration::from_secs(60)).await {
        Err(StateError::LeaseHeld { owner, .. }) => assert_eq!(owner, "worker-a"),
        other => panic!("b must not get a held lease: {other:?}"),
    }
    // A checkpoints while it holds the lease.
    let run = OffsetRun {
        source_start: 0,
        target_start: 0,
        length: 10,
    };
    let mut first = cp(0, 10, vec![run], None);
    first.lease_expires_ms = now_ms() + 300;
    s.checkpoint("r/f", &a, &first).await.expect("a checkpoints, renewing for 300 ms");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let (b, item) = s
        .acquire_lease("r/f", &tp, "worker-b", Duration::from_secs(60))
        .await
        .expect("b takes the expired lease");
    assert!(b.epoch > a.epoch);
    assert_eq!(item.next_source_offset, 10);
    // A wakes up: every write it attempts is refused.
    let err = s
        .checkpoint(
            "r/f",
            &a,
            &cp(
                10,
                20,
                vec![OffsetRun {
                    source_start: 10,
                    target_start: 10,
                    length: 10,
                }],
                Some(run),
            ),
        )
        .await;
    assert!(matches!(err, Err(StateError::LeaseLost { .. })), "{err:?}");
    assert_eq!(
        s.runs("r/f", &tp).await.expect("runs"),
        vec![run],
        "a fenced checkpoint writes nothing"
    );
    // B's checkpoint extends the stored run in place.
    let merged = OffsetRun {
        source_start: 0,
        target_start: 0,
        length: 20,
    };
    s.checkpoint("r/f", &b, &cp(10, 20, vec![merged], Some(run)))
        .await
        .expect("b checkpoints");
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), vec![merged]);
    assert_eq!(s.last_run("r/f", &tp).await.expect("last"), Some(merged));
    // The same checkpoint sent again (a copy DynamoDB no longer knows by its
    // token) is refused by its cursor condition, and reads as done: the
    // cursor stands where it goes, under the same lease. Nothing is written
    // twice (the records count below is 20, not 30).
    s.checkpoint("r/f", &b, &cp(10, 20, vec![merged], Some(run)))
        .await
        .expect("a copy of an applied checkpoint is done");
    // A cursor that moved under a holder is refused, and says so.
    match s.checkpoint("r/f", &b, &cp(10, 30, vec![], None)).await {
        Err(StateError::CursorMoved {
            expected: 10, found: 20, ..
        }) => {}
        other => panic!("a checkpoint from 10 with the cursor at 20: {other:?}"),
    }
    // A's copy of that same checkpoint: A's lease was taken over, so it is
    // a lost lease, though the cursor stands where the copy would put it.
    let fenced = s.checkpoint("r/f", &a, &cp(10, 20, vec![merged], Some(run))).await;
    assert!(matches!(fenced, Err(StateError::LeaseLost { .. })), "{fenced:?}");
    let rate = Rate {
        records_per_s: 250,
        bytes_per_s: 40_000,
    };
    // B records its producer: its writes are in doubt until it says otherwise.
    let producer = ProducerRecord {
        producer_id: 7,
        producer_epoch: 3,
        transactional_id: "ferry-r-worker-b",
    };
    s.set_producer("r/f", &b, &producer, 20).await.expect("b records its producer");
    let recorded = s.get_cursor("r/f", &tp).await.expect("get").expect("cursor");
    assert_eq!((recorded.producer_id, recorded.producer_epoch), (7, 3));
    assert_eq!(recorded.transactional_id.as_deref(), Some("ferry-r-worker-b"));
    assert!(!recorded.writes_settled);
    s.release_lease("r/f", &b, rate, true).await.expect("release");
    let list = s.list_cursors("r/f").await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].next_source_offset, 20);
    assert_eq!(list[0].records_replicated, 20);
    assert_eq!(list[0].lease_owner, None);
    assert!(list[0].writes_settled, "a clean release spares the next holder the fence");
    assert_eq!((list[0].records_per_s, list[0].bytes_per_s), (250, 40_000));
    // The next holder recording its producer puts the writes in doubt again,
    // and a release with a write in doubt leaves them so.
    let (c, _) = s.acquire_lease("r/f", &tp, "worker-c", Duration::from_secs(60)).await.expect("c");
    s.set_producer("r/f", &c, &producer, 20).await.expect("c records its producer");
    s.release_lease("r/f", &c, rate, false).await.expect("release in doubt");
    let after = s.get_cursor("r/f", &tp).await.expect("get").expect("cursor");
    assert!(!after.writes_settled && after.lease_owner.is_none());
}

/// A backfill's restart moves a cursor whose lease expired (back only);
/// the holder may still be running (stalled past its lease). Its writes
/// after that must read as a lost lease, never as its own applied by an
/// earlier copy, even when the write would put the cursor exactly where
/// the restart did.
#[tokio::test]
async fn a_restarted_cursor_fences_a_holder_whose_lease_expired() {
    let s = store().await;
    let tp = TopicPartition::new("restarted", 0);
    assert!(s.init_cursor("r/f", &tp, "restarted", 0).await.expect("init"));
    let (stalled, _) = s
        .acquire_lease("r/f", &tp, "stalled", Duration::from_millis(200))
        .await
        .expect("lease");
    // Moved on without copying a record (skipped or reconciled): nothing
    // replicated, so a backfill may restart it.
    let mut skip = cp(0, 100, vec![], None);
    skip.records = 0;
    skip.lease_expires_ms = now_ms() + 200;
    s.checkpoint("r/f", &stalled, &skip).await.expect("skip");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A backfill only goes back: never past records the flow has not copied.
    assert!(!s.restart_cursor("r/f", &tp, 150).await.expect("restart forward"));
    assert!(s.restart_cursor("r/f", &tp, 50).await.expect("restart back"));
    let mut next = cp(100, 150, vec![], None);
    next.records = 0;
    let res = s.checkpoint("r/f", &stalled, &next).await;
    assert!(matches!(res, Err(StateError::LeaseLost { .. })), "{res:?}");
    let res = s.rewind_cursor("r/f", &stalled, 100, 50, None, &[], None).await;
    assert!(matches!(res, Err(StateError::LeaseLost { .. })), "{res:?}");
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("cursor");
    assert_eq!((c.next_source_offset, c.lease_owner), (50, None));
    // The next holder takes it from there.
    let (next_holder, item) = s
        .acquire_lease("r/f", &tp, "next", Duration::from_secs(60))
        .await
        .expect("the next holder");
    assert!(next_holder.epoch > stalled.epoch + 1);
    assert_eq!(item.next_source_offset, 50);
    // Records it reconciled (found on the target, mapped, not counted as
    // replicated) are a reason to refuse a restart, as replicated ones are.
    let mut reconciled = cp(
        50,
        60,
        vec![OffsetRun {
            source_start: 50,
            target_start: 0,
            length: 10,
        }],
        None,
    );
    reconciled.records = 0;
    reconciled.lease_expires_ms = now_ms();
    s.checkpoint("r/f", &next_holder, &reconciled).await.expect("reconciled");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !s.restart_cursor("r/f", &tp, 0).await.expect("restart after a reconcile"),
        "a restart moved a cursor back over records already mapped on the target"
    );
}

/// A partition whose map holds more runs than one page (a compacted
/// topic's map may hold a run per record) is forgotten a page at a time,
/// oldest first, and wholly.
#[tokio::test]
async fn a_map_of_more_runs_than_a_page_is_forgotten_whole() {
    let s = store().await;
    let tp = TopicPartition::new("changelog", 0);
    leased_with_runs(&s, &tp, 1_150).await;
    assert_eq!(s.runs("r/f", &tp).await.expect("runs").len(), 1_150);
    s.forget_partition("r/f", &tp).await.expect("forget");
    assert!(s.runs("r/f", &tp).await.expect("runs after forget").is_empty());
    assert!(s.get_cursor("r/f", &tp).await.expect("cursor").is_none());
}

/// A partition's turn to be pruned comes once in several plans, so one
/// prune takes more than one page of runs (a transactional source leaves
/// a run at every commit marker): all of them here, the newest kept.
#[tokio::test]
async fn one_prune_takes_more_than_a_page_of_runs() {
    let s = store().await;
    let tp = TopicPartition::new("transactional", 0);
    leased_with_runs(&s, &tp, 2_300).await;
    assert_eq!(s.prune_runs("r/f", &tp, 1_000_000).await.expect("prune"), 2_299);
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), gapped_runs(2_299, 2_300));
}

#[tokio::test]
async fn runs_are_pruned_and_forgotten_in_batches_and_group_syncs_round_trip() {
    let s = store().await;
    let tp = TopicPartition::new("compacted", 3);
    let (lease, _) = leased(&s, &tp).await;
    // 40 runs in two checkpoints, more than one 25-item batch to delete.
    s.checkpoint("r/f", &lease, &cp(0, 200, gapped_runs(0, 20), None))
        .await
        .expect("first checkpoint");
    s.checkpoint("r/f", &lease, &cp(200, 400, gapped_runs(20, 40), None))
        .await
        .expect("second checkpoint");
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), gapped_runs(0, 40));

    // Log start at 300: runs ending at or below it go, the rest stay.
    assert_eq!(s.prune_runs("r/f", &tp, 300).await.expect("prune"), 30);
    assert_eq!(s.runs("r/f", &tp).await.expect("runs after prune"), gapped_runs(30, 40));
    // The newest run is kept even when the log start passes it.
    assert_eq!(s.prune_runs("r/f", &tp, 1_000).await.expect("prune all"), 9);
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), gapped_runs(39, 40));

    s.forget_partition("r/f", &tp).await.expect("forget");
    assert!(s.runs("r/f", &tp).await.expect("runs after forget").is_empty());
    assert!(s.get_cursor("r/f", &tp).await.expect("cursor").is_none());
    assert!(s.list_cursors("r/f").await.expect("list").is_empty());

    // Group syncs: more than one batch, read back as written.
    let mut items: Vec<GroupSyncItem> = (0..30)
        .map(|i| GroupSyncItem {
            group: format!("g-{}", i % 3),
            tp: TopicPartition::new("orders", i / 3),
            target_topic: (i % 2 == 1).then(|| "source.orders".to_owned()),
            target_topic_id: (i % 4 == 1).then(|| format!("id-{i}")),
            source_offset: i64::from(i) * 7,
            metadata: (i % 2 == 0).then(|| format!("meta {i}")),
            translated: (i % 5 != 0).then_some(i64::from(i) * 3),
            exact: i % 4 == 0,
            target_offset: (i % 6 != 0).then_some(i64::from(i)),
            written_offset: (i % 6 != 0).then_some(i64::from(i)),
            redelivered: i64::from(i % 3),
            carried_source_offset: (i % 4 == 0).then_some(i64::from(i) * 2),
            copy_source_offset: (i % 5 == 0).then_some(i64::from(i) * 3),
            written_rewinds: (i % 3 == 0).then_some(i64::from(i) % 5),
            own_commit: (i % 6 == 1).then_some(i64::from(i)),
            own_commit_ms: (i % 6 == 1).then_some(i64::from(i) * 1000),
            pending_offset: (i % 5 == 0).then_some(i64::from(i) * 3),
            status: if i % 5 == 0 {
                GroupSyncStatus::NothingReplicated
            } else {
                GroupSyncStatus::Synced
            },
            detail: format!("item {i}"),
            checked_ms: 1_700_000_000_000 + i64::from(i),
            rule: 2,
        })
        .collect();
    s.put_group_syncs("r/f", &items).await.expect("put group syncs");
    let mut read = s.group_syncs("r/f").await.expect("group syncs");
    let key = |g: &GroupSyncItem| (g.group.clone(), g.tp.clone());
    items.sort_by_key(key);
    read.sort_by_key(key);
    assert_eq!(read, items);
}

#[tokio::test]
async fn checkpoints_of_many_partitions_share_transactions_and_fail_one_by_one() {
    let s = store().await;
    // Three partitions of 46 items each (the cursor and 45 runs): two
    // transactions, as one holds at most 100 items.
    let mut leases = Vec::new();
    for p in 0..3 {
        let tp = TopicPartition::new("many", p);
        assert!(s.init_cursor("r/f", &tp, "many", 0).await.expect("init"));
        leases.push(
            s.acquire_lease("r/f", &tp, "worker", Duration::from_secs(60))
                .await
                .expect("lease")
                .0,
        );
    }
    let first: Vec<Checkpoint> = (0..3).map(|_| cp(0, 450, gapped_runs(0, 45), None)).collect();
    let cps: Vec<_> = leases.iter().zip(&first).collect();
    let res = s.checkpoint_all("r/f", &cps).await;
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    for l in &leases {
        assert_eq!(s.runs("r/f", &l.tp).await.expect("runs"), gapped_runs(0, 45), "{}", l.tp);
        assert_eq!(
            s.get_cursor("r/f", &l.tp).await.expect("cursor").expect("row").next_source_offset,
            450
        );
    }

    // Partition 1's lease is stale (an older epoch, as after a takeover);
    // one transaction holds all three small checkpoints, and only
    // partition 1's fails.
    leases[1].epoch -= 1;
    let run = |i: i64| OffsetRun {
        source_start: 500,
        target_start: 300 + i,
        length: 10,
    };
    let second: Vec<Checkpoint> = (0..3).map(|i| cp(450, 510, vec![run(i)], None)).collect();
    let cps: Vec<_> = leases.iter().zip(&second).collect();
    let res = s.checkpoint_all("r/f", &cps).await;
    assert!(res[0].is_ok() && res[2].is_ok(), "{res:?}");
    assert!(matches!(res[1], Err(StateError::LeaseLost { .. })), "{:?}", res[1]);
    for (i, l) in leases.iter().enumerate() {
        let stored = s.get_cursor("r/f", &l.tp).await.expect("cursor").expect("row").next_source_offset;
        let runs = s.runs("r/f", &l.tp).await.expect("runs");
        if i == 1 {
            assert_eq!((stored, runs.len()), (450, 45), "the fenced partition moved");
        } else {
            assert_eq!((stored, runs.last().copied()), (510, Some(run(i as i64))), "{}", l.tp);
        }
    }
}

/// The newest run is whole in the cursor item only; every reader sees it
/// whole, and it is written whole to the map once a newer run follows.
#[tokio::test]
async fn the_open_run_lives_in_the_cursor_and_is_closed_into_the_map() {
    let s = store().await;
    let tp = TopicPartition::new("open-run", 0);
    let (lease, _) = leased(&s, &tp).await;
    let run = |source_start, target_start, length| OffsetRun {
        source_start,
        target_start,
        length,
    };
    s.checkpoint("r/f", &lease, &cp(0, 10, vec![run(0, 100, 10)], None))
        .await
        .expect("first run");
    // Two checkpoints that only lengthen it.
    s.checkpoint("r/f", &lease, &cp(10, 20, vec![run(0, 100, 20)], Some(run(0, 100, 10))))
        .await
        .expect("lengthen");
    s.checkpoint("r/f", &lease, &cp(20, 30, vec![run(0, 100, 30)], Some(run(0, 100, 20))))
        .await
        .expect("lengthen again");
    let cursor = s.get_cursor("r/f", &tp).await.expect("cursor").expect("exists");
    assert_eq!(cursor.open_run, Some(run(0, 100, 30)));
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), vec![run(0, 100, 30)]);
    assert_eq!(s.last_run("r/f", &tp).await.expect("last"), Some(run(0, 100, 30)));
    let c = Some(&cursor);
    assert_eq!(
        s.runs_around("r/f", &tp, RunKey::Source, 25, c).await.expect("around"),
        vec![run(0, 100, 30)]
    );
    assert_eq!(
        s.runs_around("r/f", &tp, RunKey::Target, 125, c).await.expect("around"),
        vec![run(0, 100, 30)]
    );

    // A gap (compaction): a new run; the old one is closed into the map.
    s.checkpoint("r/f", &lease, &cp(30, 45, vec![run(40, 130, 5)], Some(run(0, 100, 30))))
        .await
        .expect("after a gap");
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), vec![run(0, 100, 30), run(40, 130, 5)]);
    // Lengthened and followed by a new run in one checkpoint.
    s.checkpoint(
        "r/f",
        &lease,
        &cp(45, 60, vec![run(40, 130, 10), run(55, 140, 5)], Some(run(40, 130, 5))),
    )
    .await
    .expect("lengthen, then a gap");
    s.checkpoint("r/f", &lease, &cp(60, 65, vec![run(55, 140, 10)], Some(run(55, 140, 5))))
        .await
        .expect("lengthen the newest");
    let all = vec![run(0, 100, 30), run(40, 130, 10), run(55, 140, 10)];
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), all);
    let cursor = s.get_cursor("r/f", &tp).await.expect("cursor");
    let c = cursor.as_ref();
    assert_eq!(
        s.runs_around("r/f", &tp, RunKey::Source, 41, c).await.expect("around"),
        all[1..].to_vec()
    );
    assert_eq!(
        s.runs_around("r/f", &tp, RunKey::Target, 145, c).await.expect("around"),
        all[2..].to_vec()
    );
    assert_eq!(
        s.runs_from("r/f", &tp, RunKey::Target, 125, 10, c).await.expect("from"),
        all.to_vec()
    );
    assert_eq!(
        s.runs_from("r/f", &tp, RunKey::Source, 41, 1, c).await.expect("from"),
        all[1..].to_vec()
    );
    // Pruning keeps the newest run even though its map item is short.
    assert_eq!(s.prune_runs("r/f", &tp, 1_000).await.expect("prune"), 2);
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), all[2..].to_vec());
}

/// Forgetting a flow deletes its cursors, their runs, its marker and its
/// group syncs, and nothing of another flow.
#[tokio::test]
async fn forgetting_a_flow_leaves_nothing_of_it_and_all_of_the_others() {
    let s = store().await;
    let tp = TopicPartition::new("orders", 0);
    for flow in ["r/a>b", "r/b>a"] {
        let start = s.start_flow(flow, "src", "tgt").await.expect("start");
        s.finish_first_plan(flow, &start, None).await.expect("finish");
        s.init_cursor(flow, &tp, "orders", 0).await.expect("init");
        let (lease, _) = s.acquire_lease(flow, &tp, "w", Duration::from_secs(60)).await.expect("lease");
        let runs = gapped_runs(0, 30);
        s.checkpoint(flow, &lease, &cp(0, 300, runs, None)).await.expect("checkpoint");
        s.release_lease(flow, &lease, Rate::default(), true).await.expect("release");
        let item = sync(&tp, "g");
        s.put_group_syncs(flow, &[item]).await.expect("group sync");
    }
    assert_eq!(s.forget_flow("r/a>b").await.expect("forget"), 1);
    assert!(s.list_cursors("r/a>b").await.expect("cursors").is_empty());
    assert!(s.runs("r/a>b", &tp).await.expect("runs").is_empty());
    assert!(s.group_syncs("r/a>b").await.expect("syncs").is_empty());
    assert!(!s.flow_started("r/a>b").await.expect("marker"));
    assert_eq!(s.list_cursors("r/b>a").await.expect("cursors").len(), 1);
    assert_eq!(s.runs("r/b>a", &tp).await.expect("runs").len(), 30);
    assert_eq!(s.group_syncs("r/b>a").await.expect("syncs").len(), 1);
    assert!(s.flow_started("r/b>a").await.expect("marker"));
}

/// Readers racing a writer that closes the open run and starts another at
/// every other checkpoint: every read sees, whole and at the right target
/// offsets, everything checkpointed before it began. Reading the runs
/// before the cursor could meet the open run short in the map and the
/// cursor already holding the next one, and lose the first run's tail.
#[tokio::test]
async fn readers_racing_checkpoints_see_every_run_whole() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    let s = Arc::new(store().await);
    let tp = TopicPartition::new("race", 0);
    assert!(s.init_cursor("r/f", &tp, "race", 0).await.expect("init"));
    let (lease, _) = s
        .acquire_lease("r/f", &tp, "writer", Duration::from_secs(120))
        .await
        .expect("lease");
    const STEP: i64 = 5;
    const CHECKPOINTS: i64 = 120;
    // Checkpoint i copies source [5i, 5i+5); every even one starts a run
    // 10 target offsets after the last (another producer wrote between).
    let target_of = |src: i64| src + 10 * (src / STEP / 2);
    let done = Arc::new(AtomicI64::new(0));
    let writer = {
        let (s, done) = (s.clone(), done.clone());
        tokio::spawn(async move {
            let mut open: Option<OffsetRun> = None;
            for i in 0..CHECKPOINTS {
                let from = i * STEP;
                let new = OffsetRun {
                    source_start: from,
                    target_start: target_of(from),
                    length: STEP,
                };
                let runs = match open {
                    Some(o) if o.is_continued_by(&new) => vec![OffsetRun {
                        length: o.length + STEP,
                        ..o
                    }],
                    _ => vec![new],
                };
                let mut c = cp(from, from + STEP, runs.clone(), open);
                c.target_end = target_of(from) + STEP;
                s.checkpoint("r/f", &lease, &c).await.expect("checkpoint");
                open = runs.last().copied();
                done.store(from + STEP, Ordering::SeqCst);
            }
        })
    };
    let mut reads = 0;
    let mut short = Vec::new();
    while !writer.is_finished() {
        let before = done.load(Ordering::SeqCst);
        let runs = s.runs("r/f", &tp).await.expect("runs");
        reads += 1;
        for src in 0..before {
            let found = runs
                .iter()
                .find(|r| r.source_start <= src && src < r.source_end())
                .map(|r| r.target_start + (src - r.source_start));
            if found != Some(target_of(src)) {
                short.push((before, src, found));
                break;
            }
        }
    }
    writer.await.expect("writer");
    assert!(reads > 20, "too few reads ({reads}) raced the writer to mean anything");
    assert!(
        short.is_empty(),
        "{} of {reads} reads missed checkpointed records, e.g. {:?}",
        short.len(),
        &short[..short.len().min(3)]
    );
}

/// A source log truncated at 25 (an unclean leader election) while the
/// cursor is at 45: the leader epoch is kept with each checkpoint, and the
/// cursor moves back under the lease, the offset map from 25 on dropped
/// and the run holding 24 cut there, in the cursor item and in the map.
#[tokio::test]
async fn a_group_sync_lease_has_one_holder_until_given_back_or_ended() {
    let s = store().await;
    let item = GroupSyncItem {
        group: "team/app".into(),
        tp: TopicPartition::new("orders", 0),
        target_topic: None,
        target_topic_id: None,
        source_offset: 5,
        metadata: None,
        translated: Some(5),
        exact: true,
        target_offset: Some(5),
        written_offset: Some(5),
        own_commit: Some(5),
        own_commit_ms: Some(1),
        written_rewinds: None,
        redelivered: 0,
        carried_source_offset: Some(5),
        copy_source_offset: None,
        pending_offset: None,
        status: GroupSyncStatus::Synced,
        detail: "committed 5".into(),
        checked_ms: 1,
        rule: 2,
    };
    s.put_group_syncs("r/f", std::slice::from_ref(&item)).await.expect("put");
    // A group id with '/' in it: its lease is no sync item.
    let until = s.acquire_group_sync("r/f", "team/app", "a", 60_000).await.expect("acquire");
    assert!(until.is_some_and(|u| u > now_ms()));
    assert_eq!(s.group_syncs("r/f").await.expect("group syncs"), vec![item]);
    assert_eq!(s.acquire_group_sync("r/f", "team/app", "b", 60_000).await.expect("b"), None);
    assert!(s.acquire_group_sync("r/f", "team/app", "a", 60_000).await.expect("renew").is_some());
    // Another group, another lease.
    assert!(s.acquire_group_sync("r/f", "other", "b", 60_000).await.expect("other").is_some());
    // Only the holder gives it back.
    s.release_group_sync("r/f", "team/app", "b").await.expect("release by b");
    assert_eq!(s.acquire_group_sync("r/f", "team/app", "b", 60_000).await.expect("b again"), None);
    s.release_group_sync("r/f", "team/app", "a").await.expect("release by a");
    assert!(s.acquire_group_sync("r/f", "team/app", "b", -1).await.expect("b after a").is_some());
    // One that ended is anyone's.
    assert!(s.acquire_group_sync("r/f", "team/app", "c", 60_000).await.expect("c").is_some());
}

#[tokio::test]
async fn moves_are_kept_per_pair_of_clusters_whichever_way() {
    let s = store().await;
    let mv = |group: &str, ms: i64, from: &str, to: &str| MoveItem {
        group: group.into(),
        moved_ms: ms,
        from_cluster_id: from.into(),
        to_cluster_id: to.into(),
        from_alias: format!("alias-{from}"),
        to_alias: format!("alias-{to}"),
        replicator: "r".into(),
        flow: format!("{from}>{to}"),
        offsets: vec![format!("orders/0={ms}")],
    };
    let moves = [
        mv("app/one", 2_000, "B", "A"),
        mv("app/one", 1_000, "A", "B"),
        mv("two", 1_500, "A", "B"),
        mv("three", 1_000, "A", "C"),
    ];
    for m in &moves {
        s.record_move(m).await.expect("record");
    }
    let between = s.moves_between("B", "A").await.expect("moves");
    assert_eq!(between, vec![moves[1].clone(), moves[0].clone(), moves[2].clone()]);
    assert_eq!(s.moves_between("A", "B").await.expect("moves"), between);
    assert_eq!(s.moves_between("C", "A").await.expect("moves"), vec![moves[3].clone()]);
}

/// A compacted source leaves a run for each record the log cleaner kept
/// between two it removed: a translation's lookup then pages on until the
/// runs read answer it, and says when it stopped at its bound instead.
#[tokio::test]
async fn a_lookup_of_many_runs_pages_on_until_answered_or_bounded() {
    let s = store().await;
    let tp = TopicPartition::new("many-runs", 0);
    let (lease, _) = leased(&s, &tp).await;
    let mut prev = None;
    for a in (0..1_260).step_by(90) {
        let runs = gapped_runs(a, a + 90);
        s.checkpoint("r/f", &lease, &cp(10 * a, 10 * (a + 90), runs.clone(), prev))
            .await
            .expect("checkpoint");
        prev = runs.last().copied();
    }
    let all = gapped_runs(0, 1_260);
    let cursor = s.get_cursor("r/f", &tp).await.expect("cursor");
    let c = cursor.as_ref();
    let lookup = |by, at, max, enough: usize| s.runs_from_until("r/f", &tp, by, at, 100, max, c, move |r: &[OffsetRun]| r.len() >= enough);
    // Unanswered: every run from the one holding target offset 3 on.
    assert_eq!(
        lookup(RunKey::Target, 3, 20_000, usize::MAX).await.expect("all"),
        (all.clone(), false)
    );
    // Answered after the second page: the run holding 3, 100, then 1,000.
    assert_eq!(
        lookup(RunKey::Target, 3, 20_000, 500).await.expect("answered"),
        (all[..1_101].to_vec(), false)
    );
    // Bounded: it stops at the page that passes the bound, and says so.
    assert_eq!(
        lookup(RunKey::Target, 3, 500, usize::MAX).await.expect("bounded"),
        (all[..1_101].to_vec(), true)
    );
    // By source offset, from inside a gap: the run before it on.
    assert_eq!(
        lookup(RunKey::Source, 10_007, 20_000, usize::MAX).await.expect("by source"),
        (all[1_000..].to_vec(), false)
    );
}
