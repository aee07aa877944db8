//! What a read_committed consumer makes of the batches of one Fetch answer:
//! control batches and the batches of aborted transactions return no
//! records. Kept with the batch format so that every reader of committed
//! records (replication, `ferry move`'s first record) follows the aborted
//! transactions the same way.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use super::{is_abort_marker, split_batches, BatchError, RawBatch};

/// One batch of a Fetch answer, as a read_committed consumer sees it.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    /// The batch, whatever its kind (its offsets count for a reader's
    /// position all the same).
    pub batch: RawBatch,
    /// Whether a read_committed consumer returns its records: false for
    /// transaction markers and the batches of aborted transactions.
    pub committed: bool,
}

/// The batches of one partition's Fetch answer (`records`, and the
/// aborted transactions it lists as (producer id, first offset)), in
/// order, each marked as a read_committed consumer would treat it.
pub fn read_committed(records: Bytes, aborted: &[(i64, i64)]) -> Result<Vec<ReadBatch>, BatchError> {
    let mut txns = Transactions::new(aborted);
    split_batches(records)?
        .into_iter()
        .map(|batch| {
            let committed = txns.kind(&batch)? == BatchKind::Committed;
            Ok(ReadBatch { batch, committed })
        })
        .collect()
}

/// What a read_committed consumer makes of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchKind {
    /// A control batch: a transaction's commit or abort marker.
    Control,
    /// A batch of a transaction that was aborted.
    Aborted,
    /// A batch whose records a read_committed consumer returns.
    Committed,
}

/// The aborted transactions a Fetch answer lists ((producer id, first
/// offset)), followed batch by batch: a producer's transactional batches
/// are aborted from its listed first offset until its abort marker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Transactions {
    pending: VecDeque<(i64, i64)>,
    open: HashSet<i64>,
}

impl Transactions {
    /// From the answer's aborted transactions, in any order.
    pub(crate) fn new(aborted: &[(i64, i64)]) -> Self {
        let mut pending = aborted.to_vec();
        pending.sort_by_key(|a| a.1);
        Transactions {
            pending: pending.into(),
            open: HashSet::new(),
        }
    }

    /// The kind of `b`, the next batch of the answer: batches must be
    /// given in offset order (those skipped are passed over as a consumer
    /// positioned after them passes them).
    pub(crate) fn kind(&mut self, b: &RawBatch) -> Result<BatchKind, BatchError> {
        let h = b.header;
        while self.pending.front().is_some_and(|a| a.1 < h.next_offset()) {
            if let Some((pid, _)) = self.pending.pop_front() {
                self.open.insert(pid);
            }
        }
        if h.is_control() {
            if is_abort_marker(b)? {
                self.open.remove(&h.producer_id);
            }
            return Ok(BatchKind::Control);
        }
        Ok(if h.is_transactional() && self.open.contains(&h.producer_id) {
            BatchKind::Aborted
        } else {
            BatchKind::Committed
        })
    }
}
