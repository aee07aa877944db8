//! Planning: split the selected partitions into bounded Replicate batches,
//! balanced by lag.

use crate::domain::PartitionWork;

/// Default number of partitions in one Replicate invocation.
pub const DEFAULT_MAX_PARTITIONS_PER_BATCH: usize = 16;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TopicPartition;
    use proptest::prelude::*;

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

    proptest! {
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
