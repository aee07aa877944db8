//! A partition's cursor item: where replication stands, who holds the
//! lease, and with which producer; taking, proving and giving back the
//! lease.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use ferry_core::domain::TopicPartition;
use ferry_core::offset_map::OffsetRun;

use super::calls::Bounded;
use super::error::{conditional, dynamo_err};
use super::schema::{n, now_ms, parse_leader_epochs, partition_sk, s, spread_pk, ItemReader, BACKFILL_FROM, FLOW_MARKER, PK, SK_CURSOR};
use super::{StateError, StateStore};

/// A partition's cursor, lease and statistics, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CursorItem {
    /// The source partition.
    pub tp: TopicPartition,
    /// Target topic.
    pub target_topic: String,
    /// Next source offset to replicate.
    pub next_source_offset: i64,
    /// Where the flow began copying the partition (its StartingPosition,
    /// or a backfill's): nothing below it was copied. None in items
    /// written before Ferry read it back.
    pub start_offset: Option<i64>,
    /// Target end offset after this replicator's last write, if any.
    pub next_target_offset: Option<i64>,
    /// Lease holder, if any.
    pub lease_owner: Option<String>,
    /// Fencing epoch; increases on every acquisition.
    pub lease_epoch: i64,
    /// Lease expiry (ms since the epoch).
    pub lease_expires_ms: i64,
    /// When the lease's holder plans to stop copying and give it back (ms
    /// since the epoch: its deadline less what it keeps to checkpoint), if
    /// it said: a successor arriving shortly before waits for it (see
    /// `acquire_lease_until`). 0 when unknown.
    pub lease_ends_ms: i64,
    /// Producer id of the lease holder (provenance on the target).
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i64,
    /// The transactional id that producer id belongs to: a successor fences
    /// it (see `kafka::txn`). None when written by a Ferry before fencing.
    pub transactional_id: Option<String>,
    /// Whether that holder gave the lease back with no write whose outcome
    /// it did not know: then a successor need not fence it.
    pub writes_settled: bool,
    /// The sequence number that producer gives its next record on this
    /// partition, as of `next_target_offset`: where its records after the
    /// checkpoint start in its write stream, so that a successor can tell
    /// which of them compaction removed (a gap in sequence). None in items
    /// written before Ferry stored it.
    pub producer_next_sequence: Option<i32>,
    /// Timestamp of the last replicated record.
    pub last_record_timestamp_ms: i64,
    /// Source end offset when last seen.
    pub source_end_offset: i64,
    /// Records replicated, all time.
    pub records_replicated: i64,
    /// Bytes replicated, all time.
    pub bytes_replicated: i64,
    /// Last update (ms since the epoch).
    pub updated_ms: i64,
    /// Last error, if the partition is stopped on one.
    pub last_error: Option<String>,
    /// The id of the target topic when Ferry found it there before it
    /// copied into it (another's topic, adopted): while the target topic
    /// has this id, Ferry does not change its configuration beyond raising
    /// max.message.bytes. `None`: a topic Ferry created, or an item
    /// written before Ferry recorded it.
    pub adopted_target_id: Option<String>,
    /// Why the last plan refused to copy the partition's topic (a target
    /// topic that conflicts with its source), if it did; the plan sets and
    /// clears it, apart from `last_error`, which Replicate's stops own.
    pub plan_refusal: Option<String>,
    /// Records per second the last holder replicated, over its invocation.
    pub records_per_s: i64,
    /// Bytes per second the last holder replicated, over its invocation.
    pub bytes_per_s: i64,
    /// The partition's newest offset-map run, whole. Its item in the
    /// offset-map table may hold a shorter length: a checkpoint that only
    /// lengthens it writes here, so it costs one item, not two.
    pub open_run: Option<OffsetRun>,
    /// The id of the source topic this cursor counts offsets in: a topic
    /// deleted and created again under its name has another, and this
    /// cursor means nothing there. `None` until a plan records it.
    pub source_topic_id: Option<String>,
    /// The id of the target topic its offset map points into, likewise.
    pub target_topic_id: Option<String>,
    /// When the flow handed its target topic over to whichever flow takes
    /// it next (see `writers`): no lease is taken on it since.
    pub handed_over_ms: Option<i64>,
    /// The source offset where this flow took the partition over from a
    /// flow that stopped copying it (see `writers`): the records below
    /// were that flow's copies, in its offset map, not this one's.
    pub handed_at: Option<i64>,
    /// The flow it took the partition over from (its state key): the
    /// commits that flow's group syncs made on the target are Ferry's, the
    /// group's last synced positions, not someone else's.
    pub handed_by: Option<String>,
    /// Every flow it took the partition over from (`handed_by` is the
    /// latest): a topic handed back and forth may leave a commit of any of
    /// them on the target.
    pub handed_from: Vec<String>,
    /// The source leader epoch of the batch holding the last offset before
    /// the cursor (KIP-320): the next holder asks the source's leader where
    /// that epoch ends, and a log truncated below the cursor (an unclean
    /// leader election) shows as an end before it. `None` in items written
    /// before Ferry stored it, or after a move whose epoch is not known.
    pub leader_epoch: Option<i32>,
    /// The source leader epochs of what was read below the cursor, as
    /// (first offset read in it, epoch), oldest first, bounded (see
    /// [`Checkpoint::leader_epochs`](super::Checkpoint::leader_epochs)): where a replaced history parts from
    /// Ferry's is found with it, as a Kafka follower finds it with its
    /// leader-epoch cache. An item written before Ferry stored it has its
    /// `leader_epoch` alone here, at offset -1 (first offset not known).
    pub leader_epochs: Vec<(i64, i32)>,
    /// The target partition's leader epoch when the last checkpoint of
    /// records was written, read after those records were acknowledged and
    /// while the target's end was at or past `next_target_offset`: every
    /// record Ferry wrote below it is in this epoch or an older one. The
    /// next holder asks the target's leader where this epoch ends
    /// (OffsetForLeaderEpoch): an end below `next_target_offset` is a
    /// target log truncated under Ferry's copies (an unclean leader
    /// election), even once other producers wrote past it. `None` in
    /// items written before Ferry stored it (or, before 2026-12-07, when it
    /// could not be read: such a checkpoint is now held back).
    pub target_leader_epoch: Option<i32>,
    /// When the offset map was last cut back for a truncated target log
    /// (ms since the epoch): a group translation made before it may point
    /// at a copy the target lost.
    pub target_rewound_ms: Option<i64>,
    /// Where the target's log parted from Ferry's copies that last time
    /// (a target offset): a commit Ferry wrote on the target before then,
    /// past this offset, points at records of a history the target lost.
    pub target_rewound_from: Option<i64>,
    /// How many times the target's log was found truncated under Ferry's
    /// copies (0 in items written before Ferry counted): a group commit
    /// Ferry made from a cursor that counted fewer points into a history
    /// the target lost.
    pub target_rewinds: i64,
    /// A rewind moved the cursor back to here and had not deleted every
    /// offset-map run past it yet (more than one transaction's worth):
    /// the next holder finishes it before anything reads or extends the
    /// map (see [`StateStore::trim_runs_past_cursor`]).
    pub map_trim_from: Option<i64>,
    /// A backfill requested while the partition was leased: the source
    /// offset its next holder starts it at, if it still may (see
    /// `StateStore::request_backfill`).
    pub backfill_from: Option<i64>,
}

impl CursorItem {
    /// `run` as read from the offset-map table, lengthened if it is the
    /// open run this cursor holds.
    pub fn patch(&self, run: &mut OffsetRun) {
        if let Some(open) = self
            .open_run
            .filter(|o| o.source_start == run.source_start && o.length > run.length)
        {
            run.length = open.length;
        }
    }
}

/// What a holder replicated per second over its invocation, stored when it
/// gives its lease back (`ferry status` shows it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    /// Records per second.
    pub records_per_s: i64,
    /// Bytes per second.
    pub bytes_per_s: i64,
}

/// The producer a lease holder writes with, as recorded under its lease.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    /// Producer id (the provenance reconcile counts).
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// The transactional id it belongs to (what a successor fences).
    pub transactional_id: &'a str,
}

/// A held lease: the proof a worker shows on every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Partition.
    pub tp: TopicPartition,
    /// Holder id.
    pub owner: String,
    /// Epoch held.
    pub epoch: i64,
}

impl TryFrom<(&str, &HashMap<String, AttributeValue>)> for CursorItem {
    type Error = StateError;
    fn try_from((table, item): (&str, &HashMap<String, AttributeValue>)) -> Result<Self, StateError> {
        let r = ItemReader::new(table, item);
        Ok(CursorItem {
            tp: TopicPartition::new(r.req_s("topic")?, r.req_n("partition_index")? as i32),
            target_topic: r.req_s("target_topic")?,
            next_source_offset: r.req_n("next_source_offset")?,
            start_offset: r.n("start_offset"),
            next_target_offset: r.n("next_target_offset"),
            lease_owner: r.s("lease_owner"),
            lease_epoch: r.n("lease_epoch").unwrap_or(0),
            lease_expires_ms: r.n("lease_expires_ms").unwrap_or(0),
            lease_ends_ms: r.n("lease_ends_ms").unwrap_or(0),
            producer_id: r.n("producer_id").unwrap_or(-1),
            producer_epoch: r.n("producer_epoch").unwrap_or(-1),
            transactional_id: r.s("transactional_id"),
            writes_settled: r.bool("writes_settled").unwrap_or(false),
            producer_next_sequence: r.n("producer_next_sequence").and_then(|v| i32::try_from(v).ok()),
            last_record_timestamp_ms: r.n("last_record_timestamp_ms").unwrap_or(-1),
            source_end_offset: r.n("source_end_offset").unwrap_or(-1),
            records_replicated: r.n("records_replicated").unwrap_or(0),
            bytes_replicated: r.n("bytes_replicated").unwrap_or(0),
            updated_ms: r.n("updated_ms").unwrap_or(0),
            last_error: r.s("last_error"),
            plan_refusal: r.s("plan_refusal"),
            adopted_target_id: r.s("adopted_target_id"),
            records_per_s: r.n("records_per_s").unwrap_or(0),
            bytes_per_s: r.n("bytes_per_s").unwrap_or(0),
            open_run: match (r.n("open_run_source_start"), r.n("open_run_target_start"), r.n("open_run_length")) {
                (Some(source_start), Some(target_start), Some(length)) => Some(OffsetRun {
                    source_start,
                    target_start,
                    length,
                }),
                _ => None,
            },
            source_topic_id: r.s("source_topic_id"),
            target_topic_id: r.s("target_topic_id"),
            handed_over_ms: r.n("handed_over_ms"),
            handed_at: r.n("handed_at"),
            handed_by: r.s("handed_by"),
            handed_from: r.ss("handed_from"),
            leader_epoch: r.n("leader_epoch").and_then(|v| i32::try_from(v).ok()),
            leader_epochs: match r.s("leader_epoch_starts").as_deref().and_then(parse_leader_epochs) {
                Some(epochs) if !epochs.is_empty() => epochs,
                _ => r
                    .n("leader_epoch")
                    .and_then(|v| i32::try_from(v).ok())
                    .map(|e| vec![(-1, e)])
                    .unwrap_or_default(),
            },
            target_leader_epoch: r.n("target_leader_epoch").and_then(|v| i32::try_from(v).ok()),
            target_rewound_ms: r.n("target_rewound_ms"),
            target_rewound_from: r.n("target_rewound_from"),
            target_rewinds: r.n("target_rewinds").unwrap_or(0),
            map_trim_from: r.n("map_trim_from"),
            backfill_from: r.n(BACKFILL_FROM),
        })
    }
}

impl StateStore {
    /// Create a partition's cursor at `start` unless it exists. Returns
    /// whether the cursor now stands at `start` as created, never leased:
    /// made by this call, or by an earlier copy of it (DynamoDB keeps no
    /// token for a single write; when its answer is lost, the SDK's copy
    /// is refused by the cursor the first one made), or the same by a
    /// plan beside this one. False: a cursor that is elsewhere, or was
    /// leased (a holder may have copied from it).
    pub async fn init_cursor(&self, flow: &str, tp: &TopicPartition, target_topic: &str, start: i64) -> Result<bool, StateError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.cursors)
            .item(PK, s(self.partition_pk(flow, tp).await?))
            .item(SK_CURSOR, s(partition_sk(tp)))
            .item("topic", s(&tp.topic))
            .item("partition_index", n(i64::from(tp.partition)))
            .item("target_topic", s(target_topic))
            .item("next_source_offset", n(start))
            .item("start_offset", n(start))
            .item("lease_epoch", n(0))
            .item("updated_ms", n(now_ms()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .bounded(&self.calls)
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let existing = match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(refused) => refused.item,
                    _ => None,
                };
                let Some(item) = existing else { return Ok(false) };
                let c = CursorItem::try_from((self.cursors.as_str(), &item))?;
                Ok(c.next_source_offset == start
                    && c.start_offset == Some(start)
                    && c.lease_epoch == 0
                    && c.records_replicated == 0
                    && c.target_topic == target_topic)
            }
            Err(e) => Err(dynamo_err("PutItem", &self.cursors, e)),
        }
    }

    /// Record the ids of the topics a cursor counts in, where it has none
    /// yet (a cursor made before its target topic existed, or by a Ferry
    /// before topic ids were recorded), and the id of a target topic it
    /// adopted (see [`CursorItem::adopted_target_id`]). Never replaces a
    /// recorded id.
    pub async fn record_topic_ids(
        &self,
        flow: &str,
        tp: &TopicPartition,
        source_topic_id: Option<&str>,
        target_topic_id: Option<&str>,
        adopted_target_id: Option<&str>,
    ) -> Result<(), StateError> {
        let mut sets = Vec::new();
        let mut req = self
            .update_cursor(flow, tp)
            .await?
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK);
        for (attr, value) in [
            ("source_topic_id", source_topic_id),
            ("target_topic_id", target_topic_id),
            ("adopted_target_id", adopted_target_id),
        ] {
            if let Some(v) = value {
                sets.push(format!("{attr} = if_not_exists({attr}, :{attr})"));
                req = req.expression_attribute_values(format!(":{attr}"), s(v));
            }
        }
        if sets.is_empty() {
            return Ok(());
        }

        // Forgotten meanwhile: nothing to record.
        conditional(
            "UpdateItem",
            &self.cursors,
            req.update_expression(format!("SET {}", sets.join(", ")))
                .send()
                .bounded(&self.calls)
                .await,
        )?;
        Ok(())
    }

    /// Move the cursor of a partition Ferry has written nothing for (a
    /// backfill) to `start`. Refused (false) when it replicated a record,
    /// holds an offset-map run (records a holder found already on the
    /// target and reconciled: `records_replicated` does not count them),
    /// its lease is live, or its last holder did not give it back with
    /// every write checkpointed (it crashed, or a checkpoint failed after
    /// the partition stopped): records that holder wrote may be on the
    /// target past the cursor, and only its successor's reconcile finds
    /// them. Also refused once the target log lost records Ferry wrote
    /// (`target_rewound_from`): copies written after the loss may be past
    /// the cursor. Moving the cursor back then would put older records
    /// after them. The plan checked all these before; a holder may have
    /// written since, so the write checks them again.
    ///
    /// It also fences the lease (a new epoch, no owner): a holder whose
    /// lease expired while it kept running must find its lease gone, not
    /// its cursor moved under it, or a write of its own refused by the
    /// cursor could read as one an earlier copy applied (see
    /// `StateStore::checkpoint`'s outcome).
    pub async fn restart_cursor(&self, flow: &str, tp: &TopicPartition, start: i64) -> Result<bool, StateError> {
        self.move_unwritten_cursor(flow, tp, start, true).await
    }

    /// [`Self::restart_cursor`], forward too unless `only_back`: a flow
    /// handed a target topic by the flow that wrote it (see `writers`)
    /// goes on where that flow stopped.
    pub(super) async fn move_unwritten_cursor(
        &self,
        flow: &str,
        tp: &TopicPartition,
        start: i64,
        only_back: bool,
    ) -> Result<bool, StateError> {
        let back = if only_back { " AND next_source_offset >= :start" } else { "" };
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression(
                "SET next_source_offset = :start, start_offset = :start, updated_ms = :now, \
                 lease_epoch = if_not_exists(lease_epoch, :zero) + :one REMOVE lease_owner, backfill_from, backfill_requested_ms",
            )
            .condition_expression(format!(
                "attribute_exists(#pk){back} \
                 AND (attribute_not_exists(records_replicated) OR records_replicated = :zero) \
                 AND attribute_not_exists(open_run_source_start) \
                 AND (attribute_not_exists(lease_owner) OR lease_expires_ms < :now) \
                 AND (attribute_not_exists(producer_id) OR producer_id < :zero OR writes_settled = :settled) \
                 AND attribute_not_exists(target_rewound_from) \
                 AND (attribute_not_exists(handed_at) OR handed_at <= :start)"
            ))
            .expression_attribute_values(":settled", AttributeValue::Bool(true))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":start", n(start))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res)
    }

    /// All cursors of a flow.
    pub async fn list_cursors(&self, flow: &str) -> Result<Vec<CursorItem>, StateError> {
        let items = self.partition_items(&self.cursors, flow, SK_CURSOR).await?;
        items
            .iter()
            .filter(|item| item.get(SK_CURSOR).and_then(|v| v.as_s().ok()).is_none_or(|v| v != FLOW_MARKER))
            .map(|item| CursorItem::try_from((self.cursors.as_str(), item)))
            .collect()
    }

    /// Take the partition's lease for `duration`, unless someone else holds
    /// an unexpired one. The epoch increases, fencing the previous holder.
    pub async fn acquire_lease(
        &self,
        flow: &str,
        tp: &TopicPartition,
        owner: &str,
        duration: Duration,
    ) -> Result<(Lease, CursorItem), StateError> {
        self.acquire_lease_until(flow, tp, owner, duration, 0).await
    }

    /// [`acquire_lease`](Self::acquire_lease), recording when this holder
    /// plans to give the lease back (`ends_ms`, ms since the epoch; 0 for
    /// unknown), so that a successor may wait for it rather than leave the
    /// partition for a later one.
    pub async fn acquire_lease_until(
        &self,
        flow: &str,
        tp: &TopicPartition,
        owner: &str,
        duration: Duration,
        ends_ms: i64,
    ) -> Result<(Lease, CursorItem), StateError> {
        let now = now_ms();
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression(
                "SET lease_owner = :me, lease_expires_ms = :exp, lease_ends_ms = :ends, lease_epoch = lease_epoch + :one, updated_ms = :now",
            )
            .condition_expression(
                "attribute_exists(#pk) AND attribute_not_exists(handed_over_ms) \
                 AND (attribute_not_exists(lease_owner) OR lease_expires_ms < :now OR lease_owner = :me)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":ends", n(ends_ms))
            .expression_attribute_values(":exp", n(now + duration.as_millis() as i64))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            // Refused, the item as it is comes back with the refusal: who
            // holds the lease, without a second read.
            .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld)
            .send().bounded(&self.calls)
            .await;
        match res {
            Ok(out) => {
                let item = CursorItem::try_from((self.cursors.as_str(), out.attributes().unwrap_or(&HashMap::new())))?;
                Ok((
                    Lease {
                        tp: tp.clone(),
                        owner: owner.to_owned(),
                        epoch: item.lease_epoch,
                    },
                    item,
                ))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let held = match e.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(refused) => refused.item,
                    _ => None,
                };
                // No item with the refusal: there is no cursor (or a store
                // that does not return it; then read it).
                let current = match held {
                    Some(item) => Some(CursorItem::try_from((self.cursors.as_str(), &item))?),
                    None => self.get_cursor(flow, tp).await?,
                };
                match current {
                    None => Err(StateError::NoCursor {
                        tp: tp.clone(),
                        table: self.cursors.clone(),
                    }),
                    Some(c) => Err(StateError::LeaseHeld {
                        tp: tp.clone(),
                        owner: match c.handed_over_ms {
                            Some(_) => "none: the flow handed its target topic over to another flow".to_owned(),
                            None => c.lease_owner.unwrap_or_default(),
                        },
                        expires_ms: c.lease_expires_ms,
                        ends_ms: c.lease_ends_ms,
                        epoch: c.lease_epoch,
                    }),
                }
            }
            Err(e) => Err(dynamo_err("UpdateItem", &self.cursors, e)),
        }
    }

    /// One cursor.
    pub async fn get_cursor(&self, flow: &str, tp: &TopicPartition) -> Result<Option<CursorItem>, StateError> {
        let item = self
            .get_consistent(
                &self.cursors,
                (PK, s(self.partition_pk(flow, tp).await?)),
                (SK_CURSOR, s(partition_sk(tp))),
            )
            .await?;
        item.as_ref().map(|i| CursorItem::try_from((self.cursors.as_str(), i))).transpose()
    }

    /// The cursors of `tps`, by partition (one without a cursor is not
    /// there), read at once: a BatchGetItem per 100 partitions. A partition
    /// named twice is asked for once (DynamoDB refuses a BatchGetItem that
    /// names a key twice).
    pub async fn get_cursors(&self, flow: &str, tps: &[&TopicPartition]) -> Result<HashMap<TopicPartition, CursorItem>, StateError> {
        let shards = self.key_shards(flow).await?;
        let unique: std::collections::BTreeSet<&TopicPartition> = tps.iter().copied().collect();
        let keys = unique
            .into_iter()
            .map(|tp| {
                HashMap::from([
                    (PK.to_owned(), s(spread_pk(flow, shards, tp))),
                    (SK_CURSOR.to_owned(), s(partition_sk(tp))),
                ])
            })
            .collect();
        self.get_consistent_many(&self.cursors, keys)
            .await?
            .iter()
            .map(|item| CursorItem::try_from((self.cursors.as_str(), item)).map(|c| (c.tp.clone(), c)))
            .collect()
    }

    /// Record, under the lease, the producer id this holder writes with
    /// (the provenance a later holder reconciles against) and its
    /// transactional id (which a later holder fences); from now until a
    /// release that says otherwise, its writes are not settled.
    /// `target_end` is recorded as the reconcile start if none is stored yet.
    pub async fn set_producer(&self, flow: &str, lease: &Lease, producer: &ProducerRecord<'_>, target_end: i64) -> Result<(), StateError> {
        let res = self
            .update_cursor(flow, &lease.tp)
            .await?
            .update_expression(
                "SET producer_id = :pid, producer_epoch = :pe, transactional_id = :tid, updated_ms = :now, \
                 next_target_offset = if_not_exists(next_target_offset, :tend), producer_next_sequence = :seq \
                 REMOVE writes_settled",
            )
            .expression_attribute_values(":tend", n(target_end))
            // A new producer: its first record on any partition is sequence 0,
            // and it has written nothing before the stored target end.
            .expression_attribute_values(":seq", n(0))
            .condition_expression("lease_owner = :me AND lease_epoch = :epoch")
            .expression_attribute_values(":pid", n(producer.producer_id))
            .expression_attribute_values(":pe", n(i64::from(producer.producer_epoch)))
            .expression_attribute_values(":tid", s(producer.transactional_id))
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":me", s(&lease.owner))
            .expression_attribute_values(":epoch", n(lease.epoch))
            .send()
            .bounded(&self.calls)
            .await;
        self.fenced(res.map(|_| ()), lease, "UpdateItem")
    }

    fn fenced<E>(&self, res: Result<(), SdkError<E>>, lease: &Lease, op: &'static str) -> Result<(), StateError>
    where
        E: std::fmt::Debug + aws_sdk_dynamodb::error::ProvideErrorMetadata,
    {
        match res {
            Ok(()) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("ConditionalCheckFailedException") => Err(StateError::LeaseLost {
                tp: lease.tp.clone(),
                epoch: lease.epoch,
            }),
            Err(e) => Err(dynamo_err(op, &self.cursors, e)),
        }
    }

    /// Give the lease back (only if still ours). `settled`: this holder
    /// recorded its producer and has no write whose outcome it does not
    /// know, so the next holder need not fence it.
    pub async fn release_lease(&self, flow: &str, lease: &Lease, rate: Rate, settled: bool) -> Result<(), StateError> {
        let set_settled = if settled { ", writes_settled = :settled" } else { "" };
        let req = self.update_cursor(flow, &lease.tp).await?.update_expression(format!(
            "REMOVE lease_owner SET lease_expires_ms = :zero, records_per_s = :rps, bytes_per_s = :bps{set_settled}"
        ));
        let req = if settled {
            req.expression_attribute_values(":settled", AttributeValue::Bool(true))
        } else {
            req
        };
        let res = req
            .condition_expression("lease_owner = :me AND lease_epoch = :epoch")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":rps", n(rate.records_per_s))
            .expression_attribute_values(":bps", n(rate.bytes_per_s))
            .expression_attribute_values(":me", s(&lease.owner))
            .expression_attribute_values(":epoch", n(lease.epoch))
            .send()
            .bounded(&self.calls)
            .await;
        self.fenced(res.map(|_| ()), lease, "UpdateItem")
    }

    /// Claim the hand-off of a partition whose lease another holds: `owner`
    /// means to wait for it and take it over, until `until_ms`. One
    /// successor per hand-off (false: another claimed it and still waits),
    /// so that two executions do not both wait for the same holder and
    /// split its partitions between them.
    pub async fn claim_handoff(&self, flow: &str, tp: &TopicPartition, owner: &str, until_ms: i64) -> Result<bool, StateError> {
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression("SET handoff_to = :me, handoff_until_ms = :until")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(handoff_to) OR handoff_until_ms < :now OR handoff_to = :me)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res)
    }

    /// Record why the plan refused to copy a partition's topic, or (`None`)
    /// that it no longer does (shown by `ferry status` as its error). A
    /// cursor forgotten meanwhile is left forgotten.
    pub async fn set_plan_refusal(&self, flow: &str, tp: &TopicPartition, refusal: Option<&str>) -> Result<(), StateError> {
        let req = self
            .update_cursor(flow, tp)
            .await?
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":now", n(now_ms()));
        let req = match refusal {
            Some(why) => req
                .update_expression("SET plan_refusal = :r, updated_ms = :now")
                .expression_attribute_values(":r", s(why)),
            None => req.update_expression("REMOVE plan_refusal SET updated_ms = :now"),
        };
        conditional("UpdateItem", &self.cursors, req.send().bounded(&self.calls).await)?;
        Ok(())
    }

    /// Record why a partition stopped (shown by `ferry status`).
    pub async fn record_error(&self, flow: &str, tp: &TopicPartition, error: &str) -> Result<(), StateError> {
        self.client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(self.partition_pk(flow, tp).await?))
            .key(SK_CURSOR, s(partition_sk(tp)))
            .update_expression("SET last_error = :e, updated_ms = :now")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":e", s(error))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("UpdateItem", &self.cursors, e))?;
        Ok(())
    }
}
