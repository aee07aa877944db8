//! The Plan step: select source topics, check and create target topics,
//! create cursors for partitions seen for the first time, and split the
//! partitions into bounded Replicate batches.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ferry_adapters::kafka::{OffsetSpec, TopicConfig, TopicMeta};
use ferry_core::config::{FlowSpec, StartingPosition};
use ferry_core::domain::{Backfill, BackfillFrom, PartitionWork, PlanInput, PlanOutput, ReplicateInput, TopicPartition};
use ferry_core::plan::split_into_batches;
use ferry_core::topic_config;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::context::Ferry;
use crate::error::FerryError;

/// Cursor creations in flight at once during a plan.
const INIT_CURSOR_CONCURRENCY: usize = 16;

/// Plan every flow of the replicator.
pub async fn plan(ferry: &Ferry, input: &PlanInput) -> Result<PlanOutput, FerryError> {
    let max = input.max_partitions_per_batch.unwrap_or(ferry.settings.max_partitions_per_batch);
    let mut out = PlanOutput {
        replicator: ferry.spec.name.clone(),
        created_topics: Vec::new(),
        copied_acls: Vec::new(),
        batches: Vec::new(),
    };
    if let Some(b) = &input.backfill {
        check_backfill(ferry, b).await?;
    }
    for flow in &ferry.spec.flows {
        let (created, work) = plan_flow(ferry, flow, input.backfill.as_ref(), None).await?;
        out.created_topics.extend(created);
        if flow.copy_acls {
            let topics: Vec<String> = work
                .iter()
                .map(|w| w.source.topic.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            out.copied_acls.extend(copy_acls(ferry, flow, &topics, None).await?);
        }
        for partitions in split_into_batches(work, max) {
            out.batches.push(ReplicateInput {
                flow: flow.id(),
                partitions,
                stop_at_plan_end: input.stop_at_plan_end,
                max_seconds: input.replicate_max_seconds,
            });
        }
    }
    Ok(out)
}

/// The source topics this flow replicates, with their metadata.
pub async fn selected_topics(ferry: &Ferry, flow: &FlowSpec) -> Result<BTreeMap<String, TopicMeta>, FerryError> {
    let source = ferry.cluster(&flow.source.id)?;
    let all = source.metadata(None).await?;
    Ok(all
        .into_iter()
        .filter(|(name, meta)| !meta.internal && flow.selects_topic(name) && !ferry.spec.is_prefixed_replica(name))
        .collect())
}

/// Topics with cursors that the source no longer has (the broker says so
/// for each by name). With PropagateTopicDeletions the target topic and
/// Ferry's state for it are deleted; otherwise both are kept and logged.
async fn deleted_topics(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    selected: &BTreeMap<String, TopicMeta>,
    cursors: &HashMap<TopicPartition, i64>,
    dry: Option<&mut FlowDryRun>,
) -> Result<(), FerryError> {
    let mut unseen: Vec<String> = cursors
        .keys()
        .map(|tp| tp.topic.clone())
        .filter(|t| !selected.contains_key(t))
        .collect();
    unseen.sort();
    unseen.dedup();
    if unseen.is_empty() {
        return Ok(());
    }
    let still_there = ferry.cluster(&flow.source.id)?.metadata(Some(&unseen)).await?;
    let gone: Vec<String> = unseen.into_iter().filter(|t| !still_there.contains_key(t)).collect();
    if gone.is_empty() {
        return Ok(()); // no longer selected, not deleted: left as they are
    }
    if !flow.propagate_topic_deletions {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topics = ?gone,
            "source topics were deleted; their target topics are kept (PropagateTopicDeletions is off)"
        );
        return Ok(());
    }
    let targets: Vec<String> = gone.iter().map(|t| flow.target_topic(t)).collect();
    if let Some(d) = dry {
        d.target_topics_to_delete = targets;
        return Ok(());
    }
    ferry.cluster(&flow.target.id)?.delete_topics(&targets).await?;
    for tp in cursors.keys().filter(|tp| gone.contains(&tp.topic)) {
        ferry.store.forget_partition(flow_key, tp).await?;
    }
    tracing::warn!(
        replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topics = ?targets,
        "source topics were deleted: deleted their target topics and Ferry's state for them (PropagateTopicDeletions)"
    );
    Ok(())
}

/// Create on the target the topic ACLs of the replicated topics that it
/// lacks (see `ferry_core::acls` for what is copied). Never deletes.
async fn copy_acls(ferry: &Ferry, flow: &FlowSpec, topics: &[String], dry: Option<&mut FlowDryRun>) -> Result<Vec<String>, FerryError> {
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let Some(source_acls) = source.topic_acls().await? else {
        return Ok(Vec::new()); // no authorizer on the source: nothing to copy
    };
    let wanted = ferry_core::acls::to_copy(flow, topics.iter().map(String::as_str), &source_acls);
    let existing = if wanted.is_empty() {
        Some(Vec::new())
    } else {
        target.topic_acls().await?
    };
    if let Some(d) = dry {
        d.acls_not_copied = ferry_core::acls::not_copied(&source_acls)
            .into_iter()
            .map(|(a, why)| AclNotCopied {
                acl: a.to_string(),
                why: why.to_owned(),
            })
            .collect();
        match &existing {
            Some(existing) => d.acls_to_copy = wanted.iter().filter(|a| !existing.contains(a)).map(ToString::to_string).collect(),
            None => d.acls_not_copied.extend(wanted.iter().map(|a| AclNotCopied {
                acl: a.to_string(),
                why: "the target has no authorizer (SECURITY_DISABLED): enable one, or set CopyAccessControlListsForTopics to false".into(),
            })),
        }
        return Ok(Vec::new());
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let Some(existing) = existing else {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, acls = wanted.len(),
            "the target has no authorizer (SECURITY_DISABLED): topic ACLs are not copied; enable one, or set CopyAccessControlListsForTopics to false"
        );
        return Ok(Vec::new());
    };
    let missing: Vec<_> = wanted.into_iter().filter(|a| !existing.contains(a)).collect();
    target.create_acls(&missing).await?;
    let described: Vec<String> = missing.iter().map(ToString::to_string).collect();
    for a in &described {
        tracing::info!(replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, acl = %a, "copied topic ACL");
    }
    Ok(described)
}

/// Refuse a backfill, before anything is written, that names a topic no flow
/// selects, or a partition Ferry already replicated records of.
async fn check_backfill(ferry: &Ferry, b: &Backfill) -> Result<(), FerryError> {
    if b.topics.is_empty() {
        return Err(FerryError::Input(
            "the backfill names no topics: give at least one source topic".into(),
        ));
    }
    if let BackfillFrom::Timestamp(ms) = b.from {
        if ms < 0 {
            return Err(FerryError::Input(format!(
                "backfill timestamp {ms} is negative: give milliseconds since the epoch"
            )));
        }
    }
    let mut selected_by_some = std::collections::BTreeSet::new();
    for flow in &ferry.spec.flows {
        let topics = selected_topics(ferry, flow).await?;
        let key = ferry.flow_key(flow);
        let cursors = ferry.store.list_cursors(&key).await?;
        for t in b.topics.iter().filter(|t| topics.contains_key(*t)) {
            selected_by_some.insert(t.clone());
            for c in cursors.iter().filter(|c| &c.tp.topic == t) {
                let started = c.records_replicated > 0 || ferry.store.last_run(&key, &c.tp).await?.is_some();
                if started {
                    return Err(FerryError::Input(format!(
                        "flow {} already replicated {} records of {} (cursor at source offset {}); a backfill would write older records \
                         after newer ones on the target. To replicate it again from the start, delete the target topic and this \
                         partition's items from the cursors and offset-map tables",
                        flow.id(),
                        c.records_replicated,
                        c.tp,
                        c.next_source_offset
                    )));
                }
            }
        }
    }
    let unknown: Vec<&String> = b.topics.iter().filter(|t| !selected_by_some.contains(*t)).collect();
    if !unknown.is_empty() {
        return Err(FerryError::Input(format!(
            "backfill topics {unknown:?} do not exist on a source cluster or are not selected by any flow's TopicsToReplicate: \
             check the names, or add them to TopicsToReplicate first"
        )));
    }
    Ok(())
}

/// Plan one flow. With `dry`, nothing is written anywhere (clusters or
/// state tables): what would be written is recorded there instead, and a
/// replicator that never ran (no state tables) is planned as new.
async fn plan_flow(
    ferry: &Ferry,
    flow: &FlowSpec,
    backfill: Option<&Backfill>,
    mut dry: Option<&mut FlowDryRun>,
) -> Result<(Vec<String>, Vec<PartitionWork>), FerryError> {
    let flow_key = ferry.flow_key(flow);
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let stateful = dry.is_none() || ferry.store.has_tables().await?;
    let first_plan = match dry.as_deref_mut() {
        None => ferry.store.start_flow(&flow_key).await?,
        Some(d) => {
            d.first_plan = !stateful || !ferry.store.flow_started(&flow_key).await?;
            d.first_plan
        }
    };
    let cursors_now = || async {
        if stateful {
            cursor_positions(ferry, &flow_key).await
        } else {
            Ok(HashMap::new())
        }
    };
    let existing = cursors_now().await?;

    let mut topics = selected_topics(ferry, flow).await?;
    deleted_topics(ferry, flow, &flow_key, &topics, &existing, dry.as_deref_mut()).await?;
    let existing = cursors_now().await?;
    let backfilled = |name: &str| backfill.is_some_and(|b| b.topics.iter().any(|t| t == name));
    if !first_plan && !flow.detect_new_topics {
        topics.retain(|name, _| existing.keys().any(|tp| &tp.topic == name) || backfilled(name));
    }

    // Check every target topic before writing anything.
    let source_names: Vec<String> = topics.keys().cloned().collect();
    let target_names: Vec<String> = topics.keys().map(|t| flow.target_topic(t)).collect();
    let target_meta = target.metadata(Some(&target_names)).await?;
    let existing_targets: Vec<String> = target_names.iter().filter(|t| target_meta.contains_key(*t)).cloned().collect();
    let source_configs = source.topic_configs(&source_names).await?;
    let target_configs = target.topic_configs(&existing_targets).await?;
    let mut to_create = Vec::new();
    let mut to_grow = Vec::new();
    let mut to_alter = Vec::new();
    for (name, meta) in &topics {
        let target_name = flow.target_topic(name);
        let source_count = meta.partitions.len();
        let src_cfg = source_configs.get(name).cloned().unwrap_or_default();
        let Some(t) = target_meta.get(&target_name) else {
            // cleanup.policy is the data's meaning, not a tunable: it is
            // copied even when CopyTopicConfigurations is off.
            let configs = if flow.copy_topic_configurations {
                topic_config::copyable(&src_cfg.overrides)
            } else {
                src_cfg
                    .overrides
                    .iter()
                    .filter(|(k, _)| k.as_str() == "cleanup.policy")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if let Some(d) = dry.as_deref_mut() {
                let copied = TopicConfig {
                    effective: configs.clone(),
                    overrides: configs.clone(),
                };
                d.record_size_risks.extend(record_size_risk(
                    name,
                    &src_cfg,
                    &target_name,
                    Some(&copied).filter(|c| c.effective.contains_key(MAX_MESSAGE_BYTES)),
                ));
            }
            to_create.push((target_name, source_count as i32, configs));
            continue;
        };
        if t.partitions.len() > source_count {
            return Err(FerryError::Input(format!(
                "target topic {target_name} on cluster {} has {} partitions but source topic {name} on cluster {} has only {source_count}; \
                 Ferry writes source partition p to target partition p and never removes partitions: \
                 delete the target topic and let Ferry create it, or exclude the topic",
                flow.target.alias,
                t.partitions.len(),
                flow.source.alias
            )));
        }
        let tgt_cfg = target_configs.get(&target_name).cloned().unwrap_or_default();
        let policy = |c: &TopicConfig| c.effective.get("cleanup.policy").cloned().unwrap_or_else(|| "delete".into());
        if policy(&src_cfg) != policy(&tgt_cfg) {
            return Err(FerryError::Input(format!(
                "target topic {target_name} on cluster {} has cleanup.policy={} but source topic {name} on cluster {} has cleanup.policy={}; \
                 replicating into it would compact away (or keep) records the source does not: \
                 set cleanup.policy={} on the target topic, or delete it and let Ferry create it",
                flow.target.alias,
                policy(&tgt_cfg),
                flow.source.alias,
                policy(&src_cfg),
                policy(&src_cfg)
            )));
        }
        if t.partitions.len() < source_count {
            to_grow.push((target_name.clone(), source_count as i32));
            if let Some(d) = dry.as_deref_mut() {
                d.partitions_to_add.push(PartitionIncrease {
                    topic: target_name.clone(),
                    from: t.partitions.len() as i32,
                    to: source_count as i32,
                });
            }
        }
        if let Some(d) = dry.as_deref_mut() {
            d.record_size_risks
                .extend(record_size_risk(name, &src_cfg, &target_name, Some(&tgt_cfg)));
        }
        if flow.copy_topic_configurations {
            let (set, delete) = topic_config::changes(&src_cfg.overrides, &tgt_cfg.effective, &tgt_cfg.overrides);
            if !set.is_empty() || !delete.is_empty() {
                to_alter.push((target_name, set, delete));
            }
        }
    }
    let created: Vec<String> = to_create.iter().map(|(n, _, _)| n.clone()).collect();
    if let Some(d) = dry.as_deref_mut() {
        d.topics_to_create = to_create
            .iter()
            .map(|(topic, partitions, configs)| TopicToCreate {
                topic: topic.clone(),
                partitions: *partitions,
                replication_factor: flow.target_replication_factor,
                configs: configs.clone(),
            })
            .collect();
        d.configs_to_change = to_alter
            .iter()
            .map(|(topic, set, delete)| ConfigChange {
                topic: topic.clone(),
                set: set.clone(),
                delete: delete.clone(),
            })
            .collect();
        to_create.clear();
        to_grow.clear();
        to_alter.clear();
    }
    if !to_create.is_empty() {
        target
            .create_topics_with_configs(&to_create, flow.target_replication_factor)
            .await?;
        wait_for_topics(ferry, flow, &created).await?;
        tracing::info!(flow = %flow.id(), topics = ?created, "created target topics");
    }
    if !to_grow.is_empty() {
        target.create_partitions(&to_grow).await?;
        let grown: Vec<String> = to_grow.iter().map(|(n, _)| n.clone()).collect();
        wait_for_topics(ferry, flow, &grown).await?;
        tracing::info!(flow = %flow.id(), topics = ?to_grow, "added partitions to target topics");
    }
    for (topic, set, delete) in &to_alter {
        target.alter_topic_configs(topic, set, delete).await?;
        tracing::info!(flow = %flow.id(), topic = %topic, set = ?set, deleted = ?delete, "copied topic configuration");
    }

    let tps: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|(name, meta)| meta.partitions.keys().map(move |p| TopicPartition::new(name.clone(), *p)))
        .collect();
    if tps.is_empty() {
        return Ok((created, Vec::new()));
    }
    let ends = source.list_offsets(&tps, OffsetSpec::Latest, true).await?;
    // Keep state bounded: runs below the source log-start offset map
    // records nobody can read or commit to any more.
    let starts = source.list_offsets(&tps, OffsetSpec::Earliest, false).await?;
    for tp in tps.iter().filter(|tp| dry.is_none() && existing.contains_key(*tp)) {
        let pruned = ferry.store.prune_runs(&flow_key, tp, starts.get(tp).copied().unwrap_or(0)).await?;
        if pruned > 0 {
            tracing::info!(flow = %flow.id(), topic = %tp.topic, partition = tp.partition, pruned, "pruned offset-map runs below the source log start");
        }
    }
    // A backfill (re)starts its partitions at the chosen position; the
    // check above made sure Ferry wrote nothing for them yet.
    if let Some(b) = backfill {
        let mine: Vec<TopicPartition> = tps.iter().filter(|tp| backfilled(&tp.topic)).cloned().collect();
        if !mine.is_empty() {
            let spec = match b.from {
                BackfillFrom::Earliest => OffsetSpec::Earliest,
                BackfillFrom::Timestamp(ms) => OffsetSpec::Timestamp(ms),
            };
            let starts = source.list_offsets(&mine, spec, true).await?;
            for tp in &mine {
                let end = ends.get(tp).copied().unwrap_or(0);
                let start = starts.get(tp).copied().filter(|o| *o >= 0).unwrap_or(end);
                if let Some(d) = dry.as_deref_mut() {
                    d.partitions_to_start.push(PartitionStart::new(tp, start, end, "backfill"));
                    continue;
                }
                let done = if existing.contains_key(tp) {
                    ferry.store.restart_cursor(&flow_key, tp, start).await?
                } else {
                    ferry.store.init_cursor(&flow_key, tp, &flow.target_topic(&tp.topic), start).await?
                };
                if !done {
                    return Err(FerryError::Input(format!(
                        "{tp} started replicating (or is leased) while the backfill was planned; nothing was moved for it"
                    )));
                }
                tracing::info!(flow = %flow.id(), topic = %tp.topic, partition = tp.partition, start, "backfill: partition starts here");
            }
        }
    }
    let existing = cursors_now().await?;
    let mut new_tps: Vec<TopicPartition> = tps.iter().filter(|tp| !existing.contains_key(tp)).cloned().collect();
    let mut cursors = existing;
    if let Some(d) = dry.as_deref_mut() {
        // A dry backfill moves its partitions in the plan's view only.
        for p in &d.partitions_to_start {
            let tp = TopicPartition::new(p.topic.clone(), p.partition);
            new_tps.retain(|t| t != &tp);
            cursors.insert(tp, p.from_offset);
        }
    }
    if !new_tps.is_empty() {
        // A topic that appears after the first plan starts from its first
        // record whatever StartingPosition says: nothing produced before
        // Ferry noticed it is lost.
        let position = if first_plan {
            flow.starting_position
        } else {
            StartingPosition::Earliest
        };
        let starts = match position {
            StartingPosition::Earliest => source.list_offsets(&new_tps, OffsetSpec::Earliest, true).await?,
            StartingPosition::Latest => new_tps.iter().map(|tp| (tp.clone(), ends.get(tp).copied().unwrap_or(0))).collect(),
        };
        if let Some(d) = dry.as_deref_mut() {
            let why = if first_plan {
                "new replicator: StartingPosition"
            } else {
                "new partition: from its first record"
            };
            for tp in &new_tps {
                let (start, end) = (starts.get(tp).copied().unwrap_or(0), ends.get(tp).copied().unwrap_or(0));
                d.partitions_to_start.push(PartitionStart::new(tp, start, end, why));
                cursors.insert(tp.clone(), start);
            }
        }
        new_tps.retain(|_| dry.is_none());
        // One conditional PutItem each (a batch cannot be conditional), a
        // few in flight at once: a plan of thousands of new partitions.
        futures::stream::iter(new_tps.iter())
            .map(|tp| {
                let start = starts.get(tp).copied().unwrap_or(0);
                let (store, flow_key, target) = (&ferry.store, &flow_key, flow.target_topic(&tp.topic));
                async move { store.init_cursor(flow_key, tp, &target, start).await }
            })
            .buffer_unordered(INIT_CURSOR_CONCURRENCY)
            .try_collect::<Vec<bool>>()
            .await?;
        if dry.is_none() {
            // Re-read: a concurrent plan may have created some first.
            cursors = cursor_positions(ferry, &flow_key).await?;
        }
    }
    let work = tps
        .into_iter()
        .map(|tp| {
            let end = ends.get(&tp).copied().unwrap_or(0);
            let cursor = cursors.get(&tp).copied().unwrap_or(end);
            PartitionWork {
                target_topic: flow.target_topic(&tp.topic),
                source: tp,
                end_offset: end,
                lag: (end - cursor).max(0),
            }
        })
        .collect();
    Ok((created, work))
}

/// Checkpoints per second of a partition receiving records, for the cost
/// model (one per produce round; rounds run as records arrive).
const ASSUMED_CHECKPOINTS_PER_SECOND: f64 = 1.0;

/// Kafka's default `max.message.bytes` of a topic (the broker's
/// `message.max.bytes` unless the broker sets another).
const KAFKA_DEFAULT_MAX_MESSAGE_BYTES: i64 = 1_048_588;
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
/// than the target topic (`target` `None`: created with the target's defaults).
fn record_size_risk(topic: &str, source: &TopicConfig, target_topic: &str, target: Option<&TopicConfig>) -> Option<RecordSizeRisk> {
    let max = |c: &TopicConfig| c.effective.get(MAX_MESSAGE_BYTES).and_then(|v| v.parse::<i64>().ok());
    let src = max(source).unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE_BYTES);
    let tgt = target.and_then(max).unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE_BYTES);
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

/// Plan every flow without writing anything, and say what would be done;
/// then watch the source end offsets to measure throughput, and size and
/// price the deployment for it.
pub async fn dry_run(ferry: &Ferry, input: &PlanInput, opts: &DryRunOptions) -> Result<DryRun, FerryError> {
    let (observe, schedule_minutes) = (opts.observe, opts.schedule_minutes);
    let max = input.max_partitions_per_batch.unwrap_or(ferry.settings.max_partitions_per_batch);
    let mut out = DryRun {
        replicator: ferry.spec.name.clone(),
        ..Default::default()
    };
    let mut watched: Vec<Vec<TopicPartition>> = Vec::new();
    for flow in &ferry.spec.flows {
        let mut d = FlowDryRun {
            flow: flow.id(),
            ..Default::default()
        };
        let (_, work) = plan_flow(ferry, flow, input.backfill.as_ref(), Some(&mut d)).await?;
        if flow.copy_acls {
            let topics: Vec<String> = work
                .iter()
                .map(|w| w.source.topic.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            copy_acls(ferry, flow, &topics, Some(&mut d)).await?;
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
        checkpoints_per_second: ASSUMED_CHECKPOINTS_PER_SECOND,
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

/// Newly created topics take a moment to get leaders.
async fn wait_for_topics(ferry: &Ferry, flow: &FlowSpec, topics: &[String]) -> Result<(), FerryError> {
    let target = ferry.cluster(&flow.target.id)?;
    for _ in 0..100 {
        let meta = target.metadata(Some(topics)).await?;
        let ready = topics.iter().all(|t| {
            meta.get(t)
                .is_some_and(|m| !m.partitions.is_empty() && m.partitions.values().all(|p| p.leader >= 0))
        });
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(FerryError::Input(format!(
        "target topics {topics:?} were created but have no leaders after 10 s"
    )))
}

/// Each partition's cursor.
async fn cursor_positions(ferry: &Ferry, flow_key: &str) -> Result<HashMap<TopicPartition, i64>, FerryError> {
    Ok(ferry
        .store
        .list_cursors(flow_key)
        .await?
        .into_iter()
        .map(|c| (c.tp, c.next_source_offset))
        .collect())
}
