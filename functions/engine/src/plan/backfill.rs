//! Checking a backfill before the plan moves any cursor: the topics it
//! names, and each partition's state (nothing replicated, and nothing
//! Ferry wrote to the target past the cursor).

use ferry_adapters::state::{CursorItem, StateError};
use ferry_core::config::FlowSpec;
use ferry_core::domain::{Backfill, BackfillFrom};

use super::{in_flight, selected_topics, FlowPlan};
use crate::context::Ferry;
use crate::error::FerryError;

/// Refuse a backfill, before anything is written, that names a topic no flow
/// selects, or a partition Ferry already replicated records of.
pub(super) async fn check_backfill(ferry: &Ferry, b: &Backfill) -> Result<(), FerryError> {
    if b.topics.is_empty() {
        return Err(FerryError::Input(
            "the backfill names no topics: give at least one source topic".into(),
        ));
    }
    if let BackfillFrom::Timestamp(ms) = b.from {
        if ms < 0 {
            return Err(FerryError::Input(format!(
                "backfill timestamp {ms} is negative: give milliseconds since the epoch"
            )));
        }
    }
    let mut selected_by_some = std::collections::BTreeSet::new();
    for flow in &ferry.spec.flows {
        let topics = selected_topics(ferry, flow).await?;
        let key = ferry.flow_key(flow);
        let cursors = ferry.store.list_cursors(&key).await?;
        for t in b.topics.iter().filter(|t| topics.contains_key(*t)) {
            selected_by_some.insert(t.clone());
            // Whether each partition has a stored run, a few reads at once
            // (a backfill of a topic of thousands of partitions, within one plan).
            let mine: Vec<&CursorItem> = cursors.iter().filter(|c| &c.tp.topic == t).collect();
            let reads: Vec<_> = mine
                .iter()
                .map(|c| async {
                    Ok::<_, StateError>(c.records_replicated == 0 && ferry.store.newest_stored_run(&key, &c.tp).await?.is_some())
                })
                .collect();
            let stored: Vec<bool> = in_flight(reads).await?;
            let now = ferry_adapters::state::now_ms();
            for (c, stored) in mine.into_iter().zip(stored) {
                if let Some(why) = backfill_waits(c, stored, now) {
                    return Err(FerryError::Input(format!("flow {}: {why}. Nothing was moved", flow.id())));
                }
                if let Some(at) = c.handed_at {
                    return Err(FerryError::Input(format!(
                        "flow {} took {} over at source offset {at} from a flow that stopped copying it: the records below are \
                         that flow's copies, already on the target, and a backfill would write them again after newer ones. \
                         Nothing was moved",
                        flow.id(),
                        c.tp
                    )));
                }
                if c.records_replicated > 0 || stored {
                    return Err(FerryError::Input(format!(
                        "flow {} already replicated {} records of {} (cursor at source offset {}); a backfill would write older records \
                         after newer ones on the target. To replicate it again from the start, delete the target topic and this \
                         partition's items from the cursors and offset-map tables",
                        flow.id(),
                        c.records_replicated,
                        c.tp,
                        c.next_source_offset
                    )));
                }
            }
        }
    }
    let unknown: Vec<&String> = b.topics.iter().filter(|t| !selected_by_some.contains(*t)).collect();
    if !unknown.is_empty() {
        return Err(FerryError::Input(format!(
            "backfill topics {unknown:?} do not exist on a source cluster or are not selected by any flow's TopicsToReplicate: \
             check the names, or add them to TopicsToReplicate first"
        )));
    }
    Ok(())
}

/// Start the backfill's partitions where `decide` put them, a few at once
/// (a backfill of thousands of partitions, within one plan). A partition
/// with a cursor first gets a request (all of them, or none: a partition
/// that replicated since the check withdraws the others'); then each
/// cursor no worker holds is moved now, and a leased one (a deployment's
/// Replicates hold theirs nearly all the time) by its next holder, which
/// moves it unless the partition replicated records first.
pub(super) async fn apply_backfills(ferry: &Ferry, flow: &FlowSpec, p: &FlowPlan) -> Result<(), FerryError> {
    let flow_key = ferry.flow_key(flow);
    let (existing, new): (Vec<_>, Vec<_>) = p.starts.iter().filter(|s| s.backfill).partition(|s| p.cursors.contains_key(&s.tp));
    let requested = in_flight(existing.iter().map(|s| ferry.store.request_backfill(&flow_key, &s.tp, s.from))).await?;
    if let Some(refused) = existing.iter().zip(&requested).find(|(_, ok)| !**ok).map(|(s, _)| &s.tp) {
        in_flight(
            existing
                .iter()
                .zip(&requested)
                .filter(|(_, ok)| **ok)
                .map(|(s, _)| ferry.store.withdraw_backfill(&flow_key, &s.tp)),
        )
        .await?;
        return Err(FerryError::Input(format!(
            "flow {}: {refused} replicated records while the backfill was planned (a backfill would write older records after \
             them); nothing of this flow was moved (another flow's partitions, planned before it, may have been). Fix: leave \
             {refused}'s topic out of the backfill, or see `ferry status`",
            flow.id()
        )));
    }
    let moved = in_flight(existing.iter().map(|s| ferry.store.restart_cursor(&flow_key, &s.tp, s.from))).await?;
    for (s, moved) in existing.iter().zip(moved) {
        if moved {
            tracing::info!(flow = %flow.id(), topic = %s.tp.topic, partition = s.tp.partition, start = s.from, "backfill: partition starts here");
        } else {
            tracing::info!(
                flow = %flow.id(), topic = %s.tp.topic, partition = s.tp.partition, start = s.from,
                "backfill: the partition is leased (or its last worker's writes are not yet reconciled); its next holder starts it here"
            );
        }
    }
    let created = in_flight(new.iter().map(|s| {
        let (flow_key, target) = (&flow_key, flow.target_topic(&s.tp.topic));
        async move { ferry.store.init_cursor(flow_key, &s.tp, &target, s.from).await }
    }))
    .await?;
    if let Some((s, _)) = new.iter().zip(created).find(|(_, done)| !*done) {
        return Err(FerryError::Input(format!(
            "{} started replicating while the backfill was planned (another plan made its cursor); nothing was moved for it \
             (the backfill's partitions that had cursors were started). Fix: run the backfill of its topic again after the \
             next run, if it has replicated nothing",
            s.tp
        )));
    }
    for s in new {
        tracing::info!(flow = %flow.id(), topic = %s.tp.topic, partition = s.tp.partition, start = s.from, "backfill: partition starts here");
    }
    Ok(())
}

/// Why a backfill may not move the cursor `c` of a partition that has
/// replicated nothing (`stored`: it holds a run), though copies of its
/// records may be on the target past it; `None` when there are none, or
/// when a worker holds it at `now_ms` (ms since the epoch).
fn backfill_waits(c: &CursorItem, stored: bool, now_ms: i64) -> Option<String> {
    if c.records_replicated > 0 || stored {
        return None;
    }
    if let Some(from) = c.target_rewound_from {
        return Some(format!(
            "the target log of {} lost records Ferry had written there before any was checkpointed (its cursor was moved \
             back to target offset {from}), and copies written after that loss may be on the target past it; a backfill \
             would write older records after them. To replicate it from the start, delete the target topic and this \
             partition's items from the cursors and offset-map tables",
            c.tp
        ));
    }
    // A worker holds it now (so its writes are not settled): the backfill
    // is asked of the partition, and a holder after it starts it once they
    // are (see `apply_backfills`).
    if c.producer_id >= 0 && !c.writes_settled && !(c.lease_owner.is_some() && c.lease_expires_ms > now_ms) {
        let stopped = match &c.last_error {
            Some(e) => format!(
                " The partition stopped with an error: {e}. Mend that first; once the partition copies records, a backfill is \
                 refused for good"
            ),
            None => " Once the next run has reconciled them, run the backfill again; if it found records, the partition \
                     has replicated and a backfill is refused for good"
                .into(),
        };
        return Some(format!(
            "the last worker to copy {} (producer id {}) stopped without its writes checkpointed (it crashed, DynamoDB failed \
             its last checkpoint, or the target refused a batch), so records it wrote may be on the target after the cursor; \
             a backfill now would write older records after them. Fix: let Ferry run once more (`ferry run --once`, or the \
             next scheduled execution): its reconcile finds them.{stopped}",
            c.tp, c.producer_id
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::domain::TopicPartition;

    fn cursor() -> CursorItem {
        CursorItem {
            tp: TopicPartition::new("t", 0),
            producer_id: 7,
            writes_settled: true,
            ..CursorItem::default()
        }
    }

    #[test]
    fn a_backfill_waits_while_copies_may_be_past_the_cursor() {
        assert_eq!(backfill_waits(&cursor(), false, 0), None, "settled, nothing replicated");
        let fresh = CursorItem {
            producer_id: -1,
            writes_settled: false,
            ..cursor()
        };
        assert_eq!(backfill_waits(&fresh, false, 0), None, "no holder wrote yet");
        let crashed = CursorItem {
            writes_settled: false,
            ..cursor()
        };
        let why = backfill_waits(&crashed, false, 0).expect("a crashed holder's copies");
        assert!(why.contains("let Ferry run once more") && why.contains("reconciled them"), "{why}");
        let refused = CursorItem {
            last_error: Some("target refused a batch: MESSAGE_TOO_LARGE".into()),
            ..crashed.clone()
        };
        let why = backfill_waits(&refused, false, 0).expect("a partition stopped by the target");
        assert!(why.contains("MESSAGE_TOO_LARGE") && why.contains("Mend that first"), "{why}");
        // A rewind forgets the producer; what it wrote after the loss stays.
        let rewound = CursorItem {
            producer_id: -1,
            target_rewound_from: Some(3),
            ..cursor()
        };
        assert!(backfill_waits(&rewound, false, 0).is_some_and(|w| w.contains("lost records")));
        // A worker holding it now has not settled its writes either: the
        // backfill is asked of it, not refused; once its lease expired, it is
        // a worker that stopped without settling them.
        let held = CursorItem {
            lease_owner: Some("w".into()),
            lease_expires_ms: 2_000,
            ..crashed.clone()
        };
        assert_eq!(backfill_waits(&held, false, 1_000), None);
        assert!(backfill_waits(&held, false, 3_000).is_some());
        // Replicated: the caller's older refusal says so.
        assert_eq!(backfill_waits(&crashed, true, 0), None);
        let replicated = CursorItem {
            records_replicated: 5,
            ..crashed
        };
        assert_eq!(backfill_waits(&replicated, false, 0), None);
    }
}
