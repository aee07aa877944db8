//! How a flow's partition items lie in DynamoDB, against moto: a flow
//! started now spreads its cursors and group-sync items over
//! `NEW_FLOW_KEY_SHARDS` partition keys (one key takes at most 1,000 write
//! units a second), and reads them back as one; a flow started before
//! keeps every item under its one key, read and written where it is; a
//! marker whose layout is damaged is refused, never guessed.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_adapters::state::{GroupSyncItem, Rate, StateError, StateStore, NEW_FLOW_KEY_SHARDS};
use ferry_core::domain::TopicPartition;

mod support;

use support::{cp, gapped_runs, store, sync};

async fn raw() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&ferry_adapters::aws::load().await)
}

/// Write an item as it stands, as another build (or a damaged table) would.
async fn put_raw(table: &str, items: Vec<(&str, AttributeValue)>) {
    raw()
        .await
        .put_item()
        .table_name(table)
        .set_item(Some(items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        .send()
        .await
        .expect("a raw item");
}

fn sv(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn nv(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Every item of `table`, by its partition key.
async fn keys_of(table: &str) -> Vec<(String, String)> {
    let out = raw().await.scan().table_name(table).send().await.expect("scan");
    let key = |i: &HashMap<String, AttributeValue>, k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    out.items()
        .iter()
        .map(|i| {
            (
                key(i, "flow"),
                key(
                    i,
                    if table.ends_with("-groups") {
                        "partition_group"
                    } else {
                        "partition"
                    },
                ),
            )
        })
        .collect()
}

/// Copy a range under a fresh lease and give it back.
async fn copy(s: &StateStore, flow: &str, tp: &TopicPartition, from: i64, to: i64) {
    let (lease, _) = s.acquire_lease(flow, tp, "w", Duration::from_secs(60)).await.expect("lease");
    let runs = gapped_runs(from / 10, to / 10);
    s.checkpoint(flow, &lease, &cp(from, to, runs, None)).await.expect("checkpoint");
    s.release_lease(flow, &lease, Rate::default(), true).await.expect("release");
}

#[tokio::test]
async fn a_new_flows_partitions_spread_over_its_keys_and_read_back_as_one() {
    let s = store().await;
    let flow = "r/a>b";
    assert!(s.start_flow(flow, "src", "tgt").await.expect("start").first);
    let tps: Vec<TopicPartition> = (0..4)
        .flat_map(|t| (0..16).map(move |p| TopicPartition::new(format!("topic-{t}"), p)))
        .collect();
    for tp in &tps {
        assert!(s.init_cursor(flow, tp, &tp.topic, 0).await.expect("init"));
    }
    for tp in &tps[..8] {
        copy(&s, flow, tp, 0, 100).await;
    }
    let syncs: Vec<GroupSyncItem> = tps.iter().map(|tp| sync(tp, "g")).collect();
    s.put_group_syncs(flow, &syncs).await.expect("group syncs");

    let (cursors, _) = s.table_names();
    let groups = s.all_table_names()[3].to_owned();
    for table in [cursors, groups.as_str()] {
        let keys = keys_of(table).await;
        let items: Vec<&(String, String)> = keys.iter().filter(|(_, sk)| !sk.starts_with('#')).collect();
        assert_eq!(items.len(), tps.len(), "{table}: {keys:?}");
        let pks: BTreeSet<&str> = items.iter().map(|(pk, _)| pk.as_str()).collect();
        let want: BTreeSet<String> = (0..NEW_FLOW_KEY_SHARDS).map(|i| format!("{flow}#{i:02}")).collect();
        // 64 partitions over 16 keys: every key is used, and only they.
        assert_eq!(pks, want.iter().map(String::as_str).collect(), "{table}");
    }

    // Read back whole and in one key's order, by this store and by a new
    // one that learns the layout from the marker.
    let mut sorted = tps.clone();
    sorted.sort_by_key(|tp| format!("{}/{}", tp.topic, tp.partition));
    for reader in [
        s.clone(),
        StateStore::new(raw().await, cursors.strip_suffix("-cursors").expect("prefix")),
    ] {
        let listed: Vec<TopicPartition> = reader.list_cursors(flow).await.expect("list").into_iter().map(|c| c.tp).collect();
        assert_eq!(listed, sorted);
        let copied = reader.get_cursor(flow, &tps[3]).await.expect("get").expect("cursor");
        assert_eq!(copied.next_source_offset, 100);
        assert_eq!(reader.runs(flow, &tps[3]).await.expect("runs").len(), 10);
        assert_eq!(reader.group_syncs(flow).await.expect("syncs").len(), tps.len());
        assert_eq!(reader.group_sync(flow, "g", &tps[40]).await.expect("sync"), Some(syncs[40].clone()));
    }

    // Forgotten, nothing of it is left under any key; started again, it
    // is laid out as new.
    assert_eq!(s.forget_flow(flow).await.expect("forget"), tps.len());
    assert!(keys_of(cursors).await.is_empty(), "{:?}", keys_of(cursors).await);
    assert!(keys_of(&groups).await.is_empty());
    assert!(s.start_flow(flow, "src", "tgt").await.expect("again").first);
    assert!(s.init_cursor(flow, &tps[0], "topic-0", 0).await.expect("init"));
    assert!(keys_of(cursors).await.iter().any(|(pk, _)| pk.starts_with(&format!("{flow}#"))));
}

#[tokio::test]
async fn a_flow_started_before_the_spread_keeps_its_one_key() {
    let s = store().await;
    let flow = "r/old>new";
    let (cursors, _) = s.table_names();
    let cursors = cursors.to_owned();
    let groups = s.all_table_names()[3].to_owned();
    let db = raw().await;
    // What a Ferry before the spread wrote: the marker without a layout, a
    // cursor and a group sync under the flow key.
    let old = TopicPartition::new("orders", 2);
    put_raw(
        &cursors,
        vec![
            ("flow", sv(flow)),
            ("partition", sv("#flow")),
            ("started_ms", nv(1)),
            ("source_cluster_id", sv("src")),
            ("target_cluster_id", sv("tgt")),
        ],
    )
    .await;
    put_raw(
        &cursors,
        vec![
            ("flow", sv(flow)),
            ("partition", sv("orders/2")),
            ("topic", sv("orders")),
            ("partition_index", nv(2)),
            ("target_topic", sv("orders")),
            ("next_source_offset", nv(40)),
            ("start_offset", nv(0)),
            ("lease_epoch", nv(3)),
            ("updated_ms", nv(1)),
        ],
    )
    .await;
    let mut old_sync = sync(&old, "g");
    s.put_group_syncs("r/elsewhere", &[old_sync.clone()])
        .await
        .expect("shape of a sync item");
    let mut item = db
        .scan()
        .table_name(&groups)
        .send()
        .await
        .expect("scan")
        .items()
        .first()
        .cloned()
        .expect("a sync item");
    item.insert("flow".into(), sv(flow));
    db.put_item()
        .table_name(&groups)
        .set_item(Some(item))
        .send()
        .await
        .expect("old sync");

    // Read where it is, by a store that starts it again and by one that never did.
    let fresh = StateStore::new(raw().await, cursors.strip_suffix("-cursors").expect("prefix"));
    let [c] = fresh.list_cursors(flow).await.expect("list").try_into().expect("one cursor");
    assert_eq!((c.tp.clone(), c.next_source_offset, c.lease_epoch), (old.clone(), 40, 3));
    assert!(!s.start_flow(flow, "src", "tgt").await.expect("start").first);
    copy(&s, flow, &old, 40, 100).await;
    let new = TopicPartition::new("orders", 3);
    assert!(s.init_cursor(flow, &new, "orders", 0).await.expect("init"));
    copy(&s, flow, &new, 0, 50).await;
    old_sync.source_offset = 90;
    s.put_group_syncs(flow, &[old_sync.clone()]).await.expect("sync again");

    let keys: BTreeSet<String> = keys_of(&cursors).await.into_iter().map(|(pk, _)| pk).collect();
    assert_eq!(keys, [flow.to_owned()].into(), "every item of the old flow stays under its key");
    assert_eq!(
        fresh.get_cursor(flow, &old).await.expect("get").expect("cursor").next_source_offset,
        100
    );
    assert_eq!(
        fresh.get_cursor(flow, &new).await.expect("get").expect("cursor").next_source_offset,
        50
    );
    assert_eq!(fresh.group_sync(flow, "g", &old).await.expect("sync"), Some(old_sync));
    let group_keys: BTreeSet<String> = keys_of(&groups)
        .await
        .into_iter()
        .map(|(pk, _)| pk)
        .filter(|pk| pk.starts_with(flow))
        .collect();
    assert_eq!(group_keys, [flow.to_owned()].into());

    assert_eq!(s.forget_flow(flow).await.expect("forget"), 2);
    assert!(keys_of(&cursors).await.is_empty());
    assert!(keys_of(&groups).await.iter().all(|(pk, _)| pk.starts_with("r/elsewhere")));
}

#[tokio::test]
async fn a_damaged_layout_is_refused_naming_the_attribute() {
    for bad in [nv(0), nv(100_000), sv("16")] {
        let s = store().await;
        let (cursors, _) = s.table_names();
        put_raw(
            cursors,
            vec![
                ("flow", sv("r/f")),
                ("partition", sv("#flow")),
                ("started_ms", nv(1)),
                ("key_shards", bad.clone()),
            ],
        )
        .await;
        match s.list_cursors("r/f").await {
            Err(StateError::Malformed { table, detail }) => {
                assert_eq!((table.as_str(), detail.as_str()), (cursors, "attribute key_shards"), "{bad:?}")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
        assert!(s.init_cursor("r/f", &TopicPartition::new("t", 0), "t", 0).await.is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_store_that_lives_on_reads_a_flow_forgotten_and_started_again_anew_once_cleared() {
    let s = store().await;
    let (cursors, _) = s.table_names();
    let cursors = cursors.to_owned();
    let flow = "r/again>b";
    let tp = TopicPartition::new("orders", 2);
    // A flow of an earlier Ferry, read by a store that lives on (a warm
    // Lambda): it keeps the one-key layout.
    put_raw(
        &cursors,
        vec![("flow", sv(flow)), ("partition", sv("#flow")), ("started_ms", nv(1))],
    )
    .await;
    assert!(s.init_cursor(flow, &tp, "orders", 0).await.expect("init"));
    assert_eq!(s.list_cursors(flow).await.expect("list").len(), 1);
    // Another process forgets it and starts it again: spread now.
    let other = StateStore::new(raw().await, cursors.strip_suffix("-cursors").expect("prefix"));
    assert_eq!(other.forget_flow(flow).await.expect("forget"), 1);
    assert!(other.start_flow(flow, "src", "tgt").await.expect("start").first);
    assert!(other.init_cursor(flow, &tp, "orders", 7).await.expect("init again"));
    // The next invocation begins by clearing: it finds the new cursor.
    s.clear_layouts();
    let [c] = s.list_cursors(flow).await.expect("list").try_into().expect("one cursor");
    assert_eq!(c.next_source_offset, 7);
    assert!(s.acquire_lease(flow, &tp, "w", Duration::from_secs(60)).await.is_ok());
}

#[tokio::test]
async fn forgetting_a_spread_flow_also_forgets_a_cursor_an_earlier_ferry_put_under_its_one_key() {
    let s = store().await;
    let (cursors, _) = s.table_names();
    let cursors = cursors.to_owned();
    let flow = "r/mixed>b";
    let spread = TopicPartition::new("orders", 0);
    assert!(s.start_flow(flow, "src", "tgt").await.expect("start").first);
    assert!(s.init_cursor(flow, &spread, "orders", 0).await.expect("init"));
    copy(&s, flow, &spread, 0, 50).await;
    // An earlier Ferry on the same tables knows one key only.
    put_raw(
        &cursors,
        vec![
            ("flow", sv(flow)),
            ("partition", sv("orders/0")),
            ("topic", sv("orders")),
            ("partition_index", nv(0)),
            ("target_topic", sv("orders")),
            ("next_source_offset", nv(0)),
            ("lease_epoch", nv(0)),
        ],
    )
    .await;
    assert_eq!(s.forget_flow(flow).await.expect("forget"), 2);
    assert!(keys_of(&cursors).await.is_empty(), "{:?}", keys_of(&cursors).await);
    assert!(s.runs(flow, &spread).await.expect("runs").is_empty());
}
