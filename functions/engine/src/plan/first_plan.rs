//! A flow's first plan: what its marker says of it, and the hold one plan
//! at a time takes on it (a first plan still running looks the same as
//! one cut short, whose partitions without a cursor start at their first
//! record).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_adapters::state::{FirstPlanClaim, FlowStart};
use ferry_core::config::FlowSpec;

use crate::context::Ferry;
use crate::error::FerryError;

/// How long a plan outside Lambda (the CLI's) holds a flow's first plan
/// at a time: it has no deadline, so it renews its hold every
/// [`RENEW_EVERY`] while it plans; one killed leaves its hold until then.
/// Long against clocks: a Lambda compares the CLI machine's time with its
/// own, and one a minute or more behind would otherwise make its hold look
/// over.
const HOLD_OUTSIDE_LAMBDA: Duration = Duration::from_secs(10 * 60);
/// See [`HOLD_OUTSIDE_LAMBDA`].
const RENEW_EVERY: Duration = Duration::from_secs(60);
/// Kept past a Lambda's deadline before its hold on a first plan ends:
/// for the clocks of the two plans that compare it.
const HOLD_MARGIN: Duration = Duration::from_secs(10);

/// When a plan ending at `deadline` (`None`: a process without one)
/// cannot be running any more, in ms since the epoch.
pub(super) fn hold_until_ms(deadline: Option<SystemTime>) -> i64 {
    let until = match deadline {
        Some(d) => d + HOLD_MARGIN,
        None => SystemTime::now() + HOLD_OUTSIDE_LAMBDA,
    };
    until.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

/// Whether this plan plans a flow.
pub(super) enum Turn {
    /// It does, holding the flow's first plan with this mark if it is one.
    Plan { hold: Option<String> },
    /// It leaves the flow to the plan that holds its first plan.
    Leave,
}

/// Whether this plan plans `flow`, taking its first plan if it is one.
pub(super) async fn take(ferry: &Ferry, flow: &FlowSpec, started: &FlowStart, until_ms: i64) -> Result<Turn, FerryError> {
    if !started.first {
        return Ok(Turn::Plan { hold: None });
    }
    match ferry.store.claim_first_plan(&ferry.flow_key(flow), until_ms).await? {
        FirstPlanClaim::Ours(mark) => Ok(Turn::Plan { hold: Some(mark) }),
        FirstPlanClaim::Held { until_ms } => {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), held_until_ms = until_ms,
                "the flow's first plan is running in another plan: this plan leaves the flow to it. \
                 A plan that was stopped (a killed `ferry plan`) holds it until held_until_ms, then the next plan takes it"
            );
            Ok(Turn::Leave)
        }
        FirstPlanClaim::Gone => {
            tracing::info!(flow = %flow.id(), "the flow's first plan finished in another plan meanwhile: the next plan plans the flow");
            Ok(Turn::Leave)
        }
    }
}

/// Run `work` (the flow's plan), renewing the plan's hold on the flow's
/// first plan meanwhile when it has no deadline to hold it by. A hold
/// another plan took (this one could not renew it in time) ends `work`
/// with an error: two plans would make the flow's cursors at once.
pub(super) async fn renewing<T>(
    ferry: &Ferry,
    flow: &FlowSpec,
    hold: Option<&str>,
    deadline: Option<SystemTime>,
    work: impl std::future::Future<Output = Result<T, FerryError>>,
) -> Result<T, FerryError> {
    let Some(mark) = hold.filter(|_| deadline.is_none()) else {
        return work.await;
    };
    let key = ferry.flow_key(flow);
    let renew = async {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match ferry.store.renew_first_plan(&key, mark, hold_until_ms(None)).await {
                Ok(true) => {}
                Ok(false) => match ferry.store.flow_marker(&key).await {
                    // Finished (by this plan, which goes on with the
                    // flow's housekeeping): nothing more to hold.
                    Ok(m) if !m.first => std::future::pending::<()>().await,
                    _ => {
                        return FerryError::NotReady(format!(
                            "flow {}: this plan's hold on the flow's first plan ran out and another plan took it; this plan \
                             stops, leaving the flow to that one",
                            flow.id()
                        ))
                    }
                },
                Err(e) => tracing::warn!(flow = %flow.id(), error = %e, "could not renew the hold on the flow's first plan; trying again"),
            }
        }
    };
    tokio::select! {
        out = work => out,
        e = renew => Err(e),
    }
}

/// After a failed plan: give up its hold, so the next plan may take the
/// first plan at once (if this fails too, the hold ends on its own).
pub(super) async fn release(ferry: &Ferry, flow: &FlowSpec, hold: Option<String>) {
    if let Some(mark) = hold {
        if let Err(e) = ferry.store.release_first_plan(&ferry.flow_key(flow), &mark).await {
            tracing::warn!(flow = %flow.id(), error = %e, "could not release the flow's first plan after a failure");
        }
    }
}

/// What the flow's marker says of its first plan, for `decide`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FirstPlan {
    /// The flow's first plan has not finished.
    pub(super) first: bool,
    /// The marker predates the record of that (see `FlowStart::legacy`).
    pub(super) legacy: bool,
    /// This plan wrote the flow's marker (no plan began it before).
    pub(super) created: bool,
}

impl From<&FlowStart> for FirstPlan {
    fn from(s: &FlowStart) -> Self {
        Self {
            first: s.first,
            legacy: s.legacy,
            created: s.created,
        }
    }
}
