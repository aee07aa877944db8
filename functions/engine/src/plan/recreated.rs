//! Topics deleted, or deleted and created again, on either cluster, and
//! source histories replaced: found by topic ids, believed only when
//! repeated.

use super::*;

/// Find the topics whose history was replaced under their name: the
/// source topic deleted and created again (another topic id), or the
/// target topic deleted (and perhaps created again) after Ferry copied
/// into it. Their cursors and offset maps count in logs that are gone:
/// trusted, they would skip the new source topic's first records, leave
/// the new target topic without what was copied, and translate groups
/// through the old offsets. Ferry follows the new history instead: it
/// forgets the topic's state and copies the source topic again from its
/// first record, saying so in an error-level `TopicRecreated` line (the
/// records of a deleted source topic that were not copied yet are gone
/// with it). A partition still leased by a holder is left for the next
/// plan; the holder stops on the topic id itself (see `replicate`).
pub(super) async fn histories_replaced(
    ferry: &Ferry,
    flow: &FlowSpec,
    items: &[CursorItem],
    topics: &mut BTreeMap<String, TopicMeta>,
    target_meta: &BTreeMap<String, TopicMeta>,
    p: &mut FlowPlan,
) -> Result<(), FerryError> {
    let now = now_ms();
    let mut by_topic: BTreeMap<&str, Vec<&CursorItem>> = BTreeMap::new();
    for c in items.iter().filter(|c| topics.contains_key(&c.tp.topic)) {
        by_topic.entry(c.tp.topic.as_str()).or_default().push(c);
    }
    let mut suspects: BTreeMap<&str, String> = BTreeMap::new();
    let mut renamed: BTreeMap<&str, String> = BTreeMap::new();
    for (topic, cursors) in &by_topic {
        let target_name = flow.target_topic(topic);
        // Made for another target name: the flow's TopicNameConfiguration
        // changed. Nothing was deleted (see `renamed_targets`).
        if let Some(old) = cursors.iter().map(|c| &c.target_topic).find(|t| **t != target_name) {
            renamed.insert(topic, old.clone());
            continue;
        }
        match replaced_why(flow, topic, cursors, topics.get(*topic), target_meta.get(&target_name)) {
            Some(why) => {
                suspects.insert(topic, why);
            }
            None => {
                let source_id = topics.get(*topic).and_then(|m| m.topic_id.clone());
                let target_id = target_meta.get(&target_name).and_then(|m| m.topic_id.clone());
                for c in cursors {
                    let (src, tgt) = (
                        source_id.clone().filter(|_| c.source_topic_id.is_none()),
                        target_id.clone().filter(|_| c.target_topic_id.is_none()),
                    );
                    if src.is_some() || tgt.is_some() {
                        p.record_ids.push((c.tp.clone(), src, tgt));
                    }
                }
            }
        }
    }
    if !renamed.is_empty() {
        renamed_targets(ferry, flow, &by_topic, renamed, topics, target_meta, p).await?;
    }
    if suspects.is_empty() {
        return Ok(());
    }
    // One answer is not enough to forget state: a broker just back from a
    // restart can answer "unknown topic" for every topic until it has the
    // cluster's metadata. An answer that knows none of the flow's target
    // topics is not believed while the target lists no topic at all, and a
    // finding must stand in two more answers, a second apart, before Ferry
    // acts on it.
    let (source, target) = (ferry.cluster(&flow.source.id)?, ferry.cluster(&flow.target.id)?);
    if target_meta.is_empty() && by_topic.len() > 1 && !target.knows_its_topics().await? {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias,
            "the target answered that it has none of the flow's topics, and lists no topic; not believed: nothing \
             restarted this plan"
        );
        return Ok(());
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let names: Vec<String> = suspects.keys().map(|t| t.to_string()).collect();
        let target_names: Vec<String> = names.iter().map(|t| flow.target_topic(t)).collect();
        let (src_again, tgt_again) = (source.metadata(Some(&names)).await?, target.metadata(Some(&target_names)).await?);
        suspects.retain(|topic, _| {
            let cursors = by_topic.get(topic).map(Vec::as_slice).unwrap_or_default();
            replaced_why(
                flow,
                topic,
                cursors,
                src_again.get(*topic),
                tgt_again.get(&flow.target_topic(topic)),
            )
            .is_some()
        });
    }
    // Both ways: the target topic is also the source topic of the flow
    // back (in this replicator or another). Deleted there, with that flow
    // propagating deletions, it is a deletion to propagate (that flow
    // deletes this flow's source topic), not a copy to make again.
    let deleted: Vec<&str> = suspects
        .keys()
        .copied()
        .filter(|t| !target_meta.contains_key(&flow.target_topic(t)))
        .collect();
    let left_to_flow_back = crate::opposite::propagates_deletions_of(ferry, flow, &deleted).await?;
    for (topic, why) in suspects {
        let cursors = by_topic.get(topic).map(Vec::as_slice).unwrap_or_default();
        if let Some(back) = left_to_flow_back.get(topic) {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topic = %topic, flow_back = %back,
                "target topic {topic} was deleted, and it is the source topic of the flow back ({back}), which propagates \
                 deletions: left to that flow to delete on cluster {} (not copied again). Should that flow stop planning, \
                 this flow copies the topic again {} minutes after its last plan (or {} of its replicator's schedule periods, \
                 if longer)",
                flow.source.alias,
                crate::opposite::FLOW_BACK_ALIVE.as_secs() / 60,
                crate::opposite::PERIODS_ALIVE
            );
            topics.remove(topic);
            continue;
        }
        if let Some(held) = leased(cursors, now) {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), topic = %topic, partition = held.tp.partition,
                "{why}: its partitions start again once their holder's lease ends (a later plan)"
            );
            topics.remove(topic);
            continue;
        }
        let lost: i64 = cursors.iter().map(|c| (c.source_end_offset - c.next_source_offset).max(0)).sum();
        tracing::error!(
            replicator = %ferry.spec.name, flow = %flow.id(), topic = %topic, partitions = cursors.len(), not_copied_before = lost,
            "TopicRecreated: {why}; Ferry forgets this topic's cursors and offset map and copies the source topic again from \
             its first record (at least {lost} records of the old source topic that were not copied yet are gone with it)"
        );
        restart(p, cursors);
    }
    Ok(())
}

/// Topics whose cursors were made for another target name (the flow's
/// `TopicNameConfiguration` changed, each mapped to that old name). Into a
/// target topic that still holds this flow's own copies of the topic (it
/// copied into that name before, and changed back since), copying
/// again from the first record would write them twice: refused, with the
/// fix. Otherwise the new name is copied into from the source's first
/// record, as for a new topic, and the old target topic keeps its copies.
async fn renamed_targets(
    ferry: &Ferry,
    flow: &FlowSpec,
    by_topic: &BTreeMap<&str, Vec<&CursorItem>>,
    renamed: BTreeMap<&str, String>,
    topics: &mut BTreeMap<String, TopicMeta>,
    target_meta: &BTreeMap<String, TopicMeta>,
    p: &mut FlowPlan,
) -> Result<(), FerryError> {
    let now = now_ms();
    let (_, target_cluster_id) = cluster_ids(ferry, flow).await?;
    let writers = if target_cluster_id.is_empty() {
        BTreeMap::new()
    } else {
        ferry.store.topic_writers(&target_cluster_id).await?
    };
    let key = ferry.flow_key(flow);
    for (topic, old) in renamed {
        let target_name = flow.target_topic(topic);
        let cursors = by_topic.get(topic).map(Vec::as_slice).unwrap_or_default();
        let holds_copies =
            target_meta.contains_key(&target_name) && writers.get(&target_name).is_some_and(|w| w.flow == key && w.source_topic == topic);
        if holds_copies {
            p.refused.insert(
                topic.to_owned(),
                format!(
                    "flow {}'s TopicNameConfiguration changed: its cursors copy source topic {topic} into {old} on cluster {}, \
                     and {target_name}, the name it gives now, already holds the flow's copies from before (it copied into that \
                     name before); copied again from the first record, they would be there twice (Ferry does not go on there \
                     from where it stopped). \
                     Fix: give TopicNameConfiguration back its value; or, if {target_name}'s copies are not needed, delete \
                     {target_name} on cluster {} (the flow then copies the topic into it again, from its first record)",
                    flow.id(),
                    flow.target.alias,
                    flow.target.alias
                ),
            );
            continue;
        }
        if let Some(held) = leased(cursors, now) {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), topic = %topic, partition = held.tp.partition,
                "the flow's TopicNameConfiguration changed ({old} is now {target_name}): its partitions start again once \
                 their holder's lease ends (a later plan)"
            );
            topics.remove(topic);
            continue;
        }
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), topic = %topic, partitions = cursors.len(), old = %old, new = %target_name,
            "TopicRenamed: the flow's TopicNameConfiguration changed: source topic {topic} was copied into {old}, and is copied \
             into {target_name} from its first record now, as a new topic; {old} keeps its copies (Ferry no longer writes it)"
        );
        restart(p, cursors);
    }
    Ok(())
}

/// A partition of `cursors` a holder's lease still covers, if any: the
/// topic starts again once it ends (a later plan).
fn leased<'a>(cursors: &[&'a CursorItem], now: i64) -> Option<&'a CursorItem> {
    cursors
        .iter()
        .copied()
        .find(|c| c.lease_owner.is_some() && c.lease_expires_ms > now)
}

/// `cursors`' partitions start again at the source's first record: their
/// state is forgotten.
fn restart(p: &mut FlowPlan, cursors: &[&CursorItem]) {
    for c in cursors {
        p.restart.push(c.tp.clone());
        p.cursors.remove(&c.tp);
    }
}

/// Why a topic's cursors no longer count in the topics they were made
/// for, from one metadata answer of each cluster, if they do not.
pub(super) fn replaced_why(
    flow: &FlowSpec,
    topic: &str,
    cursors: &[&CursorItem],
    source: Option<&TopicMeta>,
    target: Option<&TopicMeta>,
) -> Option<String> {
    let source_id = source.and_then(|m| m.topic_id.clone());
    let target_name = flow.target_topic(topic);
    let target_id = target.and_then(|m| m.topic_id.clone());
    let copied = cursors.iter().any(|c| c.records_replicated > 0 || c.target_topic_id.is_some());
    // An id a cursor recorded that the topic no longer has.
    let changed = |recorded: fn(&CursorItem) -> Option<&String>, now: &Option<String>| -> Option<String> {
        let now = now.as_ref()?;
        cursors.iter().find_map(|c| recorded(c).filter(|old| *old != now).cloned())
    };
    changed(|c| c.source_topic_id.as_ref(), &source_id)
        .map(|old| {
            format!(
                "source topic {topic} on cluster {} was deleted and created again (topic id {old} is now {})",
                flow.source.alias,
                source_id.as_deref().unwrap_or("?")
            )
        })
        .or_else(|| {
            (source.is_some() && target.is_none() && copied).then(|| {
                format!(
                    "target topic {target_name} on cluster {} was deleted after Ferry copied into it",
                    flow.target.alias
                )
            })
        })
        .or_else(|| {
            changed(|c| c.target_topic_id.as_ref(), &target_id).map(|old| {
                format!(
                    "target topic {target_name} on cluster {} was deleted and created again (topic id {old} is now {})",
                    flow.target.alias,
                    target_id.as_deref().unwrap_or("?")
                )
            })
        })
}

/// Source topics with cursors that the source no longer has (the broker
/// says so for each by name), whose target topics and Ferry state are to
/// be deleted (PropagateTopicDeletions); without that setting, none: both
/// are kept and logged.
pub(super) async fn deleted_topics(
    ferry: &Ferry,
    flow: &FlowSpec,
    selected: &BTreeMap<String, TopicMeta>,
    cursors: &HashMap<TopicPartition, i64>,
) -> Result<Vec<String>, FerryError> {
    let unseen: Vec<String> = cursors
        .keys()
        .map(|tp| tp.topic.clone())
        .filter(|t| !selected.contains_key(t))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if unseen.is_empty() {
        return Ok(Vec::new());
    }
    let source = ferry.cluster(&flow.source.id)?;
    let still_there = source.metadata(Some(&unseen)).await?;
    // Not a deletion to act on: an answer from a broker that lists no topic
    // at all (just back from a restart, see `KafkaCluster::knows_its_topics`).
    // The plan's own listing, `selected`, already shows the source knows
    // some when it found any.
    if still_there.is_empty() && selected.is_empty() && !source.knows_its_topics().await? {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias,
            "the source answered that it has none of the flow's topics, and lists no topic; not believed: nothing deleted \
             or forgotten this plan"
        );
        return Ok(Vec::new());
    }
    // Topics no longer selected but still on the source are left as they are.
    let gone: Vec<String> = unseen.into_iter().filter(|t| !still_there.contains_key(t)).collect();
    if !gone.is_empty() && !flow.propagate_topic_deletions {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topics = ?gone,
            "source topics were deleted; their target topics are kept (PropagateTopicDeletions is off)"
        );
        return Ok(Vec::new());
    }
    Ok(gone)
}

/// Of the target topics of deleted source topics `gone`, those that are
/// Ferry's copies, to delete: a cursor of the topic recorded the target
/// topic's id and the target still has it (a target answering without ids,
/// before Kafka 2.8: a cursor copied into it). A target topic the plan
/// refused, one made again by someone else since, or one Ferry never wrote
/// is left where it is, with a warning; the topic's state goes either way.
pub(super) async fn copies_to_delete(
    ferry: &Ferry,
    flow: &FlowSpec,
    gone: &[String],
    items: &[CursorItem],
) -> Result<Vec<String>, FerryError> {
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = gone.iter().map(|t| flow.target_topic(t)).collect();
    // A name past Kafka's limit (a refused PREFIXED one) names no topic.
    let legal: Vec<String> = names.iter().filter(|n| n.len() <= MAX_TOPIC_NAME).cloned().collect();
    let meta = ferry.cluster(&flow.target.id)?.metadata(Some(&legal)).await?;
    let mut delete = Vec::new();
    for (topic, target_name) in gone.iter().zip(names) {
        let Some(now) = meta.get(&target_name) else { continue };
        // A topic the flow no longer selects (excluded at a cut-over,
        // say) is no longer replicated: its target topic is the
        // applications' now, whatever Ferry once copied into it.
        if !flow.selects_topic(topic) {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topic = %target_name,
                "source topic {topic}, no longer selected by the flow, was deleted; its target topic is kept. Ferry forgets its state for the topic"
            );
            continue;
        }
        let cursors: Vec<&CursorItem> = items.iter().filter(|c| &c.tp.topic == topic).collect();
        let ours = !cursors.iter().any(|c| c.plan_refusal.is_some())
            && match &now.topic_id {
                Some(id) => cursors.iter().any(|c| c.target_topic_id.as_ref() == Some(id)),
                None => cursors.iter().any(|c| c.records_replicated > 0),
            };
        if ours {
            delete.push(target_name);
        } else {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topic = %target_name,
                "source topic {topic} was deleted; its target topic is kept: it is not Ferry's copy (refused by the plan, \
                 made again since, or never written by Ferry). Ferry forgets its state for the topic"
            );
        }
    }
    Ok(delete)
}
