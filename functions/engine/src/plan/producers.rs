//! Keeping the producers table bounded: every Replicate of a flow with
//! IDENTICAL names registers a producer id of its own, and the opposite
//! flow looks up each id it meets in the log. An id is needed for as long
//! as any record it wrote can still be read. Each invocation records, as
//! it ends, the offset past its last record in each partition it wrote
//! to; a plan deletes an item once every partition's log start has passed
//! its end (retention, DeleteRecords), after a grace that covers a reader
//! who fetched one of those records just before it went. An invocation
//! that recorded no ends (a crash, a batch in flight at the end, a failed
//! write) registered the partitions it may write to and until when: once
//! that is past by the grace, the partitions' ends stand for its own.
//! Items of an earlier Ferry, which registered neither, are kept.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use ferry_adapters::kafka::OffsetSpec;
use ferry_adapters::state::{now_ms, ProducerItem};
use ferry_core::config::{FlowSpec, TopicNaming};
use ferry_core::domain::TopicPartition;

use super::in_flight;
use crate::context::Ferry;
use crate::error::FerryError;

/// Producer items in one page of the Query (DynamoDB may return fewer: a
/// page stops at 1 MB, a few hundred items with many partitions each).
pub(super) const PRODUCERS_PER_PAGE: i32 = 500;
/// Pages one plan looks at, per flow, at most: an invocation adds one
/// item, and an item goes on its second look (noted, then deleted after
/// the grace), so a plan must look at more than twice as many as the
/// executions of a schedule period add (a 1-minute schedule of 157
/// Replicates, 10,000 partitions in batches of 64, adds 157). Time bounds
/// it first (see [`PRUNE_BUDGET`]).
pub(super) const PRODUCER_PAGES_PER_PLAN: usize = 64;
/// Longest one flow's prune runs in a plan: it is housekeeping, and the
/// Plan function's timeout is for the batches. The next plan resumes where
/// it stopped.
pub(super) const PRUNE_BUDGET: Duration = Duration::from_secs(15);
/// No prune starts with less than this left before the plan's deadline.
pub(super) const PRUNE_DEADLINE_MARGIN: Duration = Duration::from_secs(45);

/// When a flow's prune stops: after its budget, or well before the
/// plan's deadline (`None`: a process without one).
pub(super) fn prune_until(deadline: Option<SystemTime>) -> Instant {
    let budget = Instant::now() + PRUNE_BUDGET;
    match deadline {
        Some(d) => {
            let left = d.duration_since(SystemTime::now()).unwrap_or_default();
            budget.min(Instant::now() + left.saturating_sub(PRUNE_DEADLINE_MARGIN))
        }
        None => budget,
    }
}

/// What one prune did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Pruned {
    /// Items of invocations that ended without recording where their
    /// records end, given the partitions' ends once they could write no more.
    pub ended: usize,
    /// Items found with every record gone, noted to be deleted after the grace.
    pub passed: usize,
    /// Items deleted.
    pub deleted: usize,
}

/// Look at the next pages of the producer items in the flow's target
/// cluster, prune the flow's own, and record where the next plan starts.
pub(super) async fn prune_producers(ferry: &Ferry, flow: &FlowSpec, after: Option<i64>, until: Instant) -> Result<Pruned, FerryError> {
    let mut pruned = Pruned::default();
    if flow.naming != TopicNaming::Identical {
        return Ok(pruned);
    }
    let key = ferry.flow_key(flow);
    let cluster_id = ferry.cluster(&flow.target.id)?.cluster_id().await?;
    let mut after = after;
    // Log starts only move up: one read per partition serves every page of
    // this plan (pages name mostly the same partitions), and one read
    // earlier than another only keeps an item longer.
    let mut starts = HashMap::new();
    for _ in 0..PRODUCER_PAGES_PER_PLAN {
        if Instant::now() >= until {
            tracing::info!(flow = %flow.id(), "producer items: this plan's time for them is up; the next plan goes on from here");
            break;
        }
        let (items, next) = ferry.store.producers_after(&cluster_id, after, PRODUCERS_PER_PAGE).await?;
        let mine: Vec<&ProducerItem> = items.iter().filter(|i| i.flow == key).collect();
        prune_page(ferry, flow, &cluster_id, &mine, &mut starts, &mut pruned).await?;
        after = next;
        if after.is_none() {
            break;
        }
    }
    ferry.store.set_producers_pruned_after(&key, after).await?;
    Ok(pruned)
}

async fn prune_page(
    ferry: &Ferry,
    flow: &FlowSpec,
    cluster_id: &str,
    items: &[&ProducerItem],
    starts: &mut HashMap<TopicPartition, i64>,
    pruned: &mut Pruned,
) -> Result<(), FerryError> {
    let now = now_ms();
    let grace = ferry.settings.producer_prune_grace.as_millis() as i64;
    // An invocation that ended without recording its ends (it crashed, a
    // write's outcome was unknown, the record failed): once it can write
    // no more, the partitions' ends now bound what it wrote.
    let ended: Vec<&ProducerItem> = items
        .iter()
        .copied()
        .filter(|i| i.ends.is_none() && i.may_write.as_ref().is_some_and(|(_, until)| now - until >= grace))
        .collect();
    let tps = ended.iter().flat_map(|i| i.may_write.iter().flat_map(|(tps, _)| tps));
    let latest = offsets(ferry, flow, tps, OffsetSpec::Latest).await?;
    // A few writes at once: many items may pass together (retention lowered).
    let ends: Vec<(i64, Vec<(TopicPartition, i64)>)> = ended
        .iter()
        .filter_map(|item| {
            let tps = item.may_write.as_ref().map(|(tps, _)| tps.as_slice()).unwrap_or_default();
            let ends: Option<Vec<(TopicPartition, i64)>> = tps.iter().map(|tp| latest.get(tp).map(|e| (tp.clone(), *e))).collect();
            ends.map(|e| (item.producer_id, e))
        })
        .collect();
    in_flight(ends.iter().map(|(pid, e)| ferry.store.record_producer_ends(cluster_id, *pid, e))).await?;
    pruned.ended += ends.len();
    let with_ends: Vec<&ProducerItem> = items.iter().copied().filter(|i| i.ends.is_some()).collect();
    let unread = with_ends
        .iter()
        .flat_map(|i| i.ends.iter().flatten().map(|(tp, _)| tp))
        .filter(|tp| !starts.contains_key(*tp));
    let read = offsets(ferry, flow, unread, OffsetSpec::Earliest).await?;
    starts.extend(read);
    let (gone, kept): (Vec<&ProducerItem>, Vec<&ProducerItem>) = with_ends.into_iter().partition(|i| all_gone(i, starts));
    // Noted as gone by an earlier look, and a record of it is there now:
    // that look was wrong (a topic one answer left out), and the note goes.
    let wrong: Vec<(i64, i64)> = kept.iter().filter_map(|i| Some((i.producer_id, i.passed_ms?))).collect();
    in_flight(
        wrong
            .iter()
            .map(|(pid, passed)| ferry.store.unmark_producer_passed(cluster_id, *pid, *passed)),
    )
    .await?;
    let to_note: Vec<i64> = gone.iter().filter(|i| i.passed_ms.is_none()).map(|i| i.producer_id).collect();
    in_flight(to_note.iter().map(|pid| ferry.store.mark_producer_passed(cluster_id, *pid))).await?;
    pruned.passed += to_note.len();
    let to_delete: Vec<(i64, i64)> = gone
        .iter()
        .filter_map(|i| {
            i.passed_ms
                .filter(|passed| now - passed >= grace)
                .map(|passed| (i.producer_id, passed))
        })
        .collect();
    in_flight(
        to_delete
            .iter()
            .map(|(pid, passed)| ferry.store.delete_passed_producer(cluster_id, *pid, *passed)),
    )
    .await?;
    pruned.deleted += to_delete.len();
    Ok(())
}

/// `spec`'s offset of each partition of `tps` that the target answers
/// for. For log starts, a partition whose topic the target does not have
/// (deleted) holds nothing: its start is past any end (an item goes on a
/// second look only, a grace after the first, which looks again: a topic
/// missing from one answer alone never deletes it). Ends are never made
/// up: one the target does not answer for is absent, which keeps the
/// items that wrote to it (an end recorded is kept for good).
async fn offsets<'a>(
    ferry: &Ferry,
    flow: &FlowSpec,
    tps: impl Iterator<Item = &'a TopicPartition>,
    spec: OffsetSpec,
) -> Result<HashMap<TopicPartition, i64>, FerryError> {
    let tps: BTreeSet<&TopicPartition> = tps.collect();
    if tps.is_empty() {
        return Ok(HashMap::new());
    }
    let target = ferry.cluster(&flow.target.id)?;
    let topics: Vec<String> = tps.iter().map(|tp| tp.topic.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let meta = target.metadata(Some(&topics)).await?;
    let (present, deleted): (Vec<&TopicPartition>, Vec<&TopicPartition>) = tps.into_iter().partition(|tp| meta.contains_key(&tp.topic));
    let mut out: HashMap<TopicPartition, i64> = if spec == OffsetSpec::Earliest {
        deleted.into_iter().map(|tp| (tp.clone(), i64::MAX)).collect()
    } else {
        HashMap::new()
    };
    let present: Vec<TopicPartition> = present
        .into_iter()
        .filter(|tp| meta.get(&tp.topic).is_some_and(|m| m.partitions.contains_key(&tp.partition)))
        .cloned()
        .collect();
    if !present.is_empty() {
        out.extend(target.list_offsets(&present, spec, false).await?);
    }
    Ok(out)
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
            may_write: None,
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
