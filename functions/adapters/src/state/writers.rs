//! Which flow writes each target topic: one flow per topic on a Kafka
//! cluster, of any replicator on these tables. Two flows copying one
//! source topic into one target topic (a second replicator under another
//! name, a renamed one, two waves' definitions overlapping) each keep
//! their own cursors and would copy every record twice; the first to take
//! a topic writes it, the other is refused it.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::calls::Bounded;
use super::error::{conditional, dynamo_err};
use super::schema::{n, now_ms, s, ItemReader, PK, SK_CURSOR, WRITERS};
use super::{StateError, StateStore};

/// On a writer item: the flow's state key, and the source topic it copies
/// into the target topic (under its source cluster's id).
const FLOW: &str = "writer_flow";
const SOURCE_TOPIC: &str = "source_topic";
const SOURCE_CLUSTER_ID: &str = "source_cluster_id";
const TAKEN_MS: &str = "taken_ms";

/// The flow that writes a target topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicWriter {
    /// The flow's state key (`<replicator>/<flow id>`).
    pub flow: String,
    /// The source topic it copies into it.
    pub source_topic: String,
    /// The source cluster's id.
    pub source_cluster_id: String,
}

/// The partition key of the writer items of a target cluster.
fn writers_pk(target_cluster_id: &str) -> String {
    format!("{WRITERS}{target_cluster_id}")
}

impl StateStore {
    /// Every topic of the target cluster a flow writes, with that flow.
    pub async fn topic_writers(&self, target_cluster_id: &str) -> Result<BTreeMap<String, TopicWriter>, StateError> {
        let items = self.query_all(&self.cursors, PK, s(writers_pk(target_cluster_id))).await?;
        items
            .iter()
            .map(|i| {
                let r = ItemReader::new(&self.cursors, i);
                let topic = r.s(SK_CURSOR).ok_or_else(|| r.bad(SK_CURSOR))?;
                let writer = TopicWriter {
                    flow: r.s(FLOW).ok_or_else(|| r.bad(FLOW))?,
                    source_topic: r.s(SOURCE_TOPIC).ok_or_else(|| r.bad(SOURCE_TOPIC))?,
                    source_cluster_id: r.s(SOURCE_CLUSTER_ID).unwrap_or_default(),
                };
                Ok((topic, writer))
            })
            .collect()
    }

    /// Take `target_topic` on the target cluster for `writer`, unless
    /// another flow has it. Returns `None` once it is the writer's (taken
    /// now, or before: a retried put whose answer was lost finds its own
    /// item), else the flow that has it.
    pub async fn take_topic(
        &self,
        target_cluster_id: &str,
        target_topic: &str,
        writer: &TopicWriter,
    ) -> Result<Option<TopicWriter>, StateError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.cursors)
            .item(PK, s(writers_pk(target_cluster_id)))
            .item(SK_CURSOR, s(target_topic))
            .item(FLOW, s(&writer.flow))
            .item(SOURCE_TOPIC, s(&writer.source_topic))
            .item(SOURCE_CLUSTER_ID, s(&writer.source_cluster_id))
            .item(TAKEN_MS, n(now_ms()))
            .condition_expression("attribute_not_exists(#pk) OR #flow = :flow")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#flow", FLOW)
            .expression_attribute_values(":flow", s(&writer.flow))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .bounded(&self.calls)
            .await;
        match res {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let held = match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(refused) => refused.item().cloned().unwrap_or_default(),
                    _ => Default::default(),
                };
                let r = ItemReader::new(&self.cursors, &held);
                Ok(Some(TopicWriter {
                    flow: r.s(FLOW).unwrap_or_else(|| "(a flow that did not say)".to_owned()),
                    source_topic: r.s(SOURCE_TOPIC).unwrap_or_default(),
                    source_cluster_id: r.s(SOURCE_CLUSTER_ID).unwrap_or_default(),
                }))
            }
            Err(e) => Err(dynamo_err("PutItem", &self.cursors, e)),
        }
    }

    /// Let `target_topic` go, if `flow` has it; another flow's stays.
    pub async fn release_topic(&self, target_cluster_id: &str, target_topic: &str, flow: &str) -> Result<(), StateError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.cursors)
            .key(PK, s(writers_pk(target_cluster_id)))
            .key(SK_CURSOR, s(target_topic))
            .condition_expression("#flow = :flow")
            .expression_attribute_names("#flow", FLOW)
            .expression_attribute_values(":flow", s(flow))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("DeleteItem", &self.cursors, res).map(|_| ())
    }

    /// Let go every topic of the target cluster `flow` has (a forget).
    pub(super) async fn release_topics_of(&self, target_cluster_id: &str, flow: &str) -> Result<(), StateError> {
        for (topic, writer) in self.topic_writers(target_cluster_id).await? {
            if writer.flow == flow {
                self.release_topic(target_cluster_id, &topic, flow).await?;
            }
        }
        Ok(())
    }
}
