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
/// another replicator between the clusters `flow` copied between (its
/// marker's; however long ago: a replicator that stopped planning still has
/// its copies there). None when `flow` copied nothing. The clusters are
/// read only for a marker written before Ferry recorded their ids.
pub(crate) async fn translating_through(ferry: &Ferry, flow: &FlowSpec, cursors: &[CursorItem]) -> Result<Vec<String>, FerryError> {
    if flow.naming != ferry_core::config::TopicNaming::Identical || cursors.iter().all(|c| c.records_replicated == 0) {
        return Ok(Vec::new());
    }
    let key = ferry.flow_key(flow);
    let mut found = Vec::new();
    let in_definition = ferry.spec.opposite(flow).map(|o| ferry.flow_key(o));
    if let Some(o) = ferry.spec.opposite(flow) {
        let syncs = o.groups.as_ref().is_some_and(|g| g.sync_offsets);
        if syncs && cursors.iter().any(|c| o.selects_topic(&c.target_topic)) {
            found.push(ferry.flow_key(o));
        }
    }
    let marker = ferry.store.flow_marker(&key).await?;
    let (source_id, target_id) = match (marker.source_cluster_id, marker.target_cluster_id) {
        (Some(s), Some(t)) => (s, t),
        _ => {
            let ids = async {
                let s = ferry.cluster(&flow.source.id)?.cluster_id().await?;
                let t = ferry.cluster(&flow.target.id)?.cluster_id().await?;
                Ok::<_, FerryError>((s, t))
            };
            ids.await.map_err(|e| {
                FerryError::Input(format!(
                    "flow {key}: its state predates the record of its clusters' ids, and they could not be read to find \
                     the flows copying back between them: {e}. Nothing was deleted. Fix: run this again when both clusters \
                     answer, or add --break-opposite-translation if no group will move back over this flow's copies"
                ))
            })?
        }
    };
    for other in ferry.store.identical_flows_between(&target_id, &source_id, 0).await? {
        if other != key && in_definition.as_ref() != Some(&other) && !found.contains(&other) {
            found.push(other);
        }
    }
    Ok(found)
}
