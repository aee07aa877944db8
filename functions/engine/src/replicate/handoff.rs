//! The hand-off between overlapping executions. Each Replicate copies its
//! batch until its deadline; the executions after it (every minute) find
//! its leases held. Left at that, a partition waits, once its holder
//! stops, for the next execution's Plan and Replicate: up to the schedule's
//! period without replication. So every holder records when it plans to
//! stop (`lease_ends_ms`), and a Replicate that finds a partition held by
//! one stopping within `Settings::handoff_wait` waits for that moment and
//! takes the lease as soon as it is given back.

use std::collections::HashSet;
use std::time::Duration;

use ferry_adapters::state::{now_ms, CursorItem, Lease, StateError};
use ferry_core::domain::{PartitionWork, TopicPartition};
use futures::future::join_all;
use tokio::time::Instant;

use super::{Budget, FlowRun, DEADLINE_MARGIN};

/// How long past the holder's planned stop a successor keeps trying: the
/// holder's last checkpoint and its release. A holder that died keeps its
/// lease until it expires; the successor leaves it to the next execution.
const RELEASE_GRACE: Duration = Duration::from_secs(10);
/// How often a waiting successor tries the lease again.
const RETRY_EVERY: Duration = Duration::from_millis(100);
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

impl Handoff {
    /// Read the batch's leases; if any holder stops soon enough (see
    /// [`worth_waiting`]), sleep until the last of them plans to stop.
    /// Nothing is held meanwhile. A failed read only means no wait: the
    /// lease acquisition that follows reports what is wrong.
    pub(super) async fn wait_for_holders(run: &FlowRun<'_>, partitions: &[PartitionWork], budget: &Budget, owner: &str) -> Self {
        let none = Handoff {
            waiting: HashSet::new(),
            give_up: Instant::now(),
        };
        let wait = run.ferry.settings.handoff_wait;
        if wait.is_zero() {
            return none;
        }
        let cursors = join_all(partitions.iter().map(|w| run.ferry.store.get_cursor(run.key, &w.source))).await;
        let (now, my_stop) = (now_ms(), planned_stop_ms(budget));
        let held: Vec<&CursorItem> = cursors
            .iter()
            .filter_map(|c| c.as_ref().ok().and_then(Option::as_ref))
            .filter(|c| worth_waiting(c, owner, now, wait, my_stop))
            .collect();
        let Some(last) = held.iter().map(|c| c.lease_ends_ms).max() else {
            return none;
        };
        let sleep = Duration::from_millis((last - now).max(0) as u64);
        tracing::info!(
            flow = %run.flow.id(), partitions = held.len(), wait_ms = sleep.as_millis() as u64,
            "partitions leased by a worker that stops soon; waiting to take them over"
        );
        tokio::time::sleep(sleep).await;
        Handoff {
            waiting: held.iter().map(|c| c.tp.clone()).collect(),
            give_up: Instant::now() + RELEASE_GRACE,
        }
    }

    /// Take the partition's lease, trying again while it is one waited for
    /// and its holder has not given it back yet.
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
                    tokio::time::sleep(RETRY_EVERY).await
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
}
