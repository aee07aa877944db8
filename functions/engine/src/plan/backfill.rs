//! Checking a backfill before the plan moves any cursor: the topics it
//! names, and each partition's state (nothing replicated, and nothing
//! Ferry wrote to the target past the cursor).

use ferry_adapters::state::{CursorItem, StateError};
use ferry_core::domain::{Backfill, BackfillFrom};

use super::{in_flight, selected_topics};
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
            for (c, stored) in mine.into_iter().zip(stored) {
                if let Some(why) = backfill_waits(c, stored) {
                    return Err(FerryError::Input(format!("flow {}: {why}. Nothing was moved", flow.id())));
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

/// Why a backfill may not move the cursor `c` of a partition that has
/// replicated nothing (`stored`: it holds a run), though copies of its
/// records may be on the target past it; `None` when there are none.
fn backfill_waits(c: &CursorItem, stored: bool) -> Option<String> {
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
    if c.producer_id >= 0 && !c.writes_settled {
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
        assert_eq!(backfill_waits(&cursor(), false), None, "settled, nothing replicated");
        let fresh = CursorItem {
            producer_id: -1,
            writes_settled: false,
            ..cursor()
        };
        assert_eq!(backfill_waits(&fresh, false), None, "no holder wrote yet");
        let crashed = CursorItem {
            writes_settled: false,
            ..cursor()
        };
        let why = backfill_waits(&crashed, false).expect("a crashed holder's copies");
        assert!(why.contains("let Ferry run once more") && why.contains("reconciled them"), "{why}");
        let refused = CursorItem {
            last_error: Some("target refused a batch: MESSAGE_TOO_LARGE".into()),
            ..crashed.clone()
        };
        let why = backfill_waits(&refused, false).expect("a partition stopped by the target");
        assert!(why.contains("MESSAGE_TOO_LARGE") && why.contains("Mend that first"), "{why}");
        // A rewind forgets the producer; what it wrote after the loss stays.
        let rewound = CursorItem {
            producer_id: -1,
            target_rewound_from: Some(3),
            ..cursor()
        };
        assert!(backfill_waits(&rewound, false).is_some_and(|w| w.contains("lost records")));
        // Replicated: the caller's older refusal says so.
        assert_eq!(backfill_waits(&crashed, true), None);
        let replicated = CursorItem {
            records_replicated: 5,
            ..crashed
        };
        assert_eq!(backfill_waits(&replicated, false), None);
    }
}
