//! A backfill asked of a partition a worker holds, against moto's real
//! DynamoDB API: recorded on the cursor, started by the next holder under
//! its own lease, refused once the partition replicated.

use std::time::Duration;

use ferry_adapters::state::{Lease, Rate};
use ferry_core::domain::TopicPartition;

mod support;

use support::{cp, leased, leased_with_runs, store};

#[tokio::test]
async fn a_requested_backfill_is_started_by_the_next_holder_while_nothing_was_replicated() {
    let s = store().await;
    let tp = TopicPartition::new("orders", 0);
    let (lease, _) = leased(&s, &tp).await;
    assert!(
        !s.restart_cursor("r/f", &tp, 0).await.expect("restart"),
        "a held cursor is not moved"
    );
    // A backfill only goes back: records past the cursor are the flow's.
    assert!(!s.request_backfill("r/f", &tp, 5).await.expect("request forward"));
    assert!(s.request_backfill("r/f", &tp, 0).await.expect("request"));
    // Only the holder applies it, and only the offset asked.
    let other = Lease {
        owner: "someone else".into(),
        ..lease.clone()
    };
    assert!(s.apply_requested_backfill("r/f", &other, 0, 0).await.expect("apply").is_none());
    assert!(s.apply_requested_backfill("r/f", &lease, 7, 7).await.expect("apply").is_none());
    // The next holder, the last one's writes settled, starts it there.
    s.release_lease("r/f", &lease, Rate::default(), true).await.expect("release");
    let (next, item) = s.acquire_lease("r/f", &tp, "next", Duration::from_secs(60)).await.expect("lease");
    assert_eq!(item.backfill_from, Some(0));
    let moved = s
        .apply_requested_backfill("r/f", &next, 0, 0)
        .await
        .expect("apply")
        .expect("started");
    assert_eq!(
        (moved.next_source_offset, moved.start_offset, moved.backfill_from),
        (0, Some(0), None)
    );
    assert_eq!(moved.lease_owner.as_deref(), Some("next"), "under the holder's own lease");
}

#[tokio::test]
async fn a_backfill_is_not_asked_of_or_started_on_a_partition_that_replicated() {
    let s = store().await;
    let tp = TopicPartition::new("orders", 1);
    let lease = leased_with_runs(&s, &tp, 3).await;
    assert!(!s.request_backfill("r/f", &tp, 0).await.expect("request"), "it replicated");
    // Asked while nothing was replicated, then the holder copied records.
    let fresh = TopicPartition::new("orders", 2);
    let (holder, _) = leased(&s, &fresh).await;
    assert!(s.request_backfill("r/f", &fresh, 0).await.expect("request"));
    s.checkpoint("r/f", &holder, &cp(0, 10, Vec::new(), None))
        .await
        .expect("checkpoint");
    assert!(s.apply_requested_backfill("r/f", &holder, 0, 0).await.expect("apply").is_none());
    s.drop_requested_backfill("r/f", &holder).await.expect("drop");
    s.release_lease("r/f", &holder, Rate::default(), true).await.expect("release");
    let (_, item) = s
        .acquire_lease("r/f", &fresh, "next", Duration::from_secs(60))
        .await
        .expect("lease again");
    assert_eq!(item.backfill_from, None);
    assert_eq!(item.next_source_offset, 10);
    drop(lease);
}
