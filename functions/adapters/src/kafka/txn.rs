//! Transactional ids, used to fence a writer, not for transactions of
//! Ferry's own.
//!
//! Each Replicate invocation writes idempotent, non-transactional batches
//! with the producer id of a transactional id of its own. A worker taking
//! over partitions whose holder may still have a produce on the wire
//! fences that holder there: InitProducerId on the holder's transactional
//! id gives its producer id a higher epoch, and an empty transaction over
//! the partitions, aborted, has the coordinator write a marker with that
//! epoch into each of them. From then on each partition refuses the old
//! epoch (InvalidProducerEpoch), so nothing the holder sent can be
//! appended after the successor has read the partition to reconcile.
//! Other partitions the holder still leases are untouched: only a marker
//! moves a partition's epoch.

use std::collections::BTreeMap;

use ferry_core::domain::TopicPartition;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::client::{topic_name, KafkaCluster};
use super::error::KafkaError;
use super::groups::{is_coordinator_retry, Step};

/// FindCoordinator key type of a transactional id.
const TXN_KEY_TYPE: i8 = 1;
/// Whole fencing sequences tried when another worker fences the same
/// transactional id at the same time.
const FENCE_ATTEMPTS: u32 = 5;
/// Transaction timeout given with every InitProducerId. Ferry's own ids
/// never open a transaction; a fencing transaction is ended at once.
const TRANSACTION_TIMEOUT_MS: i32 = 60_000;

/// The transactional id a worker (`owner`, unique per invocation) of
/// replicator `replicator` writes with. Every one starts with
/// [`transactional_id_prefix`], for prefixed ACLs and IAM resources.
pub fn transactional_id(replicator: &str, owner: &str) -> String {
    format!("{}{owner}", transactional_id_prefix(replicator))
}

/// The prefix of every transactional id replicator `replicator` uses.
pub fn transactional_id_prefix(replicator: &str) -> String {
    format!("ferry-{replicator}-")
}

/// An error refusing Ferry a transactional id, with the grant to add.
pub fn with_grant_hint(e: KafkaError, replicator: &str) -> KafkaError {
    match e {
        KafkaError::Broker {
            cluster,
            op,
            topic,
            partition,
            error: error @ ResponseError::TransactionalIdAuthorizationFailed,
            detail,
        } => {
            let prefix = transactional_id_prefix(replicator);
            KafkaError::Broker {
                detail: format!(
                    "{detail}. Fix: grant Ferry's principal WRITE and DESCRIBE on transactional ids prefixed {prefix} on cluster {cluster} \
                     (kafka-acls --add --allow-principal <principal> --operation Write --operation Describe --transactional-id {prefix} \
                     --resource-pattern-type prefixed; with MSK IAM, kafka-cluster:AlterTransactionalId and DescribeTransactionalId on \
                     transactional-id/<cluster>/<uuid>/{prefix}*, which the template grants)"
                ),
                cluster,
                op,
                topic,
                partition,
                error,
            }
        }
        e => e,
    }
}

/// How fencing a previous holder went.
#[derive(Debug, Default)]
pub struct Fenced {
    /// Whether the transactional id still had the holder's producer id. A
    /// different one means the id had expired (the coordinator forgets ids
    /// idle for `transactional.id.expiration.ms`, 7 days by default), so no
    /// write of the holder can still be on its way and nothing was fenced.
    pub same_producer: bool,
    /// Partitions that could not be fenced, with why.
    pub failed: Vec<(TopicPartition, KafkaError)>,
}

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_owned()))
}

/// Errors after which the fencing sequence is started again: the
/// coordinator is busy ending a transaction of this id, or another worker
/// bumped the epoch in between.
fn is_fence_retry(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::ConcurrentTransactions | ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch
    )
}

impl KafkaCluster {
    /// The producer id and a new epoch of transactional id `id`: any older
    /// epoch is fenced at the coordinator, and a transaction it had open is
    /// aborted (the call waits for that abort's markers).
    pub async fn init_transactional_producer(&self, id: &str) -> Result<(i64, i16), KafkaError> {
        self.on_coordinator_of(TXN_KEY_TYPE, id, "InitProducerId", |addr| async move {
            let req = InitProducerIdRequest::default()
                .with_transactional_id(Some(txn_id(id)))
                .with_transaction_timeout_ms(TRANSACTION_TIMEOUT_MS)
                .with_producer_id((-1i64).into())
                .with_producer_epoch(-1);
            let resp = self.send_to(&addr, &req).await?;
            match ResponseError::try_from_code(resp.error_code) {
                None => Ok(Step::Done((resp.producer_id.0, resp.producer_epoch))),
                Some(e) if is_coordinator_retry(e) || e == ResponseError::ConcurrentTransactions => Ok(Step::Retry(e)),
                Some(error) => Err(self.broker_error("InitProducerId", "-", -1, error, format!("transactional id {id}"))),
            }
        })
        .await
    }

    /// Fence the producer `producer_id` of transactional id `id` on
    /// `partitions` (see the module's documentation). When this returns,
    /// every partition not in [`Fenced::failed`] refuses that producer's
    /// earlier epochs.
    pub async fn fence(&self, id: &str, producer_id: i64, partitions: &[TopicPartition]) -> Result<Fenced, KafkaError> {
        let mut out = Fenced::default();
        let mut todo: Vec<TopicPartition> = partitions.to_vec();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (pid, epoch) = self.init_transactional_producer(id).await?;
            if pid != producer_id {
                tracing::info!(cluster = %self.alias(), transactional_id = id, old = producer_id, new = pid, "transactional id had expired; nothing to fence");
                return Ok(out);
            }
            out.same_producer = true;
            let res = async {
                let refused = self.add_partitions(id, pid, epoch, &todo).await?;
                let refused_tps: Vec<TopicPartition> = refused.iter().map(|(tp, _)| tp.clone()).collect();
                todo.retain(|tp| !refused_tps.contains(tp));
                out.failed.extend(refused);
                if todo.is_empty() {
                    return Ok(());
                }
                self.end_txn(id, pid, epoch).await
            }
            .await;
            match res {
                Ok(()) => break,
                Err(KafkaError::Broker { error, .. }) if is_fence_retry(error) && attempt < FENCE_ATTEMPTS => {
                    tracing::debug!(cluster = %self.alias(), transactional_id = id, %error, "fencing again");
                }
                Err(e) => return Err(e),
            }
        }
        if !todo.is_empty() {
            // The abort's markers are written after EndTxn answers; the next
            // InitProducerId waits for them (ConcurrentTransactions until then).
            self.init_transactional_producer(id).await?;
        }
        Ok(out)
    }

    /// Add `partitions` to the open transaction of `id`. Returns the
    /// partitions the coordinator refused for a reason of their own (the
    /// others are added); an error refuses them all.
    async fn add_partitions(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, KafkaError)>, KafkaError> {
        let mut todo: Vec<TopicPartition> = partitions.to_vec();
        let mut refused = Vec::new();
        while !todo.is_empty() {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in &todo {
                by_topic.entry(&tp.topic).or_default().push(tp.partition);
            }
            let topics: Vec<AddPartitionsToTxnTopic> = by_topic
                .into_iter()
                .map(|(t, ps)| AddPartitionsToTxnTopic::default().with_name(topic_name(t)).with_partitions(ps))
                .collect();
            let errors: Vec<(TopicPartition, ResponseError)> = self
                .on_coordinator_of(TXN_KEY_TYPE, id, "AddPartitionsToTxn", |addr| {
                    let topics = topics.clone();
                    async move {
                        let req = AddPartitionsToTxnRequest::default()
                            .with_v3_and_below_transactional_id(txn_id(id))
                            .with_v3_and_below_producer_id(pid.into())
                            .with_v3_and_below_producer_epoch(epoch)
                            .with_v3_and_below_topics(topics);
                        let resp = self.send_to(&addr, &req).await?;
                        if let Some(e) = ResponseError::try_from_code(resp.error_code) {
                            return Err(self.broker_error("AddPartitionsToTxn", "-", -1, e, format!("transactional id {id}")));
                        }
                        let mut errors = Vec::new();
                        for t in resp.results_by_topic_v3_and_below {
                            for p in t.results_by_partition {
                                if let Some(e) = ResponseError::try_from_code(p.partition_error_code) {
                                    errors.push((TopicPartition::new(t.name.0.to_string(), p.partition_index), e));
                                }
                            }
                        }
                        // A coordinator that moved answers every partition so.
                        if let Some(&(_, e)) = errors.iter().find(|(_, e)| is_coordinator_retry(*e)) {
                            return Ok(Step::Retry(e));
                        }
                        Ok(Step::Done(errors))
                    }
                })
                .await?;
            if errors.is_empty() {
                break;
            }
            // All or nothing: one partition's error leaves the others
            // OperationNotAttempted. Whole-sequence errors end the attempt.
            if let Some(&(_, e)) = errors.iter().find(|(_, e)| is_fence_retry(*e)) {
                return Err(self.broker_error("AddPartitionsToTxn", "-", -1, e, format!("transactional id {id}")));
            }
            let mut progressed = false;
            for (tp, e) in errors {
                if e != ResponseError::OperationNotAttempted {
                    todo.retain(|t| *t != tp);
                    let detail = format!("fencing the previous holder's producer (transactional id {id})");
                    refused.push((
                        tp.clone(),
                        self.broker_error("AddPartitionsToTxn", &tp.topic, tp.partition, e, detail),
                    ));
                    progressed = true;
                }
            }
            if !progressed {
                return Err(KafkaError::protocol(
                    self.alias(),
                    "AddPartitionsToTxn refused every partition without a reason",
                ));
            }
        }
        Ok(refused)
    }

    /// Abort the open transaction of `id`.
    async fn end_txn(&self, id: &str, pid: i64, epoch: i16) -> Result<(), KafkaError> {
        self.on_coordinator_of(TXN_KEY_TYPE, id, "EndTxn", |addr| async move {
            let req = EndTxnRequest::default()
                .with_transactional_id(txn_id(id))
                .with_producer_id(pid.into())
                .with_producer_epoch(epoch)
                .with_committed(false);
            let resp = self.send_to(&addr, &req).await?;
            match ResponseError::try_from_code(resp.error_code) {
                None => Ok(Step::Done(())),
                Some(e) if is_coordinator_retry(e) => Ok(Step::Retry(e)),
                Some(error) => Err(self.broker_error("EndTxn", "-", -1, error, format!("transactional id {id}"))),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    #[test]
    fn every_id_of_a_replicator_has_its_prefix() {
        let id = transactional_id("orders", "123-abc");
        assert_eq!(id, "ferry-orders-123-abc");
        assert!(id.starts_with(&transactional_id_prefix("orders")));
    }

    /// The requests encode at the versions Ferry asks for.
    #[test]
    fn fencing_requests_encode() {
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id("t"))
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(topic_name("x"))
                .with_partitions(vec![0])]);
        for v in 0..=3 {
            add.encode(&mut BytesMut::new(), v)
                .unwrap_or_else(|e| panic!("AddPartitionsToTxn v{v}: {e}"));
        }
        let end = EndTxnRequest::default().with_transactional_id(txn_id("t"));
        for v in 0..=4 {
            end.encode(&mut BytesMut::new(), v).unwrap_or_else(|e| panic!("EndTxn v{v}: {e}"));
        }
    }
}
