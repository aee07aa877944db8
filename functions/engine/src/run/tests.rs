use std::time::Duration;

use ferry_adapters::kafka::KafkaError;

use super::{
    after_plan_error, after_replicate_error, after_round, idle_wait, AfterPlanError, AfterReplicateError, AfterRound, RoundOutcome,
    RunOptions, IDLE_WAIT, IDLE_WAIT_MAX,
};
use crate::error::FerryError;

fn opts(once: bool) -> RunOptions {
    RunOptions {
        once,
        round: Duration::from_secs(60),
        give_up_after: Duration::from_secs(60),
        group_sync_every: Duration::from_secs(5),
        stall_limit: Duration::from_secs(300),
    }
}

fn refused() -> FerryError {
    FerryError::Kafka(KafkaError::Auth {
        cluster: "source".into(),
        broker: "b-1:9096".into(),
        detail: "SASL authentication failed".into(),
    })
}

fn unavailable() -> FerryError {
    FerryError::NotReady("the target is not answering".into())
}

fn fatal() -> FerryError {
    FerryError::Input("no such flow".into())
}

const SOON: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(61);

#[test]
fn the_errors_are_what_the_tests_take_them_for() {
    assert!(refused().is_refusal() && refused().is_retryable());
    assert!(!unavailable().is_refusal() && unavailable().is_retryable());
    assert!(!fatal().is_refusal() && !fatal().is_retryable());
}

#[test]
fn a_refused_login_ends_a_once_run_at_once_and_is_waited_out_otherwise() {
    assert_eq!(
        after_plan_error(&refused(), &opts(true), false, Duration::ZERO),
        AfterPlanError::End
    );
    assert_eq!(after_plan_error(&refused(), &opts(false), false, LONG), AfterPlanError::Retry);
}

#[test]
fn a_once_run_gives_up_only_after_plans_failed_for_longer_than_give_up_after() {
    let once = opts(true);
    assert_eq!(after_plan_error(&unavailable(), &once, false, SOON), AfterPlanError::Retry);
    assert_eq!(
        after_plan_error(&unavailable(), &once, false, once.give_up_after),
        AfterPlanError::Retry
    );
    assert_eq!(after_plan_error(&unavailable(), &once, false, LONG), AfterPlanError::GiveUp);
    // Running on, Ferry never gives up.
    assert_eq!(
        after_plan_error(&unavailable(), &opts(false), false, LONG * 100),
        AfterPlanError::Retry
    );
}

#[test]
fn a_plan_error_no_retry_helps_or_an_interrupt_ends_the_run() {
    for once in [true, false] {
        assert_eq!(after_plan_error(&fatal(), &opts(once), false, Duration::ZERO), AfterPlanError::End);
        assert_eq!(after_plan_error(&unavailable(), &opts(once), true, SOON), AfterPlanError::End);
    }
    assert_eq!(after_plan_error(&refused(), &opts(false), true, SOON), AfterPlanError::End);
}

#[test]
fn a_failed_replicate_is_retried_counted_or_ends_a_once_run_when_refused() {
    assert_eq!(after_replicate_error(&refused(), true), AfterReplicateError::End);
    assert_eq!(after_replicate_error(&refused(), false), AfterReplicateError::Retry);
    for once in [true, false] {
        assert_eq!(after_replicate_error(&unavailable(), once), AfterReplicateError::Retry);
        assert_eq!(after_replicate_error(&fatal(), once), AfterReplicateError::Count);
    }
}

#[test]
fn after_a_round_an_interrupt_comes_first_then_failures_then_caught_up() {
    let all = RoundOutcome {
        interrupted: true,
        failures: 2,
        stalled: false,
        partitions: 4,
        all_caught_up: true,
        records: 10,
    };
    assert_eq!(after_round(true, &all), AfterRound::Interrupted);
    assert_eq!(after_round(false, &all), AfterRound::Interrupted);
    let failed = RoundOutcome { interrupted: false, ..all };
    assert_eq!(after_round(true, &failed), AfterRound::Failed);
    let caught_up = RoundOutcome { failures: 0, ..failed };
    assert_eq!(after_round(true, &caught_up), AfterRound::CaughtUp);
}

#[test]
fn running_on_failures_and_catching_up_do_not_end_the_run() {
    let o = RoundOutcome {
        failures: 3,
        partitions: 4,
        all_caught_up: true,
        records: 10,
        ..RoundOutcome::default()
    };
    assert_eq!(after_round(false, &o), AfterRound::Next);
    // Caught up with nothing written: the next round's fetches wait for data.
    assert_eq!(after_round(false, &RoundOutcome { records: 0, ..o }), AfterRound::Next);
}

#[test]
fn the_loop_waits_when_nothing_was_planned_or_nothing_moved() {
    let nothing_planned = RoundOutcome {
        all_caught_up: true,
        ..RoundOutcome::default()
    };
    assert_eq!(after_round(false, &nothing_planned), AfterRound::Wait);
    let leased_elsewhere = RoundOutcome {
        partitions: 4,
        ..RoundOutcome::default()
    };
    assert_eq!(after_round(false, &leased_elsewhere), AfterRound::Wait);
    assert_eq!(after_round(true, &leased_elsewhere), AfterRound::Wait);
    // With --once, only so long: then the run ends with what they wait for.
    let stalled = RoundOutcome {
        stalled: true,
        ..leased_elsewhere
    };
    assert_eq!(after_round(true, &stalled), AfterRound::Stalled);
    assert_eq!(after_round(false, &stalled), AfterRound::Wait, "running on, it waits");
    let caught_up = RoundOutcome {
        all_caught_up: true,
        ..stalled
    };
    assert_eq!(after_round(true, &caught_up), AfterRound::CaughtUp, "caught up first");
    let moving = RoundOutcome {
        partitions: 4,
        records: 1,
        ..RoundOutcome::default()
    };
    assert_eq!(after_round(true, &moving), AfterRound::Next);
}

#[test]
fn rounds_that_could_do_nothing_back_off_in_a_run_that_goes_on() {
    let (on, once) = (opts(false), opts(true));
    assert_eq!(idle_wait(&on, 0), IDLE_WAIT, "a round that ran its time");
    assert_eq!(idle_wait(&on, 1), IDLE_WAIT, "the first early one");
    assert_eq!(idle_wait(&on, 2), IDLE_WAIT * 2);
    assert_eq!(idle_wait(&on, 3), IDLE_WAIT * 4);
    assert_eq!(idle_wait(&on, 40), IDLE_WAIT_MAX.min(on.round));
    assert_eq!(idle_wait(&once, 40), IDLE_WAIT, "a once run keeps looking");
    let short = RunOptions {
        round: Duration::from_secs(3),
        ..opts(false)
    };
    assert_eq!(idle_wait(&short, 40), Duration::from_secs(3), "never longer than a round");
}

#[test]
fn a_round_could_do_nothing_unless_a_partition_of_its_own_ran_its_time() {
    use super::round::Round;
    use ferry_core::domain::{StopReason, TopicPartition};
    let tp = |p: i32| TopicPartition::new("t", p);
    let round = |waiting: Vec<(TopicPartition, StopReason)>| Round {
        waiting,
        ..Round::default()
    };
    assert!(
        round(vec![]).could_do_nothing(),
        "nothing planned, or every partition stopped on an error"
    );
    assert!(round(vec![(tp(0), StopReason::LeaseHeld), (tp(1), StopReason::LeaseHeld)]).could_do_nothing());
    assert!(
        round(vec![(tp(0), StopReason::LeaseHeld), (tp(1), StopReason::Retry)]).could_do_nothing(),
        "a fault to retry"
    );
    assert!(
        !round(vec![(tp(0), StopReason::LeaseHeld), (tp(1), StopReason::Budget)]).could_do_nothing(),
        "a partition of its own waiting for records"
    );
    let filtered = Round {
        moved: true,
        ..round(vec![(tp(0), StopReason::Retry)])
    };
    assert!(!filtered.could_do_nothing(), "a cursor moved over records it filtered");
}
