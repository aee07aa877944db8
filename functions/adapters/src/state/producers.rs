//! The producers table: the idempotent producer ids Ferry writes with, per
//! cluster, and where their records came from (how the opposite flow
//! knows them and does not send them back); where their records are, and
//! pruning the items whose records are all gone.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use ferry_core::domain::TopicPartition;

use super::calls::Bounded;
use super::error::dynamo_err;
use super::schema::{n, now_ms, s, ItemReader, PK_PRODUCERS, SK_PRODUCERS};
use super::{StateError, StateStore};

impl StateStore {
    /// Record that `flow` writes records from cluster `origin_cluster_id`
    /// into cluster `cluster_id` with idempotent producer `producer_id`,
    /// before it writes anything with it: the opposite flow recognises
    /// those records by it and does not send them back.
    pub async fn register_producer(
        &self,
        cluster_id: &str,
        producer_id: i64,
        flow: &str,
        origin_cluster_id: &str,
    ) -> Result<(), StateError> {
        self.client
            .put_item()
            .table_name(&self.producers)
            .item(PK_PRODUCERS, s(cluster_id))
            .item(SK_PRODUCERS, n(producer_id))
            .item("flow", s(flow))
            .item("origin_cluster", s(origin_cluster_id))
            .item("registered_ms", n(now_ms()))
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
}

/// Map keys of [`ProducerItem::ends`]: `<topic>/<partition>` (a topic name
/// holds no `/`).
fn end_key(tp: &TopicPartition) -> String {
    format!("{}/{}", tp.topic, tp.partition)
}

impl StateStore {
    /// Record where producer `producer_id`'s records are in `cluster_id`:
    /// each partition it wrote to with the offset past its last record
    /// there (none: it wrote nothing). The item can go once the log start
    /// of each has passed its end (see [`StateStore::producers_after`]).
    pub async fn record_producer_ends(&self, cluster_id: &str, producer_id: i64, ends: &[(TopicPartition, i64)]) -> Result<(), StateError> {
        let map: HashMap<String, AttributeValue> = ends.iter().map(|(tp, end)| (end_key(tp), n(*end))).collect();
        let res = self
            .client
            .update_item()
            .table_name(&self.producers)
            .key(PK_PRODUCERS, s(cluster_id))
            .key(SK_PRODUCERS, n(producer_id))
            .update_expression("SET ends = :ends, released_ms = :now")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK_PRODUCERS)
            .expression_attribute_values(":ends", AttributeValue::M(map))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .bounded(&self.calls)
            .await;
        match res {
            Ok(_) => Ok(()),
            // Pruned already (its records gone): nothing to record.
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
            Err(e) => Err(dynamo_err("UpdateItem", &self.producers, e)),
        }
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
            .map(|item| {
                let r = ItemReader::new(&self.producers, item);
                let ends = match item.get("ends") {
                    None => None,
                    Some(v) => {
                        let m = v.as_m().map_err(|_| r.bad("ends"))?;
                        let mut ends = Vec::with_capacity(m.len());
                        for (k, v) in m {
                            let (topic, partition) = k.rsplit_once('/').ok_or_else(|| r.bad("ends"))?;
                            let partition = partition.parse().map_err(|_| r.bad("ends"))?;
                            let end = v.as_n().ok().and_then(|v| v.parse().ok()).ok_or_else(|| r.bad("ends"))?;
                            ends.push((TopicPartition::new(topic, partition), end));
                        }
                        Some(ends)
                    }
                };
                Ok(ProducerItem {
                    producer_id: r.req_n(SK_PRODUCERS)?,
                    flow: r.s("flow").unwrap_or_default(),
                    ends,
                    passed_ms: r.n("passed_ms"),
                })
            })
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
            .client
            .update_item()
            .table_name(&self.producers)
            .key(PK_PRODUCERS, s(cluster_id))
            .key(SK_PRODUCERS, n(producer_id))
            .update_expression("SET passed_ms = if_not_exists(passed_ms, :now)")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK_PRODUCERS)
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
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
            Err(e) => Err(dynamo_err("DeleteItem", &self.producers, e)),
        }
    }
}
