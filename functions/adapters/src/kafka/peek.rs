//! Reading one record as a read_committed consumer would see it next: what
//! an application resuming at an offset reads first (`ferry move` prints
//! it beside the offset, so that an operator can check it by eye).

use std::time::Duration;

use bytes::Bytes;
use ferry_core::domain::TopicPartition;

use super::batch;
use super::client::{Isolation, KafkaCluster};
use super::error::KafkaError;

/// The first record a read_committed consumer gets from an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRecord {
    /// Its offset (at or after the one asked for: control records,
    /// aborted transactions and compacted records are passed over).
    pub offset: i64,
    /// Its timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// Its key; None when null.
    pub key: Option<Bytes>,
}

/// Fetches made for one [`KafkaCluster::next_record`] before it gives up
/// (each passes at least one batch).
const MAX_FETCHES: usize = 100;

impl KafkaCluster {
    /// The first record at or after `from` in `tp` that a read_committed
    /// consumer would return, or None when there is none before the last
    /// stable offset (the next record produced comes first).
    pub async fn next_record(&self, tp: &TopicPartition, from: i64) -> Result<Option<NextRecord>, KafkaError> {
        let wrap = |source| KafkaError::Batch {
            cluster: self.alias().to_owned(),
            topic: tp.topic.clone(),
            partition: tp.partition,
            source,
        };
        let mut pos = from;
        for attempt in 0..MAX_FETCHES {
            let leader = *self
                .leaders(std::slice::from_ref(tp))
                .await?
                .get(tp)
                .ok_or_else(|| KafkaError::protocol(self.alias(), format!("no leader for {tp}")))?;
            let mut fetched = match self.fetch(leader, &[(tp.clone(), pos)], 1 << 20, 0, Isolation::ReadCommitted).await {
                Ok(f) => f,
                Err(e) if e.is_transient() && attempt < 10 => {
                    self.invalidate_leaders();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let got = match fetched.remove(tp) {
                Some(Ok(got)) => got,
                Some(Err(e)) if e.is_transient() && attempt < 10 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Some(Err(e)) => return Err(e),
                None => return Err(KafkaError::protocol(self.alias(), format!("Fetch did not answer for {tp}"))),
            };
            let batches = got.read_committed().map_err(wrap)?;
            let Some(last) = batches.last().map(|b| b.batch.header.next_offset()) else {
                return Ok(None);
            };
            for b in batches.iter().filter(|b| b.committed).map(|b| &b.batch) {
                if let Some(r) = batch::records(b).map_err(wrap)?.into_iter().find(|r| r.offset >= pos) {
                    return Ok(Some(NextRecord {
                        offset: r.offset,
                        timestamp_ms: r.timestamp,
                        key: batch::key_and_tombstone(&r.tail).0,
                    }));
                }
            }
            if last <= pos {
                return Ok(None);
            }
            pos = last;
        }
        Err(KafkaError::protocol(
            self.alias(),
            format!("{tp}: no committed record found in {MAX_FETCHES} fetches from offset {from}"),
        ))
    }
}
