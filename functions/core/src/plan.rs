//! Planning: split the selected partitions into bounded Replicate batches,
//! balanced by lag.

use crate::domain::PartitionWork;

/// Default number of partitions in one Replicate invocation.
pub const DEFAULT_MAX_PARTITIONS_PER_BATCH: usize = 16;

/// The most partitions a batch grows to for `max_concurrency` (never
/// below an explicit `max_per_batch`): one invocation's memory bound counts
/// records after decompression and is checked before each fetch, and a
/// batch's leases, checkpoints and stored item grow with it. Past this
/// many partitions per invocation, batches beyond `max_concurrency` wait
/// for a second wave again.
pub const MAX_GROWN_PARTITIONS_PER_BATCH: usize = 64;

/// The most partitions one batch takes: `max_per_batch`, or more where the
/// flows' partitions (`per_flow`, each flow cut into its own batches) would
/// otherwise make more batches than `max_concurrency`, the Replicate
/// invocations the state machine's Map runs at once. Each invocation runs
/// for its whole time budget, so a batch beyond that number waits for one
/// to end (a second wave, minutes behind); larger batches keep every
/// partition in the first. With fewer invocations allowed than flows that
/// have partitions, one batch per flow (more cannot be had).
pub fn partitions_per_batch(per_flow: &[usize], max_per_batch: usize, max_concurrency: Option<usize>) -> usize {
    let mut m = max_per_batch.max(1);
    let Some(c) = max_concurrency.map(|c| c.max(1)) else { return m };
    let total: usize = per_flow.iter().sum();
    let largest = per_flow.iter().copied().max().unwrap_or(0);
    let batches = |m: usize| per_flow.iter().map(|p| p.div_ceil(m)).sum::<usize>();
    let cap = MAX_GROWN_PARTITIONS_PER_BATCH.max(m);
    m = m.max(total.div_ceil(c).min(largest)).min(cap);
    while batches(m) > c && m < largest.min(cap) {
        m += 1;
    }
    m
}

/// Split `work` into batches of at most `max_per_batch` partitions, using as
/// few batches as that allows and spreading lag evenly: the largest lags
/// are placed first, each into the batch with the least lag so far that
/// still has room.
pub fn split_into_batches(mut work: Vec<PartitionWork>, max_per_batch: usize) -> Vec<Vec<PartitionWork>> {
    let max = max_per_batch.max(1);
    if work.is_empty() {
        return Vec::new();
    }
    let n_batches = work.len().div_ceil(max);
    work.sort_by(|a, b| b.lag.cmp(&a.lag).then_with(|| a.source.cmp(&b.source)));
    let mut batches: Vec<(i64, Vec<PartitionWork>)> = (0..n_batches).map(|_| (0, Vec::new())).collect();
    for w in work {
        let slot = batches
            .iter_mut()
            .filter(|(_, b)| b.len() < max)
            .min_by_key(|(lag, b)| (*lag, b.len()))
            .expect("capacity: n_batches * max >= work.len()");
        slot.0 = slot.0.saturating_add(w.lag.max(0));
        slot.1.push(w);
    }
    batches
        .into_iter()
        .map(|(_, mut b)| {
            b.sort_by(|x, y| x.source.cmp(&y.source));
            b
        })
        .collect()
}

/// Partitions a plan looks at for offset-map runs to prune, at most: one
/// Query each. A plan that looked at every partition made one Query per
/// partition per execution, sequentially: at 2,000 partitions on the local
/// stack every plan outlived its 120 s timeout, and at 10,000 on DynamoDB
/// (~8 ms a Query) it would take most of it. Pruning only keeps the state
/// bounded, so it can wait its turn.
pub const PRUNE_PARTITIONS_PER_PLAN: usize = 256;

/// Which of `count` partitions (by their place in the plan's sorted list)
/// the plan of `round` (the flow's plans before it, counted in the state
/// store, so that turns follow plans whatever the schedule) looks at for
/// runs to prune: every one when there are at most
/// [`PRUNE_PARTITIONS_PER_PLAN`], else one share of them, interleaved, so
/// that each partition's turn comes every `ceil(count / 256)` plans.
pub fn prune_turn(count: usize, round: u64) -> impl Fn(usize) -> bool {
    let shares = count.div_ceil(PRUNE_PARTITIONS_PER_PLAN).max(1);
    let turn = (round % shares as u64) as usize;
    move |index| index % shares == turn
}

/// The period of an EventBridge schedule expression, the template's
/// `ScheduleRate`: `rate(1 minute)`, `rate(5 minutes)`, `rate(2 hours)`,
/// `rate(1 day)`. `None` for anything else (a `cron(...)` or `at(...)`
/// expression, whose period Ferry does not work out).
pub fn schedule_period(expression: &str) -> Option<std::time::Duration> {
    let expression = expression.trim().to_ascii_lowercase();
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (value, unit) = inner.trim().split_once(' ')?;
    let value: u64 = value.parse().ok().filter(|v| *v > 0)?;
    let secs = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(value.checked_mul(secs)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ReplicateInput, TopicPartition};
    use proptest::prelude::*;

    #[test]
    fn a_schedule_rate_gives_its_period_and_a_cron_none() {
        let secs = |e: &str| schedule_period(e).map(|d| d.as_secs());
        assert_eq!(secs("rate(1 minute)"), Some(60));
        assert_eq!(secs(" rate(30 minutes) "), Some(1800));
        assert_eq!(secs("rate(2 hours)"), Some(7200));
        assert_eq!(secs("Rate(2 Hours)"), Some(7200));
        assert_eq!(secs("rate(1 day)"), Some(86_400));
        assert_eq!(secs("rate(0 minutes)"), None);
        assert_eq!(secs("rate(5 weeks)"), None);
        assert_eq!(secs("cron(0/5 * * * ? *)"), None);
        assert_eq!(secs("rate(five minutes)"), None);
    }

    /// The largest batch a plan makes by itself (64 partitions) stays far
    /// under the 380 KB the Plan keeps in one DynamoDB item, even with
    /// every partition of a different topic of Kafka's longest name (249
    /// characters) and offsets of 19 digits.
    #[test]
    fn the_largest_batch_a_plan_makes_fits_one_dynamodb_item() {
        let partitions: Vec<PartitionWork> = (0..MAX_GROWN_PARTITIONS_PER_BATCH)
            .map(|i| {
                let topic = format!("{i:03}{}", "t".repeat(246));
                PartitionWork {
                    source: TopicPartition::new(topic.clone(), i32::MAX),
                    target_topic: topic,
                    end_offset: i64::MAX,
                    lag: i64::MAX,
                }
            })
            .collect();
        let batch = ReplicateInput {
            flow: format!("{}>{}", "s".repeat(100), "t".repeat(100)),
            partitions,
            stored: None,
            stop_at_plan_end: true,
            max_seconds: Some(u64::MAX),
        };
        let text = serde_json::to_string(&batch).expect("serializes");
        assert!(text.len() < 64 * 1024, "{} bytes", text.len());
    }

    #[test]
    fn every_partition_gets_its_prune_turn_and_no_plan_looks_at_more_than_its_share() {
        for count in [0usize, 1, 255, 256, 257, 2_000, 10_000] {
            let shares = count.div_ceil(PRUNE_PARTITIONS_PER_PLAN).max(1);
            let mut seen = vec![0usize; count];
            for round in 1_000_000..1_000_000 + shares as u64 {
                let turn = prune_turn(count, round);
                let looked: Vec<usize> = (0..count).filter(|&i| turn(i)).collect();
                assert!(
                    looked.len() <= PRUNE_PARTITIONS_PER_PLAN,
                    "{count} partitions: {} in one plan",
                    looked.len()
                );
                looked.iter().for_each(|&i| seen[i] += 1);
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "{count} partitions: each looked at once in {shares} rounds"
            );
        }
    }

    fn work(lags: &[i64]) -> Vec<PartitionWork> {
        lags.iter()
            .enumerate()
            .map(|(i, &lag)| PartitionWork {
                source: TopicPartition::new("t", i as i32),
                target_topic: "t".into(),
                end_offset: lag,
                lag,
            })
            .collect()
    }

    #[test]
    fn balances_lag() {
        let batches = split_into_batches(work(&[100, 90, 10, 5]), 2);
        assert_eq!(batches.len(), 2);
        let sums: Vec<i64> = batches.iter().map(|b| b.iter().map(|w| w.lag).sum()).collect();
        assert_eq!(sums.iter().max(), Some(&105));
    }

    #[test]
    fn batches_grow_so_that_no_batch_waits_for_a_second_wave() {
        // 600 partitions, 10 at once: 60 a batch (not 38 batches of 16).
        assert_eq!(partitions_per_batch(&[600], 16, Some(10)), 60);
        // 2,000: no more than 64 a batch (the memory bound's margin); the
        // batches past 10 wait.
        assert_eq!(partitions_per_batch(&[2000], 16, Some(10)), 64);
        // Two flows, one uneven: 11 + 10 = 21 batches of 16 would be too
        // many for 20; 17 a batch makes 10 + 10.
        assert_eq!(partitions_per_batch(&[170, 160], 16, Some(20)), 17);
        // Few partitions: the configured size stands.
        assert_eq!(partitions_per_batch(&[40], 16, Some(10)), 16);
        assert_eq!(partitions_per_batch(&[2000], 16, None), 16);
        // Fewer invocations than flows: one batch per flow, up to the cap.
        assert_eq!(partitions_per_batch(&[30, 50], 16, Some(1)), 50);
        assert_eq!(partitions_per_batch(&[300, 500], 16, Some(1)), 64);
    }

    proptest! {
        /// The flows' batches fit in one wave whenever they can, and no
        /// batch is larger than that needs.
        #[test]
        fn batches_fit_the_concurrency(per_flow in proptest::collection::vec(0usize..3_000, 1..4), max in 1usize..40, c in 1usize..50) {
            let m = partitions_per_batch(&per_flow, max, Some(c));
            let batches = |m: usize| per_flow.iter().map(|p| p.div_ceil(m)).sum::<usize>();
            prop_assert!(m >= max);
            prop_assert!(m <= MAX_GROWN_PARTITIONS_PER_BATCH.max(max));
            // One wave whenever batches of the cap's size would make one.
            if batches(MAX_GROWN_PARTITIONS_PER_BATCH.max(max)) <= c {
                prop_assert!(batches(m) <= c, "{} batches of {} for {}", batches(m), m, c);
            }
            prop_assert!(m == max || batches(m - 1) > c);
        }

        /// Every partition is in exactly one batch, and no batch is over the bound.
        #[test]
        fn covers_every_partition_once(lags in proptest::collection::vec(0i64..10_000, 0..300), max in 1usize..40) {
            let input = work(&lags);
            let batches = split_into_batches(input.clone(), max);
            prop_assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= max));
            let mut seen: Vec<TopicPartition> = batches.iter().flatten().map(|w| w.source.clone()).collect();
            seen.sort();
            let mut want: Vec<TopicPartition> = input.iter().map(|w| w.source.clone()).collect();
            want.sort();
            prop_assert_eq!(seen, want);
        }
    }
}
