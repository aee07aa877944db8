//! What a state-store call can fail with, and how DynamoDB's answers map
//! onto it (retryable or not).

use aws_sdk_dynamodb::error::SdkError;
use ferry_core::domain::TopicPartition;

/// A state-store failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Another worker holds the partition's lease.
    #[error("{tp}: lease held by {owner} until {expires_ms} (epoch {epoch})")]
    LeaseHeld {
        /// Partition.
        tp: TopicPartition,
        /// Holder.
        owner: String,
        /// Expiry, ms since the epoch.
        expires_ms: i64,
        /// When the holder plans to give it back, ms since the epoch (0:
        /// it did not say).
        ends_ms: i64,
        /// Holder's epoch.
        epoch: i64,
    },
    /// This worker's lease was taken over (fenced); it must stop writing.
    #[error("{tp}: lease epoch {epoch} was taken over; this worker stops writing")]
    LeaseLost {
        /// Partition.
        tp: TopicPartition,
        /// The epoch this worker held.
        epoch: i64,
    },
    /// The cursor was not where this lease's holder left it, though the
    /// lease is still its own: something other than Ferry moved it (a tool
    /// or a person writing the cursors table, or a store that lost a
    /// write; Ferry's one other writer of a cursor's position, a
    /// backfill's restart, fences the lease as it moves it). The holder
    /// stops writing, as when its lease is lost; the next one starts from
    /// the cursor as stored, and reconciles the target against it.
    #[error(
        "{tp}: the cursor is at source offset {found}, not at {expected} where lease epoch {epoch} left it: something \
         else moved it under the lease; this worker stops writing, and the next one starts from the stored cursor"
    )]
    CursorMoved {
        /// Partition.
        tp: TopicPartition,
        /// The epoch this worker holds.
        epoch: i64,
        /// Where this holder left the cursor.
        expected: i64,
        /// Where it stands.
        found: i64,
    },
    /// The partition has no cursor (plan has not run for it).
    #[error("{tp}: no cursor in table {table}; run the plan step first")]
    NoCursor {
        /// Partition.
        tp: TopicPartition,
        /// Table.
        table: String,
    },
    /// DynamoDB failed or is unreachable.
    #[error("DynamoDB {op} on {table} failed: {detail}")]
    Dynamo {
        /// Operation.
        op: &'static str,
        /// Table.
        table: String,
        /// Detail (never contains credentials).
        detail: String,
    },
    /// DynamoDB refused the request in a way a retry will not fix.
    #[error("DynamoDB {op} on {table} was refused: {detail}")]
    DynamoRejected {
        /// Operation.
        op: &'static str,
        /// Table.
        table: String,
        /// Detail (never contains credentials).
        detail: String,
    },
    /// A stored item does not have the expected shape.
    #[error("item in {table} is malformed: {detail}")]
    Malformed {
        /// Table.
        table: String,
        /// Detail.
        detail: String,
    },
}

impl StateError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StateError::Dynamo { .. })
    }
}

/// A state table that does not exist and that this role may not create
/// (deployed, the template's stack creates the tables): which one, and
/// what to do.
pub(super) fn missing_table(table: &str, prefix: &str, denied: &str) -> StateError {
    StateError::DynamoRejected {
        op: "CreateTable",
        table: table.to_owned(),
        detail: format!(
            "table {table} does not exist, and this function may not create it ({denied}). Deployed, a stack's state \
             tables are created by its own stack, or, with StateTablesFrom, by the stack it names: FERRY_TABLE_PREFIX is \
             {prefix}. Fix: deploy (or redeploy) the stack named {prefix}, with StateTablesFrom empty, so that it creates \
             them, and then run this one; or redeploy this stack with StateTablesFrom naming the deployed stack whose \
             tables it shares"
        ),
    }
}

/// Whether a conditional write was made: false when its condition did not
/// hold (ConditionalCheckFailed), an error for any other failure.
pub(super) fn conditional<O, E>(op: &'static str, table: &str, res: Result<O, SdkError<E>>) -> Result<bool, StateError>
where
    E: std::fmt::Debug + aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    match res {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e)) if e.err().code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(dynamo_err(op, table, e)),
    }
}

pub(super) fn dynamo_err<E>(op: &'static str, table: &str, e: SdkError<E>) -> StateError
where
    E: std::fmt::Debug + aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("Unknown");
            let detail = format!("{code}: {}", s.err().message().unwrap_or("no message"));
            // Throttling and server-side faults pass; anything else (a
            // validation error, a missing table, access denied) will not.
            let passing = matches!(
                code,
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionConflictException"
                    | "TransactionInProgressException"
            );
            if passing {
                StateError::Dynamo {
                    op,
                    table: table.to_owned(),
                    detail,
                }
            } else {
                StateError::DynamoRejected {
                    op,
                    table: table.to_owned(),
                    detail,
                }
            }
        }
        other => StateError::Dynamo {
            op,
            table: table.to_owned(),
            detail: match crate::aws::unreachable_hint(other, "dynamodb") {
                Some(hint) => format!("{other}; {hint}"),
                None => format!("{other}"),
            },
        },
    }
}
