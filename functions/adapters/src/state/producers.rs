//! The producers table: the idempotent producer ids Ferry writes with, per
//! cluster, and where their records came from (how the opposite flow
//! knows them and does not send them back).

use super::calls::Bounded;
use super::error::dynamo_err;
use super::schema::{n, now_ms, s, PK_PRODUCERS, SK_PRODUCERS};
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
