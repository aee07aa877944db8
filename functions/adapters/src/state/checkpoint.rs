//! Checkpoints: the cursor moved and the offset map extended in one
//! transaction under the lease, and the rewind that moves a cursor back
//! when a log was truncated under it.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::{TransactWriteItemsError, TransactWriteItemsOutput};
use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use ferry_core::offset_map::OffsetRun;

use super::calls::Bounded;
use super::error::dynamo_err;
use super::offset_map::run_from_item;
use super::schema::{format_leader_epochs, map_pk, n, now_ms, partition_sk, s, spread_pk, PK, PK_MAP, SK_CURSOR, SK_MAP};
use super::{CursorItem, Lease, StateError, StateStore};

/// DynamoDB's limit on the items of one transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// What one checkpoint records.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Cursor before (must match the stored one).
    pub from_source: i64,
    /// Cursor after.
    pub to_source: i64,
    /// Target end offset after the write.
    pub target_end: i64,
    /// New runs (already coalesced against `prev_run`: when the first
    /// continues it, it starts where `prev_run` starts).
    pub runs: Vec<OffsetRun>,
    /// The partition's newest run before this checkpoint, with its length
    /// as the holder knows it (the stored item may hold a shorter one).
    pub prev_run: Option<OffsetRun>,
    /// Records and bytes in this step.
    pub records: i64,
    /// Bytes in this step.
    pub bytes: i64,
    /// Timestamp of the last record.
    pub last_timestamp_ms: i64,
    /// Source end offset seen.
    pub source_end: i64,
    /// New lease expiry.
    pub lease_expires_ms: i64,
    /// The recorded producer's next sequence number as of `target_end`,
    /// when this checkpoint covers its writes (None leaves it as stored).
    pub producer_sequence: Option<i32>,
    /// The source leader epochs read below `to_source`: (first offset
    /// read in it, epoch), oldest first; the last one is the epoch of the
    /// batch holding `to_source - 1` (see [`CursorItem::leader_epoch`](super::CursorItem::leader_epoch)).
    /// Empty removes the stored ones: an epoch that no longer belongs to
    /// the offset before the cursor would make a sound log look truncated.
    pub leader_epochs: Vec<(i64, i32)>,
    /// The target's leader epoch to store with `target_end` (see
    /// [`CursorItem::target_leader_epoch`](super::CursorItem::target_leader_epoch)): `None` leaves the stored one
    /// (a checkpoint without records), `Some(None)` removes it (not known:
    /// an older epoch would make a sound log look truncated).
    pub target_leader_epoch: Option<Option<i32>>,
}

/// Where a transaction conditional on the cursor moves it: from `from` to
/// `to` (and the stored target end to `target_end`, when it moves it). A
/// refused transaction whose cursor already stands where it goes, under
/// the same lease, was this one, applied by an earlier copy.
#[derive(Debug, Clone, Copy)]
struct Move {
    from: i64,
    to: i64,
    target_end: Option<i64>,
}

impl Checkpoint {
    fn cursor_move(&self) -> Move {
        Move {
            from: self.from_source,
            to: self.to_source,
            target_end: Some(self.target_end),
        }
    }
}

/// How many times a transaction DynamoDB cancelled only for a conflict is
/// sent again, after 20, 40, 80 ms.
const CONFLICT_RETRIES: u32 = 3;

/// Whether DynamoDB cancelled a transaction only because another request
/// was writing one of its items at the same moment (TransactionConflict;
/// say a plan recording a cursor's topic ids, or a successor claiming its
/// hand-off, as the holder checkpoints): it wrote nothing and no
/// condition failed, so the same items may be sent again milliseconds
/// later. The SDK does not retry a cancelled transaction. Throttling is
/// not sent again here: 20 to 80 ms is no backoff for a table at its
/// limit, and `checkpoint_all`'s fallback would multiply the writes; the
/// partition pauses until the next invocation instead.
fn cancelled_for_a_conflict(e: &TransactWriteItemsError) -> bool {
    let TransactWriteItemsError::TransactionCanceledException(t) = e else {
        return false;
    };
    let codes: Vec<&str> = t.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None")).collect();
    codes.contains(&"TransactionConflict") && codes.iter().all(|c| matches!(*c, "None" | "TransactionConflict"))
}

impl StateStore {
    /// One TransactWriteItems of `items` (its outcome for
    /// `checkpoint_outcome`), sent again when DynamoDB cancelled it only
    /// for a conflict (see `cancelled_for_a_conflict`): otherwise the
    /// holder would pause the partition until the next invocation for a
    /// write that would pass milliseconds later.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<TransactWriteItemsOutput, SdkError<TransactWriteItemsError, HttpResponse>> {
        let mut retries = 0;
        loop {
            let res = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .bounded(&self.calls)
                .await;
            match res {
                Err(SdkError::ServiceError(e)) if retries < CONFLICT_RETRIES && cancelled_for_a_conflict(e.err()) => {
                    retries += 1;
                    tracing::debug!(retries, reasons = ?e.err(), "transaction cancelled for a conflict; sent again");
                    tokio::time::sleep(std::time::Duration::from_millis(10 << retries)).await;
                }
                res => return res,
            }
        }
    }

    /// Move the cursor and store the mapping, atomically, under the lease.
    pub async fn checkpoint(&self, flow: &str, lease: &Lease, cp: &Checkpoint) -> Result<(), StateError> {
        let items = self.checkpoint_items(flow, self.key_shards(flow).await?, lease, cp)?;
        let res = self.transact(items).await;
        self.checkpoint_outcome(lease, Some(cp.cursor_move()), res)
    }

    /// Several partitions' checkpoints, in as few DynamoDB transactions as
    /// its limit of 100 items a transaction allows: one request where there
    /// were as many as partitions. Each result is its own checkpoint's. A
    /// transaction DynamoDB cancels wrote none of its items; its checkpoints
    /// are then written again one by one, so a lease lost on one partition
    /// fails that partition only.
    pub async fn checkpoint_all(&self, flow: &str, cps: &[(&Lease, &Checkpoint)]) -> Vec<Result<(), StateError>> {
        let mut results: Vec<Option<Result<(), StateError>>> = vec![None; cps.len()];
        // Bins of (index, items), each within one transaction.
        let mut bins: Vec<Vec<(usize, Vec<TransactWriteItem>)>> = Vec::new();
        let mut bin_items = 0;
        let shards = match self.key_shards(flow).await {
            Ok(shards) => shards,
            Err(e) => return cps.iter().map(|_| Err(e.clone())).collect(),
        };
        for (i, (lease, cp)) in cps.iter().enumerate() {
            match self.checkpoint_items(flow, shards, lease, cp) {
                Err(e) => results[i] = Some(Err(e)),
                Ok(items) => {
                    if bins.is_empty() || bin_items + items.len() > MAX_TRANSACTION_ITEMS {
                        bins.push(Vec::new());
                        bin_items = 0;
                    }
                    bin_items += items.len();
                    bins.last_mut().expect("a bin was pushed").push((i, items));
                }
            }
        }
        // One transaction after another, and one checkpoint after another
        // when falling back: moto (the tests' DynamoDB) undoes a cancelled
        // transaction by restoring its tables as they were when it began,
        // which would also undo a write made meanwhile.
        for bin in bins {
            let members: Vec<usize> = bin.iter().map(|(i, _)| *i).collect();
            let items: Vec<TransactWriteItem> = bin.into_iter().flat_map(|(_, items)| items).collect();
            let res = self.transact(items).await;
            match (members.as_slice(), res) {
                ([only], res) => results[*only] = Some(self.checkpoint_outcome(cps[*only].0, Some(cps[*only].1.cursor_move()), res)),
                (_, Ok(_)) => members.iter().for_each(|&i| results[i] = Some(Ok(()))),
                (_, Err(SdkError::ServiceError(e))) if e.err().is_transaction_canceled_exception() => {
                    for &i in &members {
                        results[i] = Some(self.checkpoint(flow, cps[i].0, cps[i].1).await);
                    }
                }
                (_, Err(e)) => {
                    let e = dynamo_err("TransactWriteItems", &self.cursors, e);
                    members.iter().for_each(|&i| results[i] = Some(Err(e.clone())));
                }
            }
        }
        results.into_iter().map(|r| r.expect("every checkpoint has a result")).collect()
    }

    /// The items of one checkpoint's transaction: the cursor (conditional
    /// on the lease and the stored cursor) first, then the offset-map runs.
    /// The newest run is whole only in the cursor item (its `open_run_*`
    /// attributes): a checkpoint that only lengthens it is that one item.
    /// A run that stops being the newest is written whole to the map in
    /// the same transaction, so every older run's item is exact.
    fn checkpoint_items(&self, flow: &str, shards: u32, lease: &Lease, cp: &Checkpoint) -> Result<Vec<TransactWriteItem>, StateError> {
        let build_err = |table: &str, e: aws_sdk_dynamodb::error::BuildError| StateError::Dynamo {
            op: "TransactWriteItems",
            table: table.to_owned(),
            detail: e.to_string(),
        };
        let mut items = Vec::with_capacity(2 + cp.runs.len());
        let mut set = String::from(
            "SET next_source_offset = :to, next_target_offset = :tend, last_record_timestamp_ms = :ts, \
             source_end_offset = :send, records_replicated = if_not_exists(records_replicated, :zero) + :recs, \
             bytes_replicated = if_not_exists(bytes_replicated, :zero) + :bytes, updated_ms = :now, \
             lease_expires_ms = :exp",
        );
        let open = cp.runs.last();
        if open.is_some() {
            set.push_str(", open_run_source_start = :ors, open_run_target_start = :ort, open_run_length = :orl");
        }
        if cp.producer_sequence.is_some() {
            set.push_str(", producer_next_sequence = :pseq");
        }
        let mut remove = match cp.leader_epochs.last() {
            Some(_) => {
                set.push_str(", leader_epoch = :lep, leader_epoch_starts = :leps");
                String::from("REMOVE last_error")
            }
            None => String::from("REMOVE last_error, leader_epoch, leader_epoch_starts"),
        };
        match cp.target_leader_epoch {
            Some(Some(_)) => set.push_str(", target_leader_epoch = :tlep"),
            Some(None) => remove.push_str(", target_leader_epoch"),
            None => {}
        }
        let mut cursor_update = Update::builder()
            .table_name(&self.cursors)
            .key(PK, s(spread_pk(flow, shards, &lease.tp)))
            .key(SK_CURSOR, s(partition_sk(&lease.tp)))
            .update_expression(format!("{set} {remove}"))
            .condition_expression("lease_owner = :me AND lease_epoch = :epoch AND next_source_offset = :from")
            // Refused, the cursor as it stands comes back: whose lease, and
            // where (see `checkpoint_outcome`).
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_values(":to", n(cp.to_source))
            .expression_attribute_values(":from", n(cp.from_source))
            .expression_attribute_values(":tend", n(cp.target_end))
            .expression_attribute_values(":ts", n(cp.last_timestamp_ms))
            .expression_attribute_values(":send", n(cp.source_end))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":recs", n(cp.records))
            .expression_attribute_values(":bytes", n(cp.bytes))
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":exp", n(cp.lease_expires_ms))
            .expression_attribute_values(":me", s(&lease.owner))
            .expression_attribute_values(":epoch", n(lease.epoch));
        if let Some(seq) = cp.producer_sequence {
            cursor_update = cursor_update.expression_attribute_values(":pseq", n(i64::from(seq)));
        }
        if let Some(Some(e)) = cp.target_leader_epoch {
            cursor_update = cursor_update.expression_attribute_values(":tlep", n(i64::from(e)));
        }
        if let Some(&(_, epoch)) = cp.leader_epochs.last() {
            cursor_update = cursor_update
                .expression_attribute_values(":lep", n(i64::from(epoch)))
                .expression_attribute_values(":leps", s(format_leader_epochs(&cp.leader_epochs)));
        }
        if let Some(o) = open {
            cursor_update = cursor_update
                .expression_attribute_values(":ors", n(o.source_start))
                .expression_attribute_values(":ort", n(o.target_start))
                .expression_attribute_values(":orl", n(o.length));
        }
        let cursor_update = cursor_update.build().map_err(|e| build_err(&self.cursors, e))?;
        items.push(TransactWriteItem::builder().update(cursor_update).build());
        let pk = map_pk(flow, &lease.tp);
        // The stored newest run's item gets its whole length once a newer
        // run follows it: it is the first of `runs` (lengthened) or, after
        // a gap, `prev_run` itself.
        let extended = cp
            .prev_run
            .filter(|p| cp.runs.first().is_some_and(|r| r.source_start == p.source_start));
        let closed = match (cp.prev_run, extended, cp.runs.len()) {
            (Some(prev), None, 1..) => Some(prev),
            (Some(_), Some(_), 2..) => cp.runs.first().copied(),
            _ => None,
        };
        if let Some(c) = closed {
            let u = Update::builder()
                .table_name(&self.offset_map)
                .key(PK_MAP, s(&pk))
                .key(SK_MAP, n(c.source_start))
                .update_expression("SET run_length = :len")
                .condition_expression("attribute_exists(target_start)")
                .expression_attribute_values(":len", n(c.length))
                .build()
                .map_err(|e| build_err(&self.offset_map, e))?;
            items.push(TransactWriteItem::builder().update(u).build());
        }
        for run in cp.runs.iter().skip(usize::from(extended.is_some())) {
            let p = Put::builder()
                .table_name(&self.offset_map)
                .item(PK_MAP, s(&pk))
                .item(SK_MAP, n(run.source_start))
                .item("target_start", n(run.target_start))
                .item("run_length", n(run.length))
                .build()
                .map_err(|e| build_err(&self.offset_map, e))?;
            items.push(TransactWriteItem::builder().put(p).build());
        }
        Ok(items)
    }

    /// What one checkpoint's transaction did. Its first item is the
    /// cursor's, conditional on the lease (and, with `moved`, on the cursor
    /// standing at `moved.from`). When that condition failed, the cursor
    /// as it stood says why (the transaction asks for it back):
    /// - another lease epoch or holder: the lease was taken over;
    /// - the same lease, the cursor already where `moved` takes it: this
    ///   very transaction was applied by an earlier copy of the request
    ///   (the SDK sends it again when an answer is lost; DynamoDB knows a
    ///   copy by its ClientRequestToken only for ten minutes), so it is
    ///   done: only this lease's holder moves the cursor, one
    ///   transaction at a time;
    /// - the same lease, the cursor elsewhere: something else moved it.
    ///
    /// Without the item (a store that does not return it), the lease is
    /// taken to be lost, the safe reading: the holder stops writing.
    fn checkpoint_outcome<T>(
        &self,
        lease: &Lease,
        moved: Option<Move>,
        res: Result<T, SdkError<TransactWriteItemsError, HttpResponse>>,
    ) -> Result<(), StateError> {
        let e = match res {
            Ok(_) => return Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => e,
            Err(e) => return Err(dynamo_err("TransactWriteItems", &self.cursors, e)),
        };
        let reasons = match e.err() {
            TransactWriteItemsError::TransactionCanceledException(t) => t.cancellation_reasons().to_vec(),
            _ => Vec::new(),
        };
        let lost = StateError::LeaseLost {
            tp: lease.tp.clone(),
            epoch: lease.epoch,
        };
        let Some(first) = reasons.first() else {
            return Err(lost);
        };
        if first.code() != Some("ConditionalCheckFailed") {
            // The first item is the cursor's; the others are the map's.
            let table = match first.code() {
                Some("None") | None => &self.offset_map,
                Some(_) => &self.cursors,
            };
            return Err(StateError::Dynamo {
                op: "TransactWriteItems",
                table: table.clone(),
                detail: format!("{reasons:?}"),
            });
        }
        let Some(item) = first.item() else {
            return Err(lost);
        };
        let cursor = CursorItem::try_from((self.cursors.as_str(), item))?;
        cursor_refusal(lease, moved, &cursor).map_or(Ok(()), Err)
    }

    /// Move a partition's cursor back from `from` to `to`, under the lease:
    /// the source's log was truncated at `to` (an unclean leader election)
    /// and Ferry follows its new history from there. The offset-map runs
    /// of source offsets at or past `to` describe records the source no
    /// longer has: they are deleted, the run holding `to - 1` is cut at
    /// `to` and the cursor moves, in one transaction conditional on the
    /// lease and the cursor (a holder whose lease passed on deletes
    /// nothing: the runs its successor wrote since may have the same
    /// keys). Runs past one transaction's items go in further ones, each
    /// conditional on the lease, with the cursor marked until the last
    /// (see [`StateStore::trim_runs_past_cursor`]). `open` is the holder's newest run,
    /// whole (the stored item may be shorter); `leader_epochs`, the
    /// epochs read below `to` (see [`Checkpoint::leader_epochs`]). Returns
    /// the newest run after the move, whole.
    ///
    /// `target_end`: the target's log was truncated under Ferry's copies
    /// instead, and ends at this offset now; the runs of source offsets at
    /// or past `to` are the copies it lost. The stored target end moves
    /// there, the target's epoch is forgotten, and so is the holder's
    /// producer: what the target holds past its new end is not a stream a
    /// successor could reconcile.
    #[allow(clippy::too_many_arguments)]
    pub async fn rewind_cursor(
        &self,
        flow: &str,
        lease: &Lease,
        from: i64,
        to: i64,
        open: Option<OffsetRun>,
        leader_epochs: &[(i64, i32)],
        target_end: Option<i64>,
    ) -> Result<Option<OffsetRun>, StateError> {
        let build_err = |table: &str, e: aws_sdk_dynamodb::error::BuildError| StateError::Dynamo {
            op: "TransactWriteItems",
            table: table.to_owned(),
            detail: e.to_string(),
        };
        let pk = map_pk(flow, &lease.tp);
        let cursor_pk = self.partition_pk(flow, &lease.tp).await?;
        let items = self.query_all(&self.offset_map, PK_MAP, s(&pk)).await?;
        let mut runs = items
            .iter()
            .map(|i| run_from_item(&self.offset_map, i))
            .collect::<Result<Vec<_>, _>>()?;
        for r in runs.iter_mut() {
            if let Some(o) = open.filter(|o| o.source_start == r.source_start && o.length > r.length) {
                r.length = o.length;
            }
        }
        let (keep, doomed): (Vec<OffsetRun>, Vec<OffsetRun>) = runs.into_iter().partition(|r| r.source_start < to);
        // The cursor's update, the cut of the newest run, and as many
        // deletes as fit with them.
        let now_count = doomed.len().min(MAX_TRANSACTION_ITEMS - 2);
        let (now, later) = doomed.split_at(now_count);
        let newest = keep.iter().max_by_key(|r| r.source_start).map(|r| OffsetRun {
            length: r.length.min(to - r.source_start),
            ..*r
        });
        let mut set = String::from("SET next_source_offset = :to, updated_ms = :now");
        let mut remove: Vec<&str> = vec!["last_error"];
        if target_end.is_some() {
            set.push_str(
                ", next_target_offset = :tend, producer_id = :nopid, target_rewound_ms = :now, target_rewound_from = :tend, \
                 target_rewinds = if_not_exists(target_rewinds, :zero) + :one",
            );
            remove.push("target_leader_epoch");
        }
        if newest.is_some() {
            set.push_str(", open_run_source_start = :ors, open_run_target_start = :ort, open_run_length = :orl");
        } else {
            remove.extend(["open_run_source_start", "open_run_target_start", "open_run_length"]);
        }
        if !later.is_empty() {
            set.push_str(", map_trim_from = :to");
        }
        if leader_epochs.is_empty() {
            remove.extend(["leader_epoch", "leader_epoch_starts"]);
        } else {
            set.push_str(", leader_epoch = :lep, leader_epoch_starts = :leps");
        }
        let mut cursor_update = Update::builder()
            .table_name(&self.cursors)
            .key(PK, s(&cursor_pk))
            .key(SK_CURSOR, s(partition_sk(&lease.tp)))
            .update_expression(format!("{set} REMOVE {}", remove.join(", ")))
            .condition_expression("lease_owner = :me AND lease_epoch = :epoch AND next_source_offset = :from")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_values(":to", n(to))
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":me", s(&lease.owner))
            .expression_attribute_values(":epoch", n(lease.epoch));
        if let Some(end) = target_end {
            cursor_update = cursor_update
                .expression_attribute_values(":tend", n(end))
                .expression_attribute_values(":nopid", n(-1))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1));
        }
        if let Some(r) = newest {
            cursor_update = cursor_update
                .expression_attribute_values(":ors", n(r.source_start))
                .expression_attribute_values(":ort", n(r.target_start))
                .expression_attribute_values(":orl", n(r.length));
        }
        if let Some(&(_, e)) = leader_epochs.last() {
            cursor_update = cursor_update
                .expression_attribute_values(":lep", n(i64::from(e)))
                .expression_attribute_values(":leps", s(format_leader_epochs(leader_epochs)));
        }
        let mut items = vec![TransactWriteItem::builder()
            .update(cursor_update.build().map_err(|e| build_err(&self.cursors, e))?)
            .build()];
        if let Some(r) = newest {
            // Its item exact: it is where the next checkpoint's runs join.
            let u = Update::builder()
                .table_name(&self.offset_map)
                .key(PK_MAP, s(&pk))
                .key(SK_MAP, n(r.source_start))
                .update_expression("SET run_length = :len")
                .condition_expression("attribute_exists(target_start)")
                .expression_attribute_values(":len", n(r.length))
                .build()
                .map_err(|e| build_err(&self.offset_map, e))?;
            items.push(TransactWriteItem::builder().update(u).build());
        }
        items.extend(self.run_delete_items(&pk, now)?);
        let res = self.transact(items).await;
        let rewound = Move { from, to, target_end };
        self.checkpoint_outcome(lease, Some(rewound), res)?;
        if !later.is_empty() {
            self.delete_runs_under_lease(flow, lease, &pk, later).await?;
        }
        Ok(newest)
    }

    /// Finish a rewind that stopped before it deleted every run past the
    /// cursor (the cursor item says so, `map_trim_from`): delete the runs
    /// starting at or past `cursor` under the lease, then the mark. A
    /// holder calls it before anything reads or extends the map.
    pub async fn trim_runs_past_cursor(&self, flow: &str, lease: &Lease, cursor: i64) -> Result<(), StateError> {
        let pk = map_pk(flow, &lease.tp);
        let mut doomed = self.query_all(&self.offset_map, PK_MAP, s(&pk)).await?;
        doomed.retain(|i| {
            i.get(SK_MAP)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|start| start >= cursor)
        });
        let runs = doomed
            .iter()
            .map(|i| run_from_item(&self.offset_map, i))
            .collect::<Result<Vec<_>, _>>()?;
        self.delete_runs_under_lease(flow, lease, &pk, &runs).await
    }

    /// Delete `runs` of map partition `pk`, each transaction conditional on
    /// the lease; the last one also removes the cursor's `map_trim_from`.
    async fn delete_runs_under_lease(&self, flow: &str, lease: &Lease, pk: &str, runs: &[OffsetRun]) -> Result<(), StateError> {
        let build_err = |e: aws_sdk_dynamodb::error::BuildError| StateError::Dynamo {
            op: "TransactWriteItems",
            table: self.cursors.clone(),
            detail: e.to_string(),
        };
        let cursor_pk = self.partition_pk(flow, &lease.tp).await?;
        let chunks: Vec<&[OffsetRun]> = if runs.is_empty() {
            vec![&[]]
        } else {
            runs.chunks(MAX_TRANSACTION_ITEMS - 1).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let condition = "lease_owner = :me AND lease_epoch = :epoch";
            let guard = if i == last {
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.cursors)
                            .key(PK, s(&cursor_pk))
                            .key(SK_CURSOR, s(partition_sk(&lease.tp)))
                            .update_expression("REMOVE map_trim_from")
                            .condition_expression(condition)
                            .expression_attribute_values(":me", s(&lease.owner))
                            .expression_attribute_values(":epoch", n(lease.epoch))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build()
            } else {
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.cursors)
                            .key(PK, s(&cursor_pk))
                            .key(SK_CURSOR, s(partition_sk(&lease.tp)))
                            .condition_expression(condition)
                            .expression_attribute_values(":me", s(&lease.owner))
                            .expression_attribute_values(":epoch", n(lease.epoch))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build()
            };
            let mut items = vec![guard];
            items.extend(self.run_delete_items(pk, chunk)?);
            let res = self.transact(items).await;
            self.checkpoint_outcome(lease, None, res)?;
        }
        Ok(())
    }

    /// Transaction items deleting `runs` of map partition `pk`.
    fn run_delete_items(&self, pk: &str, runs: &[OffsetRun]) -> Result<Vec<TransactWriteItem>, StateError> {
        runs.iter()
            .map(|r| {
                Delete::builder()
                    .table_name(&self.offset_map)
                    .key(PK_MAP, s(pk))
                    .key(SK_MAP, n(r.source_start))
                    .build()
                    .map(|d| TransactWriteItem::builder().delete(d).build())
                    .map_err(|e| StateError::Dynamo {
                        op: "TransactWriteItems",
                        table: self.offset_map.clone(),
                        detail: e.to_string(),
                    })
            })
            .collect()
    }
}

/// Why a transaction under `lease` that would have moved the cursor as
/// `moved` says was refused, from the cursor as it stood (see
/// `StateStore::checkpoint_outcome`); None: it was applied already.
fn cursor_refusal(lease: &Lease, moved: Option<Move>, cursor: &CursorItem) -> Option<StateError> {
    let ours = cursor.lease_owner.as_deref() == Some(lease.owner.as_str()) && cursor.lease_epoch == lease.epoch;
    let Some(m) = moved.filter(|_| ours) else {
        return Some(StateError::LeaseLost {
            tp: lease.tp.clone(),
            epoch: lease.epoch,
        });
    };
    let applied = cursor.next_source_offset == m.to && m.target_end.is_none_or(|t| cursor.next_target_offset == Some(t));
    (!applied).then(|| StateError::CursorMoved {
        tp: lease.tp.clone(),
        epoch: lease.epoch,
        expected: m.from,
        found: cursor.next_source_offset,
    })
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_sdk_dynamodb::types::CancellationReason;

    use super::*;

    fn cancelled(codes: &[&str]) -> TransactWriteItemsError {
        let reasons = codes.iter().map(|c| CancellationReason::builder().code(*c).build()).collect();
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .set_cancellation_reasons(Some(reasons))
                .build(),
        )
    }

    #[test]
    fn only_a_transaction_cancelled_for_a_conflict_alone_is_sent_again() {
        assert!(cancelled_for_a_conflict(&cancelled(&["None", "TransactionConflict"])));
        assert!(cancelled_for_a_conflict(&cancelled(&["TransactionConflict", "None", "None"])));
        // Throttling is not a conflict: no short resend for a table at its limit.
        assert!(!cancelled_for_a_conflict(&cancelled(&["ThrottlingError"])));
        assert!(!cancelled_for_a_conflict(&cancelled(&[
            "TransactionConflict",
            "ProvisionedThroughputExceeded"
        ])));
        // A failed condition decides the outcome, conflict or not.
        assert!(!cancelled_for_a_conflict(&cancelled(&[
            "ConditionalCheckFailed",
            "TransactionConflict"
        ])));
        assert!(!cancelled_for_a_conflict(&cancelled(&["None", "ValidationError"])));
        // No reason given: nothing says a retry would pass.
        assert!(!cancelled_for_a_conflict(&cancelled(&[])));
        assert!(!cancelled_for_a_conflict(&cancelled(&["None", "None"])));
    }
}
