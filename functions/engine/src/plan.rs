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
        let (created, work) = plan_flow(ferry, flow, input.backfill.as_ref()).await?;
        out.created_topics.extend(created);
        if flow.copy_acls {
            let topics: Vec<String> = work
                .iter()
                .map(|w| w.source.topic.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            out.copied_acls.extend(copy_acls(ferry, flow, &topics).await?);
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
async fn copy_acls(ferry: &Ferry, flow: &FlowSpec, topics: &[String]) -> Result<Vec<String>, FerryError> {
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let Some(source_acls) = source.topic_acls().await? else {
        return Ok(Vec::new()); // no authorizer on the source: nothing to copy
    };
    let wanted = ferry_core::acls::to_copy(flow, topics.iter().map(String::as_str), &source_acls);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let Some(existing) = target.topic_acls().await? else {
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

async fn plan_flow(ferry: &Ferry, flow: &FlowSpec, backfill: Option<&Backfill>) -> Result<(Vec<String>, Vec<PartitionWork>), FerryError> {
    let flow_key = ferry.flow_key(flow);
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let first_plan = ferry.store.start_flow(&flow_key).await?;
    let existing = cursor_positions(ferry, &flow_key).await?;

    let mut topics = selected_topics(ferry, flow).await?;
    deleted_topics(ferry, flow, &flow_key, &topics, &existing).await?;
    let existing = cursor_positions(ferry, &flow_key).await?;
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
        }
        if flow.copy_topic_configurations {
            let (set, delete) = topic_config::changes(&src_cfg.overrides, &tgt_cfg.effective, &tgt_cfg.overrides);
            if !set.is_empty() || !delete.is_empty() {
                to_alter.push((target_name, set, delete));
            }
        }
    }
    let created: Vec<String> = to_create.iter().map(|(n, _, _)| n.clone()).collect();
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
    for tp in tps.iter().filter(|tp| existing.contains_key(*tp)) {
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
    let existing = cursor_positions(ferry, &flow_key).await?;
    let new_tps: Vec<TopicPartition> = tps.iter().filter(|tp| !existing.contains_key(tp)).cloned().collect();
    let mut cursors = existing;
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
        // Re-read: a concurrent plan may have created some first.
        cursors = cursor_positions(ferry, &flow_key).await?;
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
