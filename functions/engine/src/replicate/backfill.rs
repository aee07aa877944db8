//! A backfill requested while the partition was leased: its next holder,
//! once it has the lease, starts it where the backfill asked, if nothing
//! of the partition's can be on the target yet (see
//! `StateStore::request_backfill`).

use ferry_adapters::kafka::OffsetSpec;
use ferry_adapters::state::{CursorItem, Lease, StateError};
use ferry_core::offset_map::OffsetRun;

use super::FlowRun;

/// The cursor this holder starts from: moved to a requested backfill's
/// start when it may be, as it was otherwise.
pub(super) async fn start_requested(
    run: &FlowRun<'_>,
    lease: &Lease,
    item: CursorItem,
    last_run: Option<&OffsetRun>,
) -> Result<CursorItem, StateError> {
    let Some(from) = item.backfill_from else {
        return Ok(item);
    };
    let (flow, tp) = (run.flow.id(), &lease.tp);
    if item.records_replicated > 0 || last_run.is_some() || item.target_rewound_from.is_some() {
        tracing::error!(
            flow = %flow, topic = %tp.topic, partition = tp.partition, start = from, records = item.records_replicated,
            "backfill not started: the partition replicated records after the backfill was asked for, and a backfill would \
             write older records after them on the target; the request is dropped"
        );
        run.ferry.store.drop_requested_backfill(run.key, lease).await?;
        return Ok(item);
    }
    if item.producer_id >= 0 && !item.writes_settled {
        tracing::info!(
            flow = %flow, topic = %tp.topic, partition = tp.partition, start = from,
            "backfill waits: the last worker stopped without its writes checkpointed; this holder reconciles them, and a later one starts the backfill if they were none"
        );
        return Ok(item);
    }
    // Retention may have passed the offset the plan resolved since: the
    // backfill asked for what there is, so it starts at the log start then
    // (records below it were history, not the flow's to lose).
    let start = match run.source.list_offsets(std::slice::from_ref(tp), OffsetSpec::Earliest, false).await {
        Ok(starts) => starts.get(tp).copied().unwrap_or(from).max(from),
        Err(e) => {
            tracing::warn!(
                flow = %flow, topic = %tp.topic, partition = tp.partition, start = from, error = %e,
                "backfill waits: could not read the partition's log start; a later holder starts it"
            );
            return Ok(item);
        }
    };
    if start > item.next_source_offset {
        // Retention passed the cursor too: records the flow had to copy are
        // gone, which the partition's own read reports (or skips with
        // ResumeAfterDataLoss); a backfill has nothing left to start.
        tracing::warn!(
            flow = %flow, topic = %tp.topic, partition = tp.partition, start, cursor = item.next_source_offset,
            "backfill dropped: the source's log start is past the cursor now, so there is no history left to copy"
        );
        run.ferry.store.drop_requested_backfill(run.key, lease).await?;
        return Ok(item);
    }
    match run.ferry.store.apply_requested_backfill(run.key, lease, from, start).await? {
        Some(moved) => {
            tracing::info!(flow = %flow, topic = %tp.topic, partition = tp.partition, start, "backfill: partition starts here");
            Ok(moved)
        }
        None => {
            tracing::warn!(
                flow = %flow, topic = %tp.topic, partition = tp.partition, start = from,
                "backfill not started: the cursor changed under this holder's lease; a later holder tries again"
            );
            Ok(item)
        }
    }
}
