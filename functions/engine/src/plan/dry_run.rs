//! The dry run: what a plan would do, flow by flow, without writing
//! anything; then the source watched for a few seconds to size and price a
//! deployment for the throughput it sees.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ferry_adapters::kafka::OffsetSpec;
use ferry_core::config::FlowSpec;
use ferry_core::domain::{PlanInput, RefusedTopic, TopicPartition};
use ferry_core::plan::split_into_batches;
use serde::Serialize;

use super::{check_clusters, cluster_ids, decide, decide_acls, selected_work, FirstPlan, FlowPlan};
use crate::context::Ferry;
use crate::error::FerryError;

const MAX_MESSAGE_BYTES: &str = "max.message.bytes";

/// What a plan would do, flow by flow; nothing was written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRun {
    /// Replicator name.
    pub replicator: String,
    /// Per flow.
    pub flows: Vec<FlowDryRun>,
    /// Seconds the source end offsets were watched to measure throughput.
    pub observed_seconds: f64,
    /// What a month of this replicator, deployed, would cost (a model).
    pub monthly_cost: ferry_core::cost::CostEstimate,
}

/// What a plan would do for one flow.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowDryRun {
    /// Flow id.
    pub flow: String,
    /// No plan ran for this flow yet (StartingPosition applies).
    pub first_plan: bool,
    /// Target topics to create.
    pub topics_to_create: Vec<TopicToCreate>,
    /// Target topics to give more partitions.
    pub partitions_to_add: Vec<PartitionIncrease>,
    /// Target topic configurations to change (CopyTopicConfigurations).
    pub configs_to_change: Vec<ConfigChange>,
    /// Target topics to delete (their source topics were deleted; PropagateTopicDeletions).
    pub target_topics_to_delete: Vec<String>,
    /// Partitions to start replicating, and where.
    pub partitions_to_start: Vec<PartitionStart>,
    /// Partitions replicated, and records behind in all of them.
    pub partitions: usize,
    /// Records behind in all partitions.
    pub records_behind: i64,
    /// Replicate invocations per execution (batches).
    pub batches: usize,
    /// ACLs to create on the target (CopyAccessControlListsForTopics).
    pub acls_to_copy: Vec<String>,
    /// Source topic ACLs not copied, with the reason.
    pub acls_not_copied: Vec<AclNotCopied>,
    /// Topics whose source allows larger records than the target would.
    pub record_size_risks: Vec<RecordSizeRisk>,
    /// Topics a plan would refuse to copy (their target topics conflict
    /// with them), with what is wrong and the fix; the others are planned.
    pub topics_refused: Vec<RefusedTopic>,
    /// Synced groups that have members on the target now: not written until they leave.
    pub groups_active_on_target: Vec<String>,
    /// Records per second arriving on the selected source topics while watched.
    pub observed_records_per_second: f64,
    /// Replicate batches (parallel invocations) that keep up with that,
    /// at the capacity given for one invocation.
    pub batches_to_keep_up: usize,
    /// Partitions per batch for that many batches (`max_partitions_per_batch`).
    pub partitions_per_batch_to_keep_up: usize,
}

/// A target topic to create.
#[derive(Debug, Clone, Serialize)]
pub struct TopicToCreate {
    /// Name on the target.
    pub topic: String,
    /// Partitions (the source's count).
    pub partitions: i32,
    /// Replication factor; `None`: the target's default.
    pub replication_factor: Option<i16>,
    /// Configurations set at creation.
    pub configs: BTreeMap<String, String>,
}

/// A partition-count increase.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionIncrease {
    /// Target topic.
    pub topic: String,
    /// Partitions now.
    pub from: i32,
    /// Partitions after (the source's count).
    pub to: i32,
}

/// A configuration change on a target topic.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigChange {
    /// Target topic.
    pub topic: String,
    /// Values to set.
    pub set: BTreeMap<String, String>,
    /// Overrides to remove.
    pub delete: Vec<String>,
}

/// A partition about to start replicating.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStart {
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First source offset to replicate.
    pub from_offset: i64,
    /// Records between it and the end now.
    pub records: i64,
    /// Why it starts there.
    pub why: String,
}

impl PartitionStart {
    fn new(tp: &TopicPartition, from_offset: i64, end: i64, why: &str) -> Self {
        Self {
            topic: tp.topic.clone(),
            partition: tp.partition,
            from_offset,
            records: (end - from_offset).max(0),
            why: why.to_owned(),
        }
    }
}

/// A source ACL that is not copied.
#[derive(Debug, Clone, Serialize)]
pub struct AclNotCopied {
    /// The ACL.
    pub acl: String,
    /// Why not.
    pub why: String,
}

/// A topic whose source accepts records the target would refuse.
#[derive(Debug, Clone, Serialize)]
pub struct RecordSizeRisk {
    /// Source topic.
    pub topic: String,
    /// Its `max.message.bytes` on the source.
    pub source_max_message_bytes: i64,
    /// Target topic.
    pub target_topic: String,
    /// Its `max.message.bytes` on the target (as it is, or as it would be created).
    pub target_max_message_bytes: i64,
    /// What to do.
    pub fix: String,
}

/// A record-size risk if the source topic allows larger record batches
/// than the target topic, given both topics' effective configurations (a
/// topic about to be created: the configurations it would be created with).
pub(super) fn record_size_risk(
    topic: &str,
    source: &BTreeMap<String, String>,
    target_topic: &str,
    target: &BTreeMap<String, String>,
) -> Option<RecordSizeRisk> {
    let max = |c: &BTreeMap<String, String>| {
        c.get(MAX_MESSAGE_BYTES)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(ferry_core::topic_config::DEFAULT_MAX_MESSAGE_BYTES)
    };
    let (src, tgt) = (max(source), max(target));
    (src > tgt).then(|| RecordSizeRisk {
        topic: topic.to_owned(),
        source_max_message_bytes: src,
        target_topic: target_topic.to_owned(),
        target_max_message_bytes: tgt,
        fix: format!(
            "a record batch over {tgt} bytes would stop the partition: set max.message.bytes={src} on the target topic (or turn on CopyTopicConfigurations)"
        ),
    })
}

/// How a dry run measures and models.
#[derive(Debug, Clone, Copy)]
pub struct DryRunOptions {
    /// How long to watch the source end offsets.
    pub observe: Duration,
    /// Minutes between scheduled executions (for the cost model).
    pub schedule_minutes: f64,
    /// Records per second one Replicate invocation can copy.
    pub replicate_records_per_s: f64,
}

impl FlowDryRun {
    /// What the decided plan `p` would write for `flow`.
    fn new(flow: &FlowSpec, p: &FlowPlan) -> Self {
        let why = |backfill: bool| match (backfill, p.first_plan) {
            (true, _) => "backfill",
            (false, true) => "new replicator: StartingPosition",
            (false, false) => "new partition: from its first record",
        };
        Self {
            flow: flow.id(),
            first_plan: p.first_plan,
            topics_to_create: p.create.clone(),
            partitions_to_add: p.grow.clone(),
            configs_to_change: p.alter.clone(),
            target_topics_to_delete: p.deleted.clone(),
            partitions_to_start: p
                .starts
                .iter()
                .filter(|s| !p.refused.contains_key(&s.tp.topic))
                .map(|s| PartitionStart::new(&s.tp, s.from, s.end, why(s.backfill)))
                .collect(),
            record_size_risks: p.record_size_risks.clone(),
            topics_refused: p.refused_topics(flow),
            ..Default::default()
        }
    }
}

/// Plan every flow without writing anything, and say what would be done;
/// then watch the source end offsets to measure throughput, and size and
/// price the deployment for it. A replicator that never ran (no state
/// tables) is planned as new.
pub async fn dry_run(ferry: &Ferry, input: &PlanInput, opts: &DryRunOptions) -> Result<DryRun, FerryError> {
    let (observe, schedule_minutes) = (opts.observe, opts.schedule_minutes);
    let max = input.max_partitions_per_batch.unwrap_or(ferry.settings.max_partitions_per_batch);
    let mut out = DryRun {
        replicator: ferry.spec.name.clone(),
        ..Default::default()
    };
    let stateful = ferry.store.has_tables().await?;
    let mut watched: Vec<Vec<TopicPartition>> = Vec::new();
    for flow in &ferry.spec.flows {
        let first_plan = if stateful {
            let marker = ferry.store.flow_marker(&ferry.flow_key(flow)).await?;
            check_clusters(ferry, flow, &marker, &cluster_ids(ferry, flow).await?).await?;
            FirstPlan::from(&marker)
        } else {
            FirstPlan {
                first: true,
                legacy: false,
                created: true,
            }
        };
        let mut p = decide(ferry, flow, input.backfill.as_ref(), stateful, first_plan).await?;
        let mut d = FlowDryRun::new(flow, &p);
        // The partitions start where the plan would start them.
        for s in &p.starts {
            p.cursors.insert(s.tp.clone(), s.from);
        }
        let work = selected_work(flow, &p);
        if flow.copy_acls {
            if let Some(acls) = decide_acls(ferry, flow, &work).await? {
                d.acls_not_copied = ferry_core::acls::not_copied(&acls.source)
                    .into_iter()
                    .map(|(a, why)| AclNotCopied {
                        acl: a.to_string(),
                        why: why.to_owned(),
                    })
                    .collect();
                match &acls.missing {
                    Some(missing) => d.acls_to_copy = missing.iter().map(ToString::to_string).collect(),
                    None => d.acls_not_copied.extend(acls.wanted.iter().map(|a| AclNotCopied {
                        acl: a.to_string(),
                        why: "the target has no authorizer (SECURITY_DISABLED): enable one, or set CopyAccessControlListsForTopics to false".into(),
                    })),
                }
            }
        }
        if let Some(g) = &flow.groups {
            let target = ferry.cluster(&flow.target.id)?;
            for group in crate::groups::consumer_groups(&target, g).await? {
                if target.group_state(&group).await?.is_active() {
                    d.groups_active_on_target.push(group);
                }
            }
        }
        d.partitions = work.len();
        d.records_behind = work.iter().map(|w| w.lag).sum();
        watched.push(work.iter().map(|w| w.source.clone()).collect());
        d.batches = split_into_batches(work, max).len();
        out.flows.push(d);
    }
    let mut before = Vec::new();
    for (flow, tps) in ferry.spec.flows.iter().zip(&watched) {
        before.push(end_offsets(ferry, flow, tps).await?);
    }
    let started = std::time::Instant::now();
    tokio::time::sleep(observe).await;
    let mut active = 0;
    for (((flow, d), tps), before) in ferry.spec.flows.iter().zip(out.flows.iter_mut()).zip(&watched).zip(before) {
        let after = end_offsets(ferry, flow, tps).await?;
        let grew: Vec<i64> = after
            .iter()
            .map(|(tp, end)| end - before.get(tp).copied().unwrap_or(*end))
            .filter(|d| *d > 0)
            .collect();
        active += grew.len();
        d.observed_records_per_second = grew.iter().sum::<i64>() as f64 / started.elapsed().as_secs_f64().max(0.001);
        (d.batches_to_keep_up, d.partitions_per_batch_to_keep_up) =
            ferry_core::cost::batches_to_keep_up(d.observed_records_per_second, opts.replicate_records_per_s, d.partitions);
    }
    out.monthly_cost = ferry_core::cost::estimate(&ferry_core::cost::CostInputs {
        schedule_minutes,
        batches: out.flows.iter().map(|f| f.batches).sum(),
        partitions: out.flows.iter().map(|f| f.partitions).sum(),
        active_partitions: active,
        // A partition receiving records is checkpointed once per
        // checkpoint interval (sooner only above checkpoint_max_bytes).
        checkpoints_per_second: 1.0 / ferry.settings.checkpoint_interval.as_secs_f64().max(0.001),
        lease_seconds: ferry.settings.lease_duration.as_secs_f64(),
        handoff_wait_seconds: ferry.settings.handoff_wait.as_secs_f64(),
        // Groups are not listed by a dry run.
        group_partitions: 0,
    });
    out.observed_seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// The end offsets of `tps` on the flow's source.
async fn end_offsets(ferry: &Ferry, flow: &FlowSpec, tps: &[TopicPartition]) -> Result<HashMap<TopicPartition, i64>, FerryError> {
    if tps.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(ferry.cluster(&flow.source.id)?.list_offsets(tps, OffsetSpec::Latest, true).await?)
}
