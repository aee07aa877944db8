//! How a partition stops: paused, stopped with the cause, or (a refusal)
//! ending the invocation, whatever step failed; and when its source's
//! history changed under what Ferry read (a truncation), what the
//! operator runs to go on: the errors reconcile and the history check
//! both return.

use super::*;

/// The stop of a partition whose source log was truncated under what
/// Ferry read (`what`), when the operator has not allowed resuming after
/// data loss; `resuming`: what a run that is allowed does.
pub(super) fn truncation_stop(p: &Part, flow: &FlowSpec, what: String, resuming: &str) -> FerryError {
    FerryError::PartitionStopped {
        tp: p.work.source.clone(),
        cluster: flow.source.alias.clone(),
        what,
        fix: format!(
            "to follow the source's new history, {}: {resuming}. To copy the partition afresh instead: `ferry forget-flow`, then a \
             backfill",
            resume_once()
        ),
    }
}

/// What an operator runs to let one execution follow a source's new
/// history (or go past deleted records), for the fixes of stops.
pub(super) fn resume_once() -> &'static str {
    "run Ferry once with --resume-after-data-loss (`ferry run --once --resume-after-data-loss` with this replicator's \
     arguments; for a deployed stack, `sam deploy` with `--parameter-overrides ResumeAfterDataLoss=true`, let one \
     scheduled execution pass, then deploy again with ResumeAfterDataLoss=false)"
}

/// A step failed for partition `p` with `e`: a refusal stops it and ends
/// the invocation once the leases are back; a lost lease, a moved cursor or
/// a retryable error pauses it until the next invocation; anything else
/// stops it, recording the cause on its cursor.
pub(super) async fn fail(run: &FlowRun<'_>, p: &mut Part, e: &FerryError) {
    let FlowRun {
        ferry,
        flow,
        key: flow_key,
        ..
    } = *run;
    if let Some(refusal) = e.refusal_copy() {
        // A cluster refused Ferry (after one fresh read of the
        // credentials): not this partition's fault, and not one that
        // passes. The invocation ends with it once the leases are back.
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), topic = %p.work.source.topic,
            partition = p.work.source.partition, cause = %e, error_type = e.error_type(), "partition stopped: a cluster refused Ferry"
        );
        p.done = Some(StopReason::Retry);
        p.refused.get_or_insert(refusal);
        return;
    }
    // A cursor moved under the lease stops the holder as a lost lease does.
    let lease_lost = matches!(e, FerryError::State(StateError::LeaseLost { .. } | StateError::CursorMoved { .. }));
    if lease_lost || e.is_retryable() {
        // Not the partition's fault: another worker has it, or a broker or
        // DynamoDB is briefly away. The next invocation picks it up (and
        // reconciles whatever this one wrote without a checkpoint).
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), topic = %p.work.source.topic,
            partition = p.work.source.partition, cause = %e, error_type = e.error_type(), "partition paused until the next invocation"
        );
        p.done = Some(if lease_lost { StopReason::LeaseHeld } else { StopReason::Retry });
        return;
    }
    tracing::error!(
        replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias,
        topic = %p.work.source.topic, partition = p.work.source.partition, cause = %e,
        error_type = e.error_type(), "partition stopped"
    );
    p.done = Some(StopReason::Error);
    p.error = Some(e.to_string());
    if let Err(e2) = ferry.store.record_error(flow_key, &p.work.source, &e.to_string()).await {
        tracing::warn!(error = %e2, "could not record the error in the state table");
    }
}
