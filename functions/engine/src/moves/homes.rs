//! The record of moves: each GO stored under the two clusters ids, and
//! where each group lives now, whichever replicator moved it.

use super::*;

pub(super) async fn record(
    ferry: &Ferry,
    src: &KafkaCluster,
    dst: &KafkaCluster,
    flow: &FlowSpec,
    report: &MoveReport,
) -> Result<(), FerryError> {
    let (from_id, to_id) = (src.cluster_id().await?, dst.cluster_id().await?);
    let moved_ms = now_ms();
    for g in &report.groups {
        let offsets = report
            .resume
            .iter()
            .filter(|r| &r.group == g)
            .map(|r| format!("{}/{}={}", r.topic, r.partition, r.offset))
            .collect();
        ferry
            .store
            .record_move(&MoveItem {
                group: g.clone(),
                moved_ms,
                from_cluster_id: from_id.clone(),
                to_cluster_id: to_id.clone(),
                from_alias: flow.source.alias.clone(),
                to_alias: flow.target.alias.clone(),
                replicator: ferry.spec.name.clone(),
                flow: flow.id(),
                offsets,
            })
            .await?;
    }
    Ok(())
}

/// Where one group lives now, from the moves recorded between the clusters
/// of this replicator's flows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupHome {
    /// The group.
    pub group: String,
    /// The cluster (alias) its last move took it to.
    pub lives_on: String,
    /// The one it came from.
    pub moved_from: String,
    /// When (ms since the epoch).
    pub since_ms: i64,
    /// Moves recorded, all time, each to the other cluster than the one
    /// before (a GO toward where it already lives is not counted).
    pub moves: usize,
    /// Its resume offsets then, "topic/partition=offset".
    pub offsets: Vec<String>,
}

/// The last recorded move of every group between the clusters of this
/// replicator's flows.
pub async fn homes(ferry: &Ferry) -> Result<Vec<GroupHome>, FerryError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for f in &ferry.spec.flows {
        let a = ferry.cluster(&f.source.id)?.cluster_id().await?;
        let b = ferry.cluster(&f.target.id)?.cluster_id().await?;
        let pair = if a <= b { (a, b) } else { (b, a) };
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    let mut moves = Vec::new();
    for (a, b) in pairs {
        moves.extend(ferry.store.moves_between(&a, &b).await?);
    }
    moves.sort_by(|x, y| (&x.group, x.moved_ms).cmp(&(&y.group, y.moved_ms)));
    let mut homes: BTreeMap<String, GroupHome> = BTreeMap::new();
    // Where each group lives, by cluster id: each replicator names the
    // clusters in its own definition.
    let mut lives_on: HashMap<String, String> = HashMap::new();
    for m in moves {
        // A GO toward the cluster the group already lives on (a move run
        // again to check, or two at once) is recorded, but is no move.
        if lives_on.get(&m.group) == Some(&m.to_cluster_id) {
            continue;
        }
        lives_on.insert(m.group.clone(), m.to_cluster_id.clone());
        let home = homes.entry(m.group.clone()).or_insert_with(|| GroupHome {
            group: m.group.clone(),
            lives_on: String::new(),
            moved_from: String::new(),
            since_ms: 0,
            moves: 0,
            offsets: Vec::new(),
        });
        home.moves += 1;
        home.lives_on = m.to_alias;
        home.moved_from = m.from_alias;
        home.since_ms = m.moved_ms;
        home.offsets = m.offsets;
    }
    Ok(homes.into_values().collect())
}
