//! Loop prevention for IDENTICAL names in both directions: a flow X→Y
//! drops the batches that the opposite flow Y→X wrote into X. They are
//! recognised by their idempotent producer id, which the writing flow
//! registers in the state store (with the cluster its records came from)
//! before it writes with it, and which the log keeps in every batch header.
//! The records stay byte-identical and no header is added.
//!
//! Group offsets are translated through the opposite flow's offset map too
//! (ENHANCED mode): a position on X among records Y→X wrote. That map holds
//! them only once Y→X checkpoints, a moment after it wrote them, so X→Y
//! moves its cursor over them only then ([`LoopFilter::mapped`]). Below
//! X→Y's cursor, every record of X is thereby in one of the two maps, which
//! is what makes a translation there exact.

use std::collections::HashMap;

use ferry_adapters::kafka::batch::RawBatch;
use ferry_adapters::kafka::KafkaCluster;
use ferry_adapters::state::StateStore;
use ferry_core::config::{FlowSpec, TopicNaming};
use ferry_core::domain::TopicPartition;

use crate::context::Ferry;
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
    /// The opposite flow's state key, when this flow translates group
    /// offsets through its offset map (ENHANCED sync with an opposite flow).
    opposite: Option<String>,
    /// Per partition, the opposite flow's checkpointed target end: the
    /// records it wrote below it are in its offset map.
    mapped_below: HashMap<TopicPartition, i64>,
}

impl LoopFilter {
    /// The filter for a flow, or `None` when names are prefixed (a replica
    /// topic is never selected again, so nothing can loop).
    pub async fn for_flow(
        ferry: &Ferry,
        flow: &FlowSpec,
        source: &KafkaCluster,
        target: &KafkaCluster,
    ) -> Result<Option<Self>, FerryError> {
        if flow.naming != TopicNaming::Identical {
            return Ok(None);
        }
        let opposite = match &flow.groups {
            // Boxed: this future sits deep in the Replicate handler's, and
            // unboxed the handler's type outgrows the compiler's layout depth.
            // A refusal there is group sync's to report (it syncs nothing
            // for the flow); copying goes on without waiting for an opposite
            // flow's checkpoints. A failed read is not a refusal: going on
            // without the wait would let the cursor pass copies the opposite
            // flow has not mapped yet, and a later translation call itself
            // exact while it delivers one again; this invocation stops and
            // the next one reads again.
            Some(g) => match Box::pin(crate::opposite::translates_through(ferry, flow, g)).await {
                Ok(o) => o,
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::warn!(replicator = %ferry.spec.name, flow = %flow.id(), cause = %e, "group translation refused; replication goes on");
                    None
                }
            },
            None => None,
        };
        Ok(Some(Self {
            source_id: source.cluster_id().await?,
            target_id: target.cluster_id().await?,
            known: HashMap::new(),
            opposite,
            mapped_below: HashMap::new(),
        }))
    }

    /// The opposite flow's state key (`<replicator>/<source>><target>`),
    /// when this flow translates group offsets through its offset map.
    pub fn opposite(&self) -> Option<&str> {
        self.opposite.as_deref()
    }

    /// Register the producer id this flow writes into its target with,
    /// the partitions it may write to and until when (ms since the epoch).
    /// Must complete before the first write with it.
    pub async fn register(
        &self,
        store: &StateStore,
        flow_key: &str,
        producer_id: i64,
        partitions: &[TopicPartition],
        writes_until_ms: i64,
    ) -> Result<(), FerryError> {
        Ok(store
            .register_producer(&self.target_id, producer_id, flow_key, &self.source_id, partitions, writes_until_ms)
            .await?)
    }

    /// Record where the records this flow wrote with `producer_id` end in
    /// each partition (see `StateStore::record_producer_ends`), once the
    /// invocation is done writing: what lets a plan prune its item when
    /// they are all gone. A failure is logged (see `plan::producers` for
    /// what a plan does with an item without ends).
    pub async fn record_ends(&self, store: &StateStore, producer_id: i64, ends: &[(TopicPartition, i64)]) {
        if let Err(e) = store.record_producer_ends(&self.target_id, producer_id, ends).await {
            tracing::warn!(producer_id, error = %e, "could not record where this producer's records end; a plan takes its partitions' ends once its deadline is past");
        }
    }

    /// Look up the producer ids of `batches` not seen before. Ids are
    /// registered before use, so a batch already in the log has its id
    /// registered if it is the opposite flow's: a negative answer can be
    /// cached.
    pub async fn learn(&mut self, store: &StateStore, batches: impl IntoIterator<Item = &RawBatch>) -> Result<(), FerryError> {
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

    /// Whether the opposite flow's offset map holds every record it wrote
    /// into `tp` below `end` (its checkpointed target end has reached
    /// `end`), so the cursor may move over them. Always true when this
    /// flow translates no group offsets through that map. Reads the state
    /// store only when the last answer was short of `end`.
    pub async fn mapped(&mut self, store: &StateStore, tp: &TopicPartition, end: i64) -> Result<bool, FerryError> {
        let Some(opposite) = &self.opposite else {
            return Ok(true);
        };
        if self.mapped_below.get(tp).is_some_and(|&m| m >= end) {
            return Ok(true);
        }
        // Identical names: the opposite flow's source partition is this one.
        // An opposite flow refused the topic (another flow writes it, or
        // its target topic conflicts), or that handed it over, writes
        // nothing more here: nothing to wait for.
        let m = match store.get_cursor(opposite, tp).await? {
            Some(c) if c.plan_refusal.is_some() || c.handed_over_ms.is_some() => i64::MAX,
            c => c.and_then(|c| c.next_target_offset).unwrap_or(-1),
        };
        self.mapped_below.insert(tp.clone(), m);
        Ok(m >= end)
    }
}
