//! The producers table: the idempotent producer ids Ferry writes with, per
//! cluster, and where their records came from (how the opposite flow
//! knows them and does not send them back); where their records are, and
//! pruning the items whose records are all gone.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use ferry_core::domain::TopicPartition;

use super::calls::Bounded;
use super::error::{conditional, dynamo_err};
use super::schema::{n, now_ms, s, ItemReader, PK_PRODUCERS, SK_PRODUCERS};
use super::{StateError, StateStore};

impl StateStore {
    /// Record that `flow` writes records from cluster `origin_cluster_id`
    /// into cluster `cluster_id` with idempotent producer `producer_id`,
    /// before it writes anything with it: the opposite flow recognises
    /// those records by it and does not send them back. With the
    /// partitions it may write to and until when (ms since the epoch), for
    /// an invocation that ends without recording where its records end.
    pub async fn register_producer(
        &self,
        cluster_id: &str,
        producer_id: i64,
        flow: &str,
        origin_cluster_id: &str,
        partitions: &[TopicPartition],
        writes_until_ms: i64,
    ) -> Result<(), StateError> {
        self.client
            .put_item()
            .table_name(&self.producers)
            .item(PK_PRODUCERS, s(cluster_id))
            .item(SK_PRODUCERS, n(producer_id))
            .item("flow", s(flow))
            .item("origin_cluster", s(origin_cluster_id))
            .item("registered_ms", n(now_ms()))
            .item(
                "partitions",
                AttributeValue::L(partitions.iter().map(|tp| s(end_key(tp))).collect()),
            )
            .item("writes_until_ms", n(writes_until_ms))
            .send()
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("PutItem", &self.producers, e))?;
        Ok(())
    }

    /// Where the records Ferry wrote into `cluster_id` with `producer_id`
    /// came from (a Kafka cluster id); `None` if Ferry never wrote with it.
    pub async fn producer_origin(&self, cluster_id: &str, producer_id: i64) -> Result<Option<String>, StateError> {
        let item = self
            .get_consistent(&self.producers, (PK_PRODUCERS, s(cluster_id)), (SK_PRODUCERS, n(producer_id)))
            .await?;
        Ok(item.map(|i| i.get("origin_cluster").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()))
    }
}

/// A producer item as the plan's prune reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerItem {
    pub producer_id: i64,
    /// The flow that wrote with it.
    pub flow: String,
    /// Where its records are, each partition with the offset past the last
    /// record it wrote there, as its invocation recorded at the end; `None`
    /// when it did not (it crashed, had a batch in flight, or predates
    /// the record): then it is kept.
    pub ends: Option<Vec<(TopicPartition, i64)>>,
    /// When a plan first found every one of its records below the
    /// partition's log start (ms since the epoch).
    pub passed_ms: Option<i64>,
    /// The partitions it may have written to, and until when (ms since
    /// the epoch); `None` on an item written before Ferry recorded them.
    pub may_write: Option<(Vec<TopicPartition>, i64)>,
}

/// Map keys of [`ProducerItem::ends`] and entries of its `partitions`:
/// `<topic>/<partition>` (a topic name holds no `/`).
fn end_key(tp: &TopicPartition) -> String {
    format!("{}/{}", tp.topic, tp.partition)
}

/// A producer item as stored in `table`.
fn producer_item(table: &str, item: &HashMap<String, AttributeValue>) -> Result<ProducerItem, StateError> {
    let r = ItemReader::new(table, item);
    let ends = match item.get("ends") {
        None => None,
        Some(v) => Some(
            v.as_m()
                .map_err(|_| r.bad("ends"))?
                .iter()
                .map(|(k, v)| Some((from_end_key(k)?, v.as_n().ok()?.parse().ok()?)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| r.bad("ends"))?,
        ),
    };
    let partitions = match item.get("partitions") {
        None => None,
        Some(v) => Some(
            v.as_l()
                .map_err(|_| r.bad("partitions"))?
                .iter()
                .map(|v| from_end_key(v.as_s().ok()?))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| r.bad("partitions"))?,
        ),
    };
    Ok(ProducerItem {
        producer_id: r.req_n(SK_PRODUCERS)?,
        flow: r.s("flow").unwrap_or_default(),
        ends,
        passed_ms: r.n("passed_ms"),
        may_write: partitions.zip(r.n("writes_until_ms")),
    })
}

/// A partition from [`end_key`]'s form.
fn from_end_key(k: &str) -> Option<TopicPartition> {
    let (topic, partition) = k.rsplit_once('/')?;
    Some(TopicPartition::new(topic, partition.parse().ok()?))
}

impl StateStore {
    /// Record where producer `producer_id`'s records are in `cluster_id`:
    /// each partition it wrote to with the offset past its last record
    /// there (none: it wrote nothing). The item can go once the log start
    /// of each has passed its end (see [`StateStore::producers_after`]).
    pub async fn record_producer_ends(&self, cluster_id: &str, producer_id: i64, ends: &[(TopicPartition, i64)]) -> Result<(), StateError> {
        let map: HashMap<String, AttributeValue> = ends.iter().map(|(tp, end)| (end_key(tp), n(*end))).collect();
        let res = self
            .update_producer(cluster_id, producer_id)
            .update_expression("SET ends = :ends, released_ms = :now")
            .expression_attribute_values(":ends", AttributeValue::M(map))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .bounded(&self.calls)
            .await;
        // Refused: pruned already (its records gone), nothing to record.
        conditional("UpdateItem", &self.producers, res).map(|_| ())
    }

    /// Up to `limit` producer items of `cluster_id` after producer id
    /// `after` (from the first with `None`), and where the next page
    /// starts (`None`: this was the last).
    pub async fn producers_after(
        &self,
        cluster_id: &str,
        after: Option<i64>,
        limit: i32,
    ) -> Result<(Vec<ProducerItem>, Option<i64>), StateError> {
        let start = after.map(|pid| HashMap::from([(PK_PRODUCERS.to_owned(), s(cluster_id)), (SK_PRODUCERS.to_owned(), n(pid))]));
        let out = self
            .client
            .query()
            .table_name(&self.producers)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK_PRODUCERS)
            .expression_attribute_values(":pk", s(cluster_id))
            .set_exclusive_start_key(start)
            .limit(limit)
            .send()
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("Query", &self.producers, e))?;
        let items = out
            .items()
            .iter()
            .map(|item| producer_item(&self.producers, item))
            .collect::<Result<Vec<_>, StateError>>()?;
        let next = out
            .last_evaluated_key()
            .and_then(|k| k.get(SK_PRODUCERS))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok());
        Ok((items, next))
    }

    /// Note that every record of the producer is below its partitions' log
    /// starts (the first time only); returns when that was first noted.
    pub async fn mark_producer_passed(&self, cluster_id: &str, producer_id: i64) -> Result<Option<i64>, StateError> {
        let res = self
            .update_producer(cluster_id, producer_id)
            .update_expression("SET passed_ms = if_not_exists(passed_ms, :now)")
            .expression_attribute_values(":now", n(now_ms()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .bounded(&self.calls)
            .await;
        match res {
            Ok(out) => Ok(out
                .attributes()
                .and_then(|a| a.get("passed_ms"))
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(None),
            Err(e) => Err(dynamo_err("UpdateItem", &self.producers, e)),
        }
    }

    /// Take back the note that an item's records were gone (made at
    /// `passed_ms`), once a later look finds one still there: a note stands
    /// only while every look agrees, so that no single stale answer (a
    /// topic missing from one metadata answer) deletes the item later.
    pub async fn unmark_producer_passed(&self, cluster_id: &str, producer_id: i64, passed_ms: i64) -> Result<(), StateError> {
        let res = self
            .update_producer(cluster_id, producer_id)
            .update_expression("REMOVE passed_ms")
            .condition_expression("attribute_exists(#pk) AND passed_ms = :passed")
            .expression_attribute_values(":passed", n(passed_ms))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.producers, res)?;
        Ok(())
    }

    /// An update of an existing producer item (never one that makes it).
    fn update_producer(&self, cluster_id: &str, producer_id: i64) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.producers)
            .key(PK_PRODUCERS, s(cluster_id))
            .key(SK_PRODUCERS, n(producer_id))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK_PRODUCERS)
    }

    /// Delete a producer item noted as passed at `passed_ms` (by this or
    /// another plan: the condition keeps a delete to the item it read).
    pub async fn delete_passed_producer(&self, cluster_id: &str, producer_id: i64, passed_ms: i64) -> Result<(), StateError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.producers)
            .key(PK_PRODUCERS, s(cluster_id))
            .key(SK_PRODUCERS, n(producer_id))
            .condition_expression("passed_ms = :passed")
            .expression_attribute_values(":passed", n(passed_ms))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("DeleteItem", &self.producers, res).map(|_| ())
    }
}
