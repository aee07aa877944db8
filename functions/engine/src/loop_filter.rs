//! Loop prevention for IDENTICAL names in both directions: a flow X→Y
//! drops the batches that the opposite flow Y→X wrote into X. They are
//! recognised by their idempotent producer id, which the writing flow
//! registers in the state store (with the cluster its records came from)
//! before it writes with it, and which the log keeps in every batch header.
//! The records stay byte-identical and no header is added.

use std::collections::HashMap;

use ferry_adapters::kafka::batch::RawBatch;
use ferry_adapters::kafka::KafkaCluster;
use ferry_adapters::state::StateStore;
use ferry_core::config::{FlowSpec, TopicNaming};

use crate::error::FerryError;

/// Per invocation: which producer ids seen in the source are the opposite
/// flow's.
#[derive(Debug)]
pub struct LoopFilter {
    /// Kafka cluster id of the flow's source (where the ids are looked up).
    source_id: String,
    /// Kafka cluster id of the flow's target: records that came from there
    /// are dropped.
    target_id: String,
    known: HashMap<i64, bool>,
}

impl LoopFilter {
    /// The filter for a flow, or `None` when names are prefixed (a replica
    /// topic is never selected again, so nothing can loop).
    pub async fn for_flow(flow: &FlowSpec, source: &KafkaCluster, target: &KafkaCluster) -> Result<Option<Self>, FerryError> {
        if flow.naming != TopicNaming::Identical {
            return Ok(None);
        }
        Ok(Some(Self {
            source_id: source.cluster_id().await?,
            target_id: target.cluster_id().await?,
            known: HashMap::new(),
        }))
    }

    /// Register the producer id this flow writes into its target with.
    /// Must complete before the first write with it.
    pub async fn register(&self, store: &StateStore, flow_key: &str, producer_id: i64) -> Result<(), FerryError> {
        Ok(store
            .register_producer(&self.target_id, producer_id, flow_key, &self.source_id)
            .await?)
    }

    /// Look up the producer ids of `batches` not seen before. Ids are
    /// registered before use, so a batch already in the log has its id
    /// registered if it is the opposite flow's: a negative answer can be
    /// cached.
    pub async fn learn(&mut self, store: &StateStore, batches: &[RawBatch]) -> Result<(), FerryError> {
        for b in batches {
            let pid = b.header.producer_id;
            if pid < 0 || b.header.is_control() || self.known.contains_key(&pid) {
                continue;
            }
            let origin = store.producer_origin(&self.source_id, pid).await?;
            self.known.insert(pid, origin.as_deref() == Some(self.target_id.as_str()));
        }
        Ok(())
    }

    /// Whether a batch with this producer id came from the flow's target.
    /// Only ids passed to [`learn`](Self::learn) are known.
    pub fn drops(&self, producer_id: i64) -> bool {
        self.known.get(&producer_id).copied().unwrap_or(false)
    }
}
