//! Failpoints for the crash tests, set by FERRY_FAILPOINT; off unless set.

/// `slow-group-sync:<ms>`: wait that long before each group's sync, as
/// a slow cluster or many partitions per group would take.
pub(super) async fn before_group_sync() {
    let ms = std::env::var("FERRY_FAILPOINT")
        .ok()
        .and_then(|v| v.strip_prefix("slow-group-sync:").and_then(|n| n.parse::<u64>().ok()));
    if let Some(ms) = ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// `slow-group-commit:<ms>`: wait that long between reading a
/// group's commits on the target and committing there, as a stalled
/// sync (CPU starved, a slow coordinator) would.
pub(super) async fn before_group_commit() {
    let ms = std::env::var("FERRY_FAILPOINT")
        .ok()
        .and_then(|v| v.strip_prefix("slow-group-commit:").and_then(|n| n.parse::<u64>().ok()));
    if let Some(ms) = ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// `crash-after-group-commit`: abort once a group's offsets are
/// committed on the target, before anything records that Ferry wrote
/// them (a Lambda timing out or dying there).
pub(super) fn after_group_commit() {
    if std::env::var("FERRY_FAILPOINT").is_ok_and(|v| v == "crash-after-group-commit") {
        eprintln!("ferry: failpoint crash-after-group-commit reached; aborting before the sync is recorded");
        std::process::abort();
    }
}
