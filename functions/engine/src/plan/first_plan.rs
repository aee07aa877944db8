//! A flow's first plan: what its marker says of it, and the hold one plan
//! at a time takes on it (a first plan still running looks the same as
//! one cut short, whose partitions without a cursor start at their first
//! record).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_adapters::state::{FirstPlanClaim, FlowStart};
use ferry_core::config::FlowSpec;

use crate::context::Ferry;
use crate::error::FerryError;

/// How long a plan outside Lambda (the CLI's) holds a flow's first plan
/// at a time: it has no deadline, so it renews its hold every
/// [`RENEW_EVERY`] while it plans. Long against clocks: a Lambda compares
/// the CLI machine's time with its own, and one a minute or more behind
/// would otherwise make its hold look over. One killed is not waited for
/// that long by a plan that watches it: see [`SILENT_FOR`].
const HOLD_OUTSIDE_LAMBDA: Duration = Duration::from_secs(10 * 60);
/// See [`HOLD_OUTSIDE_LAMBDA`]: each renewal writes a later end.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The longest one renewal is waited for before the next attempt.
const RENEW_ATTEMPT: Duration = Duration::from_secs(5);
/// A plan that renews its hold stops planning when it has not renewed it
/// for this long (DynamoDB not answering, several attempts), counted from
/// before it sent the claim or the renewal that last succeeded, by its
/// monotonic clock or the wall clock, whichever says longer (a machine
/// suspended stops the one, not the other): a plan watching the hold may
/// take it after [`SILENT_FOR`].
const HOLDER_STOPS_AFTER: Duration = Duration::from_secs(20);
/// A renewing hold that a process's plans saw unchanged for this long, by
/// that process's own clock (no other machine's time compared), is that
/// of a plan killed: its holder has stopped by [`HOLDER_STOPS_AFTER`],
/// measured from before the renewal the watcher saw last.
const SILENT_FOR: Duration = Duration::from_secs(45);

/// A moment by both clocks, to tell how long ago it was by the longer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Moment(Instant, SystemTime);

impl Moment {
    pub(super) fn now() -> Self {
        Self(Instant::now(), SystemTime::now())
    }

    fn elapsed(&self) -> Duration {
        self.0.elapsed().max(self.1.elapsed().unwrap_or_default())
    }
}

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

/// Whether this plan plans `flow`, taking its first plan if it is one;
/// `renews`: this plan renews its hold (it has no deadline, see
/// [`renewing`]). A renewing hold this process's plans have seen unchanged
/// for [`SILENT_FOR`] is taken: its plan was killed.
pub(super) async fn take(ferry: &Ferry, flow: &FlowSpec, started: &FlowStart, until_ms: i64, renews: bool) -> Result<Turn, FerryError> {
    if !started.first {
        return Ok(Turn::Plan { hold: None });
    }
    let key = ferry.flow_key(flow);
    let silent = {
        let seen = ferry.first_plan_holds.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&key)
            .filter(|(_, _, since)| since.elapsed() >= SILENT_FOR)
            .map(|(by, until, _)| (by.clone(), *until))
    };
    let claim = ferry
        .store
        .claim_first_plan(&key, until_ms, renews, silent.as_ref().map(|(by, until)| (by.as_str(), *until)))
        .await?;
    let mut seen = ferry.first_plan_holds.lock().unwrap_or_else(|p| p.into_inner());
    match claim {
        FirstPlanClaim::Ours(mark) => {
            seen.remove(&key);
            if let Some((by, _)) = &silent {
                tracing::warn!(
                    replicator = %ferry.spec.name, flow = %flow.id(), previous = %by,
                    "took the flow's first plan from a plan outside Lambda that stopped renewing its hold {} s ago (killed): \
                     this plan plans the flow",
                    SILENT_FOR.as_secs()
                );
            }
            Ok(Turn::Plan { hold: Some(mark) })
        }
        FirstPlanClaim::Held { until_ms, by, renews } => {
            if renews {
                match seen.get(&key) {
                    Some((b, u, _)) if *b == by && *u == until_ms => {}
                    _ => {
                        seen.insert(key, (by, until_ms, Instant::now()));
                    }
                }
            }
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), held_until_ms = until_ms,
                "the flow's first plan is running in another plan: this plan leaves the flow to it. \
                 A plan outside Lambda that was killed (a `ferry run` or `ferry plan`) is taken over {} s after its last renewal by a plan \
                 that watches it (`ferry run`); a Lambda's, or by plans that do not watch, at held_until_ms",
                SILENT_FOR.as_secs()
            );
            Ok(Turn::Leave)
        }
        FirstPlanClaim::Gone => {
            seen.remove(&key);
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
    claimed: Moment,
    deadline: Option<SystemTime>,
    work: impl std::future::Future<Output = Result<T, FerryError>>,
) -> Result<T, FerryError> {
    let Some(mark) = hold.filter(|_| deadline.is_none()) else {
        return work.await;
    };
    let key = ferry.flow_key(flow);
    let renew = async {
        // From before the write a watcher saw last (the claim, then each
        // renewal that succeeded).
        let mut renewed = claimed;
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let attempt = Moment::now();
            let left = HOLDER_STOPS_AFTER.saturating_sub(renewed.elapsed()).min(RENEW_ATTEMPT);
            let outcome = tokio::time::timeout(left, ferry.store.renew_first_plan(&key, mark, hold_until_ms(None))).await;
            match outcome {
                Ok(Ok(true)) => {
                    renewed = attempt;
                    continue;
                }
                Ok(Ok(false)) => match ferry.store.flow_marker(&key).await {
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
                Ok(Err(e)) => {
                    tracing::warn!(flow = %flow.id(), error = %e, "could not renew the hold on the flow's first plan; trying again")
                }
                Err(_) => tracing::warn!(flow = %flow.id(), "renewing the hold on the flow's first plan took too long; trying again"),
            }
            if renewed.elapsed() >= HOLDER_STOPS_AFTER {
                return FerryError::NotReady(format!(
                    "flow {}: this plan could not renew its hold on the flow's first plan for {} s (DynamoDB not answering); it \
                     stops, as another plan may take the flow's first plan now. The next plan starts it again",
                    flow.id(),
                    HOLDER_STOPS_AFTER.as_secs()
                ));
            }
        }
    };
    // The renewal first: a hold given up is not planned under once more.
    tokio::select! {
        biased;
        e = renew => Err(e),
        out = work => out,
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
