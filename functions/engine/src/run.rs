//! The state machine's loop in one process (`ferry run`): round after round
//! (a plan, then every batch's Replicate at once, see `round.rs`), with the
//! consumer-group syncs alongside, until interrupted or (`once`) caught up.
//! The loop's policy lives here: which failures are retried, when a `once`
//! run gives up, when it ends. What happens is told through [`RunEvent`]s
//! and how it ended through [`RunEnd`], for the caller to show and to turn
//! into an exit code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::domain::{RefusedTopic, TopicPartition};

use crate::context::Ferry;
use crate::error::FerryError;
use crate::groups::FlowGroupSync;
use crate::replicate::Budget;

mod round;
#[cfg(test)]
mod tests;

use round::Rounds;

/// How long a failed plan waits before the next.
const PLAN_RETRY_WAIT: Duration = Duration::from_secs(1);
/// How long the loop waits after a round with nothing to do (or its
/// partitions leased elsewhere) before planning again.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between plans of a run that goes on and copies
/// nothing (see `idle_wait`).
const IDLE_WAIT_MAX: Duration = Duration::from_secs(4);
/// The shortest time between two group syncs.
const GROUP_SYNC_MIN_EVERY: Duration = Duration::from_secs(1);
/// Time between two tries of a `once` run's last group sync at groups
/// another sync holds.
const LAST_SYNC_RETRY: Duration = Duration::from_secs(2);

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// End once every partition has reached the end offset the first plan
    /// saw (a failure ends the run too); otherwise run until interrupted.
    pub once: bool,
    /// Length of one replicate round (a Replicate invocation's budget).
    pub round: Duration,
    /// With `once`: how long plans may keep failing with a retryable error
    /// (a cluster or DynamoDB not answering) before the run gives up.
    pub give_up_after: Duration,
    /// Time between two group syncs (flows that sync consumer groups), when
    /// not `once`; at least a second.
    pub group_sync_every: Duration,
    /// With `once`: how long rounds may copy nothing, not caught up (every
    /// partition leased by another worker, paused, or waiting), before the
    /// run ends with what they wait for.
    pub stall_limit: Duration,
}

/// What the loop did, as it happens.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A round was planned; the topics it created and the ACLs (in words)
    /// it copied, either perhaps empty.
    Planned {
        /// Topics created on targets.
        created_topics: &'a [String],
        /// ACLs copied.
        copied_acls: &'a [String],
    },
    /// A plan refused to copy a topic (its target conflicts with it): told
    /// once per topic and reason; with `once`, the run ends as failed once
    /// the other topics are across.
    TopicRefused(&'a RefusedTopic),
    /// A plan failed with a retryable error; the next comes after `wait`.
    PlanRetrying {
        /// The cause.
        error: &'a FerryError,
        /// Time until the next plan.
        wait: Duration,
    },
    /// A partition stopped on an error (counted as a failure).
    PartitionStopped {
        /// The source partition.
        tp: &'a TopicPartition,
        /// What stopped it.
        error: &'a str,
    },
    /// A Replicate failed with a retryable error: the next round retries it.
    ReplicateRetrying(&'a FerryError),
    /// A Replicate failed for good (counted as a failure).
    ReplicateFailed(&'a FerryError),
    /// A round ended.
    RoundDone(Progress),
    /// With `once`: every partition reached its goal. A last group sync
    /// follows when a flow syncs groups.
    CaughtUp,
    /// What one group sync did for one flow (every flow, each sync).
    GroupsSynced(&'a FlowGroupSync),
    /// One failure of a group sync (one of a flow's `failures`).
    GroupSyncFailure(&'a str),
    /// A group sync failed as a whole.
    GroupSyncFailed(&'a FerryError),
}

/// Where the run stands after a round.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Partitions the round's plan gave out.
    pub partitions: usize,
    /// Records behind on the sources, as the round's plan saw them.
    pub behind: u64,
    /// Records written to the targets this round.
    pub records: u64,
    /// Records found already on a target this round (a takeover's reconcile).
    pub reconciled: u64,
    /// Records the opposite flow wrote, filtered this round, and their bytes.
    pub filtered: u64,
    /// See `filtered`.
    pub filtered_bytes: u64,
    /// How long the round's Replicates took.
    pub round_elapsed: Duration,
    /// Records written since the run started.
    pub total_records: u64,
    /// Bytes written since the run started.
    pub total_bytes: u64,
    /// Time since the run started.
    pub elapsed: Duration,
}

/// How a run ended, short of an error that ends it at once (a cluster
/// refusing Ferry with `once`, an error no retry can help).
#[derive(Debug)]
pub enum RunEnd {
    /// With `once`: caught up, and the last group sync (if any) succeeded.
    CaughtUp,
    /// With `once`: caught up, but the last group sync failed.
    GroupSyncFailed,
    /// Interrupted; the round under way was finished.
    Interrupted,
    /// With `once`: partitions stopped or Replicates failed.
    Failed {
        /// How many.
        failures: usize,
    },
    /// With `once`: rounds copied nothing for longer than `stall_limit`.
    Stalled {
        /// `RunOptions::stall_limit`.
        after: Duration,
        /// What the partitions not caught up wait for, in words.
        waiting: String,
    },
    /// With `once`: plans kept failing for longer than `give_up_after`.
    GaveUp {
        /// `RunOptions::give_up_after`.
        after: Duration,
        /// The last plan's error.
        error: FerryError,
    },
}

/// Run the loop until it ends (see [`RunEnd`]); `interrupted` set ends it
/// after the round under way. Every event goes to `on`, from this task and
/// from the group syncs' (hence `Send + Sync`).
pub async fn run<F>(ferry: &Ferry, opts: &RunOptions, interrupted: Arc<AtomicBool>, on: F) -> Result<RunEnd, FerryError>
where
    F: Fn(RunEvent<'_>) + Send + Sync + 'static,
{
    let on = Arc::new(on);
    let syncs_groups = ferry.spec.flows.iter().any(|f| f.groups.as_ref().is_some_and(|g| g.sync_offsets));
    let group_syncs = (syncs_groups && !opts.once).then(|| GroupSyncs::start(ferry, opts.group_sync_every, on.clone()));
    let end = rounds_until_end(ferry, opts, &interrupted, &*on, syncs_groups).await;
    if let Some(g) = group_syncs {
        g.stop(ferry.settings.group_sync_lease).await;
    }
    end
}

/// The group syncs of a run that goes on (not `once`), one after another,
/// in a task of their own.
struct GroupSyncs {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl GroupSyncs {
    fn start<F>(ferry: &Ferry, every: Duration, on: Arc<F>) -> Self
    where
        F: Fn(RunEvent<'_>) + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (ferry, flag) = (ferry.clone(), stop.clone());
        let every = every.max(GROUP_SYNC_MIN_EVERY);
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                sync_groups_telling(&ferry, &*on, Some(&flag)).await;
                let next = Instant::now() + every;
                while Instant::now() < next && !flag.load(Ordering::SeqCst) {
                    tokio::time::sleep(IDLE_WAIT.min(next - Instant::now())).await;
                }
            }
        });
        GroupSyncs { stop, task }
    }

    /// Stop them: the sync under way starts no other group, and the one it
    /// is at ends and gives its lease back (a sync cut off would keep the
    /// group from every other sync until its lease ended); cut off only
    /// if that takes longer than `lease`, by when its commit is refused
    /// anyway (see `groups::commit_margin_ms`).
    async fn stop(mut self, lease: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let first = Duration::from_secs(2).min(lease);
        if tokio::time::timeout(first, &mut self.task).await.is_ok() {
            return;
        }
        tracing::warn!(
            "finishing the group sync under way, which gives its group's lease back (a slow cluster); a second Ctrl-C \
             stops now, and the lease then stays until it ends"
        );
        if tokio::time::timeout(lease - first, &mut self.task).await.is_err() {
            tracing::warn!(
                wait_s = lease.as_secs(),
                "the group sync under way did not end in time: cut off, its group's lease is left to end"
            );
        }
    }
}

impl Drop for GroupSyncs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The rounds of [`run`], until it ends.
async fn rounds_until_end<F: Fn(RunEvent<'_>) + ?Sized>(
    ferry: &Ferry,
    opts: &RunOptions,
    interrupted: &Arc<AtomicBool>,
    on: &F,
    syncs_groups: bool,
) -> Result<RunEnd, FerryError> {
    let started = Instant::now();
    let mut rounds = Rounds::new(opts.once);
    let (mut total_records, mut total_bytes, mut failures) = (0u64, 0u64, 0usize);
    let mut failing_since: Option<Instant> = None;
    let mut stalled_since: Option<Instant> = None;
    let mut told_refused = std::collections::HashSet::new();
    let mut idle_rounds: u32 = 0;
    loop {
        let planning = Instant::now();
        let plan = match rounds.plan(ferry).await {
            Ok(plan) => {
                tracing::debug!(ms = planning.elapsed().as_millis() as u64, "planned");
                failing_since = None;
                plan
            }
            Err(e) => {
                let failing_for = failing_since.get_or_insert_with(Instant::now).elapsed();
                match after_plan_error(&e, opts, interrupted.load(Ordering::SeqCst), failing_for) {
                    AfterPlanError::Retry => {
                        on(RunEvent::PlanRetrying {
                            error: &e,
                            wait: PLAN_RETRY_WAIT,
                        });
                        tokio::time::sleep(PLAN_RETRY_WAIT).await;
                        continue;
                    }
                    AfterPlanError::GiveUp => {
                        return Ok(RunEnd::GaveUp {
                            after: opts.give_up_after,
                            error: e,
                        })
                    }
                    AfterPlanError::End => return Err(e),
                }
            }
        };
        on(RunEvent::Planned {
            created_topics: &plan.created_topics,
            copied_acls: &plan.copied_acls,
        });
        // A refusal that clears and comes back is told again.
        told_refused.retain(|(flow, topic, why): &(String, String, String)| {
            plan.refused_topics
                .iter()
                .any(|r| &r.flow == flow && &r.topic == topic && &r.why == why)
        });
        for r in &plan.refused_topics {
            if told_refused.insert((r.flow.clone(), r.topic.clone(), r.why.clone())) {
                on(RunEvent::TopicRefused(r));
            }
        }
        let (partitions, behind) = (plan.partitions(), plan.behind());
        let round_started = Instant::now();
        let budget = Budget {
            deadline: tokio::time::Instant::now() + opts.round,
            interrupted: interrupted.clone(),
        };
        let mut round = rounds.replicate(ferry, &plan, &budget).await;
        for (tp, error) in &round.stopped {
            failures += 1;
            on(RunEvent::PartitionStopped { tp, error });
        }
        for e in std::mem::take(&mut round.failed) {
            match after_replicate_error(&e, opts.once) {
                AfterReplicateError::End => return Err(e),
                AfterReplicateError::Retry => on(RunEvent::ReplicateRetrying(&e)),
                AfterReplicateError::Count => {
                    failures += 1;
                    on(RunEvent::ReplicateFailed(&e));
                }
            }
        }
        total_records += round.records;
        total_bytes += round.bytes;
        on(RunEvent::RoundDone(Progress {
            partitions,
            behind,
            records: round.records,
            reconciled: round.reconciled,
            filtered: round.filtered,
            filtered_bytes: round.filtered_bytes,
            round_elapsed: round_started.elapsed(),
            total_records,
            total_bytes,
            elapsed: started.elapsed(),
        }));
        let progressed = round.records > 0 || round.moved;
        let stalled_for = match (progressed, &mut stalled_since) {
            (true, since) => {
                *since = None;
                Duration::ZERO
            }
            (false, since) => since.get_or_insert_with(Instant::now).elapsed(),
        };
        let outcome = RoundOutcome {
            interrupted: interrupted.load(Ordering::SeqCst),
            failures,
            stalled: stalled_for > opts.stall_limit,
            partitions,
            // A flow another plan is starting is not across yet.
            all_caught_up: round.all_caught_up && plan.left_flows.is_empty(),
            records: round.records,
        };
        match after_round(opts.once, &outcome) {
            AfterRound::Interrupted => return Ok(RunEnd::Interrupted),
            AfterRound::Failed => return Ok(RunEnd::Failed { failures }),
            AfterRound::Stalled => {
                return Ok(RunEnd::Stalled {
                    after: opts.stall_limit,
                    waiting: round.waiting(&plan.left_flows),
                })
            }
            // Everything else is across, and its groups are synced: a
            // refused topic is not.
            AfterRound::CaughtUp if !plan.refused_topics.is_empty() => {
                if syncs_groups {
                    sync_groups_telling(ferry, on, None).await;
                }
                return Ok(RunEnd::Failed {
                    failures: failures + plan.refused_topics.len(),
                });
            }
            AfterRound::CaughtUp => {
                on(RunEvent::CaughtUp);
                if syncs_groups {
                    match last_group_sync(ferry, on, opts.stall_limit, interrupted).await {
                        LastSync::Synced => {}
                        LastSync::Failed => return Ok(RunEnd::GroupSyncFailed),
                        LastSync::Interrupted => return Ok(RunEnd::Interrupted),
                    }
                }
                return Ok(RunEnd::CaughtUp);
            }
            AfterRound::Wait => {
                // A round that could do nothing (every partition leased
                // by another process, stopped on a lasting fault, or none
                // planned) backs off: each plan reads every cursor.
                idle_rounds = if round.could_do_nothing() { idle_rounds + 1 } else { 0 };
                let until = Instant::now() + idle_wait(opts, idle_rounds);
                while Instant::now() < until && !interrupted.load(Ordering::SeqCst) {
                    tokio::time::sleep(IDLE_WAIT.min(until - Instant::now())).await;
                }
            }
            AfterRound::Next => idle_rounds = 0,
        }
    }
}

/// One consumer-group sync of every flow, told to `on`: `None` on a
/// failure, else the flows with groups left to another sync holding their
/// lease.
async fn sync_groups_telling<F: Fn(RunEvent<'_>) + ?Sized>(ferry: &Ferry, on: &F, stop: Option<&AtomicBool>) -> Option<Vec<FlowGroupSync>> {
    match crate::groups::sync_groups(ferry, None, stop).await {
        Ok(out) => tell_syncs(out.flows, on),
        Err(e) => {
            on(RunEvent::GroupSyncFailed(&e));
            None
        }
    }
}

/// `flows`' syncs told to `on`: `None` if any failed, else those with
/// groups another sync held.
fn tell_syncs<F: Fn(RunEvent<'_>) + ?Sized>(flows: Vec<FlowGroupSync>, on: &F) -> Option<Vec<FlowGroupSync>> {
    let mut ok = true;
    for f in &flows {
        on(RunEvent::GroupsSynced(f));
        for e in &f.failures {
            on(RunEvent::GroupSyncFailure(e));
            ok = false;
        }
    }
    ok.then(|| flows.into_iter().filter(|f| f.busy > 0).collect())
}

/// The groups `held` names synced again, told to `on`, as
/// [`sync_groups_telling`] answers.
async fn sync_held_telling<F: Fn(RunEvent<'_>) + ?Sized>(ferry: &Ferry, on: &F, held: &[FlowGroupSync]) -> Option<Vec<FlowGroupSync>> {
    let mut flows = Vec::with_capacity(held.len());
    for f in held {
        let Some(spec) = ferry.spec.flows.iter().find(|s| s.id() == f.flow) else {
            continue;
        };
        match crate::groups::sync_groups_now(ferry, spec, &f.held, None).await {
            Ok((again, _)) => flows.push(again),
            Err(e) => {
                on(RunEvent::GroupSyncFailed(&e));
                return None;
            }
        }
    }
    tell_syncs(flows, on)
}

/// When the leases on `f`'s held groups end, as the run gives up on them.
async fn held_until(ferry: &Ferry, f: &FlowGroupSync) -> String {
    let Some(spec) = ferry.spec.flows.iter().find(|s| s.id() == f.flow) else {
        return "its lease unread".into();
    };
    let flow_key = ferry.flow_key(spec);
    let mut last: Option<i64> = None;
    for group in &f.held {
        if let Ok(Some(until)) = ferry.store.group_sync_held_until(&flow_key, group).await {
            last = last.max(Some(until));
        }
    }
    last.map(|until| format!("its lease ends in {} s", (until - ferry_adapters::state::now_ms()).max(0) / 1000))
        .unwrap_or_else(|| "its lease unread".into())
}

/// How a `once` run's last group sync ended.
#[derive(Debug, PartialEq, Eq)]
enum LastSync {
    Synced,
    Failed,
    Interrupted,
}

/// The last group sync of a `once` run: a group another sync holds (one
/// killed, whose lease on it has not ended; an overlapping execution; a
/// `ferry move`) is synced again every [`LAST_SYNC_RETRY`], not left
/// unsynced under an exit 0; for `stall_limit` at most, then a failure
/// naming them and when the holder's lease ends.
async fn last_group_sync<F: Fn(RunEvent<'_>) + ?Sized>(ferry: &Ferry, on: &F, stall_limit: Duration, interrupted: &AtomicBool) -> LastSync {
    let give_up = Instant::now() + stall_limit;
    // Not stopped by Ctrl-C: a group it did not reach would pass for synced.
    let Some(mut held) = sync_groups_telling(ferry, on, None).await else {
        return LastSync::Failed;
    };
    let mut told = false;
    loop {
        if held.is_empty() {
            return LastSync::Synced;
        }
        if Instant::now() >= give_up {
            for f in &held {
                let ends_in = held_until(ferry, f).await;
                on(RunEvent::GroupSyncFailure(&format!(
                    "flow {}: {} groups were held by another sync for the whole --stall-seconds ({} s), and are not synced \
                     by this run: {} ({ends_in}; the holder is a `ferry move`, a deployed SyncGroups, or a sync killed). Fix: \
                     see `ferry groups`; run again once that sync is over, or give a longer --stall-seconds",
                    f.flow,
                    f.busy,
                    stall_limit.as_secs(),
                    f.held.join(", "),
                )));
            }
            return LastSync::Failed;
        }
        if !std::mem::replace(&mut told, true) {
            let names: Vec<(&str, &[String])> = held.iter().map(|f| (f.flow.as_str(), f.held.as_slice())).collect();
            tracing::info!(groups = ?names, "groups held by another sync (one killed, or still running): syncing them again until it lets go");
        }
        let next = (Instant::now() + LAST_SYNC_RETRY).min(give_up);
        while Instant::now() < next {
            if interrupted.load(Ordering::SeqCst) {
                return LastSync::Interrupted;
            }
            tokio::time::sleep(IDLE_WAIT.min(next - Instant::now())).await;
        }
        held = match sync_held_telling(ferry, on, &held).await {
            Some(h) => h,
            None => return LastSync::Failed,
        };
    }
}

/// What the loop does after a failed plan.
#[derive(Debug, PartialEq, Eq)]
enum AfterPlanError {
    /// Plan again after a wait.
    Retry,
    /// End the run: `once`, failing for longer than `give_up_after`.
    GiveUp,
    /// End the run with the error.
    End,
}

/// A plan failed with `e`, plans having failed for `failing_for`. With
/// `once`, a refused login (after one fresh read of the secret) ends the run
/// at once with the cause, as a deployed invocation does; running on, Ferry
/// waits for a fix instead. A broker restarting or DynamoDB unavailable:
/// plan again after a wait (with `once`, give up after a while with the
/// cause), unless interrupted.
fn after_plan_error(e: &FerryError, opts: &RunOptions, interrupted: bool, failing_for: Duration) -> AfterPlanError {
    if e.is_refusal() && opts.once {
        AfterPlanError::End
    } else if e.is_retryable() && !interrupted {
        if opts.once && failing_for > opts.give_up_after {
            AfterPlanError::GiveUp
        } else {
            AfterPlanError::Retry
        }
    } else {
        AfterPlanError::End
    }
}

/// What the loop does after a Replicate failed as a whole.
#[derive(Debug, PartialEq, Eq)]
enum AfterReplicateError {
    /// Go on; the next round retries it.
    Retry,
    /// Go on, counting a failure.
    Count,
    /// End the run with the error.
    End,
}

/// With `once`, a cluster that refused Ferry in the middle of the copy (a
/// re-authentication refused, credentials revoked) ends the run with the
/// cause, as a deployed invocation does.
fn after_replicate_error(e: &FerryError, once: bool) -> AfterReplicateError {
    if e.is_refusal() && once {
        AfterReplicateError::End
    } else if e.is_retryable() {
        AfterReplicateError::Retry
    } else {
        AfterReplicateError::Count
    }
}

/// What a round left, for deciding what comes next.
#[derive(Debug, Default)]
struct RoundOutcome {
    /// Whether the run was interrupted.
    interrupted: bool,
    /// Failures since the run started.
    failures: usize,
    /// Rounds have copied nothing for longer than `stall_limit`.
    stalled: bool,
    /// Partitions the round's plan gave out.
    partitions: usize,
    /// Whether every partition reached its goal.
    all_caught_up: bool,
    /// Records the round wrote.
    records: u64,
}

/// What the loop does after a round.
#[derive(Debug, PartialEq, Eq)]
enum AfterRound {
    /// End: interrupted.
    Interrupted,
    /// End (`once`): failures.
    Failed,
    /// End (`once`): caught up.
    CaughtUp,
    /// End (`once`): nothing copied for too long, not caught up.
    Stalled,
    /// Nothing to do, or the partitions leased elsewhere: wait a little,
    /// then the next round.
    Wait,
    /// The next round at once.
    Next,
}

/// How long the loop waits before planning again after its `n`th round
/// in a row that could do nothing (see `Round::could_do_nothing`; 0: a
/// round that could): [`IDLE_WAIT`], doubled
/// each time after the first in a run that goes on, up to
/// [`IDLE_WAIT_MAX`] or the round's length, as each plan reads every
/// cursor; a `once` run, which ends when it is caught up, keeps looking
/// every [`IDLE_WAIT`].
fn idle_wait(opts: &RunOptions, n: u32) -> Duration {
    if opts.once || n <= 1 {
        return IDLE_WAIT;
    }
    let doubled = IDLE_WAIT.saturating_mul(1u32 << (n - 1).min(8));
    doubled.min(IDLE_WAIT_MAX).min(opts.round.max(IDLE_WAIT))
}

fn after_round(once: bool, o: &RoundOutcome) -> AfterRound {
    if o.interrupted {
        AfterRound::Interrupted
    } else if o.failures > 0 && once {
        AfterRound::Failed
    } else if once && o.all_caught_up {
        AfterRound::CaughtUp
    } else if once && o.stalled {
        AfterRound::Stalled
    } else if o.partitions == 0 || (!o.all_caught_up && o.records == 0) {
        AfterRound::Wait
    } else {
        AfterRound::Next
    }
}
