//! The hand-off between overlapping executions. Each Replicate copies its
//! batch until its deadline; the executions after it (every minute) find
//! its leases held. Left at that, a partition waits, once its holder
//! stops, for the next execution's Plan and Replicate: up to the schedule's
//! period without replication. So every holder records when it plans to
//! stop (`lease_ends_ms`), and a Replicate that finds partitions held by
//! one stopping within `Settings::handoff_wait` claims the hand-off (one
//! successor per holder), waits for that moment, watches one of the
//! holder's partitions until it is given back, and then takes the leases.
//! Partitions of holders that stop later are left to later executions,
//! which arrive before those stop: what this one holds meanwhile would
//! expire unrenewed while it waited.

use std::collections::HashSet;
use std::time::Duration;

use ferry_adapters::state::{now_ms, CursorItem, Lease, StateError};
use ferry_core::domain::{PartitionWork, TopicPartition};
use tokio::time::Instant;

use super::{Budget, FlowRun, DEADLINE_MARGIN};

/// How long past the holder's planned stop a successor watches for its
/// release: the holder's last round and checkpoint. A holder that died
/// keeps its lease until it expires; the successor leaves it to the next
/// execution.
const RELEASE_GRACE: Duration = Duration::from_secs(15);
/// How often a waiting successor reads the watched partition.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Once the watched partition is given back, how long the holder's other
/// partitions are tried again (it gives them back together).
const TAKE_WITHIN: Duration = Duration::from_secs(2);
/// The least time a successor must have left after the holder's planned
/// stop for the wait to be worth it; nor does it wait or try past its own
/// stop less this.
const MIN_USEFUL: Duration = Duration::from_secs(10);
/// Holders that plan to stop within this of the first are waited for
/// together: the batches of one execution start, and so stop, together,
/// and each plan regroups partitions by lag, so one batch of the next
/// execution holds partitions of several.
const TOGETHER: Duration = Duration::from_secs(10);

/// The partitions a Replicate waited for, and until when it tries them.
pub(super) struct Handoff {
    waiting: HashSet<TopicPartition>,
    give_up: Instant,
}

/// When this invocation plans to stop copying, in ms since the epoch: what
/// its leases record for a successor.
pub(super) fn planned_stop_ms(budget: &Budget) -> i64 {
    let left = budget
        .deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(DEADLINE_MARGIN);
    now_ms() + left.as_millis() as i64
}

/// Whether a lease held by another (`cursor`, read at `now`) is worth
/// waiting for: its holder plans to stop within `wait`, and at least
/// [`MIN_USEFUL`] before this invocation (stopping at `my_stop_ms`) does.
pub(super) fn worth_waiting(cursor: &CursorItem, owner: &str, now: i64, wait: Duration, my_stop_ms: i64) -> bool {
    let held = cursor.lease_owner.as_deref().is_some_and(|o| o != owner) && cursor.lease_expires_ms >= now;
    let ends = cursor.lease_ends_ms;
    // A planned stop already past: a holder that is late or dead, whose
    // lease expires on its own.
    held && ends > now && ends - now <= wait.as_millis() as i64 && ends + MIN_USEFUL.as_millis() as i64 <= my_stop_ms
}

/// Whether no other worker holds a live lease on the partition: it can be
/// taken now.
fn free(cursor: &CursorItem, owner: &str, now: i64) -> bool {
    cursor.lease_owner.as_deref().is_none_or(|o| o == owner) || cursor.lease_expires_ms < now
}

/// The first holders' planned stop, one watched partition per holder, and
/// all their partitions (see [`first_holders`]).
type Holders<'a> = (i64, Vec<(&'a str, &'a TopicPartition)>, Vec<&'a TopicPartition>);

/// Of the leases worth waiting for, those of the holders that stop within
/// [`TOGETHER`] of the first: the first's planned stop, one watched
/// partition per holder (its lowest, the first holder's first), and all
/// their partitions.
fn first_holders<'a>(held: &[&'a CursorItem]) -> Option<Holders<'a>> {
    let first = held.iter().min_by_key(|c| (c.lease_ends_ms, &c.tp))?;
    let until = first.lease_ends_ms + TOGETHER.as_millis() as i64;
    let mut group: Vec<&CursorItem> = held.iter().copied().filter(|c| c.lease_ends_ms <= until).collect();
    group.sort_by_key(|c| (c.lease_ends_ms, &c.tp));
    let mut watched: Vec<(&str, &TopicPartition)> = Vec::new();
    for c in &group {
        let owner = c.lease_owner.as_deref()?;
        if !watched.iter().any(|(o, _)| *o == owner) {
            watched.push((owner, &c.tp));
        }
    }
    let mut tps: Vec<&TopicPartition> = group.iter().map(|c| &c.tp).collect();
    tps.sort();
    Some((first.lease_ends_ms, watched, tps))
}

impl Handoff {
    fn none() -> Self {
        Handoff {
            waiting: HashSet::new(),
            give_up: Instant::now(),
        }
    }

    /// Read the batch's leases; if holders stop soon enough (see
    /// [`worth_waiting`]), none of the batch's partitions is free to take
    /// now, and no other successor claimed the hand-off, wait until the
    /// holders stopping first (see [`first_holders`]) give their
    /// partitions back, at most [`RELEASE_GRACE`] past their planned stop
    /// and never closer than [`MIN_USEFUL`] to this invocation's own stop.
    /// Nothing is held meanwhile. A failed read only means no wait: the
    /// lease acquisition that follows reports what is wrong.
    pub(super) async fn wait_for_holder(run: &FlowRun<'_>, partitions: &[PartitionWork], budget: &Budget, owner: &str) -> Self {
        let wait = run.ferry.settings.handoff_wait;
        if wait.is_zero() {
            return Self::none();
        }
        let store = &run.ferry.store;
        let tps: Vec<&TopicPartition> = partitions.iter().map(|w| &w.source).collect();
        let cursors = match store.get_cursors(run.key, &tps).await {
            Ok(cursors) => cursors,
            Err(e) => {
                tracing::warn!(flow = %run.flow.id(), error = %e, "could not read the batch's cursors; not waiting for a holder");
                return Self::none();
            }
        };
        let (now, my_stop) = (now_ms(), planned_stop_ms(budget));
        let read: Vec<&CursorItem> = tps.iter().filter_map(|tp| cursors.get(*tp)).collect();
        if read.len() < partitions.len() || read.iter().any(|c| free(c, owner, now)) {
            // Partitions to copy now: no waiting, the held ones are left
            // to a later worker.
            return Self::none();
        }
        let held: Vec<&CursorItem> = read.into_iter().filter(|c| worth_waiting(c, owner, now, wait, my_stop)).collect();
        let Some((ends, watched, tps)) = first_holders(&held) else {
            return Self::none();
        };
        let last_try = Instant::now() + Duration::from_millis((my_stop - now).max(0) as u64).saturating_sub(MIN_USEFUL);
        let (holder, claimed) = watched[0];
        match store
            .claim_handoff(run.key, claimed, owner, ends + RELEASE_GRACE.as_millis() as i64)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(flow = %run.flow.id(), holder, "another worker waits to take over this batch's partitions; not waiting");
                return Self::none();
            }
            Err(e) => {
                tracing::warn!(flow = %run.flow.id(), error = %e, "could not claim the hand-off; not waiting");
                return Self::none();
            }
        }
        tracing::info!(
            flow = %run.flow.id(), holder, holders = watched.len(), partitions = tps.len(), wait_ms = (ends - now).max(0),
            "partitions leased by a worker that stops soon; waiting to take them over"
        );
        let wake = Instant::now() + Duration::from_millis((ends - now).max(0) as u64);
        while Instant::now() < wake && !budget.is_interrupted() {
            tokio::time::sleep(wake.saturating_duration_since(Instant::now()).min(Duration::from_secs(1))).await;
        }
        let give_up = (Instant::now() + RELEASE_GRACE).min(last_try);
        let mut watching = watched;
        while !watching.is_empty() {
            // One read for every holder watched. A failed read says nothing
            // of the holders: they are watched on, until the give-up.
            let watched: Vec<&TopicPartition> = watching.iter().map(|&(_, tp)| tp).collect();
            match store.get_cursors(run.key, &watched).await {
                Ok(reads) => {
                    let at = now_ms();
                    watching.retain(|(o, tp)| {
                        reads
                            .get(*tp)
                            .is_some_and(|c| c.lease_owner.as_deref() == Some(*o) && c.lease_expires_ms >= at)
                    });
                }
                Err(e) => tracing::warn!(flow = %run.flow.id(), error = %e, "could not read the holders' cursors; watching on"),
            }
            if watching.is_empty() {
                break;
            }
            if Instant::now() >= give_up || budget.is_interrupted() {
                tracing::info!(flow = %run.flow.id(), holders = watching.len(), "a holder has not given its partitions back; leaving them to a later worker");
                break;
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
        Handoff {
            waiting: tps.into_iter().cloned().collect(),
            give_up: (Instant::now() + TAKE_WITHIN).min(last_try),
        }
    }

    /// Take the partition's lease, trying again for a moment while it is
    /// one of the holder's waited for (it gives them back together).
    pub(super) async fn acquire(
        &self,
        run: &FlowRun<'_>,
        tp: &TopicPartition,
        owner: &str,
        ends_ms: i64,
    ) -> Result<(Lease, CursorItem), StateError> {
        let duration = run.ferry.settings.lease_duration;
        loop {
            match run.ferry.store.acquire_lease_until(run.key, tp, owner, duration, ends_ms).await {
                Err(StateError::LeaseHeld { .. }) if self.waiting.contains(tp) && Instant::now() < self.give_up => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                res => return res,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(owner: Option<&str>, expires_ms: i64, ends_ms: i64) -> CursorItem {
        CursorItem {
            lease_owner: owner.map(str::to_owned),
            lease_expires_ms: expires_ms,
            lease_ends_ms: ends_ms,
            ..CursorItem::default()
        }
    }

    #[test]
    fn a_successor_waits_only_for_a_live_holder_that_stops_soon_enough_to_leave_it_time() {
        let wait = Duration::from_secs(75);
        let now = 1_000_000;
        let me = now + 300_000;
        // Stops in 30 s, and leaves this one minutes: wait.
        assert!(worth_waiting(&held(Some("a"), now + 20_000, now + 30_000), "me", now, wait, me));
        // Stops past the window: the next execution's business.
        assert!(!worth_waiting(&held(Some("a"), now + 20_000, now + 90_000), "me", now, wait, me));
        // Leaves this one under MIN_USEFUL: not worth it.
        assert!(!worth_waiting(
            &held(Some("a"), now + 20_000, now + 30_000),
            "me",
            now,
            wait,
            now + 35_000
        ));
        // Its planned stop already past (late or dead: its lease expires).
        assert!(!worth_waiting(&held(Some("a"), now + 20_000, now - 1), "me", now, wait, me));
        // Never said when it stops (an older release), expired, free, or ours.
        assert!(!worth_waiting(&held(Some("a"), now + 20_000, 0), "me", now, wait, me));
        assert!(!worth_waiting(&held(Some("a"), now - 1, now + 30_000), "me", now, wait, me));
        assert!(!worth_waiting(&held(None, now + 20_000, now + 30_000), "me", now, wait, me));
        assert!(!worth_waiting(&held(Some("me"), now + 20_000, now + 30_000), "me", now, wait, me));
        // Turned off.
        assert!(!worth_waiting(
            &held(Some("a"), now + 20_000, now + 30_000),
            "me",
            now,
            Duration::ZERO,
            me
        ));
    }

    #[test]
    fn the_holders_that_stop_together_first_are_waited_for_with_their_partitions() {
        let at = |topic: &str, p: i32, owner: &str, ends_ms: i64| CursorItem {
            tp: TopicPartition::new(topic, p),
            ..held(Some(owner), 1, ends_ms)
        };
        let items = [
            at("b", 1, "next-minute", 60_500),
            at("b", 0, "early", 500),
            at("a", 3, "early", 500),
            at("a", 1, "same-execution", 2_500),
            at("a", 0, "next-minute", 60_500),
        ];
        let refs: Vec<&CursorItem> = items.iter().collect();
        let (ends, watched, tps) = first_holders(&refs).expect("holders worth waiting for");
        assert_eq!(ends, 500);
        assert_eq!(
            watched,
            vec![
                ("early", &TopicPartition::new("a", 3)),
                ("same-execution", &TopicPartition::new("a", 1))
            ]
        );
        assert_eq!(
            tps,
            vec![
                &TopicPartition::new("a", 1),
                &TopicPartition::new("a", 3),
                &TopicPartition::new("b", 0)
            ]
        );
        assert!(first_holders(&[]).is_none());
    }

    #[test]
    fn a_partition_is_free_when_unheld_expired_or_ours() {
        assert!(free(&held(None, 0, 0), "me", 1_000));
        assert!(free(&held(Some("a"), 999, 5_000), "me", 1_000));
        assert!(free(&held(Some("me"), 5_000, 5_000), "me", 1_000));
        assert!(!free(&held(Some("a"), 5_000, 5_000), "me", 1_000));
    }
}
