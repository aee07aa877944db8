//! Moves of applications between two clusters, as `ferry move` records
//! them: one item per move, under the pair of Kafka cluster ids (in either
//! order the same key), so that every replicator on these tables, one
//! holding both flows or two one each way, shows where a group lives now.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::calls::Bounded;
use super::error::dynamo_err;
use super::schema::{n, s, ItemReader, PK, SK_GROUPS};
use super::{StateError, StateStore};

/// Partition key prefix of the move items (in the groups table).
const MOVES: &str = "#moves/";

/// One recorded move of a consumer group (an application) from one
/// cluster to the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveItem {
    /// The consumer group.
    pub group: String,
    /// When the move was verified (GO), ms since the epoch.
    pub moved_ms: i64,
    /// Kafka cluster id the group left.
    pub from_cluster_id: String,
    /// Kafka cluster id it lives on now.
    pub to_cluster_id: String,
    /// The clusters' aliases in the definition that moved it.
    pub from_alias: String,
    pub to_alias: String,
    /// The replicator (its name) and flow that carried the offsets.
    pub replicator: String,
    pub flow: String,
    /// Per partition "topic/partition=offset" on the destination, as
    /// verified: where the application resumes.
    pub offsets: Vec<String>,
}

/// The partition key of the moves between two clusters, whichever way.
fn moves_pk(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{MOVES}{lo}+{hi}")
}

impl StateStore {
    /// Record a verified move.
    pub async fn record_move(&self, m: &MoveItem) -> Result<(), StateError> {
        self.client
            .put_item()
            .table_name(&self.groups)
            .item(PK, s(moves_pk(&m.from_cluster_id, &m.to_cluster_id)))
            // A group id may hold '/': the time after the last one orders
            // a group's moves.
            .item(SK_GROUPS, s(format!("{}/{:013}", m.group, m.moved_ms)))
            .item("group_id", s(&m.group))
            .item("moved_ms", n(m.moved_ms))
            .item("from_cluster_id", s(&m.from_cluster_id))
            .item("to_cluster_id", s(&m.to_cluster_id))
            .item("from_alias", s(&m.from_alias))
            .item("to_alias", s(&m.to_alias))
            .item("replicator", s(&m.replicator))
            .item("flow_id", s(&m.flow))
            .item("offsets", AttributeValue::L(m.offsets.iter().map(s).collect()))
            .send()
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("PutItem", &self.groups, e))?;
        Ok(())
    }

    /// Every recorded move between the two clusters, oldest first per group.
    pub async fn moves_between(&self, a: &str, b: &str) -> Result<Vec<MoveItem>, StateError> {
        let items = self.query_all(&self.groups, PK, s(moves_pk(a, b))).await?;
        let mut moves = items.iter().map(|i| self.move_item(i)).collect::<Result<Vec<_>, _>>()?;
        moves.sort_by(|x, y| (&x.group, x.moved_ms).cmp(&(&y.group, y.moved_ms)));
        Ok(moves)
    }

    fn move_item(&self, i: &HashMap<String, AttributeValue>) -> Result<MoveItem, StateError> {
        let r = ItemReader::new(&self.groups, i);
        Ok(MoveItem {
            group: r.req_s("group_id")?,
            moved_ms: r.req_n("moved_ms")?,
            from_cluster_id: r.req_s("from_cluster_id")?,
            to_cluster_id: r.req_s("to_cluster_id")?,
            from_alias: r.s("from_alias").unwrap_or_default(),
            to_alias: r.s("to_alias").unwrap_or_default(),
            replicator: r.s("replicator").unwrap_or_default(),
            flow: r.s("flow_id").unwrap_or_default(),
            offsets: i
                .get("offsets")
                .and_then(|v| v.as_l().ok())
                .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                .unwrap_or_default(),
        })
    }
}
