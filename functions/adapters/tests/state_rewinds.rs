//! Cursors moved back, against moto's DynamoDB: a cursor keeps its leader
//! epochs and moves back to a truncation, a rewind deletes the offset
//! map's runs only under its lease, and a backfill's restart waits for
//! writes no checkpoint holds.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use ferry_adapters::state::{Checkpoint, Lease, ProducerRecord, Rate, StateError};
use ferry_core::domain::TopicPartition;
use ferry_core::offset_map::OffsetRun;

mod support;

use support::{cp, gapped_runs, leased, store};

#[tokio::test]
async fn a_cursor_keeps_its_leader_epoch_and_moves_back_to_a_truncation() {
    let s = store().await;
    let tp = TopicPartition::new("truncated", 0);
    let (lease, item) = leased(&s, &tp).await;
    assert_eq!(item.leader_epoch, None, "none before a checkpoint stores one");
    let run = |source_start, target_start, length| OffsetRun {
        source_start,
        target_start,
        length,
    };
    // Each checkpoint stores the epochs read below its cursor: (first
    // offset read in it, epoch).
    let with_epoch = |mut c: Checkpoint, epoch: Option<i32>| {
        c.leader_epochs = match epoch {
            Some(3) => vec![(0, 3)],
            Some(e) => vec![(0, 3), (40, e)],
            None => Vec::new(),
        };
        c
    };
    s.checkpoint("r/f", &lease, &with_epoch(cp(0, 10, vec![run(0, 100, 10)], None), Some(3)))
        .await
        .expect("first");
    assert_eq!(s.get_cursor("r/f", &tp).await.expect("get").expect("row").leader_epoch, Some(3));
    // A gap, then a new run; the first one lengthened in the same step.
    s.checkpoint(
        "r/f",
        &lease,
        &with_epoch(cp(10, 45, vec![run(0, 100, 30), run(40, 130, 5)], Some(run(0, 100, 10))), Some(5)),
    )
    .await
    .expect("second");
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("row");
    assert_eq!((c.leader_epoch, c.leader_epochs), (Some(5), vec![(0, 3), (40, 5)]));
    // A checkpoint that does not know the epoch removes it: a stale one
    // would make a sound log look truncated.
    s.checkpoint("r/f", &lease, &cp(45, 45, Vec::new(), Some(run(40, 130, 5))))
        .await
        .expect("no epoch");
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("row");
    assert_eq!((c.leader_epoch, c.leader_epochs), (None, Vec::new()));

    // Moved back from a cursor that is not the stored one: refused, and
    // said so (the lease is still this holder's).
    assert!(matches!(
        s.rewind_cursor("r/f", &lease, 44, 25, Some(run(40, 130, 5)), &[(0, 2)], None).await,
        Err(StateError::CursorMoved {
            expected: 44,
            found: 45,
            ..
        })
    ));
    let newest = s
        .rewind_cursor("r/f", &lease, 45, 25, Some(run(40, 130, 5)), &[(0, 2)], None)
        .await
        .expect("rewind");
    assert_eq!(newest, Some(run(0, 100, 25)));
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("row");
    assert_eq!(
        (c.next_source_offset, c.leader_epoch, c.open_run),
        (25, Some(2), Some(run(0, 100, 25)))
    );
    assert_eq!(c.leader_epochs, vec![(0, 2)]);
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), vec![run(0, 100, 25)]);
    // The next checkpoint continues the cut run, with the target's leader
    // epoch; one without records leaves that epoch as stored.
    let mut next = with_epoch(cp(25, 30, vec![run(0, 100, 25), run(25, 135, 5)], Some(run(0, 100, 25))), Some(2));
    next.target_leader_epoch = Some(Some(7));
    s.checkpoint("r/f", &lease, &next).await.expect("after the rewind");
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), vec![run(0, 100, 25), run(25, 135, 5)]);
    let mut renewal = with_epoch(cp(30, 30, Vec::new(), Some(run(25, 135, 5))), Some(2));
    renewal.target_end = 140;
    s.checkpoint("r/f", &lease, &renewal).await.expect("renewal");
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("row");
    assert_eq!((c.target_leader_epoch, c.next_target_offset), (Some(7), Some(140)));
    assert_eq!(c.target_rewound_ms, None);
    s.set_producer(
        "r/f",
        &lease,
        &ProducerRecord {
            producer_id: 9,
            producer_epoch: 0,
            transactional_id: "x",
        },
        140,
    )
    .await
    .expect("producer");

    // The target lost the copies from target offset 137 (source 27): the
    // cursor moves back there with the target's end, the epoch and the
    // holder's producer forgotten (nothing past the end is reconciled).
    let newest = s
        .rewind_cursor("r/f", &lease, 30, 27, Some(run(25, 135, 5)), &[(0, 2)], Some(137))
        .await
        .expect("target rewind");
    assert_eq!(newest, Some(run(25, 135, 2)));
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("row");
    assert_eq!(
        (c.next_source_offset, c.next_target_offset, c.target_leader_epoch, c.producer_id),
        (27, Some(137), None, -1)
    );
    assert!(
        c.target_rewound_ms.is_some_and(|ms| ms > 0),
        "group translations made before it are not reused"
    );
    assert_eq!(
        (c.target_rewound_from, c.target_rewinds),
        (Some(137), 1),
        "where the target parted, and how many times: Ferry's commits from before are moved"
    );
    s.checkpoint(
        "r/f",
        &lease,
        &with_epoch(cp(27, 30, vec![run(25, 135, 2), run(27, 150, 3)], Some(run(25, 135, 2))), Some(2)),
    )
    .await
    .expect("copied again");
    assert_eq!(
        s.runs("r/f", &tp).await.expect("runs"),
        vec![run(0, 100, 25), run(25, 135, 2), run(27, 150, 3)]
    );
    // Back to before every run: the map is empty.
    assert_eq!(
        s.rewind_cursor("r/f", &lease, 30, 0, Some(run(25, 135, 5)), &[], None)
            .await
            .expect("to 0"),
        None
    );
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("row");
    assert_eq!((c.next_source_offset, c.leader_epoch, c.open_run), (0, None, None));
    assert!(s.runs("r/f", &tp).await.expect("runs").is_empty());
}

#[tokio::test]
async fn a_rewind_deletes_runs_only_under_its_lease_in_as_many_transactions_as_it_takes() {
    let s = store().await;
    let tp = TopicPartition::new("transactional", 0);
    assert!(s.init_cursor("r/f", &tp, "transactional", 0).await.expect("init"));
    let (lease, _) = s.acquire_lease("r/f", &tp, "a", Duration::from_secs(60)).await.expect("lease");
    // 250 runs (a transactional source breaks a run at every marker): more
    // than one transaction's 100 items.
    let runs = gapped_runs(0, 250);
    let mut at = 0;
    for chunk in runs.chunks(50) {
        let to = chunk.last().expect("runs").source_end();
        let mut c = cp(at, to, chunk.to_vec(), None);
        c.records = 50;
        s.checkpoint("r/f", &lease, &c).await.expect("checkpoint");
        at = to;
    }
    assert_eq!(s.runs("r/f", &tp).await.expect("runs").len(), 250);

    // A holder whose lease passed on deletes nothing: its successor's runs
    // may have the same keys.
    let (b, _) = {
        s.release_lease("r/f", &lease, Rate::default(), false).await.expect("release");
        s.acquire_lease("r/f", &tp, "b", Duration::from_secs(60)).await.expect("b")
    };
    assert!(matches!(
        s.rewind_cursor("r/f", &lease, at, 100, None, &[], Some(50)).await,
        Err(StateError::LeaseLost { .. })
    ));
    assert_eq!(
        s.runs("r/f", &tp).await.expect("runs").len(),
        250,
        "nothing deleted by the stale holder"
    );

    // Its successor's rewind deletes every run from source offset 100 on
    // (240 of them), in three transactions, and leaves no mark.
    s.rewind_cursor("r/f", &b, at, 100, None, &[], Some(50)).await.expect("rewind");
    let left = s.runs("r/f", &tp).await.expect("runs");
    assert_eq!(left, gapped_runs(0, 10));
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("row");
    assert_eq!((c.next_source_offset, c.map_trim_from), (100, None));

    // A rewind that stopped midway (as a crash between its transactions
    // leaves it: the cursor moved back and marked, runs past it left) is
    // finished by the next holder, under its lease; a stale one may not.
    let mut c = cp(100, 150, gapped_runs(10, 15), None);
    c.records = 50;
    s.checkpoint("r/f", &b, &c).await.expect("copied again");
    let aws = ferry_adapters::aws::load().await;
    let db = aws_sdk_dynamodb::Client::new(&aws);
    let (cursors, map) = s.table_names();
    for r in gapped_runs(15, 19) {
        db.put_item()
            .table_name(map)
            .item("flow_partition", AttributeValue::S("r/f/transactional/0".into()))
            .item("source_start", AttributeValue::N(r.source_start.to_string()))
            .item("target_start", AttributeValue::N(r.target_start.to_string()))
            .item("run_length", AttributeValue::N(r.length.to_string()))
            .send()
            .await
            .expect("a run left past the cursor");
    }
    // The cursor's partition key, wherever the flow's layout put it.
    let scanned = db.scan().table_name(cursors).send().await.expect("scan");
    let [cursor] = scanned.items() else {
        panic!("one cursor: {scanned:?}")
    };
    db.update_item()
        .table_name(cursors)
        .key("flow", cursor["flow"].clone())
        .key("partition", AttributeValue::S("transactional/0".into()))
        .update_expression("SET map_trim_from = :c")
        .expression_attribute_values(":c", AttributeValue::N("150".into()))
        .send()
        .await
        .expect("the mark");
    assert_eq!(s.get_cursor("r/f", &tp).await.expect("get").expect("row").map_trim_from, Some(150));
    assert_eq!(s.runs("r/f", &tp).await.expect("runs").len(), 19);
    assert!(matches!(
        s.trim_runs_past_cursor("r/f", &lease, 150).await,
        Err(StateError::LeaseLost { .. })
    ));
    s.trim_runs_past_cursor("r/f", &b, 150).await.expect("trim");
    assert_eq!(s.runs("r/f", &tp).await.expect("runs"), gapped_runs(0, 15));
    assert_eq!(s.get_cursor("r/f", &tp).await.expect("get").expect("row").map_trim_from, None);
}

/// A backfill's restart waits while the cursor's last holder may have
/// written records no checkpoint holds: one that recorded its producer and
/// then stopped without a release saying its writes were settled (crashed,
/// or a checkpoint failed after it stopped). A successor that settles them
/// (its reconcile checkpoints what it finds) lets it through.
#[tokio::test]
async fn a_restart_waits_for_a_holder_whose_writes_are_not_checkpointed() {
    let s = store().await;
    let tp = TopicPartition::new("unsettled", 0);
    assert!(s.init_cursor("r/f", &tp, "unsettled", 100).await.expect("init"));
    writer(&s, &tp, "crashed", 7, Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!s.restart_cursor("r/f", &tp, 0).await.expect("restart over a crash"));
    let in_doubt = writer(&s, &tp, "in-doubt", 8, Duration::from_secs(60)).await;
    s.release_lease("r/f", &in_doubt, Rate::default(), false).await.expect("release");
    assert!(!s.restart_cursor("r/f", &tp, 0).await.expect("restart after a release in doubt"));
    let settled = writer(&s, &tp, "settled", 9, Duration::from_secs(60)).await;
    s.release_lease("r/f", &settled, Rate::default(), true).await.expect("release");
    assert!(s.restart_cursor("r/f", &tp, 0).await.expect("restart after a settled release"));
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("cursor");
    assert_eq!(c.next_source_offset, 0);
    // The target log lost records a holder wrote there, and the cursor was
    // moved back to the loss (forgetting the producer): what that holder
    // wrote after the loss may be past the cursor. Refused, for good.
    let lost = writer(&s, &tp, "lost", 10, Duration::from_secs(60)).await;
    s.rewind_cursor("r/f", &lost, 0, 0, None, &[], Some(0))
        .await
        .expect("rewind to the loss");
    s.release_lease("r/f", &lost, Rate::default(), true).await.expect("release");
    let c = s.get_cursor("r/f", &tp).await.expect("get").expect("cursor");
    assert_eq!((c.producer_id, c.target_rewound_from), (-1, Some(0)));
    assert!(!s.restart_cursor("r/f", &tp, 0).await.expect("restart after a target's loss"));
}

/// A holder of `tp` as `owner` for `lease_for` that recorded producer id
/// `pid` (its writes in doubt from then on).
async fn writer(s: &ferry_adapters::state::StateStore, tp: &TopicPartition, owner: &str, pid: i64, lease_for: Duration) -> Lease {
    let (lease, _) = s.acquire_lease("r/f", tp, owner, lease_for).await.expect("lease");
    let producer = ProducerRecord {
        producer_id: pid,
        producer_epoch: 0,
        transactional_id: "ferry-r-worker",
    };
    s.set_producer("r/f", &lease, &producer, 0).await.expect("producer");
    lease
}
