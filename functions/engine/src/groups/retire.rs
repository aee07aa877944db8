//! What retiring a flow would take from its opposite flow: the opposite
//! flow translates a group's commits among this flow's copies through this
//! flow's offset map and its records of its own commits (ENHANCED, see
//! `translation.rs` and `is_opposite_write`). Without them, the copies
//! this flow wrote on its target look like records the group never read,
//! and a translation (a rollback) passes over them.

use super::*;

/// The opposite flows (state keys) that may translate group commits
/// through `flow`'s state: the one in this replicator's definition when it
/// syncs group offsets of a topic `flow` copies, and any registered by
/// another replicator between the same two clusters (however long ago: a
/// replicator that stopped planning still has its copies on the cluster).
/// None when `flow` copied nothing, or when either cluster is no longer
/// the one `flow` copied between (replaced: its map means nothing there).
/// Reads both clusters' ids.
pub(crate) async fn translating_through(ferry: &Ferry, flow: &FlowSpec, cursors: &[CursorItem]) -> Result<Vec<String>, FerryError> {
    if flow.naming != ferry_core::config::TopicNaming::Identical || cursors.iter().all(|c| c.records_replicated == 0) {
        return Ok(Vec::new());
    }
    let key = ferry.flow_key(flow);
    let marker = ferry.store.flow_marker(&key).await?;
    let source_id = ferry.cluster(&flow.source.id)?.cluster_id().await?;
    let target_id = ferry.cluster(&flow.target.id)?.cluster_id().await?;
    let same = |recorded: &Option<String>, now: &str| recorded.as_deref().is_none_or(|r| r == now);
    if !same(&marker.source_cluster_id, &source_id) || !same(&marker.target_cluster_id, &target_id) {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    if let Some(o) = ferry.spec.opposite(flow) {
        let syncs = o.groups.as_ref().is_some_and(|g| g.sync_offsets);
        if syncs && cursors.iter().any(|c| o.selects_topic(&c.target_topic)) {
            found.push(ferry.flow_key(o));
        }
    }
    for other in ferry.store.identical_flows_between(&target_id, &source_id, 0).await? {
        let in_definition = ferry.spec.opposite(flow).is_some_and(|o| ferry.flow_key(o) == other);
        if other != key && !in_definition && !found.contains(&other) {
            found.push(other);
        }
    }
    Ok(found)
}
