//! One writer per target topic. A flow takes each target topic it copies
//! into before it writes anything there (`StateStore::take_topic`); a topic
//! another flow on these tables has taken, in this replicator or another,
//! is refused with that flow's name: two replicators copying one topic the
//! same way each keep their own cursors, and would copy every record twice.
//!
//! A flow hands a topic over when its definition no longer copies into it
//! (once no lease on the topic is live and every partition's writes are
//! settled: its last batches have ended, and none left copies past its
//! checkpoint) or when `ferry forget-flow` forgets it: the topic is
//! released with where each of its cursors stopped, and the next flow to
//! take it moves its own cursors there (they have written nothing: it was
//! refused the topic; or it handed the topic over itself before) and
//! records on each where it took over (`CursorItem::handed_at`). A topic
//! whose source was deleted is let go without positions.

use std::collections::{BTreeMap, BTreeSet};

use ferry_adapters::kafka::TopicMeta;
use ferry_adapters::state::{handover_partitions, stopped_at, CursorItem, Handover, StateError, Taken, TopicWriter};
use ferry_core::config::FlowSpec;
use ferry_core::domain::TopicPartition;

use super::{cluster_ids, in_flight, FlowPlan};
use crate::context::Ferry;
use crate::error::FerryError;

/// What a plan does about the flow's target topics' writers.
#[derive(Default)]
pub(super) struct Writers {
    /// The target cluster's id (none: a cluster that names none, whose
    /// topics are not taken).
    target_cluster_id: String,
    /// The source cluster's id.
    source_cluster_id: String,
    /// The source topics whose target topics the flow takes now, each
    /// with the writer item (and the handover it takes, if released by
    /// another flow).
    take: Vec<(String, TopicWriter)>,
    /// Source topics taken before from a flow that released them, whose
    /// cursors this plan moves where that flow stopped.
    handed: Vec<(String, Handover)>,
    /// Target topics the flow has and lets go, with the partitions of the
    /// source topic to hand over (none: the source topic is gone).
    let_go: Vec<(String, Option<LetGo>)>,
    /// The flow's cursors marked handed over of topics it copies again.
    unmark: Vec<TopicPartition>,
}

/// A topic to hand over: its writer item, and the flow's cursors of it.
struct LetGo {
    writer: TopicWriter,
    cursors: Vec<CursorItem>,
}

/// Those of `topics` whose target topic another flow released where it
/// stopped copying the same source topic: this flow goes on from there (a
/// flow that detects no new topics copies them, though they were not there
/// when it started).
pub(super) async fn handed_here(
    ferry: &Ferry,
    flow: &FlowSpec,
    topics: &BTreeMap<String, TopicMeta>,
) -> Result<BTreeSet<String>, FerryError> {
    let (source_cluster_id, target_cluster_id) = cluster_ids(ferry, flow).await?;
    if target_cluster_id.is_empty() {
        return Ok(BTreeSet::new());
    }
    let held = ferry.store.topic_writers(&target_cluster_id).await?;
    Ok(topics
        .keys()
        .filter(|t| {
            held.get(&flow.target_topic(t))
                .and_then(|h| h.released_for(&source_cluster_id, t))
                .is_some_and(|r| !r.positions.is_empty())
        })
        .cloned()
        .collect())
}

/// Decide, reading only: the selected `topics` whose target topic another
/// flow writes are refused in `p` (nothing created, grown or configured
/// for them); those nobody has, or that a flow released, are to take; the
/// flow's own whose source topic is `gone`, or that its definition no
/// longer copies into, are to let go. `items`: the flow's cursors.
pub(super) async fn decide(
    ferry: &Ferry,
    flow: &FlowSpec,
    topics: &BTreeMap<String, TopicMeta>,
    gone: &[String],
    items: &[CursorItem],
    p: &mut FlowPlan,
) -> Result<(), FerryError> {
    let (source_cluster_id, target_cluster_id) = cluster_ids(ferry, flow).await?;
    if target_cluster_id.is_empty() {
        return Ok(());
    }
    let key = ferry.flow_key(flow);
    let held = ferry.store.topic_writers(&target_cluster_id).await?;
    let mut w = Writers {
        target_cluster_id,
        source_cluster_id: source_cluster_id.clone(),
        ..Writers::default()
    };
    for topic in topics.keys() {
        let me = TopicWriter {
            flow: key.clone(),
            source_topic: topic.clone(),
            source_cluster_id: source_cluster_id.clone(),
            released: None,
            handed: None,
        };
        match held.get(&flow.target_topic(topic)) {
            None => w.take.push((topic.clone(), me)),
            // This flow's copies of another source topic (its names
            // changed, say): two topics' records would share one.
            Some(h) if h.flow == key && h.source_topic != *topic && h.released.is_none() => {
                let target = flow.target_topic(topic);
                p.refused.insert(
                    topic.clone(),
                    format!(
                        "target topic {target} on cluster {} holds this flow's copies of source topic {}: copying {topic} \
                         into it too would mix two topics' records in one. Fix: exclude one of the two (TopicsToExclude), \
                         or give them names apart (TopicNameConfiguration)",
                        flow.target.alias, h.source_topic
                    ),
                );
            }
            Some(h) if h.flow == key => match (&h.released, &h.handed) {
                // Refused (its name changed back onto its old copies, say):
                // left released, where it stopped, until copied again.
                (Some(_), _) if p.refused.contains_key(topic) => {}
                (Some(_), _) => w.take.push((topic.clone(), me)),
                (None, Some(handed)) => w.handed.push((topic.clone(), handed.clone())),
                (None, None) => {}
            },
            // Released by a flow copying the same source topic from the
            // same cluster: its positions are this flow's to go on from.
            Some(h) if h.released.is_some() => {
                let handed = h.released_for(&source_cluster_id, topic).cloned().unwrap_or_else(|| Handover {
                    by: h.flow.clone(),
                    ..Handover::default()
                });
                w.take.push((
                    topic.clone(),
                    TopicWriter {
                        handed: Some(handed),
                        ..me
                    },
                ));
            }
            Some(h) => refuse(ferry, flow, &source_cluster_id, p, topic, h),
        }
    }
    let copied: BTreeSet<String> = topics.keys().map(|t| flow.target_topic(t)).collect();
    for (target, h) in held {
        if h.flow != key || h.released.is_some() || copied.contains(&target) {
            continue;
        }
        if gone.contains(&h.source_topic) {
            w.let_go.push((target, None));
            continue;
        }
        let dropped = !flow.selects_topic(&h.source_topic) || flow.target_topic(&h.source_topic) != target;
        if dropped {
            let cursors = items.iter().filter(|c| c.tp.topic == h.source_topic).cloned().collect();
            w.let_go.push((target, Some(LetGo { writer: h, cursors })));
        }
    }
    // Cursors of a topic this flow copies again, marked when it was to be
    // handed over.
    w.unmark = items
        .iter()
        .filter(|c| c.handed_over_ms.is_some() && topics.contains_key(&c.tp.topic))
        .map(|c| c.tp.clone())
        .collect();
    p.writers = w;
    Ok(())
}

/// Take the topics `decide` found free, move the cursors of the topics
/// handed over, and let go those it found to let go, before the plan
/// writes anything: a topic another flow took meanwhile (two plans at
/// once) is refused in `p` as if it had been taken before. Returns the
/// target topics whose handover is done once the plan's cursors are made
/// (see [`finish`]).
pub(super) async fn settle(ferry: &Ferry, flow: &FlowSpec, p: &mut FlowPlan) -> Result<Vec<(String, Handover)>, FerryError> {
    let mut w = std::mem::take(&mut p.writers);
    let store = &ferry.store;
    let cluster = w.target_cluster_id.as_str();
    let taken = in_flight(w.take.iter().map(|(topic, me)| async move {
        let taken = store.take_topic(cluster, &flow.target_topic(topic), me).await?;
        Ok::<_, StateError>((topic, me, taken))
    }))
    .await?;
    for (topic, me, taken) in taken {
        match (taken, &me.handed) {
            (Taken::Held(h), _) => refuse(ferry, flow, &w.source_cluster_id, p, topic, &h),
            (Taken::Ours, Some(handed)) => w.handed.push((topic.clone(), handed.clone())),
            (Taken::Ours, None) => {}
        }
    }
    let mut done = Vec::new();
    for (topic, handed) in &w.handed {
        // One that does not fit is done too, with no position to record.
        let fits = hand_over(ferry, flow, p, topic, handed).await?;
        let positions = if fits { handed.positions.clone() } else { BTreeMap::new() };
        done.push((
            topic.clone(),
            Handover {
                positions,
                ..handed.clone()
            },
        ));
    }
    let key = ferry.flow_key(flow);
    let refused = &p.refused;
    in_flight(
        w.unmark
            .iter()
            .filter(|tp| !refused.contains_key(&tp.topic))
            .map(|tp| store.unmark_handed_over(&key, tp)),
    )
    .await?;
    for (target, go) in &w.let_go {
        let stopped = match go {
            None => None,
            Some(go) => match handed_over_at(ferry, &key, go).await? {
                Some(stopped) => Some(stopped),
                None => {
                    tracing::warn!(
                        replicator = %ferry.spec.name, flow = %flow.id(), topic = %go.writer.source_topic,
                        "the flow no longer copies this topic, and hands it over once no batch of it holds a lease there and each \
                         partition's last holder recorded its writes settled (one that stopped without checkpointing all it wrote \
                         waits for a holder of this flow to reconcile it: put the topic back in the definition for one run)"
                    );
                    continue;
                }
            },
        };
        store.release_topic(cluster, target, &key, stopped.as_ref()).await?;
        tracing::info!(flow = %flow.id(), topic = %target, "let go of a target topic this flow no longer copies into: another flow may take it over where this one stopped");
    }
    Ok(done)
}

/// Mark each of `go`'s cursors handed over (no lease is taken on them
/// from then on) and return where the flow stopped (see `stopped_at`:
/// a flow that took the topic over itself, cut short, hands on what it
/// was given); `None` while one is leased or its writes are not settled.
async fn handed_over_at(ferry: &Ferry, key: &str, go: &LetGo) -> Result<Option<Handover>, FerryError> {
    let at = in_flight(go.cursors.iter().map(|c| async move {
        let at = ferry.store.mark_handed_over(key, &c.tp).await?;
        Ok::<_, StateError>((c, at))
    }))
    .await?;
    let mut marked = Vec::with_capacity(at.len());
    for (c, at) in at {
        let Some(at) = at else { return Ok(None) };
        marked.push(CursorItem {
            next_source_offset: at,
            ..c.clone()
        });
    }
    Ok(Some(stopped_at(key, &go.writer, &marked)))
}

/// Start `topic`'s partitions where the flow that handed it over stopped:
/// its cursors moved (they wrote nothing), its new partitions started
/// there. A handover that does not fit (the source topic was created
/// again since, or the other flow copied another topic into it) starts
/// none: the partitions go on as planned, and a warning says so.
async fn hand_over(ferry: &Ferry, flow: &FlowSpec, p: &mut FlowPlan, topic: &str, handed: &Handover) -> Result<bool, FerryError> {
    let key = ferry.flow_key(flow);
    let id_now = ferry.cluster(&flow.source.id)?.known_topic_id(topic);
    let same_topic = match (&handed.source_topic_id, &id_now) {
        (Some(then), Some(now)) => then == now,
        _ => true,
    };
    // The target topic gone since (this plan creates it), or deleted and
    // created again (another id): the copies below where that flow
    // stopped went with it (breaker helper-94: the taker went on there,
    // and the records below were never on the target again).
    let target_topic = flow.target_topic(topic);
    let target_id_now = ferry.cluster(&flow.target.id)?.known_topic_id(&target_topic);
    let target_gone = p.create.iter().any(|c| c.topic == target_topic)
        || matches!((&handed.target_topic_id, &target_id_now), (Some(then), Some(now)) if then != now);
    if handed.positions.is_empty() || !same_topic || target_gone {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), topic, from = %handed.by, target_gone,
            "took over the target topic from a flow that stopped copying it, but not where it stopped (the source topic \
             was created again since, the target topic is gone, or that flow left no positions): the partitions go on as \
             planned"
        );
        return Ok(false);
    }
    // A backfill of the topic in the plan that takes it over would copy
    // that flow's records again.
    if p.starts.iter().any(|s| s.tp.topic == topic && s.backfill) {
        return Err(FerryError::Input(format!(
            "flow {}: this plan takes {topic} over from flow {} where it stopped, and a backfill of {topic} would copy that \
             flow's records, already on the target, again; nothing was moved. Fix: run the backfill without {topic}",
            flow.id(),
            handed.by
        )));
    }
    // Partitions that flow had no cursor for (added since): nobody copied
    // them, from their first record.
    for s in p.starts.iter_mut().filter(|s| s.tp.topic == topic && !s.backfill) {
        if !handed.positions.contains_key(&s.tp.partition) {
            s.from = p.log_starts.get(&s.tp).copied().unwrap_or(0);
        }
    }
    for (tp, at) in handover_partitions(handed, topic) {
        if let Some(s) = p.starts.iter_mut().find(|s| s.tp == tp && !s.backfill) {
            s.from = at;
            continue;
        }
        let Some(cursor) = p.cursors.get(&tp).copied() else { continue };
        if cursor == at {
            continue;
        }
        if ferry.store.hand_cursor_over(&key, &tp, at).await? {
            p.cursors.insert(tp, at);
        } else if cursor < at {
            // (Past it: this flow's own copying since an earlier plan
            // took the topic over.)
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), topic, partition = tp.partition, from = %handed.by, cursor, stopped = at,
                "took over the target topic from a flow that stopped copying it at this offset, but this flow's own cursor \
                 has written records: it goes on from its own cursor"
            );
        }
    }
    tracing::info!(flow = %flow.id(), topic, from = %handed.by, "took over the target topic where that flow stopped copying it");
    Ok(true)
}

/// After the plan made its cursors: each partition of the handovers in
/// `done` records where it was taken over (group syncs and backfills do
/// not go below it), and the handovers are complete.
pub(super) async fn finish(ferry: &Ferry, flow: &FlowSpec, done: &[(String, Handover)]) -> Result<(), FerryError> {
    if done.is_empty() {
        return Ok(());
    }
    let (_, cluster) = cluster_ids(ferry, flow).await?;
    let cluster = cluster.as_str();
    let key = ferry.flow_key(flow);
    let key = key.as_str();
    let partitions: Vec<(TopicPartition, i64, &str)> = done
        .iter()
        .flat_map(|(topic, h)| {
            handover_partitions(h, topic)
                .into_iter()
                .map(move |(tp, at)| (tp, at, h.by.as_str()))
        })
        .collect();
    in_flight(partitions.iter().map(|(tp, at, by)| ferry.store.set_handed_at(key, tp, *at, by))).await?;
    in_flight(done.iter().map(|(topic, _)| async move {
        let target = flow.target_topic(topic);
        ferry.store.handed_over(cluster, &target, key).await
    }))
    .await?;
    Ok(())
}

/// Refuse `topic` in `p`: flow `holder` writes its target topic.
fn refuse(ferry: &Ferry, flow: &FlowSpec, source_cluster_id: &str, p: &mut FlowPlan, topic: &str, holder: &TopicWriter) {
    let target = flow.target_topic(topic);
    let (name, flow_id) = holder.flow.split_once('/').unwrap_or((holder.flow.as_str(), ""));
    let alias = &flow.target.alias;
    let why = if name == ferry.spec.name {
        format!(
            "target topic {target} on cluster {alias} is written by flow {flow_id} of this replicator, which is not in its \
             definition now (cluster aliases renamed, or the flow removed): two flows copying into one topic would each copy \
             every record, so this flow copies nothing into it. Fix: give the clusters their former aliases; or forget that \
             flow with the definition that has it (`ferry forget-flow --flow {flow_id} --yes` with its --kafka-clusters and \
             --replication-info): this flow then goes on from where that one stopped"
        )
    } else if !holder.source_cluster_id.is_empty() && holder.source_cluster_id != source_cluster_id {
        format!(
            "target topic {target} on cluster {alias} is written by flow {holder} from another source cluster (its topic {from}): \
             Ferry copies into a topic from one flow (two would interleave records neither could place). Fix: copy one of \
             them under other names (TopicNameConfiguration PREFIXED), or take {topic} out of this flow's TopicsToReplicate",
            holder = holder.flow,
            from = holder.source_topic,
        )
    } else {
        format!(
            "target topic {target} on cluster {alias} is written by flow {holder} (from its source topic {from}), another flow \
             on these state tables: two flows copying into one topic would each copy every record, so this flow copies nothing \
             into it. Fix: copy each topic in one replicator and take {topic} out of this flow's TopicsToReplicate; or, if this \
             replicator replaces that one, run it under that one's name (--name {name}: its cursors go on where they stopped); \
             or hand the topic over (take it out of that flow's definition and let it plan, or `ferry forget-flow --flow \
             {flow_id} --yes` with that replicator's --name and definition): this flow then goes on from where that one stopped",
            holder = holder.flow,
            from = holder.source_topic,
        )
    };
    p.create.retain(|t| t.topic != target);
    p.grow.retain(|g| g.topic != target);
    p.alter.retain(|c| c.topic != target);
    p.record_size_risks.retain(|r| r.target_topic != target);
    p.adopted.remove(topic);
    p.refused.insert(topic.to_owned(), why);
}
