//! A plan's batches, kept in the cursors table so that the state machine
//! carries only references to them: its payload then does not grow with
//! the partitions (Step Functions refuses a state over 256 KiB).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};

use super::schema::{n, s, PK, SK_CURSOR};
use super::{StateError, StateStore};

/// Attribute the cursors table's time to live reads (seconds since the
/// epoch): a plan's batches are removed a while after it ran.
pub const EXPIRES_AT: &str = "expires_at";

/// Partition key of a plan's batches: never a flow's (a flow key's second
/// part holds '>', `plan/…` does not).
fn plan_key(replicator: &str, plan: &str) -> String {
    format!("{replicator}/plan/{plan}")
}

fn batch_sk(batch: usize) -> String {
    format!("batch/{batch:06}")
}

impl StateStore {
    /// Keep plan `plan`'s batches (each as the text a Replicate invocation
    /// reads back), until `expires_at_s`.
    pub async fn put_plan_batches(&self, replicator: &str, plan: &str, batches: &[String], expires_at_s: i64) -> Result<(), StateError> {
        let mut writes = Vec::with_capacity(batches.len());
        for (i, b) in batches.iter().enumerate() {
            let item: HashMap<String, AttributeValue> = HashMap::from([
                (PK.to_owned(), s(plan_key(replicator, plan))),
                (SK_CURSOR.to_owned(), s(batch_sk(i))),
                ("batch".to_owned(), s(b)),
                (EXPIRES_AT.to_owned(), n(expires_at_s)),
            ]);
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(|e| StateError::Dynamo {
                op: "BatchWriteItem",
                table: self.cursors.clone(),
                detail: e.to_string(),
            })?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write_unordered(&self.cursors, writes).await
    }

    /// Batch `batch` of plan `plan`, as `put_plan_batches` kept it; `None`
    /// once it has expired (or was never kept).
    pub async fn plan_batch(&self, replicator: &str, plan: &str, batch: usize) -> Result<Option<String>, StateError> {
        let item = self
            .get_consistent(&self.cursors, (PK, s(plan_key(replicator, plan))), (SK_CURSOR, s(batch_sk(batch))))
            .await?;
        Ok(item.and_then(|i| i.get("batch").and_then(|v| v.as_s().ok()).cloned()))
    }
}
