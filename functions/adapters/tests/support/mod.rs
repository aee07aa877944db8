//! What the state-store tests share: a store on fresh tables in moto, a
//! partition's new cursor leased, and a checkpoint of a range.

#![allow(dead_code)]

use std::time::Duration;

use ferry_adapters::state::{now_ms, Checkpoint, CursorItem, GroupSyncItem, GroupSyncStatus, Lease, StateStore};
use ferry_core::domain::TopicPartition;
use ferry_core::offset_map::OffsetRun;

pub async fn store() -> StateStore {
    let aws = ferry_adapters::aws::load().await;
    let prefix = format!("ferry-it-{}", uuid::Uuid::new_v4().simple());
    let s = StateStore::new(ferry_adapters::state::dynamodb_client(&aws), &prefix);
    s.ensure_tables()
        .await
        .expect("tables (is moto up? run infra/local/up and source infra/local/stack.env)");
    s
}

/// A new cursor for `tp` in flow "r/f", leased to "worker" for a minute.
pub async fn leased(s: &StateStore, tp: &TopicPartition) -> (Lease, CursorItem) {
    assert!(s.init_cursor("r/f", tp, &tp.topic, 0).await.expect("init"));
    s.acquire_lease("r/f", tp, "worker", Duration::from_secs(60)).await.expect("lease")
}

pub fn cp(from: i64, to: i64, runs: Vec<OffsetRun>, prev_run: Option<OffsetRun>) -> Checkpoint {
    Checkpoint {
        from_source: from,
        to_source: to,
        target_end: runs.last().map(|r| r.target_end()).unwrap_or(0),
        records: to - from,
        bytes: 10,
        runs,
        prev_run,
        last_timestamp_ms: 1,
        source_end: to,
        lease_expires_ms: now_ms() + 60_000,
        producer_sequence: None,
        leader_epochs: Vec::new(),
        target_leader_epoch: None,
    }
}

/// Runs of a compacted-looking partition: run `i` covers source offsets
/// 10i..10i+5 and target offsets 5i..5i+5.
pub fn gapped_runs(from: i64, to: i64) -> Vec<OffsetRun> {
    (from..to)
        .map(|i| OffsetRun {
            source_start: 10 * i,
            target_start: 5 * i,
            length: 5,
        })
        .collect()
}

/// A new cursor for `tp` leased, and `n` gapped runs stored in checkpoints
/// of 50 runs each (a partition with many runs in its map).
pub async fn leased_with_runs(s: &StateStore, tp: &TopicPartition, n: i64) -> Lease {
    let (lease, _) = leased(s, tp).await;
    let per = 50;
    for i in 0..(n + per - 1) / per {
        let runs = gapped_runs(i * per, ((i + 1) * per).min(n));
        s.checkpoint("r/f", &lease, &cp(10 * i * per, 10 * (i + 1) * per, runs, None))
            .await
            .expect("checkpoint");
    }
    lease
}

/// A synced group partition at source offset 5, translated to 3.
pub fn sync(tp: &TopicPartition, group: &str) -> GroupSyncItem {
    GroupSyncItem {
        group: group.into(),
        tp: tp.clone(),
        target_topic: Some(tp.topic.clone()),
        target_topic_id: None,
        source_offset: 5,
        metadata: None,
        translated: Some(3),
        exact: true,
        target_offset: None,
        written_offset: None,
        redelivered: 0,
        carried_source_offset: None,
        copy_source_offset: None,
        written_rewinds: None,
        own_commit: None,
        own_commit_ms: None,
        pending_offset: None,
        status: GroupSyncStatus::Synced,
        detail: String::new(),
        checked_ms: 1,
        rule: 2,
    }
}
