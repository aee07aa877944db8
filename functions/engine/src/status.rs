//! Status: per partition, the source end offset, the cursor, the lag and
//! the timestamp of the last replicated record.

use std::collections::HashMap;

use ferry_adapters::kafka::{KafkaCluster, OffsetSpec};
use ferry_adapters::state::CursorItem;
use ferry_core::config::FlowSpec;
use ferry_core::domain::TopicPartition;
use serde::Serialize;

use crate::context::Ferry;
use crate::error::FerryError;

/// One row of `ferry status`.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// Flow id.
    pub flow: String,
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Target topic.
    pub target_topic: String,
    /// Source end offset now (last stable offset).
    pub source_end_offset: i64,
    /// Next source offset to replicate.
    pub cursor: i64,
    /// Records not yet replicated.
    pub lag: i64,
    /// Lag in time: how long the oldest record not yet replicated has
    /// waited, at most (0 when caught up; unknown before the first record).
    pub lag_seconds: Option<i64>,
    /// Records per second over the last Replicate invocation.
    pub records_per_s: i64,
    /// Bytes per second over the last Replicate invocation.
    pub bytes_per_s: i64,
    /// Timestamp of the last replicated record (ms), if any.
    pub last_record_timestamp_ms: Option<i64>,
    /// Records replicated, all time.
    pub records_replicated: i64,
    /// Current lease holder, if any.
    pub lease_owner: Option<String>,
    /// The error that stopped the partition, if any.
    pub last_error: Option<String>,
    /// The source leader epoch of the last record before the cursor, which
    /// the next holder checks the source's log against (KIP-320); none
    /// before the first checkpoint that stored one.
    pub leader_epoch: Option<i32>,
    /// A backfill asked while a worker held the partition: the source
    /// offset its next holder starts it at, unless the partition
    /// replicates records first (the request is then dropped and logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill_from: Option<i64>,
    /// Why the flow no longer copies the partition, whose cursor it keeps
    /// where it stopped: its definition dropped the topic, or it handed the
    /// topic over to another writer. Its lag is then nobody's to close
    /// here, and the report and readiness leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_copied: Option<String>,
}

/// One partition of one consumer group, as last synced.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// Flow id.
    pub flow: String,
    /// Group id.
    pub group: String,
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset on the source when last checked.
    pub source_offset: i64,
    /// Its translation to the target, if any.
    pub translated_offset: Option<i64>,
    /// Whether the translation is exact: replication had reached the
    /// committed offset, and nothing the group read is delivered again.
    pub exact: bool,
    /// Records the group already read that sit at or after the translation
    /// on the target (the two clusters hold them in different orders).
    pub redelivered: i64,
    /// The group's offset on the target after the last sync.
    pub target_offset: Option<i64>,
    /// synced, up-to-date, target-ahead, active-on-target, nothing-replicated, foreign-commit or failed.
    pub status: String,
    /// Why, in words.
    pub detail: String,
    /// When last checked (ms since the epoch).
    pub checked_ms: i64,
}

/// Everything `ferry status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Every replicated partition.
    pub partitions: Vec<PartitionStatus>,
    /// Every synced consumer-group partition.
    pub groups: Vec<GroupStatus>,
    /// Where each group `ferry move` moved lives now.
    pub moves: Vec<crate::moves::GroupHome>,
    /// State tables that do not exist yet. Status is empty while any is
    /// missing: nothing has run under this name and table prefix, or the
    /// first run is still creating them.
    pub missing_tables: Vec<String>,
}

/// Status of every partition and every synced group of every flow.
pub async fn status(ferry: &Ferry) -> Result<Status, FerryError> {
    let missing_tables = ferry.store.missing_tables().await?;
    if !missing_tables.is_empty() {
        return Ok(Status {
            partitions: Vec::new(),
            groups: Vec::new(),
            moves: Vec::new(),
            missing_tables,
        });
    }
    let mut groups = Vec::new();
    for flow in ferry.spec.flows.iter().filter(|f| f.groups.is_some()) {
        for g in ferry.store.group_syncs(&ferry.flow_key(flow)).await? {
            groups.push(GroupStatus {
                flow: flow.id(),
                group: g.group,
                topic: g.tp.topic,
                partition: g.tp.partition,
                source_offset: g.source_offset,
                translated_offset: g.translated,
                exact: g.exact,
                redelivered: g.redelivered,
                target_offset: g.target_offset,
                status: g.status.as_str().to_owned(),
                detail: g.detail,
                checked_ms: g.checked_ms,
            });
        }
    }
    groups.sort_by(|a, b| (&a.flow, &a.group, &a.topic, a.partition).cmp(&(&b.flow, &b.group, &b.topic, b.partition)));
    Ok(Status {
        partitions: partitions(ferry).await?,
        groups,
        moves: crate::moves::homes(ferry).await?,
        missing_tables,
    })
}

async fn partitions(ferry: &Ferry) -> Result<Vec<PartitionStatus>, FerryError> {
    let mut rows = Vec::new();
    for flow in &ferry.spec.flows {
        let key = ferry.flow_key(flow);
        let cursors = ferry.store.list_cursors(&key).await?;
        let ends = source_ends(ferry, flow, &cursors).await?;
        let now = ferry_adapters::state::now_ms();
        rows.extend(cursors.iter().map(|c| PartitionStatus {
            not_copied: not_copied(flow, c),
            ..partition_status(flow, c, &ends, now)
        }));
    }
    rows.sort_by(|a, b| (&a.flow, &a.topic, a.partition).cmp(&(&b.flow, &b.topic, b.partition)));
    Ok(rows)
}

/// Where the source's partitions with cursors end, those still on the
/// source (a topic deleted there keeps its cursors until a plan forgets
/// them, and with PropagateTopicDeletions off, for good).
pub(crate) async fn source_ends(
    ferry: &Ferry,
    flow: &FlowSpec,
    cursors: &[CursorItem],
) -> Result<HashMap<TopicPartition, i64>, FerryError> {
    let tps: Vec<TopicPartition> = cursors.iter().map(|c| c.tp.clone()).collect();
    let source = ferry.cluster(&flow.source.id)?;
    ends_of_existing(&source, &tps).await
}

/// Where those of `tps` that `cluster` has end (read_committed); the
/// others, of topics deleted there, are left out.
pub(crate) async fn ends_of_existing(cluster: &KafkaCluster, tps: &[TopicPartition]) -> Result<HashMap<TopicPartition, i64>, FerryError> {
    if tps.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<String> = tps
        .iter()
        .map(|tp| tp.topic.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let there = cluster.metadata(Some(&names)).await?;
    let tps: Vec<TopicPartition> = tps
        .iter()
        .filter(|tp| there.get(&tp.topic).is_some_and(|m| m.partitions.contains_key(&tp.partition)))
        .cloned()
        .collect();
    if tps.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(cluster.list_offsets(&tps, OffsetSpec::Latest, true).await?)
}

/// Why `flow` does not copy the partition of cursor `c` any more, if it
/// does not: the definition no longer selects its topic (the plan keeps the
/// cursor where it stopped, and hands the topic over to whichever flow takes
/// it next, or resumes there if the topic is selected again), or the flow
/// handed the topic over. A topic the plan refuses is still the flow's to
/// copy: its lag and its refusal count; so is one the definition selects
/// that carries a PREFIXED flow's prefix (never copied, as a possible
/// copy): the definition asks for it.
pub(crate) fn not_copied(flow: &FlowSpec, c: &CursorItem) -> Option<String> {
    let topic = &c.tp.topic;
    if !flow.selects_topic(topic) {
        Some(format!(
            "not copied: flow {} no longer selects topic {topic} (its TopicsToReplicate); kept where it stopped",
            flow.id()
        ))
    } else if c.handed_over_ms.is_some() && c.plan_refusal.is_none() {
        Some(format!(
            "not copied: flow {} handed target topic {} over to another writer",
            flow.id(),
            c.target_topic
        ))
    } else {
        None
    }
}

/// A partition's status from its cursor and the source end offsets (a
/// partition missing there: the end its cursor last saw).
pub(crate) fn partition_status(flow: &FlowSpec, c: &CursorItem, ends: &HashMap<TopicPartition, i64>, now: i64) -> PartitionStatus {
    let end = ends.get(&c.tp).copied().unwrap_or(c.source_end_offset);
    let lag = (end - c.next_source_offset).max(0);
    PartitionStatus {
        flow: flow.id(),
        topic: c.tp.topic.clone(),
        partition: c.tp.partition,
        target_topic: c.target_topic.clone(),
        source_end_offset: end,
        cursor: c.next_source_offset,
        lag,
        lag_seconds: waited_ms(lag, c.last_record_timestamp_ms, now).map(|ms| ms / 1000),
        records_per_s: c.records_per_s,
        bytes_per_s: c.bytes_per_s,
        last_record_timestamp_ms: (c.last_record_timestamp_ms >= 0).then_some(c.last_record_timestamp_ms),
        records_replicated: c.records_replicated,
        lease_owner: c.lease_owner.clone().filter(|_| c.lease_expires_ms > now),
        // The plan's refusal first: while it stands, nothing is copied.
        last_error: match (&c.plan_refusal, &c.last_error) {
            (Some(refusal), Some(stop)) => Some(format!("{refusal} (and the partition's last stop: {stop})")),
            (refusal, stop) => refusal.clone().or_else(|| stop.clone()),
        },
        leader_epoch: c.leader_epoch,
        backfill_from: c.backfill_from,
        not_copied: None,
    }
}

/// How long (ms) the oldest record not yet replicated has waited, at most:
/// 0 when caught up; otherwise the age of the last record replicated (the
/// first waiting record came after it), unknown before the first one.
pub(crate) fn waited_ms(lag: i64, last_record_timestamp_ms: i64, now: i64) -> Option<i64> {
    if lag == 0 {
        Some(0)
    } else {
        (last_record_timestamp_ms >= 0).then(|| (now - last_record_timestamp_ms).max(0))
    }
}
