//! The Report step: measure the replicator on live data (lag, how long the
//! oldest unreplicated record has waited, failures, cluster pings, consumer
//! groups and their lag on both clusters), judge readiness to move
//! applications (see `ferry_core::readiness`), and turn the numbers into
//! metrics named as MSK Replicator names them.
//!
//! A cluster that does not answer is a measurement (ping 0), not a failure
//! of the report: the numbers that need it fall back to what the state
//! tables last saw.

use std::collections::{BTreeMap, HashMap};

use ferry_adapters::kafka::batch::split_batches;
use ferry_adapters::kafka::{Isolation, KafkaCluster, KafkaError};
use ferry_adapters::state::{now_ms, CursorItem, GroupSyncStatus};
use ferry_core::config::{FlowSpec, GroupSpec};
use ferry_core::domain::TopicPartition;
use ferry_core::metrics::{dim, name, Datum, Unit};
use ferry_core::readiness::{evaluate, ClusterSeen, GroupLag, GroupSet, Measurements, Readiness, Thresholds};
use serde::{Deserialize, Serialize};

use crate::context::Ferry;
use crate::error::FerryError;
use crate::groups::consumer_groups;
use crate::status::{partition_status, waited_ms};

/// Partitions that never replicated a record and are behind, whose first
/// waiting record is fetched to learn its age; beyond this many, the
/// others count from their cursor's last update.
const FIRST_RECORD_PROBES: usize = 50;

/// One source topic of one flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicReport {
    /// Flow id.
    pub flow: String,
    /// Source topic.
    pub topic: String,
    /// Replicated partitions.
    pub partitions: usize,
    /// MessageLag: records on the source not yet replicated.
    pub message_lag: i64,
    /// ReplicationLatency: age (ms) of the oldest record not yet on the
    /// target, 0 when caught up (docs/src/operations/metrics.md says how it is measured).
    pub replication_latency_ms: i64,
    /// ReplicatorFailure: partitions stopped by an error.
    pub failed_partitions: i64,
}

/// One cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// Alias.
    pub alias: String,
    /// KafkaClusterPingSuccessCount: whether it answered.
    pub ping_ok: bool,
    /// AuthError: the answer was an authentication or authorisation refusal.
    pub auth_error: bool,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// What the Report step measured and concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Replicator name.
    pub replicator: String,
    /// When measured (ms since the epoch).
    pub generated_ms: i64,
    /// Per flow and source topic.
    pub topics: Vec<TopicReport>,
    /// Per cluster.
    pub clusters: Vec<ClusterReport>,
    /// ConsumerGroupCount: per flow with group replication, the groups on each side.
    pub group_sets: Vec<GroupSet>,
    /// Per synced group.
    pub groups: Vec<GroupLag>,
    /// The verdict.
    pub readiness: Readiness,
}

impl Report {
    /// The report as metric data points.
    pub fn metrics(&self) -> Vec<Datum> {
        let r = self.replicator.as_str();
        let mut out = Vec::new();
        for t in &self.topics {
            let d = [(dim::TOPIC, t.topic.as_str())];
            for (metric, unit, value) in [
                (name::MESSAGE_LAG, Unit::Count, t.message_lag),
                (name::REPLICATION_LATENCY, Unit::Milliseconds, t.replication_latency_ms),
                (name::REPLICATOR_FAILURE, Unit::Count, t.failed_partitions),
            ] {
                out.push(Datum::new(metric, unit, value as f64, r, &d));
            }
        }
        for c in &self.clusters {
            let d = [(dim::CLUSTER, c.alias.as_str())];
            out.push(Datum::new(name::PING, Unit::Count, f64::from(u8::from(c.ping_ok)), r, &d));
            out.push(Datum::new(name::AUTH_ERROR, Unit::Count, f64::from(u8::from(c.auth_error)), r, &d));
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.group_sets {
            *counts.entry(&s.source).or_default() += s.source_groups.len();
            *counts.entry(&s.target).or_default() += s.target_groups.len();
        }
        for (alias, n) in counts {
            out.push(Datum::new(name::GROUP_COUNT, Unit::Count, n as f64, r, &[(dim::CLUSTER, alias)]));
        }
        for g in &self.groups {
            let group = g.group.as_str();
            for (alias, lag) in [
                (&g.source_alias, g.source_sum_offset_lag),
                (&g.target_alias, g.target_sum_offset_lag),
            ] {
                out.push(Datum::new(
                    name::SUM_OFFSET_LAG,
                    Unit::Count,
                    lag as f64,
                    r,
                    &[(dim::CLUSTER, alias), (dim::GROUP, group)],
                ));
            }
            let d = [(dim::GROUP, group)];
            out.push(Datum::new(name::GROUP_SYNC_FAILURE, Unit::Count, g.sync_failures as f64, r, &d));
            if let Some(age) = g.offset_sync_age_s {
                out.push(Datum::new(name::OFFSET_SYNC_AGE, Unit::Seconds, age as f64, r, &d));
            }
        }
        out
    }
}

/// Measure every flow and judge readiness against `thresholds`.
pub async fn report(ferry: &Ferry, thresholds: &Thresholds) -> Result<Report, FerryError> {
    let now = now_ms();
    let mut clusters: Vec<ClusterReport> = Vec::new();
    for flow in &ferry.spec.flows {
        for c in [&flow.source, &flow.target] {
            if !clusters.iter().any(|r| r.alias == c.alias) {
                clusters.push(ping(&*ferry.cluster(&c.id)?).await);
            }
        }
    }
    // A user that may connect but not describe the topics it replicates is
    // refused too (AuthError), though the cluster answers. Only topics named
    // literally can be asked for (a listing hides the others); the plan's
    // own selection asks for them.
    for flow in &ferry.spec.flows {
        if flow.literal_topics().is_empty() {
            continue;
        }
        let Some(c) = clusters
            .iter_mut()
            .find(|c| c.alias == flow.source.alias && c.ping_ok && !c.auth_error)
        else {
            continue;
        };
        if let Err(FerryError::Kafka(e)) = crate::plan::selected_topics(ferry, flow).await {
            if e.is_auth_error() {
                c.auth_error = true;
                c.error = Some(e.to_string());
            }
        }
    }
    let up = |alias: &str| clusters.iter().any(|c| c.alias == alias && c.ping_ok);

    let mut topics = Vec::new();
    let mut group_sets = Vec::new();
    let mut groups = Vec::new();
    for flow in &ferry.spec.flows {
        let source = ferry.cluster(&flow.source.id)?;
        // Partitions the flow no longer copies (a topic dropped from its
        // definition or handed over) keep their cursors; their lag grows
        // with the source and is no one's to close here.
        let mut cursors = ferry.store.list_cursors(&ferry.flow_key(flow)).await?;
        cursors.retain(|c| crate::status::not_copied(flow, c).is_none());
        let ends = if up(&flow.source.alias) {
            crate::status::source_ends(ferry, flow, &cursors).await.unwrap_or_default()
        } else {
            HashMap::new()
        };
        topics.extend(topic_reports(flow, &source, &cursors, &ends, now).await);
        // Groups count toward readiness only where Ferry syncs their offsets.
        if let Some(g) = flow.groups.as_ref().filter(|g| g.sync_offsets) {
            if up(&flow.source.alias) && up(&flow.target.alias) {
                let (set, mut lags) = flow_groups(ferry, flow, g, &cursors, &ends, now).await?;
                group_sets.push(set);
                groups.append(&mut lags);
            }
        }
    }

    let measurements = Measurements {
        replicator_failures: topics.iter().map(|t| t.failed_partitions).sum(),
        clusters: clusters
            .iter()
            .map(|c| ClusterSeen {
                alias: c.alias.clone(),
                ping_ok: c.ping_ok,
            })
            .collect(),
        message_lag: topics.iter().map(|t| t.message_lag).sum(),
        replication_latency_ms: topics.iter().map(|t| t.replication_latency_ms).max().unwrap_or(0),
        group_sets,
        group_lags: groups,
    };
    let readiness = evaluate(&measurements, thresholds);
    Ok(Report {
        replicator: ferry.spec.name.clone(),
        generated_ms: now,
        topics,
        clusters,
        group_sets: measurements.group_sets,
        groups: measurements.group_lags,
        readiness,
    })
}

/// One Metadata request: does the cluster answer?
async fn ping(cluster: &KafkaCluster) -> ClusterReport {
    let res = cluster.metadata(Some(&[] as &[String])).await;
    ClusterReport {
        alias: cluster.alias().to_owned(),
        ping_ok: res.is_ok(),
        auth_error: res.as_ref().err().is_some_and(KafkaError::is_auth_error),
        error: res.err().map(|e| e.to_string()),
    }
}

/// Per topic: lag, the age of the oldest waiting record, failures.
async fn topic_reports(
    flow: &FlowSpec,
    source: &KafkaCluster,
    cursors: &[CursorItem],
    ends: &HashMap<TopicPartition, i64>,
    now: i64,
) -> Vec<TopicReport> {
    let mut by_topic: BTreeMap<&str, TopicReport> = BTreeMap::new();
    let mut probes = 0;
    for c in cursors {
        let row = partition_status(flow, c, ends, now);
        let waited = match waited_ms(row.lag, c.last_record_timestamp_ms, now) {
            Some(ms) => ms,
            None if probes < FIRST_RECORD_PROBES => {
                probes += 1;
                first_timestamp(source, &c.tp, c.next_source_offset)
                    .await
                    .map_or(now - c.updated_ms, |ts| now - ts)
            }
            None => now - c.updated_ms,
        };
        let t = by_topic.entry(&c.tp.topic).or_insert_with(|| TopicReport {
            flow: row.flow.clone(),
            topic: row.topic.clone(),
            partitions: 0,
            message_lag: 0,
            replication_latency_ms: 0,
            failed_partitions: 0,
        });
        t.partitions += 1;
        t.message_lag += row.lag;
        t.replication_latency_ms = t.replication_latency_ms.max(waited.max(0));
        t.failed_partitions += i64::from(row.last_error.is_some());
    }
    by_topic.into_values().collect()
}

/// The timestamp of the first record batch at `offset`, if it can be read.
async fn first_timestamp(source: &KafkaCluster, tp: &TopicPartition, offset: i64) -> Option<i64> {
    // One byte asks for one batch: the broker still returns a whole first batch.
    let part = source.fetch_partition(tp, offset, 1, Isolation::ReadCommitted).await.ok()?;
    let batches = split_batches(part.records).ok()?;
    batches.iter().find(|b| !b.header.is_control()).map(|b| b.header.base_timestamp)
}

/// A flow's synced groups on both clusters and each one's lag on both.
async fn flow_groups(
    ferry: &Ferry,
    flow: &FlowSpec,
    g: &GroupSpec,
    cursors: &[CursorItem],
    source_ends: &HashMap<TopicPartition, i64>,
    now: i64,
) -> Result<(GroupSet, Vec<GroupLag>), FerryError> {
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let set = GroupSet {
        source: flow.source.alias.clone(),
        target: flow.target.alias.clone(),
        source_groups: consumer_groups(&source, g).await?,
        target_groups: consumer_groups(&target, g).await?,
    };
    let replicated: HashMap<&TopicPartition, &CursorItem> = cursors.iter().map(|c| (&c.tp, c)).collect();
    let target_tps: Vec<TopicPartition> = cursors
        .iter()
        .map(|c| TopicPartition::new(c.target_topic.clone(), c.tp.partition))
        .collect();
    let target_ends = crate::status::ends_of_existing(&target, &target_tps).await?;
    // The syncs of partitions the flow copies: a sync row left on a topic
    // it no longer copies is never visited again (its failure and its age
    // would hold the group's numbers for good).
    let mut syncs = ferry.store.group_syncs(&ferry.flow_key(flow)).await?;
    syncs.retain(|s| replicated.contains_key(&s.tp));
    let mut out = Vec::new();
    for group in &set.source_groups {
        let on_source = source.committed_offsets(group).await?;
        let on_target = target.committed_offsets(group).await?;
        let (mut source_lag, mut target_lag) = (0, 0);
        for (tp, committed) in &on_source {
            let Some(cursor) = replicated.get(tp) else { continue };
            let end = source_ends.get(tp).copied().unwrap_or(cursor.source_end_offset);
            source_lag += (end - committed.offset).max(0);
            let ttp = TopicPartition::new(cursor.target_topic.clone(), tp.partition);
            let tend = target_ends.get(&ttp).copied().unwrap_or(0);
            target_lag += (tend - on_target.get(&ttp).map_or(0, |c| c.offset)).max(0);
        }
        let mine = syncs.iter().filter(|s| &s.group == group);
        out.push(GroupLag {
            flow: flow.id(),
            group: group.clone(),
            source_alias: flow.source.alias.clone(),
            target_alias: flow.target.alias.clone(),
            source_sum_offset_lag: source_lag,
            target_sum_offset_lag: target_lag,
            sync_failures: mine.clone().filter(|s| s.status == GroupSyncStatus::Failed).count() as i64,
            offset_sync_age_s: mine.map(|s| s.checked_ms).min().map(|oldest| (now - oldest).max(0) / 1000),
        });
    }
    Ok((set, out))
}
