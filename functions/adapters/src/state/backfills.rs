//! A backfill asked of a partition a worker holds: the plan records where
//! it starts (`backfill_from` on the cursor), and the partition's next
//! holder, once it has the lease and nothing may be on the target past the
//! cursor, moves the cursor there itself. A scheduled deployment keeps
//! every partition leased nearly all the time, so a plan that could only
//! move unleased cursors could backfill almost nothing while it runs.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::ReturnValue;
use ferry_core::domain::TopicPartition;

use super::calls::Bounded;
use super::cursor::{CursorItem, Lease};
use super::error::{conditional, dynamo_err};
use super::schema::{n, now_ms, s, BACKFILL_FROM, PK};
use super::{StateError, StateStore};

/// Nothing of the partition's is on the target that a cursor moved back
/// would put older records after: no record replicated, no offset-map run
/// (records a holder found already on the target), and no copies left past
/// a loss on the target. (Copies a reconcile found of source records
/// retention had already removed leave neither a count nor a run; they
/// are of offsets below the log start, which no backfill reaches.) Nor
/// below where the flow took the partition over from another (the
/// records there are that flow's copies): each use says so (`handed_at`).
const NOTHING_REPLICATED: &str = "(attribute_not_exists(records_replicated) OR records_replicated = :zero) \
     AND attribute_not_exists(open_run_source_start) AND attribute_not_exists(target_rewound_from)";

impl StateStore {
    /// Record that a backfill starts the partition at source offset
    /// `from`. Refused (false) when it has replicated anything (see
    /// [`Self::restart_cursor`]); a lease held, or a last holder whose
    /// writes are not settled, only delays it: the holder that has the
    /// partition next applies it ([`Self::apply_requested_backfill`]).
    pub async fn request_backfill(&self, flow: &str, tp: &TopicPartition, from: i64) -> Result<bool, StateError> {
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression("SET #from = :from, backfill_requested_ms = :now")
            .condition_expression(format!(
                "attribute_exists(#pk) AND next_source_offset >= :from AND {NOTHING_REPLICATED} \
                 AND (attribute_not_exists(handed_at) OR handed_at <= :from)"
            ))
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#from", BACKFILL_FROM)
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res)
    }

    /// Withdraw a backfill request (a plan that could not record all of a
    /// backfill's: nothing of it is to happen).
    pub async fn withdraw_backfill(&self, flow: &str, tp: &TopicPartition) -> Result<(), StateError> {
        let res = self
            .update_cursor(flow, tp)
            .await?
            .update_expression("REMOVE #from, backfill_requested_ms")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#from", BACKFILL_FROM)
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res).map(|_| ())
    }

    /// As the partition's holder, move its cursor to `start` for the
    /// backfill requested at `from` (`start` is `from`, or the source's log
    /// start now if retention passed it since), if nothing of it can be on
    /// the target: as [`Self::restart_cursor`] requires, with the lease
    /// ours instead of free, and never forward. Returns the cursor as it
    /// is now, or `None` when refused (it replicated meanwhile, or the last
    /// holder's writes are not settled).
    pub async fn apply_requested_backfill(
        &self,
        flow: &str,
        lease: &Lease,
        from: i64,
        start: i64,
    ) -> Result<Option<CursorItem>, StateError> {
        let res = self
            .update_cursor(flow, &lease.tp)
            .await?
            .update_expression(
                "SET next_source_offset = :start, start_offset = :start, updated_ms = :now REMOVE #from, backfill_requested_ms",
            )
            .condition_expression(format!(
                "lease_owner = :owner AND lease_epoch = :epoch AND #from = :from AND next_source_offset >= :start AND {NOTHING_REPLICATED} \
                 AND (attribute_not_exists(producer_id) OR producer_id < :zero OR writes_settled = :settled) \
                 AND (attribute_not_exists(handed_at) OR handed_at <= :start)"
            ))
            .expression_attribute_names("#from", BACKFILL_FROM)
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":start", n(start))
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":epoch", n(lease.epoch))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":settled", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now_ms()))
            .return_values(ReturnValue::AllNew)
            .send()
            .bounded(&self.calls)
            .await;
        match res {
            Ok(out) => {
                let item = out.attributes().cloned().unwrap_or_default();
                Ok(Some(CursorItem::try_from((self.cursors.as_str(), &item))?))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(None),
            Err(e) => Err(dynamo_err("UpdateItem", &self.cursors, e)),
        }
    }

    /// As the partition's holder, drop a requested backfill that can no
    /// longer happen (the partition replicated records since).
    pub async fn drop_requested_backfill(&self, flow: &str, lease: &Lease) -> Result<(), StateError> {
        let res = self
            .update_cursor(flow, &lease.tp)
            .await?
            .update_expression("REMOVE #from, backfill_requested_ms")
            .condition_expression("lease_owner = :owner AND lease_epoch = :epoch")
            .expression_attribute_names("#from", BACKFILL_FROM)
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":epoch", n(lease.epoch))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res).map(|_| ())
    }
}
