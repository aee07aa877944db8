//! Each selected topic's target topic, checked: to create, to grow, to
//! reconfigure, or refused. A refused topic is refused alone: the flow's
//! other topics are planned, and the refused one's partitions carry the
//! refusal on their cursors (`ferry status` shows it as their error, the
//! ReplicatorFailure metric counts them) until a plan finds the conflict
//! mended, or the topic no longer selected.

use super::*;

/// The topics whose target topic Ferry found there, not made by it, with
/// that topic's id: one whose partitions have no cursor yet (a cursor made
/// again this plan, `restart`, counts as none), or whose cursors recorded
/// its id as adopted. A target answering without ids adopts nothing (as
/// Ferry did before it recorded adoptions).
pub(super) fn adopted(
    flow: &FlowSpec,
    topics: &BTreeMap<String, TopicMeta>,
    target_meta: &BTreeMap<String, TopicMeta>,
    items: &[CursorItem],
    restart: &[TopicPartition],
) -> BTreeMap<String, String> {
    // Per topic: whether it has a live cursor, and the ids they adopted.
    let mut seen: HashMap<&str, Vec<Option<&str>>> = HashMap::new();
    for c in items.iter().filter(|c| !restart.contains(&c.tp)) {
        seen.entry(c.tp.topic.as_str()).or_default().push(c.adopted_target_id.as_deref());
    }
    topics
        .keys()
        .filter_map(|name| {
            let id = target_meta.get(&flow.target_topic(name))?.topic_id.clone()?;
            let adopted = seen.get(name.as_str()).is_none_or(|ids| ids.contains(&Some(id.as_str())));
            adopted.then(|| (name.clone(), id))
        })
        .collect()
}

/// Check every topic of `topics` against its target topic (`target_meta`,
/// absent: to create) with both sides' configurations; what to do goes
/// to `p`, and each topic refused to `p.refused` with what is wrong and
/// the fix.
pub(super) fn check(
    ferry: &Ferry,
    flow: &FlowSpec,
    topics: &BTreeMap<String, TopicMeta>,
    target_meta: &BTreeMap<String, TopicMeta>,
    source_configs: &HashMap<String, TopicConfig>,
    target_configs: &HashMap<String, TopicConfig>,
    p: &mut FlowPlan,
) {
    for (name, meta) in topics {
        let target_name = flow.target_topic(name);
        if target_name.len() > MAX_TOPIC_NAME {
            p.refused.insert(
                name.clone(),
                format!(
                    "source topic {name} would be copied to {target_name} on cluster {}, {} characters, past Kafka's {MAX_TOPIC_NAME}: \
                     exclude it (TopicsToExclude) or use IDENTICAL topic names",
                    flow.target.alias,
                    target_name.len()
                ),
            );
            continue;
        }
        let source_count = meta.partitions.len() as i32;
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
            p.record_size_risks
                .extend(dry_run::record_size_risk(name, &src_cfg.effective, &target_name, &configs));
            p.create.push(TopicToCreate {
                topic: target_name,
                partitions: source_count,
                replication_factor: flow.target_replication_factor,
                configs,
            });
            continue;
        };
        let target_count = t.partitions.len() as i32;
        if target_count > source_count {
            p.refused.insert(
                name.clone(),
                format!(
                    "target topic {target_name} on cluster {} has {target_count} partitions but source topic {name} on cluster {} has only \
                     {source_count}; Ferry writes source partition p to target partition p and never removes partitions: \
                     delete the target topic and let Ferry create it, or exclude the topic",
                    flow.target.alias, flow.source.alias
                ),
            );
            continue;
        }
        let tgt_cfg = target_configs.get(&target_name).cloned().unwrap_or_default();
        let policy = |c: &TopicConfig| c.effective.get("cleanup.policy").cloned().unwrap_or_else(|| "delete".into());
        // A topic Ferry did not make may hold others' records: its policy
        // is never changed under them (copying configurations follows a
        // source that changed its policy on Ferry's own copies only).
        let adopted = p.adopted.contains_key(name);
        if (!flow.copy_topic_configurations || adopted) && !topic_config::same_cleanup_policy(&policy(&src_cfg), &policy(&tgt_cfg)) {
            p.refused.insert(
                name.clone(),
                format!(
                    "target topic {target_name} on cluster {} has cleanup.policy={} but source topic {name} on cluster {} has \
                     cleanup.policy={}; replicating into it would compact away (or keep) records the source does not{}: \
                     set cleanup.policy={} on the target topic, or delete it and let Ferry create it",
                    flow.target.alias,
                    policy(&tgt_cfg),
                    flow.source.alias,
                    policy(&src_cfg),
                    if adopted {
                        ", and Ferry did not create it (changing its policy would compact or delete the records already in it)"
                    } else {
                        ""
                    },
                    policy(&src_cfg)
                ),
            );
            continue;
        }
        if target_count < source_count {
            p.grow.push(PartitionIncrease {
                topic: target_name.clone(),
                from: target_count,
                to: source_count,
            });
        }
        p.record_size_risks.extend(dry_run::record_size_risk(
            name,
            &src_cfg.effective,
            &target_name,
            &tgt_cfg.effective,
        ));
        if flow.copy_topic_configurations {
            let (mut set, mut delete) =
                topic_config::changes(&src_cfg.overrides, &src_cfg.effective, &tgt_cfg.effective, &tgt_cfg.overrides);
            if adopted {
                // Its settings stay its owner's, but for what removes no
                // record and keeps the copies true: the largest record size
                // raised, a timestamp setting equal to the source's removed.
                let keeps_records = |k: &String| k == topic_config::ONLY_RAISED || topic_config::UNDONE.contains(&k.as_str());
                let others: Vec<&String> = set.keys().chain(&delete).filter(|k| !keeps_records(k)).collect();
                if !others.is_empty() && !p.cursors.keys().any(|tp| &tp.topic == name) {
                    tracing::warn!(replicator = %ferry.spec.name, flow = %flow.id(), topic = %target_name, differing = ?others,
                        "the target topic was there before Ferry: its configuration is left as it is (CopyTopicConfigurations \
                         applies to topics Ferry creates); only max.message.bytes is raised where the source's is larger, and a \
                         timestamp setting equal to the source's removed");
                }
                set.retain(|k, _| keeps_records(k));
                delete.retain(|k| keeps_records(k));
            } else if !topic_config::same_cleanup_policy(&policy(&src_cfg), &policy(&tgt_cfg)) {
                // Also when the source's policy is its broker's default.
                tracing::warn!(replicator = %ferry.spec.name, flow = %flow.id(), topic = %target_name,
                    "the target topic's cleanup.policy, {}, is changed to the source's, {} (CopyTopicConfigurations)", policy(&tgt_cfg), policy(&src_cfg));
                set.insert("cleanup.policy".into(), policy(&src_cfg));
                delete.retain(|k| k != "cleanup.policy");
            }
            if !set.is_empty() || !delete.is_empty() {
                p.alter.push(ConfigChange {
                    topic: target_name,
                    set,
                    delete,
                });
            }
        }
    }
    // A refused topic's cursors do not learn its target topic's id: that
    // topic is not the copy's (yet), and deleting or replacing it, as the
    // fix may say, is then no history of Ferry's replaced.
    for (tp, _, target_id) in &mut p.record_ids {
        if p.refused.contains_key(&tp.topic) {
            *target_id = None;
        }
    }
}

/// Refuse the topics whose creation the target refused (`refused`, by
/// target name, from a validate-only CreateTopics), with the target's
/// words: not created, nor sized against.
pub(super) fn refuse_creations(
    flow: &FlowSpec,
    topics: &BTreeMap<String, TopicMeta>,
    refused: BTreeMap<String, KafkaError>,
    p: &mut FlowPlan,
) -> Result<(), FerryError> {
    // The flow's replication factor is the flow's, not one topic's: every
    // topic it creates would be refused, and the fix is in the configuration.
    if let Some(KafkaError::Broker { detail, .. }) = refused.values().find(|e| e.refuses_replication_factor()) {
        return Err(FerryError::Input(format!(
            "flow {}: target cluster {} refuses to create topics with replication factor {} (InvalidReplicationFactor: {detail}). Fix: set \
             TopicReplication.TargetReplicationFactor in replication-info.json to at most the target's brokers, or leave it out \
             (the target's default)",
            flow.id(),
            flow.target.alias,
            flow.target_replication_factor
                .map_or("(the target's default)".to_owned(), |r| r.to_string())
        )));
    }
    for (target_name, e) in refused {
        let Some(name) = topics.keys().find(|t| flow.target_topic(t) == target_name) else {
            continue;
        };
        let why = match &e {
            KafkaError::Broker { error, detail, .. } => format!("{error:?}: {detail}"),
            other => other.to_string(),
        };
        let fix = if e.is_authorization() {
            "grant Ferry's user CREATE on the topic on the target cluster (kafka-cluster:CreateTopic with MSK IAM), or create \
             it there yourself with the source topic's partitions, or exclude the topic; the next plan creates or adopts it"
        } else {
            "mend what it names on the target cluster (or exclude the topic); the next plan creates it"
        };
        p.refused.insert(
            name.clone(),
            format!(
                "target cluster {} refuses to create topic {target_name} as Ferry would create it: {why}. Fix: {fix}",
                flow.target.alias
            ),
        );
        p.create.retain(|t| t.topic != target_name);
        p.record_size_risks.retain(|r| r.target_topic != target_name);
    }
    Ok(())
}

/// The refusals to write on cursors after a plan decided `p`: each
/// partition of a refused topic whose cursor does not say so yet (its
/// cursor is made first when new), and each cursor that says so and is
/// no longer refused (mended, or no longer selected), to clear. A cursor
/// forgotten by this plan is made again without one.
pub(super) fn refusal_writes(p: &FlowPlan) -> Vec<(TopicPartition, Option<&str>)> {
    let fresh = |tp: &TopicPartition| p.restart.contains(tp) || p.forget.contains(tp);
    let recorded = |tp: &TopicPartition| p.recorded_refusals.get(tp).filter(|_| !fresh(tp)).map(String::as_str);
    let mut writes: Vec<(TopicPartition, Option<&str>)> = p
        .tps
        .iter()
        .filter_map(|tp| {
            let why = p.refused.get(&tp.topic)?.as_str();
            (recorded(tp) != Some(why)).then(|| (tp.clone(), Some(why)))
        })
        .collect();
    writes.extend(
        p.recorded_refusals
            .keys()
            .filter(|tp| !fresh(tp) && !p.refused.contains_key(&tp.topic))
            .map(|tp| (tp.clone(), None)),
    );
    writes.sort_by(|a, b| a.0.cmp(&b.0));
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(tps: &[(&str, i32)]) -> FlowPlan {
        FlowPlan {
            tps: tps.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect(),
            ..FlowPlan::default()
        }
    }

    #[test]
    fn a_refusal_is_written_once_and_cleared_when_mended_or_left() {
        let mut p = plan(&[("bad", 0), ("bad", 1), ("good", 0)]);
        p.refused.insert("bad".into(), "why".into());
        let set = |tp: (&str, i32)| (TopicPartition::new(tp.0, tp.1), Some("why"));
        assert_eq!(refusal_writes(&p), vec![set(("bad", 0)), set(("bad", 1))]);
        // Already recorded: nothing to write; another text: written again.
        p.recorded_refusals.insert(TopicPartition::new("bad", 0), "why".into());
        p.recorded_refusals.insert(TopicPartition::new("bad", 1), "old why".into());
        assert_eq!(refusal_writes(&p), vec![set(("bad", 1))]);
        // Mended: cleared; a topic no longer selected (not in tps): cleared.
        p.refused.clear();
        p.recorded_refusals.insert(TopicPartition::new("gone", 0), "why".into());
        let clear = |tp: (&str, i32)| (TopicPartition::new(tp.0, tp.1), None);
        assert_eq!(refusal_writes(&p), vec![clear(("bad", 0)), clear(("bad", 1)), clear(("gone", 0))]);
    }

    #[test]
    fn a_cursor_made_again_by_this_plan_gets_the_refusal_whatever_the_old_one_said() {
        let mut p = plan(&[("bad", 0)]);
        p.refused.insert("bad".into(), "why".into());
        p.recorded_refusals.insert(TopicPartition::new("bad", 0), "why".into());
        p.restart.push(TopicPartition::new("bad", 0));
        assert_eq!(refusal_writes(&p), vec![(TopicPartition::new("bad", 0), Some("why"))]);
    }
}
