//! Fault injection for the tests: `FERRY_FAILPOINT=stall-making-cursors:S`
//! makes a plan wait S seconds before it makes the cursor of any
//! partition but a topic's partition 0, as a plan still at work after
//! some of its cursors are made (a large first plan) would be. Unset
//! (always, outside tests) it costs an environment read per cursor made.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_core::domain::TopicPartition;

static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// `stall-making-cursors:<seconds>`, before `tp`'s cursor is made.
pub(super) async fn before_cursor(tp: &TopicPartition) {
    let secs = std::env::var("FERRY_FAILPOINT")
        .ok()
        .and_then(|v| v.strip_prefix("stall-making-cursors:").and_then(|n| n.parse::<u64>().ok()));
    if let Some(secs) = secs.filter(|_| tp.partition != 0) {
        if !ANNOUNCED.swap(true, Ordering::Relaxed) {
            eprintln!("ferry: failpoint stall-making-cursors:{secs} reached; partition 0's cursors made, the others wait");
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}
