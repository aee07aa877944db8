//! Which flow writes each target topic: one flow per topic on a Kafka
//! cluster, of any replicator on these tables. Two flows copying one
//! source topic into one target topic (a second replicator under another
//! name, a renamed one, two waves' definitions overlapping) each keep
//! their own cursors and would copy every record twice; the first to take
//! a topic writes it, the other is refused it.
//!
//! A flow that stops copying into a topic hands it over: its item stays,
//! marked released, with where each partition's cursor stopped (the
//! source topic's id beside them), and the next flow to take the topic
//! starts there: neither a record copied twice nor one skipped. The taker
//! keeps the positions on its own item until its cursors stand there.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use ferry_core::domain::TopicPartition;

use super::calls::Bounded;
use super::cursor::CursorItem;
use super::error::{conditional, dynamo_err};
use super::schema::{n, now_ms, s, ItemReader, PK, SK_CURSOR, WRITERS};
use super::{StateError, StateStore};

/// On a writer item: the flow's state key, and the source topic it copies
/// into the target topic (under its source cluster's id).
const FLOW: &str = "writer_flow";
const SOURCE_TOPIC: &str = "source_topic";
const SOURCE_CLUSTER_ID: &str = "source_cluster_id";
const TAKEN_MS: &str = "taken_ms";
/// On a released item: when, the source and target topics' ids, and each
/// partition's next source offset (`<partition>:<offset>,...`).
const RELEASED_MS: &str = "released_ms";
const SOURCE_TOPIC_ID: &str = "source_topic_id";
const TARGET_TOPIC_ID: &str = "target_topic_id";
const POSITIONS: &str = "positions";
/// On a taker's item until its cursors stand where the flow that handed it
/// the topic stopped: that flow's key, and its positions as above.
const HANDED_BY: &str = "handed_by";
const HANDED_POSITIONS: &str = "handed_positions";
const HANDED_TOPIC_ID: &str = "handed_source_topic_id";
const HANDED_TARGET_TOPIC_ID: &str = "handed_target_topic_id";

/// Where a flow stopped copying a source topic: each partition's next
/// source offset, and the topic's id then (`None`: not recorded).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handover {
    /// The flow that stopped.
    pub by: String,
    /// Partition → next source offset.
    pub positions: BTreeMap<i32, i64>,
    /// The source topic's id.
    pub source_topic_id: Option<String>,
    /// The target topic's id: its copies below those positions are in
    /// that topic, and gone with it if it was deleted since.
    pub target_topic_id: Option<String>,
}

/// The flow that writes a target topic, as its item says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicWriter {
    /// The flow's state key (`<replicator>/<flow id>`).
    pub flow: String,
    /// The source topic it copies into it.
    pub source_topic: String,
    /// The source cluster's id.
    pub source_cluster_id: String,
    /// Released by that flow: where it stopped (any flow may take it).
    pub released: Option<Handover>,
    /// Taken from a flow that released it, the taker's cursors not yet
    /// moved where it stopped.
    pub handed: Option<Handover>,
}

/// What [`StateStore::take_topic`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The topic is the flow's now.
    Ours,
    /// Another flow has it.
    Held(Box<TopicWriter>),
}

/// The partition key of the writer items of a target cluster.
fn writers_pk(target_cluster_id: &str) -> String {
    format!("{WRITERS}{target_cluster_id}")
}

fn format_positions(positions: &BTreeMap<i32, i64>) -> String {
    positions.iter().map(|(p, o)| format!("{p}:{o}")).collect::<Vec<_>>().join(",")
}

fn parse_positions(text: &str) -> Option<BTreeMap<i32, i64>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (p, o) = pair.split_once(':')?;
            Some((p.parse().ok()?, o.parse().ok()?))
        })
        .collect()
}

/// The handover in `item` under these attribute names, if it holds one.
fn handover(r: &ItemReader<'_>, by: Option<String>, positions: &str, ids: (&str, &str)) -> Result<Option<Handover>, StateError> {
    let (Some(by), Some(text)) = (by, r.s(positions)) else {
        return Ok(None);
    };
    Ok(Some(Handover {
        by,
        positions: parse_positions(&text).ok_or_else(|| r.bad(positions))?,
        source_topic_id: r.s(ids.0),
        target_topic_id: r.s(ids.1),
    }))
}

impl TopicWriter {
    /// Where the flow that released the topic stopped, when it copied
    /// `source_topic` from the cluster `source_cluster_id`: a flow copying
    /// the same goes on from there.
    pub fn released_for(&self, source_cluster_id: &str, source_topic: &str) -> Option<&Handover> {
        self.released
            .as_ref()
            .filter(|_| self.source_cluster_id == source_cluster_id && self.source_topic == source_topic)
    }

    fn from_item(r: &ItemReader<'_>) -> Result<Self, StateError> {
        let flow = r.s(FLOW).ok_or_else(|| r.bad(FLOW))?;
        let released = if r.n(RELEASED_MS).is_some() {
            Some(
                handover(r, Some(flow.clone()), POSITIONS, (SOURCE_TOPIC_ID, TARGET_TOPIC_ID))?.unwrap_or(Handover {
                    by: flow.clone(),
                    ..Handover::default()
                }),
            )
        } else {
            None
        };
        Ok(TopicWriter {
            released,
            handed: handover(r, r.s(HANDED_BY), HANDED_POSITIONS, (HANDED_TOPIC_ID, HANDED_TARGET_TOPIC_ID))?,
            flow,
            source_topic: r.s(SOURCE_TOPIC).ok_or_else(|| r.bad(SOURCE_TOPIC))?,
            source_cluster_id: r.s(SOURCE_CLUSTER_ID).unwrap_or_default(),
        })
    }
}

impl StateStore {
    /// Every topic of the target cluster a flow writes or released, with
    /// its item.
    pub async fn topic_writers(&self, target_cluster_id: &str) -> Result<BTreeMap<String, TopicWriter>, StateError> {
        let items = self.query_all(&self.cursors, PK, s(writers_pk(target_cluster_id))).await?;
        items
            .iter()
            .map(|i| {
                let r = ItemReader::new(&self.cursors, i);
                Ok((r.s(SK_CURSOR).ok_or_else(|| r.bad(SK_CURSOR))?, TopicWriter::from_item(&r)?))
            })
            .collect()
    }

    /// Take `target_topic` for `writer.flow`: when no flow has it, when it
    /// is the flow's already (a retried put whose answer was lost finds its
    /// own item), or when `from` released it as `writer.handed` says (read
    /// before; the taker's item keeps that handover until
    /// [`Self::handed_over`]). Otherwise the flow that has it.
    pub async fn take_topic(&self, target_cluster_id: &str, target_topic: &str, writer: &TopicWriter) -> Result<Taken, StateError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.cursors)
            .item(PK, s(writers_pk(target_cluster_id)))
            .item(SK_CURSOR, s(target_topic))
            .item(FLOW, s(&writer.flow))
            .item(SOURCE_TOPIC, s(&writer.source_topic))
            .item(SOURCE_CLUSTER_ID, s(&writer.source_cluster_id))
            .item(TAKEN_MS, n(now_ms()))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#flow", FLOW)
            .expression_attribute_values(":flow", s(&writer.flow))
            .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld);
        let mut condition = String::from("attribute_not_exists(#pk) OR #flow = :flow");
        if let Some(h) = &writer.handed {
            req = req
                .item(HANDED_BY, s(&h.by))
                .item(HANDED_POSITIONS, s(format_positions(&h.positions)))
                .expression_attribute_names("#released", RELEASED_MS)
                .expression_attribute_values(":from", s(&h.by));
            if let Some(id) = &h.source_topic_id {
                req = req.item(HANDED_TOPIC_ID, s(id));
            }
            if let Some(id) = &h.target_topic_id {
                req = req.item(HANDED_TARGET_TOPIC_ID, s(id));
            }
            condition.push_str(" OR (#flow = :from AND attribute_exists(#released))");
        }
        let res = req.condition_expression(condition).send().bounded(&self.calls).await;
        match res {
            Ok(_) => Ok(Taken::Ours),
            Err(aws_sdk_dynamodb::error::SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let held = match e.into_err() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(refused) => {
                        refused.item().cloned().unwrap_or_default()
                    }
                    _ => HashMap::new(),
                };
                let r = ItemReader::new(&self.cursors, &held);
                Ok(Taken::Held(Box::new(TopicWriter::from_item(&r).unwrap_or(TopicWriter {
                    flow: "(a flow that did not say)".to_owned(),
                    source_topic: String::new(),
                    source_cluster_id: String::new(),
                    released: None,
                    handed: None,
                }))))
            }
            Err(e) => Err(dynamo_err("PutItem", &self.cursors, e)),
        }
    }

    /// Record that `flow`'s cursors stand where the flow that handed it
    /// `target_topic` stopped (or past it).
    pub async fn handed_over(&self, target_cluster_id: &str, target_topic: &str, flow: &str) -> Result<(), StateError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(writers_pk(target_cluster_id)))
            .key(SK_CURSOR, s(target_topic))
            .update_expression("REMOVE #by, #positions, #id, #tid")
            .condition_expression("#flow = :flow")
            .expression_attribute_names("#flow", FLOW)
            .expression_attribute_names("#by", HANDED_BY)
            .expression_attribute_names("#positions", HANDED_POSITIONS)
            .expression_attribute_names("#id", HANDED_TOPIC_ID)
            .expression_attribute_names("#tid", HANDED_TARGET_TOPIC_ID)
            .expression_attribute_values(":flow", s(flow))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res).map(|_| ())
    }

    /// Let `target_topic` go, if `flow` has it; another flow's stays.
    /// With `stopped` (where the flow's cursors stopped), the item stays,
    /// released, for the next flow to take the topic to start there;
    /// without (the source topic was deleted), it goes.
    pub async fn release_topic(
        &self,
        target_cluster_id: &str,
        target_topic: &str,
        flow: &str,
        stopped: Option<&Handover>,
    ) -> Result<(), StateError> {
        let key = [
            (PK.to_owned(), s(writers_pk(target_cluster_id))),
            (SK_CURSOR.to_owned(), s(target_topic)),
        ];
        let res = match stopped {
            Some(h) => {
                let mut req = self
                    .client
                    .update_item()
                    .table_name(&self.cursors)
                    .set_key(Some(key.into_iter().collect()))
                    .condition_expression("#flow = :flow")
                    .expression_attribute_names("#flow", FLOW)
                    .expression_attribute_names("#released", RELEASED_MS)
                    .expression_attribute_names("#positions", POSITIONS)
                    .expression_attribute_names("#id", SOURCE_TOPIC_ID)
                    .expression_attribute_names("#tid", TARGET_TOPIC_ID)
                    .expression_attribute_names("#hby", HANDED_BY)
                    .expression_attribute_names("#hpos", HANDED_POSITIONS)
                    .expression_attribute_names("#hid", HANDED_TOPIC_ID)
                    .expression_attribute_names("#htid", HANDED_TARGET_TOPIC_ID)
                    .expression_attribute_values(":flow", s(flow))
                    .expression_attribute_values(":now", n(now_ms()))
                    .expression_attribute_values(":positions", s(format_positions(&h.positions)));
                // Each id set where known, removed where not (an older
                // release's stays no more than its positions do).
                let mut set = vec!["#released = :now", "#positions = :positions"];
                let mut remove = vec!["#hby", "#hpos", "#hid", "#htid"];
                let ids = [
                    ("#id", "#id = :id", ":id", &h.source_topic_id),
                    ("#tid", "#tid = :tid", ":tid", &h.target_topic_id),
                ];
                for (name, assign, value, id) in ids {
                    match id {
                        Some(id) => {
                            set.push(assign);
                            req = req.expression_attribute_values(value, s(id));
                        }
                        None => remove.push(name),
                    }
                }
                req = req.update_expression(format!("SET {} REMOVE {}", set.join(", "), remove.join(", ")));
                conditional("UpdateItem", &self.cursors, req.send().bounded(&self.calls).await)
            }
            None => {
                let res = self
                    .client
                    .delete_item()
                    .table_name(&self.cursors)
                    .set_key(Some(key.into_iter().collect()))
                    .condition_expression("#flow = :flow")
                    .expression_attribute_names("#flow", FLOW)
                    .expression_attribute_values(":flow", s(flow))
                    .send()
                    .bounded(&self.calls)
                    .await;
                conditional("DeleteItem", &self.cursors, res)
            }
        };
        res.map(|_| ())
    }

    /// Release every topic of the target cluster `flow` has, each where
    /// the flow's `cursors` stand (a forget: the next flow to copy into
    /// them goes on from there).
    pub(super) async fn release_topics_of(&self, target_cluster_id: &str, flow: &str, cursors: &[CursorItem]) -> Result<(), StateError> {
        for (topic, writer) in self.topic_writers(target_cluster_id).await? {
            if writer.flow == flow && writer.released.is_none() {
                let stopped = stopped_at(flow, &writer, cursors);
                self.release_topic(target_cluster_id, &topic, flow, Some(&stopped)).await?;
            }
        }
        Ok(())
    }

    /// Mark `flow`'s cursor of `tp` handed over (no lease is taken on it
    /// from now on), unless its lease is live or its last holder did not
    /// record its writes settled (it stopped without checkpointing all it
    /// wrote: only its successor's reconcile finds those copies). Returns
    /// where it stands, `None` when it is not marked. It also fences the lease: a holder
    /// whose lease ended while it kept running (stalled) must not move the
    /// cursor past the position handed over.
    pub async fn mark_handed_over(&self, flow: &str, tp: &TopicPartition) -> Result<Option<i64>, StateError> {
        let now = now_ms();
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression(
                "SET handed_over_ms = if_not_exists(handed_over_ms, :now), lease_epoch = if_not_exists(lease_epoch, :zero) + :one \
                 REMOVE lease_owner",
            )
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(lease_owner) OR lease_expires_ms < :now) \
                 AND (attribute_not_exists(producer_id) OR producer_id < :zero OR writes_settled = :settled)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":settled", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .bounded(&self.calls)
            .await;
        match res {
            Ok(out) => {
                let item = out.attributes().cloned().unwrap_or_default();
                let r = ItemReader::new(&self.cursors, &item);
                Ok(Some(r.n("next_source_offset").ok_or_else(|| r.bad("next_source_offset"))?))
            }
            Err(aws_sdk_dynamodb::error::SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(None),
            Err(e) => Err(dynamo_err("UpdateItem", &self.cursors, e)),
        }
    }

    /// Record on `flow`'s cursor of `tp` that it took the partition over at
    /// source offset `at` from flow `by` (see `CursorItem::handed_at`).
    pub async fn set_handed_at(&self, flow: &str, tp: &TopicPartition, at: i64, by: &str) -> Result<(), StateError> {
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression("SET handed_at = :at, handed_by = :by ADD handed_from :from")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":by", s(by))
            .expression_attribute_values(":from", AttributeValue::Ss(vec![by.to_owned()]))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res).map(|_| ())
    }

    /// Take back `flow`'s cursor of `tp` from a handover (the flow copies
    /// its topic again).
    pub async fn unmark_handed_over(&self, flow: &str, tp: &TopicPartition) -> Result<(), StateError> {
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression("REMOVE handed_over_ms")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res).map(|_| ())
    }

    /// Move `flow`'s cursor of `tp` to `start`, where the flow that handed
    /// it the topic stopped (see the module): a cursor that has written
    /// nothing, or one this flow itself handed over before (the records
    /// past it were the other flow's to copy, and it copied them; what the
    /// cursor knew of the logs past its old position, the leader epochs
    /// and its producer's writes, goes with it). False otherwise, or while
    /// its lease is live.
    pub async fn hand_cursor_over(&self, flow: &str, tp: &TopicPartition, start: i64) -> Result<bool, StateError> {
        if self.move_unwritten_cursor(flow, tp, start, false).await? {
            return Ok(true);
        }
        let now = now_ms();
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression(
                "SET next_source_offset = :start, handed_at = :start, updated_ms = :now, \
                 lease_epoch = if_not_exists(lease_epoch, :zero) + :one \
                 REMOVE handed_over_ms, lease_owner, leader_epoch, leader_epoch_starts, target_leader_epoch, \
                 next_target_offset, producer_id, producer_epoch, transactional_id, producer_next_sequence, writes_settled",
            )
            .condition_expression("attribute_exists(handed_over_ms) AND (attribute_not_exists(lease_owner) OR lease_expires_ms < :now)")
            .expression_attribute_values(":start", n(start))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res)
    }
}

/// Where `flow`'s `cursors` of the source topic `writer` names stand, as
/// its handover. A flow that took the topic over and whose plan stopped
/// before every cursor stood where the flow before it stopped (cut short)
/// hands on those positions for each partition whose cursor was not moved
/// there.
pub fn stopped_at(flow: &str, writer: &TopicWriter, cursors: &[CursorItem]) -> Handover {
    let mine: Vec<&CursorItem> = cursors.iter().filter(|c| c.tp.topic == writer.source_topic).collect();
    let mut stopped = Handover {
        by: flow.to_owned(),
        positions: mine.iter().map(|c| (c.tp.partition, c.next_source_offset)).collect(),
        source_topic_id: mine.iter().find_map(|c| c.source_topic_id.clone()),
        target_topic_id: mine.iter().find_map(|c| c.target_topic_id.clone()),
    };
    if let Some(handed) = &writer.handed {
        for (p, at) in &handed.positions {
            let moved = mine.iter().any(|c| c.tp.partition == *p && c.handed_at == Some(*at));
            if !moved {
                stopped.positions.insert(*p, *at);
            }
        }
        stopped.source_topic_id = stopped.source_topic_id.or_else(|| handed.source_topic_id.clone());
        stopped.target_topic_id = stopped.target_topic_id.or_else(|| handed.target_topic_id.clone());
    }
    stopped
}

/// The partitions of a handover, as topic partitions of `source_topic`.
pub fn handover_partitions(h: &Handover, source_topic: &str) -> Vec<(TopicPartition, i64)> {
    h.positions
        .iter()
        .map(|(p, o)| (TopicPartition::new(source_topic, *p), *o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_back_as_written_and_damaged_ones_are_refused() {
        let positions = BTreeMap::from([(0, 15), (1, 0), (12, 9_000_000_000)]);
        assert_eq!(parse_positions(&format_positions(&positions)), Some(positions));
        assert_eq!(parse_positions(""), Some(BTreeMap::new()));
        assert_eq!(parse_positions("0:1,1"), None);
        assert_eq!(parse_positions("0:x"), None);
    }
}
