//! A flow's marker against moto's real DynamoDB API: its start, the
//! first plan's end and the hold one plan at a time has on it.

use std::time::Duration;

use ferry_adapters::state::{now_ms, FirstPlanClaim};

mod support;

use support::store;

/// The flow marker: the first start says so and records the clusters' ids;
/// a start is the first until a plan finishes it; later starts get the
/// recorded ids back, which a changed id never overwrites (the caller
/// refuses to go on); and each start counts the plans before it.
#[tokio::test]
async fn a_flow_start_records_its_clusters_ids_once() {
    let s = store().await;
    assert!(!s.flow_started("r/f").await.expect("read"));
    let first = s.start_flow("r/f", "src-1", "tgt-1").await.expect("first start");
    assert!(first.first);
    assert_eq!((first.source_cluster_id, first.target_cluster_id), (None, None));
    // A first plan that stopped before it finished started nothing: the
    // next start is the first again, with the ids recorded.
    assert!(!s.flow_started("r/f").await.expect("read"));
    let retried = s.start_flow("r/f", "src-1", "tgt-1").await.expect("start after a refused plan");
    assert!(retried.first && !retried.created && !retried.legacy);
    assert_eq!(retried.source_cluster_id.as_deref(), Some("src-1"));
    // It finishes the marker the first start wrote.
    assert!(first.created && first.started_by.is_some());
    assert_eq!(retried.started_by, first.started_by);
    s.finish_first_plan("r/f", &retried, None).await.expect("finish");
    assert!(s.flow_started("r/f").await.expect("read"));
    let again = s.start_flow("r/f", "src-2", "tgt-1").await.expect("second start");
    assert!(!again.first);
    assert_eq!(again.source_cluster_id.as_deref(), Some("src-1"));
    assert_eq!(again.target_cluster_id.as_deref(), Some("tgt-1"));
    let third = s.start_flow("r/f", "src-2", "tgt-1").await.expect("third start");
    assert_eq!(
        third.source_cluster_id.as_deref(),
        Some("src-1"),
        "a changed id is not recorded over the first"
    );
    // Each start counts the plans before it: the turns a plan takes
    // (pruning a share of the partitions) follow plans, not the clock.
    assert_eq!((first.plans, retried.plans, again.plans, third.plans), (0, 0, 1, 2));
    let fourth = s.start_flow("r/f", "src-2", "tgt-1").await.expect("fourth start");
    assert_eq!(fourth.plans, 3);
    // Finishing a forgotten flow's first plan writes no marker back, and
    // does not finish the first plan of the flow started again since.
    s.forget_flow("r/f").await.expect("forget");
    s.finish_first_plan("r/f", &retried, None).await.expect("finish after a forget");
    assert!(!s.flow_started("r/f").await.expect("read"));
    assert!(s.start_flow("r/f", "src-2", "tgt-1").await.expect("started again").first);
    s.finish_first_plan("r/f", &retried, None).await.expect("an old plan's finish");
    assert!(
        !s.flow_started("r/f").await.expect("read"),
        "the new marker's first plan is still open"
    );
}

/// One plan at a time runs a flow's first plan: another is refused until
/// the holder releases it or its hold ends; a finished first plan, or a
/// forgotten flow, cannot be taken.
#[tokio::test]
async fn a_first_plan_is_held_by_one_plan_until_it_ends() {
    let s = store().await;
    s.start_flow("r/h", "src", "tgt").await.expect("start");
    let now = now_ms();
    let FirstPlanClaim::Ours(mark) = s.claim_first_plan("r/h", now + 60_000, false, None).await.expect("claim") else {
        panic!("a first plan nobody holds is taken");
    };
    assert_eq!(
        s.claim_first_plan("r/h", now + 60_000, false, None).await.expect("second claim"),
        FirstPlanClaim::Held {
            until_ms: now + 60_000,
            by: mark.clone(),
            renews: false
        }
    );
    // A hold that does not renew is not taken for silent, whatever the
    // caller saw of it.
    assert!(matches!(
        s.claim_first_plan("r/h", now + 60_000, false, Some((mark.as_str(), now + 60_000)))
            .await
            .expect("claim"),
        FirstPlanClaim::Held { .. }
    ));
    // A release by another plan's mark releases nothing.
    s.release_first_plan("r/h", "not-the-holder").await.expect("release by another");
    assert!(matches!(
        s.claim_first_plan("r/h", now + 60_000, false, None).await.expect("claim"),
        FirstPlanClaim::Held { .. }
    ));
    s.release_first_plan("r/h", &mark).await.expect("release");
    let FirstPlanClaim::Ours(short) = s
        .claim_first_plan("r/h", now_ms() + 300, false, None)
        .await
        .expect("claim after release")
    else {
        panic!("a released first plan is taken");
    };
    assert!(matches!(
        s.claim_first_plan("r/h", now_ms() + 60_000, false, None).await.expect("claim"),
        FirstPlanClaim::Held { .. }
    ));
    // A holder that stopped (a Lambda past its deadline) holds it no more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let FirstPlanClaim::Ours(taker) = s.claim_first_plan("r/h", now_ms() + 60_000, false, None).await.expect("claim") else {
        panic!("an expired hold is taken");
    };
    // The expired holder's release does not free the new holder's.
    s.release_first_plan("r/h", &short).await.expect("stale release");
    assert!(matches!(
        s.claim_first_plan("r/h", now_ms() + 60_000, false, None).await.expect("claim"),
        FirstPlanClaim::Held { .. }
    ));
    let FirstPlanClaim::Held { .. } = s.claim_first_plan("r/h", now_ms() + 60_000, false, None).await.expect("claim") else {
        panic!("held");
    };
    // Only the holder renews it, or records its end.
    assert!(!s
        .renew_first_plan("r/h", &short, now_ms() + 60_000)
        .await
        .expect("renew by a former holder"));
    let start = s.flow_marker("r/h").await.expect("marker");
    s.finish_first_plan("r/h", &start, Some(short.as_str()))
        .await
        .expect("finish by a former holder");
    assert!(!s.flow_started("r/h").await.expect("read"), "a former holder does not finish it");
    assert!(s.renew_first_plan("r/h", &taker, now_ms() + 60_000).await.expect("renew"));
    s.finish_first_plan("r/h", &start, Some(taker.as_str())).await.expect("finish");
    assert!(!s
        .renew_first_plan("r/h", &taker, now_ms() + 60_000)
        .await
        .expect("renew after the end"));
    assert_eq!(
        s.claim_first_plan("r/h", now_ms() + 60_000, false, None)
            .await
            .expect("claim after finish"),
        FirstPlanClaim::Gone
    );
    s.forget_flow("r/h").await.expect("forget");
    assert_eq!(
        s.claim_first_plan("r/h", now_ms() + 60_000, false, None)
            .await
            .expect("claim after forget"),
        FirstPlanClaim::Gone
    );
    assert!(!s.flow_started("r/h").await.expect("read"), "a claim writes no marker back");
}

/// A hold that renews as it goes (a CLI plan's) and was seen unchanged for
/// long enough is taken as that of a plan killed: only if it is exactly
/// what the caller saw (a renewal since keeps it), and only for a plan's
/// claim that names it.
#[tokio::test]
async fn a_renewing_hold_seen_unchanged_is_taken_and_one_renewed_is_not() {
    let s = store().await;
    s.start_flow("r/s", "src", "tgt").await.expect("start");
    let until = now_ms() + 600_000;
    let FirstPlanClaim::Ours(mark) = s.claim_first_plan("r/s", until, true, None).await.expect("claim") else {
        panic!("a first plan nobody holds is taken");
    };
    let FirstPlanClaim::Held { until_ms, by, renews } = s.claim_first_plan("r/s", until, true, None).await.expect("claim") else {
        panic!("held");
    };
    assert_eq!((until_ms, by.as_str(), renews), (until, mark.as_str(), true));
    // Renewed since it was seen: not taken.
    assert!(s.renew_first_plan("r/s", &mark, until + 2_000).await.expect("renew"));
    assert!(matches!(
        s.claim_first_plan("r/s", until, true, Some((mark.as_str(), until)))
            .await
            .expect("claim"),
        FirstPlanClaim::Held { .. }
    ));
    // Another mark with the same time: not taken.
    assert!(matches!(
        s.claim_first_plan("r/s", until, true, Some(("another", until + 2_000)))
            .await
            .expect("claim"),
        FirstPlanClaim::Held { .. }
    ));
    let FirstPlanClaim::Ours(taker) = s
        .claim_first_plan("r/s", until, false, Some((mark.as_str(), until + 2_000)))
        .await
        .expect("claim")
    else {
        panic!("a renewing hold seen unchanged is taken");
    };
    assert!(
        !s.renew_first_plan("r/s", &mark, until + 4_000).await.expect("renew"),
        "the silent holder lost it"
    );
    // The taker does not renew: its hold is not taken for silent.
    let FirstPlanClaim::Held { by, renews, .. } = s.claim_first_plan("r/s", until, true, None).await.expect("claim") else {
        panic!("held");
    };
    assert_eq!((by.as_str(), renews), (taker.as_str(), false));
    assert!(matches!(
        s.claim_first_plan("r/s", until, true, Some((taker.as_str(), until)))
            .await
            .expect("claim"),
        FirstPlanClaim::Held { .. }
    ));
}

/// A renewing hold taken over by a Ferry that writes only `first_plan_by`
/// and `first_plan_until` (an earlier release, which renews every minute)
/// does not read as renewing: its plan, alive, is not taken for silent.
#[tokio::test]
async fn a_hold_an_earlier_ferry_took_from_a_renewing_one_is_not_taken_for_silent() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let s = store().await;
    s.start_flow("r/e", "src", "tgt").await.expect("start");
    let FirstPlanClaim::Ours(_killed) = s.claim_first_plan("r/e", now_ms() - 1, true, None).await.expect("claim") else {
        panic!("a first plan nobody holds is taken");
    };
    // The earlier Ferry's claim, as it wrote it.
    let later = now_ms() + 600_000;
    let (cursors, _) = s.table_names();
    aws_sdk_dynamodb::Client::new(&ferry_adapters::aws::load().await)
        .update_item()
        .table_name(cursors)
        .key("flow", AttributeValue::S("r/e".into()))
        .key("partition", AttributeValue::S("#flow".into()))
        .update_expression("SET first_plan_by = :m, first_plan_until = :u")
        .expression_attribute_values(":m", AttributeValue::S("earlier".into()))
        .expression_attribute_values(":u", AttributeValue::N(later.to_string()))
        .send()
        .await
        .expect("earlier claim");
    let FirstPlanClaim::Held { by, renews, .. } = s.claim_first_plan("r/e", later, true, None).await.expect("claim") else {
        panic!("held");
    };
    assert_eq!((by.as_str(), renews), ("earlier", false));
    assert!(matches!(
        s.claim_first_plan("r/e", later, true, Some(("earlier", later)))
            .await
            .expect("claim"),
        FirstPlanClaim::Held { .. }
    ));
}
