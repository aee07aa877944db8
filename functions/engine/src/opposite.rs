//! The opposite flow: the one copying a flow's topics back from its target
//! to its source under the same names, in this replicator's definition or
//! in another replicator's on the same state tables (MSK Replicator's own
//! rollback topology is two replicators, one each way).
//!
//! Group translation reads its offset map (ENHANCED), and group sync reads
//! its syncs (a commit it carried over is the group's own). Every plan
//! registers its flows by the Kafka cluster ids they copy between, so a
//! flow finds its opposite whichever replicator holds it.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_adapters::state::{now_ms, RegisteredFlow};
use ferry_core::config::{FlowSpec, GroupSpec, GroupSyncMode, TopicNaming};

use crate::context::Ferry;
use crate::error::FerryError;

/// Register `flow` by the cluster ids it copies between (every plan).
pub async fn register(ferry: &Ferry, flow: &FlowSpec, source_cluster_id: &str, target_cluster_id: &str) -> Result<(), FerryError> {
    if source_cluster_id.is_empty() || target_cluster_id.is_empty() {
        return Ok(());
    }
    let identical = flow.naming == TopicNaming::Identical;
    let propagates = flow.propagate_topic_deletions;
    let every = ferry.settings.plans_every.map(|d| d.as_millis() as i64);
    Ok(ferry
        .store
        .register_flow_pair(
            &ferry.flow_key(flow),
            source_cluster_id,
            target_cluster_id,
            identical,
            propagates,
            every,
        )
        .await?)
}

/// How recently a flow back in another replicator must have planned for a
/// flow to leave a deletion on its target to it: one that stopped planning
/// (its replicator stopped, or the flow taken out of the definition after a
/// migration, as `ferry forget-flow` advises) propagates nothing, and the
/// topic is copied again as after any target topic deleted. At least
/// this, or [`PERIODS_ALIVE`] of the periods its replicator registered
/// (a slow `ScheduleRate`).
pub const FLOW_BACK_ALIVE: Duration = Duration::from_secs(15 * 60);
/// See [`FLOW_BACK_ALIVE`].
pub const PERIODS_ALIVE: i64 = 3;

/// Whether a flow back registered so planned recently enough, as of `now_ms`.
fn still_plans(f: &RegisteredFlow, now_ms: i64) -> bool {
    let alive = (FLOW_BACK_ALIVE.as_millis() as i64).max(f.plans_every_ms.unwrap_or(0).saturating_mul(PERIODS_ALIVE));
    f.registered_ms >= now_ms - alive
}

/// Of `topics`, deleted on `flow`'s target, those a flow copying them back
/// under the same names will delete on `flow`'s source, each with that
/// flow's key: it propagates topic deletions, has not handled the topic's
/// yet (it still has cursors for it: once it has, `flow` goes on as after
/// any target topic deleted), and is in this replicator or planned in
/// another on these tables within [`FLOW_BACK_ALIVE`]. Such a deletion is
/// that flow's to propagate, not a copy for `flow` to make again.
pub async fn propagates_deletions_of(ferry: &Ferry, flow: &FlowSpec, topics: &[&str]) -> Result<BTreeMap<String, String>, FerryError> {
    let mut left = BTreeMap::new();
    if flow.naming != TopicNaming::Identical || topics.is_empty() {
        return Ok(left);
    }
    // In this replicator, only the topics it selects (it forgets the
    // others' state without deleting them).
    let back = ferry.spec.opposite(flow);
    let topics: Vec<&str> = match back {
        Some(back) => topics.iter().copied().filter(|t| back.selects_topic(t)).collect(),
        None => topics.to_vec(),
    };
    let keys = match back {
        Some(back) if back.propagate_topic_deletions => vec![ferry.flow_key(back)],
        Some(_) => return Ok(left),
        None => {
            let source_id = ferry.cluster(&flow.source.id)?.cluster_id().await?;
            let target_id = ferry.cluster(&flow.target.id)?.cluster_id().await?;
            let now = now_ms();
            let registered = ferry.store.identical_flows_propagating_deletions(&target_id, &source_id).await?;
            registered.into_iter().filter(|f| still_plans(f, now)).map(|f| f.flow).collect()
        }
    };
    // Each flow back's cursors read once for all the topics.
    for key in keys {
        let cursors = ferry.store.list_cursors(&key).await?;
        for topic in &topics {
            if cursors.iter().any(|c| c.tp.topic == *topic) {
                left.entry(topic.to_string()).or_insert_with(|| key.clone());
            }
        }
    }
    Ok(left)
}

/// The state key of the flow copying `flow`'s topics back under the same
/// names, if there is one: in this replicator, else registered by another.
/// More than one registered by other replicators, however long ago, is
/// an error that names them: Ferry cannot tell which holds the group's
/// history.
pub async fn flow_key(ferry: &Ferry, flow: &FlowSpec) -> Result<Option<String>, FerryError> {
    if flow.naming != TopicNaming::Identical {
        return Ok(None);
    }
    if let Some(o) = ferry.spec.opposite(flow) {
        return Ok(Some(ferry.flow_key(o)));
    }
    let source_id = ferry.cluster(&flow.source.id)?.cluster_id().await?;
    let target_id = ferry.cluster(&flow.target.id)?.cluster_id().await?;
    // However long ago it was registered: a replicator that stopped
    // planning (a forward flow retired after the migration) still has its
    // copies on this flow's source, and its state still places them.
    let mut found = ferry.store.identical_flows_between(&target_id, &source_id, 0).await?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(FerryError::Input(format!(
            "flow {} has {} opposite flows on these state tables ({}): each copies {} back to {} under the same names, and \
             Ferry cannot tell which one holds a group's history (it translates through one opposite flow per pair of \
             clusters, however long ago that flow last ran: its copies are still there). Fix: keep one replicator per \
             direction between two clusters (put a later wave's topics in the same replicator); a leftover whose copies no \
             group will move back over goes with `ferry forget-flow --flow <flow> --yes --break-opposite-translation` under \
             its own --name",
            flow.id(),
            found.len(),
            found.join(", "),
            flow.target.alias,
            flow.source.alias
        ))),
    }
}

/// The opposite flow whose offset map this flow's group sync translates
/// through: ENHANCED mode, or LEGACY left as the default (the opposite
/// flow makes it ENHANCED, as within one replicator). A LEGACY named in
/// the definition is refused where an opposite flow exists: its own map
/// cannot place the records the opposite flow wrote, and it would skip
/// them. The refusal stops this flow's group sync (a failure, with this
/// message), not its replication.
pub async fn translates_through(ferry: &Ferry, flow: &FlowSpec, g: &GroupSpec) -> Result<Option<String>, FerryError> {
    if !g.sync_offsets {
        return Ok(None);
    }
    let Some(key) = flow_key(ferry, flow).await? else {
        return Ok(None);
    };
    if g.mode == GroupSyncMode::Legacy && g.mode_explicit {
        return Err(FerryError::Input(format!(
            "flow {} syncs group offsets in LEGACY mode, but flow {key} on these state tables copies its topics back under the \
             same names: LEGACY cannot translate a group's offsets exactly then (this flow's own offset map does not know the \
             records the opposite flow wrote). Fix: set ConsumerGroupOffsetSyncMode to ENHANCED (or leave it out) for both \
             directions",
            flow.id()
        )));
    }
    Ok(Some(key))
}
