//! The state store's batched reads against moto's DynamoDB API: a hand-off
//! reads its batch's cursors in BatchGetItems of 100, on flows spread over
//! their keys and on flows of one key, past the 16 MB a response holds,
//! and a refused lease names its holder from the refusal.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_adapters::state::StateError;
use ferry_core::domain::TopicPartition;

mod support;

use support::store;

#[tokio::test]
async fn many_cursors_are_read_at_once_across_the_flows_keys() {
    // A flow spread over its keys; more partitions than one BatchGetItem
    // takes (100), one leased, two never created.
    let s = store().await;
    s.start_flow("r/many", "src", "tgt").await.expect("start");
    let tps: Vec<TopicPartition> = (0..150)
        .map(|p| TopicPartition::new(if p % 2 == 0 { "a" } else { "b" }, p))
        .collect();
    for tp in &tps {
        assert!(s.init_cursor("r/many", tp, &tp.topic, tp.partition as i64).await.expect("init"));
    }
    s.acquire_lease_until("r/many", &tps[120], "worker-x", Duration::from_secs(60), 12_345)
        .await
        .expect("lease");
    let absent = [TopicPartition::new("a", 1_000), TopicPartition::new("c", 0)];
    // Some named twice: DynamoDB refuses a BatchGetItem naming a key twice.
    let asked: Vec<&TopicPartition> = tps.iter().chain(absent.iter()).chain(tps[..3].iter()).collect();
    let read = s.get_cursors("r/many", &asked).await.expect("read");
    assert_eq!(read.len(), tps.len(), "every created cursor, none of the absent");
    for tp in &tps {
        let c = &read[tp];
        assert_eq!(c.next_source_offset, tp.partition as i64, "{tp}");
        let expected_owner = (tp == &tps[120]).then_some("worker-x");
        assert_eq!(c.lease_owner.as_deref(), expected_owner, "{tp}");
    }
    assert_eq!(read[&tps[120]].lease_ends_ms, 12_345);
    // The refused acquire names the holder from the refusal itself.
    match s.acquire_lease("r/many", &tps[120], "worker-y", Duration::from_secs(60)).await {
        Err(StateError::LeaseHeld { owner, ends_ms, .. }) => assert_eq!((owner.as_str(), ends_ms), ("worker-x", 12_345)),
        other => panic!("a held lease must be refused: {other:?}"),
    }
    match s.acquire_lease("r/many", &absent[1], "worker-y", Duration::from_secs(60)).await {
        Err(StateError::NoCursor { .. }) => {}
        other => panic!("no cursor, no lease: {other:?}"),
    }
}

async fn raw() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&ferry_adapters::aws::load().await)
}

fn sv(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// A flow started before the spread (marker without a layout): every cursor
/// under one partition key; more than 100 of them, one held.
#[tokio::test]
async fn legacy_one_key_flow_reads_all_cursors_at_once() {
    let s = store().await;
    let flow = "r/legacy";
    let (cursors, _) = s.table_names();
    let item: HashMap<String, AttributeValue> = [
        ("flow", sv(flow)),
        ("partition", sv("#flow")),
        ("source_cluster_id", sv("src")),
        ("target_cluster_id", sv("tgt")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    raw()
        .await
        .put_item()
        .table_name(cursors)
        .set_item(Some(item))
        .send()
        .await
        .expect("marker");
    let tps: Vec<TopicPartition> = (0..230).map(|p| TopicPartition::new("t", p)).collect();
    for tp in &tps {
        assert!(s.init_cursor(flow, tp, "t", 7).await.expect("init"));
    }
    // All under the one key.
    let out = raw()
        .await
        .query()
        .table_name(cursors)
        .key_condition_expression("#f = :f")
        .expression_attribute_names("#f", "flow")
        .expression_attribute_values(":f", sv(flow))
        .send()
        .await
        .expect("query");
    assert_eq!(out.count(), 231, "every cursor under the flow key, and the marker");
    s.acquire_lease_until(flow, &tps[200], "holder", Duration::from_secs(60), 99)
        .await
        .expect("lease");
    let asked: Vec<&TopicPartition> = tps.iter().rev().chain(tps.iter()).collect();
    let read = s.get_cursors(flow, &asked).await.expect("read");
    assert_eq!(read.len(), 230);
    assert_eq!(read[&tps[200]].lease_owner.as_deref(), Some("holder"));
    match s.acquire_lease(flow, &tps[200], "other", Duration::from_secs(60)).await {
        Err(StateError::LeaseHeld { owner, ends_ms, .. }) => assert_eq!((owner.as_str(), ends_ms), ("holder", 99)),
        other => panic!("{other:?}"),
    }
}

/// Cursor items whose total passes BatchGetItem's 16 MB response: DynamoDB
/// (and moto) answer with UnprocessedKeys, which must be asked again.
#[tokio::test]
async fn a_read_past_16_mb_is_completed_from_the_unprocessed_keys() {
    let s = store().await;
    let flow = "r/big";
    s.start_flow(flow, "src", "tgt").await.expect("start");
    let tps: Vec<TopicPartition> = (0..100).map(|p| TopicPartition::new("big", p)).collect();
    let blob = "e".repeat(300 * 1024);
    for tp in &tps {
        assert!(s.init_cursor(flow, tp, "big", 0).await.expect("init"));
        s.record_error(flow, tp, &blob).await.expect("big error");
    }
    let asked: Vec<&TopicPartition> = tps.iter().collect();
    let read = s.get_cursors(flow, &asked).await.expect("read");
    assert_eq!(read.len(), 100, "every cursor, some from a second call");
}
