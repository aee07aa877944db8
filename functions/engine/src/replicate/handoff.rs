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
use futures::future::join_all;
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
/// stop for the wait to be worth it.
const MIN_USEFUL: Duration = Duration::from_secs(10);

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
    held && ends > 0 && ends - now <= wait.as_millis() as i64 && ends + MIN_USEFUL.as_millis() as i64 <= my_stop_ms
}

/// Of the leases worth waiting for, those of the holder that stops first
/// (the holder's id, its planned stop, and its partitions, the watched one
/// first).
fn first_holder<'a>(held: &[&'a CursorItem]) -> Option<(&'a str, i64, Vec<&'a TopicPartition>)> {
    let first = held.iter().min_by_key(|c| (c.lease_ends_ms, &c.tp))?;
    let owner = first.lease_owner.as_deref()?;
    let mut tps: Vec<&TopicPartition> = held
        .iter()
        .filter(|c| c.lease_owner.as_deref() == Some(owner))
        .map(|c| &c.tp)
        .collect();
    tps.sort();
    Some((owner, first.lease_ends_ms, tps))
}

impl Handoff {
    fn none() -> Self {
        Handoff {
            waiting: HashSet::new(),
            give_up: Instant::now(),
        }
    }

    /// Read the batch's leases; if a holder stops soon enough (see
    /// [`worth_waiting`]) and no other successor claimed it, wait until it
    /// gives its first partition back (or [`RELEASE_GRACE`] past its
    /// planned stop). Nothing is held meanwhile. A failed read only means
    /// no wait: the lease acquisition that follows reports what is wrong.
    pub(super) async fn wait_for_holder(run: &FlowRun<'_>, partitions: &[PartitionWork], budget: &Budget, owner: &str) -> Self {
        let wait = run.ferry.settings.handoff_wait;
        if wait.is_zero() {
            return Self::none();
        }
        let store = &run.ferry.store;
        let cursors = join_all(partitions.iter().map(|w| store.get_cursor(run.key, &w.source))).await;
        let (now, my_stop) = (now_ms(), planned_stop_ms(budget));
        let held: Vec<&CursorItem> = cursors
            .iter()
            .filter_map(|c| c.as_ref().ok().and_then(Option::as_ref))
            .filter(|c| worth_waiting(c, owner, now, wait, my_stop))
            .collect();
        let Some((holder, ends, tps)) = first_holder(&held) else {
            return Self::none();
        };
        let watched = tps[0];
        let until = ends + RELEASE_GRACE.as_millis() as i64;
        match store.claim_handoff(run.key, watched, owner, until).await {
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
            flow = %run.flow.id(), holder, partitions = tps.len(), wait_ms = (ends - now).max(0),
            "partitions leased by a worker that stops soon; waiting to take them over"
        );
        tokio::time::sleep(Duration::from_millis((ends - now).max(0) as u64)).await;
        let give_up = Instant::now() + RELEASE_GRACE;
        loop {
            match store.get_cursor(run.key, watched).await {
                Ok(Some(c)) if c.lease_owner.as_deref() == Some(holder) && c.lease_expires_ms >= now_ms() => {}
                _ => break,
            }
            if Instant::now() >= give_up {
                tracing::info!(flow = %run.flow.id(), holder, "the holder has not given its partitions back; leaving them to a later worker");
                break;
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
        Handoff {
            waiting: tps.into_iter().cloned().collect(),
            give_up: Instant::now() + TAKE_WITHIN,
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
    fn the_holder_that_stops_first_is_waited_for_with_its_partitions_only() {
        let at = |topic: &str, p: i32, owner: &str, ends_ms: i64| CursorItem {
            tp: TopicPartition::new(topic, p),
            ..held(Some(owner), 1, ends_ms)
        };
        let items = [
            at("b", 1, "late", 900),
            at("b", 0, "early", 500),
            at("a", 3, "early", 500),
            at("a", 0, "late", 900),
        ];
        let refs: Vec<&CursorItem> = items.iter().collect();
        let (owner, ends, tps) = first_holder(&refs).expect("a holder worth waiting for");
        assert_eq!((owner, ends), ("early", 500));
        assert_eq!(tps, vec![&TopicPartition::new("a", 3), &TopicPartition::new("b", 0)]);
        assert!(first_holder(&[]).is_none());
    }
}
