//! Fault injection for the crash tests: `FERRY_FAILPOINT=crash-after-produce:N`
//! aborts the process right after its N-th acknowledged produce round and
//! before that round's checkpoint, the exact window reconcile exists for;
//! `stall-before-produce:S` stops the whole process for S seconds once,
//! after a lease check and before the send, the window fencing exists for.
//! Unset (always, outside tests) it costs a relaxed load or two per round.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static STALL: OnceLock<Option<u64>> = OnceLock::new();
static STALLED: AtomicBool = AtomicBool::new(false);

/// The number after `name:` in FERRY_FAILPOINT.
fn arg(name: &str) -> Option<u64> {
    std::env::var("FERRY_FAILPOINT").ok().and_then(|v| {
        v.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|n| n.parse().ok())
    })
}

/// `stall-before-produce:<seconds>`: the first time a batch is about
/// to be sent (its lease checked), do nothing for that long, as a
/// process paused by its host would; then send it.
pub(super) async fn before_produce() {
    if let Some(secs) = *STALL.get_or_init(|| arg("stall-before-produce")) {
        if !STALLED.swap(true, Ordering::Relaxed) {
            eprintln!("ferry: failpoint stall-before-produce:{secs} reached; stalling with a batch ready to send");
            std::thread::sleep(Duration::from_secs(secs));
            eprintln!("ferry: failpoint stall-before-produce:{secs} over; sending the batch");
        }
    }
}

/// `crash-after-produce:<n>`: abort after the n-th produce round.
pub(super) fn after_produce() {
    let limit = LIMIT.get_or_init(|| arg("crash-after-produce"));
    if let Some(limit) = limit {
        if ROUNDS.fetch_add(1, Ordering::Relaxed) + 1 >= *limit {
            eprintln!("ferry: failpoint crash-after-produce:{limit} reached; aborting before the checkpoint");
            std::process::abort();
        }
    }
}

static SETUP_FAILED: AtomicBool = AtomicBool::new(false);

/// `fail-lease-setup:<partition>`: the first time that partition's lease
/// is taken, fail reading its state, as a DynamoDB error there would.
pub(super) fn lease_setup(tp: &ferry_core::domain::TopicPartition) -> Result<(), ferry_adapters::state::StateError> {
    match arg("fail-lease-setup") {
        Some(p) if p == u64::try_from(tp.partition).unwrap_or(u64::MAX) && !SETUP_FAILED.swap(true, Ordering::Relaxed) => {
            Err(ferry_adapters::state::StateError::Dynamo {
                op: "Query",
                table: "(failpoint fail-lease-setup)".into(),
                detail: format!("failpoint: reading the state of {tp} failed"),
            })
        }
        _ => Ok(()),
    }
}
