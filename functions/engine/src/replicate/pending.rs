//! What waits to be produced, and what it takes in memory.

use super::*;

/// What an item waiting to be produced takes in memory besides its bytes
/// (see [`Pending::held`]).
pub(super) const HELD_PER_ITEM: usize = 2 * std::mem::size_of::<Pending>();

/// What waits to be produced: a record, to be built into a batch with
/// others, or a whole source batch that goes to the target as it is (see
/// [`batch::passes_through`]).
#[derive(Debug, Clone)]
pub(super) enum Pending {
    Record(SourceRecord),
    Batch(RawBatch),
}

impl Pending {
    pub(super) fn first_offset(&self) -> i64 {
        match self {
            Pending::Record(r) => r.offset,
            Pending::Batch(b) => b.header.base_offset,
        }
    }
    pub(super) fn last_offset(&self) -> i64 {
        match self {
            Pending::Record(r) => r.offset,
            Pending::Batch(b) => b.header.next_offset() - 1,
        }
    }
    /// Bytes it takes in a produced batch, roughly (for budgeting).
    pub(super) fn size(&self) -> usize {
        match self {
            Pending::Record(r) => r.approx_size(),
            Pending::Batch(b) => b.size,
        }
    }
    /// Bytes it will take in memory once queued, roughly: its bytes and
    /// its slot in the queue (twice, for the queue's growth). A small
    /// record's slot is several times its bytes.
    pub(super) fn held(&self) -> usize {
        self.size() + HELD_PER_ITEM
    }
    /// The timestamp of its last record (of a whole batch: the batch's
    /// largest, which is the last one's for a producer with a clock that
    /// does not go back).
    pub(super) fn timestamp(&self) -> i64 {
        match self {
            Pending::Record(r) => r.timestamp,
            Pending::Batch(b) => b.header.max_timestamp,
        }
    }
}

impl Part {
    /// What its queue takes in memory: the items' bytes and the queue's
    /// slots, as many as it has room for (a queue keeps its capacity).
    pub(super) fn held(&self) -> usize {
        self.pending_bytes + self.pending.capacity() * std::mem::size_of::<Pending>()
    }

    /// A partition stopped for the rest of the invocation gives back what
    /// it holds, which would otherwise count against the room of those
    /// still copying until the invocation ends: its queue (the next
    /// invocation reads it again). It counts as read up to where its
    /// checkpoint would put its cursor, no further. A batch built and sent
    /// whose outcome is unknown is kept: it may yet be appended, and the
    /// partition's writes are not settled while it is there (the next
    /// holder fences).
    pub(super) fn let_go_of_pending(&mut self) {
        if let Some(first) = self.pending.front().map(Pending::first_offset) {
            self.fetch_pos = self.unsaved.as_ref().map_or(first, |u| u.to_source.min(first));
        }
        self.pending = VecDeque::new();
        self.pending_bytes = 0;
    }

    /// Take the first `n` items of the queue, giving back the room a queue
    /// that held many more keeps (a backlog of small records, each partition
    /// in turn, would otherwise keep the most each ever held).
    pub(super) fn take_pending(&mut self, n: usize) -> Vec<Pending> {
        let items: Vec<Pending> = self.pending.drain(..n).collect();
        self.pending_bytes -= items.iter().map(Pending::size).sum::<usize>();
        let len = self.pending.len();
        if self.pending.capacity() > (4 * len).max(1024) {
            self.pending.shrink_to(2 * len);
        }
        items
    }
}
