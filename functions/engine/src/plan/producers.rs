//! Keeping the producers table bounded: every Replicate of a flow with
//! IDENTICAL names registers a producer id of its own, and the opposite
//! flow looks up each id it meets in the log. An id is needed for as long
//! as any record it wrote can still be read. Each invocation records, as
//! it ends, the offset past its last record in each partition it wrote
//! to; a plan deletes an item once every partition's log start has passed
//! its end (retention, DeleteRecords), after a grace that covers a reader
//! who fetched one of those records just before it went. Items that
//! recorded no ends (a crash, a batch in flight at the end, an earlier
//! Ferry) are kept.

use std::collections::{BTreeSet, HashMap};

use ferry_adapters::kafka::OffsetSpec;
use ferry_adapters::state::{now_ms, ProducerItem};
use ferry_core::config::{FlowSpec, TopicNaming};
use ferry_core::domain::TopicPartition;

use crate::context::Ferry;
use crate::error::FerryError;

/// Producer items one plan looks at, per flow: a page of one Query. An
/// invocation adds one; a schedule of one execution a minute with 64
/// Replicates adds 64 a minute, which a page of this size outpaces.
pub(super) const PRODUCERS_PER_PLAN: i32 = 500;

/// What one prune did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Pruned {
    /// Items found with every record gone, noted to be deleted after the grace.
    pub passed: usize,
    /// Items deleted.
    pub deleted: usize,
}

/// Look at the next page of the producer items in the flow's target
/// cluster, prune the flow's own, and record where the next plan starts.
pub(super) async fn prune_producers(ferry: &Ferry, flow: &FlowSpec, after: Option<i64>) -> Result<Pruned, FerryError> {
    let mut pruned = Pruned::default();
    if flow.naming != TopicNaming::Identical {
        return Ok(pruned);
    }
    let key = ferry.flow_key(flow);
    let target = ferry.cluster(&flow.target.id)?;
    let cluster_id = target.cluster_id().await?;
    let (items, next) = ferry.store.producers_after(&cluster_id, after, PRODUCERS_PER_PLAN).await?;
    let mine: Vec<&ProducerItem> = items.iter().filter(|i| i.flow == key && i.ends.is_some()).collect();
    let starts = log_starts(ferry, flow, &mine).await?;
    let now = now_ms();
    let grace = ferry.settings.producer_prune_grace.as_millis() as i64;
    for item in mine {
        if !all_gone(item, &starts) {
            continue;
        }
        match item.passed_ms {
            None => {
                ferry.store.mark_producer_passed(&cluster_id, item.producer_id).await?;
                pruned.passed += 1;
            }
            Some(passed) if now - passed >= grace => {
                ferry.store.delete_passed_producer(&cluster_id, item.producer_id, passed).await?;
                pruned.deleted += 1;
            }
            Some(_) => {}
        }
    }
    ferry.store.set_producers_pruned_after(&key, next).await?;
    Ok(pruned)
}

/// The log start of every partition the items wrote to, of those the
/// target answers for. A partition it does not answer for (its topic
/// deleted, or a moment's error) keeps the items that wrote to it.
async fn log_starts(ferry: &Ferry, flow: &FlowSpec, items: &[&ProducerItem]) -> Result<HashMap<TopicPartition, i64>, FerryError> {
    let tps: BTreeSet<&TopicPartition> = items.iter().flat_map(|i| i.ends.iter().flatten().map(|(tp, _)| tp)).collect();
    if tps.is_empty() {
        return Ok(HashMap::new());
    }
    let target = ferry.cluster(&flow.target.id)?;
    let topics: Vec<String> = tps.iter().map(|tp| tp.topic.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let meta = target.metadata(Some(&topics)).await?;
    let present: Vec<TopicPartition> = tps
        .into_iter()
        .filter(|tp| meta.get(&tp.topic).is_some_and(|m| m.partitions.contains_key(&tp.partition)))
        .cloned()
        .collect();
    if present.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(target.list_offsets(&present, OffsetSpec::Earliest, false).await?)
}

/// Whether every record the item's producer wrote is below its
/// partition's log start. An item that wrote nothing has none left.
fn all_gone(item: &ProducerItem, starts: &HashMap<TopicPartition, i64>) -> bool {
    item.ends
        .iter()
        .flatten()
        .all(|(tp, end)| starts.get(tp).is_some_and(|start| start >= end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(ends: Option<Vec<(TopicPartition, i64)>>) -> ProducerItem {
        ProducerItem {
            producer_id: 7,
            flow: "r/a>b".into(),
            ends,
            passed_ms: None,
        }
    }

    #[test]
    fn a_producer_is_gone_only_when_every_partition_it_wrote_starts_past_its_end() {
        let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        let starts = HashMap::from([(a.clone(), 20), (b.clone(), 5)]);
        assert!(all_gone(&item(Some(vec![(a.clone(), 20)])), &starts), "the log starts at its end");
        assert!(
            !all_gone(&item(Some(vec![(a.clone(), 21)])), &starts),
            "its last record is still there"
        );
        assert!(
            !all_gone(&item(Some(vec![(a.clone(), 10), (b.clone(), 6)])), &starts),
            "one partition still holds one"
        );
        let unknown = TopicPartition::new("gone", 0);
        assert!(
            !all_gone(&item(Some(vec![(unknown, 1)])), &starts),
            "a partition the target did not answer for keeps it"
        );
        assert!(all_gone(&item(Some(vec![])), &starts), "it wrote nothing");
    }
}
