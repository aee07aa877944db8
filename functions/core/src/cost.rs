//! A monthly AWS cost estimate for a deployed replicator, from the shape
//! of its plan and the source traffic a dry run observed. It is a model,
//! not a bill: every assumption is listed in its output, and prices are
//! on-demand list prices (US East, x86) that change over time.

use serde::Serialize;

/// Lambda, per GB-second (x86).
const LAMBDA_GB_SECOND_USD: f64 = 0.000_016_666_7;
/// Lambda, per request.
const LAMBDA_REQUEST_USD: f64 = 0.000_000_2;
/// Step Functions Standard, per state transition.
const SFN_TRANSITION_USD: f64 = 0.000_025;
/// DynamoDB on-demand, per write request unit.
const DYNAMODB_WRU_USD: f64 = 0.000_000_625;
/// Hours in the month the estimate is for.
const HOURS_PER_MONTH: f64 = 730.0;
/// MemorySize of the Replicate function in template.yaml, in GB.
const REPLICATE_MEMORY_GB: f64 = 1.0;
/// MemorySize of Plan, SyncGroups and Report, in GB, and their assumed run time.
const OTHER_MEMORY_GB: f64 = 0.5;
const OTHER_SECONDS: f64 = 2.0;
/// Write units of one checkpoint: a transaction (twice the units) of the
/// cursor item, which holds the newest offset-map run (an offset-map item
/// is written only where a run ends: a gap in the source offsets).
const WRU_PER_CHECKPOINT: f64 = 2.0;
/// Write units per partition per execution for its lease (take, record
/// the producer, give back).
const WRU_PER_LEASE: f64 = 3.0;
/// Write units of one group partition's sync item (under 1 KB, written
/// outside a transaction), stored on every sync.
const WRU_PER_GROUP_SYNC: f64 = 1.0;
pub use crate::domain::FLOW_KEY_SHARDS;
/// DynamoDB's limit on one partition key: write units a second.
pub const KEY_WRITE_UNITS_PER_SECOND: f64 = 1000.0;
/// Write units per batch per execution: the Plan function keeps each batch
/// in the state tables for the state machine to refer to (an item of 1 to
/// 2 KB: 16 partitions, usually of 16 topics after balancing).
const WRU_PER_PLAN_BATCH: f64 = 2.0;

/// What the estimate is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostInputs {
    /// Minutes between scheduled executions (template ScheduleRate).
    pub schedule_minutes: f64,
    /// Replicate invocations per execution.
    pub batches: usize,
    /// Partitions replicated.
    pub partitions: usize,
    /// Partitions that received records while the dry run watched.
    pub active_partitions: usize,
    /// Checkpoints per second of a partition that receives records.
    pub checkpoints_per_second: f64,
    /// How long a lease lasts: a Replicate renews each lease it holds,
    /// with a checkpoint, once half of it is spent, idle or not.
    pub lease_seconds: f64,
    /// How long a Replicate waits for a holder about to stop
    /// (HandoffWaitSeconds; 0: never).
    pub handoff_wait_seconds: f64,
    /// Group partitions (a group's commit on one partition) SyncGroups
    /// syncs on each execution.
    pub group_partitions: usize,
}

/// The Replicate function's Timeout in template.yaml, in seconds: how long
/// each invocation copies.
pub const REPLICATE_TIMEOUT_SECONDS: f64 = 300.0;

/// The mean time a Replicate waits for its holder to stop, per invocation:
/// the first execution to arrive within `wait` of the holder's stop waits,
/// and executions arrive every `schedule` (both in seconds).
pub fn mean_handoff_wait(wait: f64, schedule: f64) -> f64 {
    if wait <= 0.0 || schedule <= 0.0 {
        0.0
    } else if wait >= schedule {
        wait - schedule / 2.0
    } else {
        // Only with probability wait / schedule does one arrive in time.
        wait * wait / (2.0 * schedule)
    }
}

/// The estimate, per month.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostEstimate {
    /// State-machine executions.
    pub executions: f64,
    /// Step Functions state transitions.
    pub state_transitions: f64,
    /// Lambda GB-seconds.
    pub lambda_gb_seconds: f64,
    /// Lambda requests.
    pub lambda_requests: f64,
    /// DynamoDB write request units.
    pub dynamodb_write_units: f64,
    /// Write units a second on the busiest partition key of the state
    /// tables, every partition in one flow (the worst case): its share of
    /// the cursors' and group syncs' writes, at most
    /// [`KEY_WRITE_UNITS_PER_SECOND`].
    pub busiest_key_write_units_per_second: f64,
    /// Lambda, USD.
    pub lambda_usd: f64,
    /// Step Functions, USD.
    pub step_functions_usd: f64,
    /// DynamoDB, USD.
    pub dynamodb_usd: f64,
    /// Sum, USD.
    pub total_usd: f64,
    /// How it was computed.
    pub assumptions: Vec<String>,
}

/// The share of a flow's `items` partition items that its busiest of
/// `shards` keys holds when a hash spreads them: the mean share and three
/// standard deviations of the binomial count (about the busiest of 16).
pub fn busiest_key_share(items: usize, shards: u32) -> f64 {
    if items == 0 || shards <= 1 {
        return 1.0;
    }
    let (n, p) = (items as f64, 1.0 / f64::from(shards));
    ((n * p + 3.0 * (n * p * (1.0 - p)).sqrt()) / n).max(1.0 / n).min(1.0)
}

/// Estimate a month of a deployed replicator.
pub fn estimate(i: &CostInputs) -> CostEstimate {
    let minutes = HOURS_PER_MONTH * 60.0;
    let executions = minutes / i.schedule_minutes.max(1.0);
    let batches = i.batches as f64;
    // Plan, Map, SyncGroups, Report, Done, plus a start and a task per Map iteration.
    let state_transitions = executions * (5.0 + 2.0 * batches);
    // Each batch's invocations copy back to back, and each (but the first)
    // waited for its predecessor first.
    let waited = mean_handoff_wait(i.handoff_wait_seconds, i.schedule_minutes.max(1.0) * 60.0);
    let replicate_seconds = batches * HOURS_PER_MONTH * 3600.0 * (1.0 + waited / REPLICATE_TIMEOUT_SECONDS);
    let lambda_gb_seconds = replicate_seconds * REPLICATE_MEMORY_GB + executions * 3.0 * OTHER_SECONDS * OTHER_MEMORY_GB;
    let lambda_requests = executions * (3.0 + batches);
    // Every partition is held all the time, its lease renewed by a
    // checkpoint half-way through it at the least.
    let renewals_per_second = 2.0 / i.lease_seconds.max(0.001);
    let active = i.active_partitions.min(i.partitions) as f64;
    let per_partition = active * i.checkpoints_per_second.max(renewals_per_second) + (i.partitions as f64 - active) * renewals_per_second;
    let checkpoints = per_partition * HOURS_PER_MONTH * 3600.0;
    let per_execution = i.partitions as f64 * WRU_PER_LEASE + i.group_partitions as f64 * WRU_PER_GROUP_SYNC;
    let dynamodb_write_units = checkpoints * WRU_PER_CHECKPOINT + executions * (per_execution + batches * WRU_PER_PLAN_BATCH);
    // Per second: every busy partition's checkpoints, and each execution's
    // leases and group syncs spread over its minute(s).
    let flow_units = per_partition * WRU_PER_CHECKPOINT + per_execution / (i.schedule_minutes.max(1.0) * 60.0);
    let busiest_key_write_units_per_second = flow_units * busiest_key_share(i.partitions.max(i.group_partitions), FLOW_KEY_SHARDS);
    let lambda_usd = lambda_gb_seconds * LAMBDA_GB_SECOND_USD + lambda_requests * LAMBDA_REQUEST_USD;
    let step_functions_usd = state_transitions * SFN_TRANSITION_USD;
    let dynamodb_usd = dynamodb_write_units * DYNAMODB_WRU_USD;
    CostEstimate {
        executions,
        state_transitions,
        lambda_gb_seconds,
        lambda_requests,
        dynamodb_write_units,
        busiest_key_write_units_per_second,
        lambda_usd,
        step_functions_usd,
        dynamodb_usd,
        total_usd: lambda_usd + step_functions_usd + dynamodb_usd,
        assumptions: vec![
            format!("one execution every {} minute(s), {HOURS_PER_MONTH} hours a month", i.schedule_minutes.max(1.0)),
            format!(
                "each of the {} Replicate batches keeps one {REPLICATE_MEMORY_GB} GB invocation running all the time (overlapping ones find the leases taken and return at once), and each of its {REPLICATE_TIMEOUT_SECONDS} s invocations waited {waited:.0} s on average for the one before (HandoffWaitSeconds {})",
                i.batches, i.handoff_wait_seconds
            ),
            format!("Plan, SyncGroups and Report run {OTHER_SECONDS} s each at {OTHER_MEMORY_GB} GB per execution"),
            format!(
                "{} of {} partitions receive records, each checkpointed {} times a second, and every partition's lease renewed by a checkpoint every {} s at the least, idle or not ({WRU_PER_CHECKPOINT} write units each); {WRU_PER_LEASE} write units per partition per execution for leases, {WRU_PER_PLAN_BATCH} per batch for the plan",
                i.active_partitions, i.partitions, i.checkpoints_per_second, i.lease_seconds / 2.0
            ),
            format!(
                "{} group partitions synced per execution ({WRU_PER_GROUP_SYNC} write unit each); every partition in one flow, its items spread over {FLOW_KEY_SHARDS} DynamoDB partition keys by hash: the busiest key takes {busiest_key_write_units_per_second:.0} write units a second (the mean share and three standard deviations), of the {KEY_WRITE_UNITS_PER_SECOND:.0} one key allows",
                i.group_partitions
            ),
            "on-demand list prices, US East, x86: Lambda $0.0000166667/GB-s and $0.20/million requests, Step Functions $0.025/1,000 transitions, DynamoDB $0.625/million write units; reads, logs, metrics and data transfer not included".into(),
        ],
    }
}

/// Replicate batches (parallel invocations) that keep up with
/// `observed_records_per_s` when one invocation replicates
/// `capacity_records_per_s`, and the partitions per batch that gives for
/// `partitions` partitions. At least one batch when there is a partition.
pub fn batches_to_keep_up(observed_records_per_s: f64, capacity_records_per_s: f64, partitions: usize) -> (usize, usize) {
    if partitions == 0 {
        return (0, 0);
    }
    let needed = (observed_records_per_s / capacity_records_per_s.max(1.0)).ceil().max(1.0) as usize;
    let batches = needed.min(partitions);
    (batches, partitions.div_ceil(batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_with_traffic_up_to_one_per_partition() {
        assert_eq!(batches_to_keep_up(0.0, 20_000.0, 12), (1, 12));
        assert_eq!(batches_to_keep_up(20_000.0, 20_000.0, 12), (1, 12));
        assert_eq!(batches_to_keep_up(50_000.0, 20_000.0, 12), (3, 4));
        assert_eq!(batches_to_keep_up(1e9, 20_000.0, 12), (12, 1));
        assert_eq!(batches_to_keep_up(5.0, 20_000.0, 0), (0, 0));
    }

    #[test]
    fn one_batch_every_minute_with_one_busy_partition() {
        let e = estimate(&CostInputs {
            schedule_minutes: 1.0,
            batches: 1,
            partitions: 4,
            active_partitions: 1,
            checkpoints_per_second: 1.0,
            lease_seconds: 30.0,
            handoff_wait_seconds: 0.0,
            group_partitions: 0,
        });
        assert_eq!(e.executions, 43_800.0);
        assert_eq!(e.state_transitions, 43_800.0 * 7.0);
        // 2,628,000 s of a 1 GB Replicate plus 3 × 2 s × 0.5 GB per execution.
        assert!((e.lambda_gb_seconds - (2_628_000.0 + 131_400.0)).abs() < 1e-6);
        // The busy partition checkpointed every second, the three idle ones
        // renewing their leases every 15 s.
        assert!((e.dynamodb_write_units - (2_628_000.0 * (1.0 + 3.0 / 15.0) * 2.0 + 43_800.0 * (12.0 + 2.0))).abs() < 1e-3);
        assert!((e.total_usd - (e.lambda_usd + e.step_functions_usd + e.dynamodb_usd)).abs() < 1e-9);
        // About $46 of Lambda, $7.67 of Step Functions, $4.33 of DynamoDB.
        assert!((e.lambda_usd - 46.0).abs() < 0.5, "{}", e.lambda_usd);
        assert!((e.step_functions_usd - 7.665).abs() < 0.01, "{}", e.step_functions_usd);
        assert!((e.dynamodb_usd - 4.325).abs() < 0.01, "{}", e.dynamodb_usd);
    }

    #[test]
    fn every_lease_held_is_renewed_so_checkpoints_rarer_than_that_save_nothing_more() {
        let base = CostInputs {
            schedule_minutes: 1.0,
            batches: 16,
            partitions: 1000,
            active_partitions: 1000,
            checkpoints_per_second: 0.25,
            lease_seconds: 30.0,
            handoff_wait_seconds: 0.0,
            group_partitions: 0,
        };
        let units = |cps: f64, active: usize| {
            estimate(&CostInputs {
                checkpoints_per_second: cps,
                active_partitions: active,
                ..base
            })
            .dynamodb_write_units
        };
        let leases = 43_800.0 * (1000.0 * 3.0 + 16.0 * 2.0);
        let month = 2_628_000.0;
        assert!((units(0.25, 1000) - (month * 1000.0 * 0.25 * 2.0 + leases)).abs() < 1.0);
        // Every 30 s or every 60 s: the renewal every 15 s is the floor.
        let floor = month * 1000.0 / 15.0 * 2.0 + leases;
        assert!((units(1.0 / 30.0, 1000) - floor).abs() < 1.0);
        assert!((units(1.0 / 60.0, 1000) - floor).abs() < 1.0);
        // Idle partitions cost their renewals too.
        assert!((units(0.25, 0) - floor).abs() < 1.0);
    }

    #[test]
    fn a_slower_schedule_costs_less_orchestration_not_less_replication() {
        let base = CostInputs {
            schedule_minutes: 1.0,
            batches: 2,
            partitions: 10,
            active_partitions: 0,
            checkpoints_per_second: 1.0,
            lease_seconds: 30.0,
            handoff_wait_seconds: 0.0,
            group_partitions: 0,
        };
        let every_minute = estimate(&base);
        let every_five = estimate(&CostInputs {
            schedule_minutes: 5.0,
            ..base
        });
        assert!((every_five.step_functions_usd * 5.0 - every_minute.step_functions_usd).abs() < 1e-6);
        assert!(every_five.lambda_gb_seconds < every_minute.lambda_gb_seconds);
        assert!(every_five.lambda_gb_seconds > 2.0 * HOURS_PER_MONTH * 3600.0);
    }

    #[test]
    fn a_successor_waits_from_the_window_less_half_the_schedule_on_average() {
        assert_eq!(mean_handoff_wait(0.0, 60.0), 0.0);
        assert_eq!(mean_handoff_wait(75.0, 60.0), 45.0);
        assert_eq!(mean_handoff_wait(60.0, 60.0), 30.0);
        // A window shorter than the schedule: a successor only sometimes.
        assert_eq!(mean_handoff_wait(30.0, 60.0), 7.5);
        let base = CostInputs {
            schedule_minutes: 1.0,
            batches: 2,
            partitions: 10,
            active_partitions: 0,
            checkpoints_per_second: 1.0,
            lease_seconds: 30.0,
            handoff_wait_seconds: 0.0,
            group_partitions: 0,
        };
        let waiting = estimate(&CostInputs {
            handoff_wait_seconds: 75.0,
            ..base
        });
        let ratio = waiting.lambda_gb_seconds / estimate(&base).lambda_gb_seconds;
        assert!(ratio > 1.14 && ratio < 1.15, "{ratio}");
    }

    #[test]
    fn ten_thousand_busy_partitions_stay_under_one_keys_limit_only_spread() {
        let at = |partitions: usize, group_partitions: usize| {
            estimate(&CostInputs {
                schedule_minutes: 1.0,
                batches: 64,
                partitions,
                active_partitions: partitions,
                checkpoints_per_second: 0.25,
                lease_seconds: 30.0,
                handoff_wait_seconds: 0.0,
                group_partitions,
            })
        };
        // 10,000 partitions checkpointed every 4 s: 5,000 units a second
        // of checkpoints, 500 of leases; five times one key's limit.
        let e = at(10_000, 0);
        let flow = 10_000.0 * 0.25 * 2.0 + 10_000.0 * 3.0 / 60.0;
        assert!(flow > 5.0 * KEY_WRITE_UNITS_PER_SECOND);
        let share = busiest_key_share(10_000, FLOW_KEY_SHARDS);
        assert!(share > 1.0 / 16.0 && share < 1.2 / 16.0, "{share}");
        assert!((e.busiest_key_write_units_per_second - flow * share).abs() < 1e-6);
        assert!(
            e.busiest_key_write_units_per_second < 0.5 * KEY_WRITE_UNITS_PER_SECOND,
            "{}",
            e.busiest_key_write_units_per_second
        );
        // And with ten groups reading every partition, still under.
        assert!(at(10_000, 100_000).busiest_key_write_units_per_second < KEY_WRITE_UNITS_PER_SECOND);
        // One key would hold it all.
        assert_eq!(busiest_key_share(10_000, 1), 1.0);
        assert_eq!(busiest_key_share(1, 16), 1.0);
    }
}
