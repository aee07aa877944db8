//! How a partition stops when its source's history changed under what
//! Ferry read (a truncation), and what the operator runs to go on: the
//! errors reconcile and the history check both return.

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
