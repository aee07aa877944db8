//! The invocation's end: every lease given back at once, each with the
//! partition's rate and whether its writes are settled, and the ends of
//! what was written recorded for loop prevention.

use super::*;

/// Release every part's lease; one taken over meanwhile is simply gone,
/// one that cannot be released expires on its own.
pub(super) async fn release_all(
    run: &FlowRun<'_>,
    parts: &[Part],
    started: std::time::Instant,
    filter: Option<&LoopFilter>,
    written_with: Option<i64>,
) {
    let FlowRun { ferry, flow, key, .. } = *run;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let rate = |p: &Part| Rate {
        records_per_s: (p.records as f64 / secs).round() as i64,
        bytes_per_s: (p.bytes as f64 / secs).round() as i64,
    };
    let stopping = std::time::Instant::now();
    // Settled: every write's outcome known and checkpointed. A batch still
    // in flight may yet be appended, and records acknowledged but not
    // checkpointed are on the target past the cursor: either way the
    // successor must fence and reconcile.
    let settled = |p: &Part| p.producer_recorded && p.inflight.is_none() && p.unsaved.is_none() && !p.unsaved_dropped;
    let released = join_all(parts.iter().map(|p| ferry.store.release_lease(key, &p.lease, rate(p), settled(p)))).await;
    tracing::debug!(flow = %flow.id(), ms = stopping.elapsed().as_millis() as u64, "leases released");
    if let (Some(f), Some(pid), Some(ends)) = (filter, written_with, written_ends(parts)) {
        f.record_ends(&ferry.store, pid, &ends).await;
    }
    for (p, res) in parts.iter().zip(released) {
        match res {
            Ok(()) | Err(StateError::LeaseLost { .. }) => {}
            Err(e) => {
                tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "could not release lease; it expires on its own")
            }
        }
    }
}

/// Give back leases taken by an invocation that ends before writing (a
/// failure leasing or setting up a partition): held until they expire,
/// they would keep the next invocations off these partitions for that
/// long (a gap in replication) for an error that may already be gone.
pub(super) async fn give_back(run: &FlowRun<'_>, taken: &[Lease]) {
    let FlowRun { ferry, flow, key, .. } = *run;
    let released = join_all(taken.iter().map(|l| ferry.store.release_lease(key, l, Rate::default(), false))).await;
    for (lease, res) in taken.iter().zip(released) {
        if let Err(r) = res {
            tracing::warn!(flow = %flow.id(), lease = ?lease, error = %r, "could not release lease; it expires on its own");
        }
    }
}

/// Where this invocation's records end in each target partition it wrote
/// to; `None` when a write's outcome is unknown (a batch still in flight,
/// a target log that lost records under Ferry): a plan then takes the
/// partitions' ends once the invocation's deadline is past (see
/// `plan::producers`).
fn written_ends(parts: &[Part]) -> Option<Vec<(TopicPartition, i64)>> {
    if parts.iter().any(|p| p.inflight.is_some() || p.target_lost) {
        return None;
    }
    Some(
        parts
            .iter()
            .filter(|p| p.written_end >= 0)
            .map(|p| (p.target.clone(), p.written_end))
            .collect(),
    )
}
