//! One writer per target topic. A flow takes each target topic it copies
//! into before it writes anything there (`StateStore::take_topic`); a topic
//! another flow on these tables has taken, in this replicator or another,
//! is refused with that flow's name: two replicators copying one topic the
//! same way each keep their own cursors, and would copy every record twice.
//! A flow lets a topic go when its definition no longer copies into it or
//! its source topic was deleted, and `ferry forget-flow` lets go all of a
//! flow's.

use std::collections::{BTreeMap, BTreeSet};

use ferry_adapters::kafka::{KafkaError, TopicMeta};
use ferry_adapters::state::TopicWriter;
use ferry_core::config::FlowSpec;

use super::{in_flight, FlowPlan};
use crate::context::Ferry;
use crate::error::FerryError;

/// What a plan does about the flow's target topics' writers.
#[derive(Default)]
pub(super) struct Writers {
    /// The target cluster's id (none: a cluster that names none, whose
    /// topics are not taken).
    target_cluster_id: String,
    /// The source topics whose target topics the flow takes now, each
    /// with the writer item.
    take: Vec<(String, TopicWriter)>,
    /// Target topics the flow has and lets go.
    let_go: Vec<String>,
}

/// The flow's writer as the items name it.
fn writer(ferry: &Ferry, flow: &FlowSpec, source_topic: &str, source_cluster_id: &str) -> TopicWriter {
    TopicWriter {
        flow: ferry.flow_key(flow),
        source_topic: source_topic.to_owned(),
        source_cluster_id: source_cluster_id.to_owned(),
    }
}

/// A cluster's id, "" for one that names none.
async fn cluster_id(ferry: &Ferry, id: &str) -> Result<String, FerryError> {
    match ferry.cluster(id)?.cluster_id().await {
        Err(KafkaError::Unsupported { .. }) => Ok(String::new()),
        other => Ok(other?),
    }
}

/// Decide, reading only: the selected `topics` whose target topic another
/// flow writes are refused in `p` (nothing created, grown or configured
/// for them); those nobody has are to take; the flow's own whose source
/// topic is `gone`, or that its definition no longer copies into, are to
/// let go.
pub(super) async fn decide(
    ferry: &Ferry,
    flow: &FlowSpec,
    topics: &BTreeMap<String, TopicMeta>,
    gone: &[String],
    p: &mut FlowPlan,
) -> Result<(), FerryError> {
    let target_cluster_id = cluster_id(ferry, &flow.target.id).await?;
    if target_cluster_id.is_empty() {
        return Ok(());
    }
    let source_cluster_id = cluster_id(ferry, &flow.source.id).await?;
    let key = ferry.flow_key(flow);
    let held = ferry.store.topic_writers(&target_cluster_id).await?;
    let mut w = Writers {
        target_cluster_id,
        ..Writers::default()
    };
    for topic in topics.keys() {
        match held.get(&flow.target_topic(topic)) {
            Some(h) if h.flow == key => {}
            Some(h) => refuse(flow, p, topic, h),
            None => w.take.push((topic.clone(), writer(ferry, flow, topic, &source_cluster_id))),
        }
    }
    let copied: BTreeSet<String> = topics.keys().map(|t| flow.target_topic(t)).collect();
    w.let_go = held
        .into_iter()
        .filter(|(target, h)| h.flow == key && !copied.contains(target))
        .filter(|(target, h)| {
            gone.contains(&h.source_topic) || !flow.selects_topic(&h.source_topic) || flow.target_topic(&h.source_topic) != *target
        })
        .map(|(target, _)| target)
        .collect();
    p.writers = w;
    Ok(())
}

/// Take the topics `decide` found free, and let go those it found to let
/// go, before the plan writes anything: a topic another flow took
/// meanwhile (two plans at once) is refused in `p` as if it had been
/// taken before.
pub(super) async fn settle(ferry: &Ferry, flow: &FlowSpec, p: &mut FlowPlan) -> Result<(), FerryError> {
    let w = std::mem::take(&mut p.writers);
    let store = &ferry.store;
    let cluster = w.target_cluster_id.as_str();
    let taken = in_flight(w.take.iter().map(|(topic, me)| async move {
        let holder = store.take_topic(cluster, &flow.target_topic(topic), me).await?;
        Ok::<_, ferry_adapters::state::StateError>((topic, holder))
    }))
    .await?;
    for (topic, holder) in taken {
        if let Some(h) = holder {
            refuse(flow, p, topic, &h);
        }
    }
    let key = ferry.flow_key(flow);
    in_flight(w.let_go.iter().map(|target| store.release_topic(cluster, target, &key))).await?;
    if !w.let_go.is_empty() {
        tracing::info!(flow = %flow.id(), topics = ?w.let_go, "let go of target topics this flow no longer copies into: another flow may write them");
    }
    Ok(())
}

/// Refuse `topic` in `p`: flow `holder` writes its target topic.
fn refuse(flow: &FlowSpec, p: &mut FlowPlan, topic: &str, holder: &TopicWriter) {
    let target = flow.target_topic(topic);
    let name = holder.flow.split_once('/').map_or(holder.flow.as_str(), |(name, _)| name);
    let flow_id = holder.flow.split_once('/').map_or("", |(_, id)| id);
    let why = format!(
        "target topic {target} on cluster {alias} is written by flow {holder} (from its source topic {from}), another flow on \
         these state tables: two flows copying into one topic would each copy every record, so this flow copies nothing into \
         it. Fix: copy each topic in one replicator and take {topic} out of this flow's TopicsToReplicate; or, if this \
         replicator replaces that one, run it under that one's name (--name {name}: its cursors go on where they stopped); \
         or let that flow go (take the topic out of its definition and let it plan, or `ferry forget-flow --flow {flow_id} \
         --yes` under --name {name}), and this flow copies the topic from its own cursor, records that flow copied included",
        alias = flow.target.alias,
        holder = holder.flow,
        from = holder.source_topic,
    );
    p.create.retain(|t| t.topic != target);
    p.grow.retain(|g| g.topic != target);
    p.alter.retain(|c| c.topic != target);
    p.record_size_risks.retain(|r| r.target_topic != target);
    p.adopted.remove(topic);
    p.refused.insert(topic.to_owned(), why);
}
