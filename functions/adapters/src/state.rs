//! The DynamoDB state store: cursors and leases per (flow, topic,
//! partition), and offset-mapping runs. Every write that moves a cursor or
//! a lease is conditional on the lease epoch, so a worker whose lease was
//! taken over can never move state again.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType, LocalSecondaryIndex, Projection,
    ProjectionType, Put, ScalarAttributeType, TableStatus, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use ferry_core::domain::TopicPartition;
use ferry_core::offset_map::OffsetRun;

/// DynamoDB's limit on the items of one transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

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
fn missing_table(table: &str, prefix: &str, denied: &str) -> StateError {
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

fn dynamo_err<E>(op: &'static str, table: &str, e: SdkError<E>) -> StateError
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

/// A partition's cursor, lease and statistics, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorItem {
    /// The source partition.
    pub tp: TopicPartition,
    /// Target topic.
    pub target_topic: String,
    /// Next source offset to replicate.
    pub next_source_offset: i64,
    /// Target end offset after this replicator's last write, if any.
    pub next_target_offset: Option<i64>,
    /// Lease holder, if any.
    pub lease_owner: Option<String>,
    /// Fencing epoch; increases on every acquisition.
    pub lease_epoch: i64,
    /// Lease expiry (ms since the epoch).
    pub lease_expires_ms: i64,
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
    /// The source leader epoch of the batch holding the last offset before
    /// the cursor (KIP-320): the next holder asks the source's leader where
    /// that epoch ends, and a log truncated below the cursor (an unclean
    /// leader election) shows as an end before it. `None` in items written
    /// before Ferry stored it, or after a move whose epoch is not known.
    pub leader_epoch: Option<i32>,
    /// The source leader epochs of what was read below the cursor, as
    /// (first offset read in it, epoch), oldest first, bounded (see
    /// [`Checkpoint::leader_epochs`]): where a replaced history parts from
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
    /// items written before Ferry stored it, or when it could not be read.
    pub target_leader_epoch: Option<i32>,
    /// When the offset map was last cut back for a truncated target log
    /// (ms since the epoch): a group translation made before it may point
    /// at a copy the target lost.
    pub target_rewound_ms: Option<i64>,
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

/// What [`StateStore::start_flow`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStart {
    /// No plan had started the flow before.
    pub first: bool,
    /// The source's cluster id recorded before, if any.
    pub source_cluster_id: Option<String>,
    /// The target's cluster id recorded before, if any.
    pub target_cluster_id: Option<String>,
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
    /// batch holding `to_source - 1` (see [`CursorItem::leader_epoch`]).
    /// Empty removes the stored ones: an epoch that no longer belongs to
    /// the offset before the cursor would make a sound log look truncated.
    pub leader_epochs: Vec<(i64, i32)>,
    /// The target's leader epoch to store with `target_end` (see
    /// [`CursorItem::target_leader_epoch`]): `None` leaves the stored one
    /// (a checkpoint without records), `Some(None)` removes it (not known:
    /// an older epoch would make a sound log look truncated).
    pub target_leader_epoch: Option<Option<i32>>,
}

/// The stored form of [`Checkpoint::leader_epochs`]: `offset:epoch`
/// pairs, comma-separated.
pub fn format_leader_epochs(epochs: &[(i64, i32)]) -> String {
    epochs.iter().map(|(o, e)| format!("{o}:{e}")).collect::<Vec<_>>().join(",")
}

/// Read back what [`format_leader_epochs`] wrote; `None` if it is not that.
pub fn parse_leader_epochs(s: &str) -> Option<Vec<(i64, i32)>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (o, e) = p.split_once(':')?;
            Some((o.parse().ok()?, e.parse().ok()?))
        })
        .collect()
}

/// The store.
#[derive(Debug, Clone)]
pub struct StateStore {
    client: Client,
    cursors: String,
    offset_map: String,
    producers: String,
    groups: String,
}

const PK: &str = "flow";
const SK_CURSOR: &str = "partition";
const PK_MAP: &str = "flow_partition";
const SK_MAP: &str = "source_start";
/// Offset-map index by target offset: where the opposite flow's records
/// sit in the cluster a flow reads (loop prevention, group translation).
const BY_TARGET: &str = "by_target";
const PK_PRODUCERS: &str = "cluster";
const SK_PRODUCERS: &str = "producer_id";
const SK_GROUPS: &str = "partition_group";
/// Sort key of the per-flow marker item (no '/', so never a partition).
const FLOW_MARKER: &str = "#flow";
/// Partition key prefix of the items that list, per ordered pair of Kafka
/// cluster ids, the flows (of any replicator on these tables) that copy
/// from the first to the second: how a flow finds its opposite when the
/// two directions are two replicators.
const PAIRS: &str = "#pairs/";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn partition_sk(tp: &TopicPartition) -> String {
    // '/' never appears in a Kafka topic name.
    format!("{}/{}", tp.topic, tp.partition)
}

/// A BatchWriteItem request deleting the item of `table` with this key.
fn delete_request(table: &str, pk: (&str, AttributeValue), sk: (&str, AttributeValue)) -> Result<WriteRequest, StateError> {
    let del = DeleteRequest::builder()
        .key(pk.0, pk.1)
        .key(sk.0, sk.1)
        .build()
        .map_err(|e| StateError::Dynamo {
            op: "BatchWriteItem",
            table: table.to_owned(),
            detail: e.to_string(),
        })?;
    Ok(WriteRequest::builder().delete_request(del).build())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads the attributes of one stored item; a missing required attribute
/// is a `Malformed` error naming the table and the attribute.
pub(crate) struct ItemReader<'a> {
    table: &'a str,
    item: &'a HashMap<String, AttributeValue>,
}

impl<'a> ItemReader<'a> {
    pub(crate) fn new(table: &'a str, item: &'a HashMap<String, AttributeValue>) -> Self {
        Self { table, item }
    }

    /// A string attribute, if present.
    pub(crate) fn s(&self, k: &str) -> Option<String> {
        self.item.get(k).and_then(|v| v.as_s().ok()).cloned()
    }

    /// A number attribute, if present and an integer.
    pub(crate) fn n(&self, k: &str) -> Option<i64> {
        self.item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok())
    }

    /// A boolean attribute, if present.
    pub(crate) fn bool(&self, k: &str) -> Option<bool> {
        self.item.get(k).and_then(|v| v.as_bool().ok()).copied()
    }

    /// The error for a missing or malformed attribute.
    pub(crate) fn bad(&self, k: &str) -> StateError {
        StateError::Malformed {
            table: self.table.to_owned(),
            detail: format!("attribute {k}"),
        }
    }

    /// A required string attribute.
    pub(crate) fn req_s(&self, k: &str) -> Result<String, StateError> {
        self.s(k).ok_or_else(|| self.bad(k))
    }

    /// A required number attribute.
    pub(crate) fn req_n(&self, k: &str) -> Result<i64, StateError> {
        self.n(k).ok_or_else(|| self.bad(k))
    }
}

impl TryFrom<(&str, &HashMap<String, AttributeValue>)> for CursorItem {
    type Error = StateError;
    fn try_from((table, item): (&str, &HashMap<String, AttributeValue>)) -> Result<Self, StateError> {
        let r = ItemReader::new(table, item);
        Ok(CursorItem {
            tp: TopicPartition::new(r.req_s("topic")?, r.req_n("partition_index")? as i32),
            target_topic: r.req_s("target_topic")?,
            next_source_offset: r.req_n("next_source_offset")?,
            next_target_offset: r.n("next_target_offset"),
            lease_owner: r.s("lease_owner"),
            lease_epoch: r.n("lease_epoch").unwrap_or(0),
            lease_expires_ms: r.n("lease_expires_ms").unwrap_or(0),
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
        })
    }
}

impl StateStore {
    /// A store over `<prefix>-cursors`, `<prefix>-offset-map`,
    /// `<prefix>-producers` and `<prefix>-groups`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            cursors: format!("{prefix}-cursors"),
            offset_map: format!("{prefix}-offset-map"),
            producers: format!("{prefix}-producers"),
            groups: format!("{prefix}-groups"),
        }
    }

    /// The cursor and offset-map table names, for messages.
    pub fn table_names(&self) -> (&str, &str) {
        (&self.cursors, &self.offset_map)
    }

    /// Every table name, for messages and clean-up.
    pub fn all_table_names(&self) -> [&str; 4] {
        [&self.cursors, &self.offset_map, &self.producers, &self.groups]
    }

    /// The tables that do not exist (yet): nothing has run under this name
    /// and table prefix, or `ensure_tables` is still creating them.
    pub async fn missing_tables(&self) -> Result<Vec<String>, StateError> {
        let mut missing = Vec::new();
        for table in self.all_table_names() {
            if !self.table_exists(table).await? {
                missing.push(table.to_owned());
            }
        }
        Ok(missing)
    }

    async fn table_exists(&self, table: &str) -> Result<bool, StateError> {
        match self.client.describe_table().table_name(table).send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(false),
            Err(e) => Err(dynamo_err("DescribeTable", table, e)),
        }
    }

    /// Create the tables (on demand) if they are missing, and wait until
    /// they are active. The SAM template creates them in AWS.
    pub async fn ensure_tables(&self) -> Result<(), StateError> {
        // (table, partition key, sort key, its type, local index by target offset)
        type TableSpec<'a> = (&'a str, &'a str, &'a str, ScalarAttributeType, Option<(&'a str, &'a str)>);
        let specs: [TableSpec<'_>; 4] = [
            (&self.cursors, PK, SK_CURSOR, ScalarAttributeType::S, None),
            (
                &self.offset_map,
                PK_MAP,
                SK_MAP,
                ScalarAttributeType::N,
                Some((BY_TARGET, "target_start")),
            ),
            (&self.producers, PK_PRODUCERS, SK_PRODUCERS, ScalarAttributeType::N, None),
            (&self.groups, PK, SK_GROUPS, ScalarAttributeType::S, None),
        ];
        for (table, pk, sk, sk_type, lsi) in specs {
            if self.table_exists(table).await? {
                continue;
            }
            let built = |e: aws_sdk_dynamodb::error::BuildError| StateError::Dynamo {
                op: "CreateTable",
                table: table.to_string(),
                detail: e.to_string(),
            };
            let attr = |name: &str, t: ScalarAttributeType| {
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(t)
                    .build()
                    .map_err(built)
            };
            let key = |name: &str, t: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(t).build().map_err(built);
            let mut req = self
                .client
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attr(pk, ScalarAttributeType::S)?)
                .attribute_definitions(attr(sk, sk_type)?)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(sk, KeyType::Range)?);
            if let Some((index, attr_name)) = lsi {
                req = req
                    .attribute_definitions(attr(attr_name, ScalarAttributeType::N)?)
                    .local_secondary_indexes(
                        LocalSecondaryIndex::builder()
                            .index_name(index)
                            .key_schema(key(pk, KeyType::Hash)?)
                            .key_schema(key(attr_name, KeyType::Range)?)
                            .projection(Projection::builder().projection_type(ProjectionType::All).build())
                            .build()
                            .map_err(built)?,
                    );
            }
            match req.send().await {
                Ok(_) => {}
                Err(SdkError::ServiceError(e)) if e.err().is_resource_in_use_exception() => {}
                // Deployed, no role may create a table: the stack does.
                Err(SdkError::ServiceError(e))
                    if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(e.err()) == Some("AccessDeniedException") =>
                {
                    let prefix = self.cursors.strip_suffix("-cursors").unwrap_or(&self.cursors);
                    let denied = aws_sdk_dynamodb::error::ProvideErrorMetadata::message(e.err()).unwrap_or("no message");
                    return Err(missing_table(table, prefix, denied));
                }
                Err(e) => return Err(dynamo_err("CreateTable", table, e)),
            }
            for _ in 0..100 {
                let d = self
                    .client
                    .describe_table()
                    .table_name(table)
                    .send()
                    .await
                    .map_err(|e| dynamo_err("DescribeTable", table, e))?;
                if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Create a partition's cursor at `start` unless it exists. Returns
    /// whether it was created.
    pub async fn init_cursor(&self, flow: &str, tp: &TopicPartition, target_topic: &str, start: i64) -> Result<bool, StateError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.cursors)
            .item(PK, s(flow))
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
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(false),
            Err(e) => Err(dynamo_err("PutItem", &self.cursors, e)),
        }
    }

    /// Record the ids of the topics a cursor counts in, where it has none
    /// yet (a cursor made before its target topic existed, or by a Ferry
    /// before topic ids were recorded). Never replaces a recorded id.
    pub async fn record_topic_ids(
        &self,
        flow: &str,
        tp: &TopicPartition,
        source_topic_id: Option<&str>,
        target_topic_id: Option<&str>,
    ) -> Result<(), StateError> {
        let mut sets = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(tp)))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK);
        for (attr, value) in [("source_topic_id", source_topic_id), ("target_topic_id", target_topic_id)] {
            if let Some(v) = value {
                sets.push(format!("{attr} = if_not_exists({attr}, :{attr})"));
                req = req.expression_attribute_values(format!(":{attr}"), s(v));
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        match req.update_expression(format!("SET {}", sets.join(", "))).send().await {
            Ok(_) => Ok(()),
            // Forgotten meanwhile: nothing to record.
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
            Err(e) => Err(dynamo_err("UpdateItem", &self.cursors, e)),
        }
    }

    /// Move the cursor of a partition Ferry has written nothing for (a
    /// backfill) to `start`. Refused (false) when it replicated a record or
    /// its lease is live: moving it back then would reorder the target.
    pub async fn restart_cursor(&self, flow: &str, tp: &TopicPartition, start: i64) -> Result<bool, StateError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(tp)))
            .update_expression("SET next_source_offset = :start, start_offset = :start, updated_ms = :now")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(records_replicated) OR records_replicated = :zero) \
                 AND (attribute_not_exists(lease_owner) OR lease_expires_ms < :now)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":start", n(start))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(false),
            Err(e) => Err(dynamo_err("UpdateItem", &self.cursors, e)),
        }
    }

    /// Forget a partition: its cursor and every offset-map run (its source
    /// topic was deleted and the deletion propagated).
    pub async fn forget_partition(&self, flow: &str, tp: &TopicPartition) -> Result<(), StateError> {
        let runs = self.runs(flow, tp).await?;
        self.batch_write(&self.offset_map, self.run_deletes(&map_pk(flow, tp), &runs)?)
            .await?;
        self.client
            .delete_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(tp)))
            .send()
            .await
            .map_err(|e| dynamo_err("DeleteItem", &self.cursors, e))?;
        Ok(())
    }

    /// Delete everything stored for a flow: each partition's cursor and
    /// offset-map runs, the flow's marker, its group-sync items. The next
    /// plan starts the flow as new. Returns how many partitions it had.
    pub async fn forget_flow(&self, flow: &str) -> Result<usize, StateError> {
        let cursors = self.list_cursors(flow).await?;
        for c in &cursors {
            self.forget_partition(flow, &c.tp).await?;
        }
        let marker = self.flow_marker(flow).await?;
        if let (Some(src), Some(tgt)) = (marker.source_cluster_id, marker.target_cluster_id) {
            self.client
                .delete_item()
                .table_name(&self.cursors)
                .key(PK, s(pair_pk(&src, &tgt)))
                .key(SK_CURSOR, s(flow))
                .send()
                .await
                .map_err(|e| dynamo_err("DeleteItem", &self.cursors, e))?;
        }
        self.client
            .delete_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(FLOW_MARKER))
            .send()
            .await
            .map_err(|e| dynamo_err("DeleteItem", &self.cursors, e))?;
        let groups = self.query_all(&self.groups, PK, s(flow)).await?;
        let deletes = groups
            .iter()
            .filter_map(|i| i.get(SK_GROUPS).cloned())
            .map(|sk| delete_request(&self.groups, (PK, s(flow)), (SK_GROUPS, sk)))
            .collect::<Result<Vec<_>, StateError>>()?;
        self.batch_write(&self.groups, deletes).await?;
        Ok(cursors.len())
    }

    /// Mark the flow as started, recording the cluster ids of its source
    /// and target the first time (and on a marker written before Ferry
    /// recorded them). Returns whether this was the first time (partitions
    /// seen by the first plan start at the configured StartingPosition,
    /// later ones at their first record) and the ids recorded before, which
    /// the caller compares with the clusters' own.
    pub async fn start_flow(&self, flow: &str, source_cluster_id: &str, target_cluster_id: &str) -> Result<FlowStart, StateError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(FLOW_MARKER))
            .update_expression(
                "SET started_ms = if_not_exists(started_ms, :now), source_cluster_id = if_not_exists(source_cluster_id, :src), \
                 target_cluster_id = if_not_exists(target_cluster_id, :tgt)",
            )
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":src", s(source_cluster_id))
            .expression_attribute_values(":tgt", s(target_cluster_id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| dynamo_err("UpdateItem", &self.cursors, e))?;
        Ok(self.flow_start(out.attributes()))
    }

    /// Record that `flow` copies from Kafka cluster `source_cluster_id` to
    /// `target_cluster_id`, and whether with IDENTICAL topic names (then
    /// the flow the other way reads its records). Every plan writes it.
    pub async fn register_flow_pair(
        &self,
        flow: &str,
        source_cluster_id: &str,
        target_cluster_id: &str,
        identical_names: bool,
    ) -> Result<(), StateError> {
        self.client
            .put_item()
            .table_name(&self.cursors)
            .item(PK, s(pair_pk(source_cluster_id, target_cluster_id)))
            .item(SK_CURSOR, s(flow))
            .item("identical_names", AttributeValue::Bool(identical_names))
            .item("registered_ms", n(now_ms()))
            .send()
            .await
            .map_err(|e| dynamo_err("PutItem", &self.cursors, e))?;
        Ok(())
    }

    /// The flows, of any replicator on these tables, registered as copying
    /// from `source_cluster_id` to `target_cluster_id` with IDENTICAL names
    /// by a plan since `since_ms` (a replicator whose plans stopped longer
    /// ago, say its stack deleted without `ferry forget-flow`, no longer
    /// counts).
    pub async fn identical_flows_between(
        &self,
        source_cluster_id: &str,
        target_cluster_id: &str,
        since_ms: i64,
    ) -> Result<Vec<String>, StateError> {
        let items = self
            .query_all(&self.cursors, PK, s(pair_pk(source_cluster_id, target_cluster_id)))
            .await?;
        Ok(items
            .iter()
            .filter(|i| i.get("identical_names").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false))
            .filter(|i| {
                i.get("registered_ms")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|ms| ms >= since_ms)
            })
            .filter_map(|i| i.get(SK_CURSOR).and_then(|v| v.as_s().ok()).cloned())
            .collect())
    }

    /// Whether the flow was started by a plan (read-only twin of `start_flow`).
    pub async fn flow_started(&self, flow: &str) -> Result<bool, StateError> {
        Ok(!self.flow_marker(flow).await?.first)
    }

    /// The flow's marker as [`StateStore::start_flow`] would find it,
    /// without writing.
    pub async fn flow_marker(&self, flow: &str) -> Result<FlowStart, StateError> {
        let marker = self
            .get_consistent(&self.cursors, (PK, s(flow)), (SK_CURSOR, s(FLOW_MARKER)))
            .await?;
        Ok(self.flow_start(marker.as_ref()))
    }

    fn flow_start(&self, marker: Option<&HashMap<String, AttributeValue>>) -> FlowStart {
        let r = marker.filter(|a| !a.is_empty()).map(|a| ItemReader::new(&self.cursors, a));
        FlowStart {
            first: r.is_none(),
            source_cluster_id: r.as_ref().and_then(|r| r.s("source_cluster_id")),
            target_cluster_id: r.as_ref().and_then(|r| r.s("target_cluster_id")),
        }
    }

    /// Whether the cursors table exists (a replicator that never ran has none).
    pub async fn has_tables(&self) -> Result<bool, StateError> {
        match self.client.describe_table().table_name(&self.cursors).send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(false),
            Err(e) => Err(dynamo_err("DescribeTable", &self.cursors, e)),
        }
    }

    /// All cursors of a flow.
    pub async fn list_cursors(&self, flow: &str) -> Result<Vec<CursorItem>, StateError> {
        let items = self.query_all(&self.cursors, PK, s(flow)).await?;
        items
            .iter()
            .filter(|item| item.get(SK_CURSOR).and_then(|v| v.as_s().ok()).is_none_or(|v| v != FLOW_MARKER))
            .map(|item| CursorItem::try_from((self.cursors.as_str(), item)))
            .collect()
    }

    /// Every item under one partition key, all pages, read consistently.
    pub(crate) async fn query_all(
        &self,
        table: &str,
        pk_name: &str,
        pk: AttributeValue,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StateError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let resp = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", pk_name)
                .expression_attribute_values(":pk", pk.clone())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| dynamo_err("Query", table, e))?;
            out.extend(resp.items().iter().cloned());
            start = resp.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// One item of `table` by its key, read consistently.
    pub(crate) async fn get_consistent(
        &self,
        table: &str,
        pk: (&str, AttributeValue),
        sk: (&str, AttributeValue),
    ) -> Result<Option<HashMap<String, AttributeValue>>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(pk.0, pk.1)
            .key(sk.0, sk.1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", table, e))?;
        Ok(out.item)
    }

    /// Apply `writes` to `table`, 25 per BatchWriteItem, retrying the items
    /// DynamoDB leaves unprocessed.
    pub(crate) async fn batch_write(&self, table: &str, writes: Vec<WriteRequest>) -> Result<(), StateError> {
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            let chunk: Vec<WriteRequest> = writes.by_ref().take(25).collect();
            let mut pending = Some(HashMap::from([(table.to_owned(), chunk)]));
            for attempt in 0..8u64 {
                let Some(req) = pending.take().filter(|m| m.values().any(|v| !v.is_empty())) else {
                    break;
                };
                let out = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(req))
                    .send()
                    .await
                    .map_err(|e| dynamo_err("BatchWriteItem", table, e))?;
                pending = out.unprocessed_items().cloned();
                if pending.as_ref().is_some_and(|m| m.values().any(|v| !v.is_empty())) {
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
            }
            if pending.is_some_and(|m| m.values().any(|v| !v.is_empty())) {
                return Err(StateError::Dynamo {
                    op: "BatchWriteItem",
                    table: table.to_owned(),
                    detail: "items still unprocessed after retries".into(),
                });
            }
        }
        Ok(())
    }

    /// Requests deleting the offset-map runs `runs` of a partition.
    fn run_deletes(&self, pk: &str, runs: &[OffsetRun]) -> Result<Vec<WriteRequest>, StateError> {
        runs.iter()
            .map(|r| delete_request(&self.offset_map, (PK_MAP, s(pk)), (SK_MAP, n(r.source_start))))
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
        let now = now_ms();
        let res = self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(tp)))
            .update_expression("SET lease_owner = :me, lease_expires_ms = :exp, lease_epoch = lease_epoch + :one, updated_ms = :now")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(lease_owner) OR lease_expires_ms < :now OR lease_owner = :me)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":exp", n(now + duration.as_millis() as i64))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
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
                let current = self.get_cursor(flow, tp).await?;
                match current {
                    None => Err(StateError::NoCursor {
                        tp: tp.clone(),
                        table: self.cursors.clone(),
                    }),
                    Some(c) => Err(StateError::LeaseHeld {
                        tp: tp.clone(),
                        owner: c.lease_owner.unwrap_or_default(),
                        expires_ms: c.lease_expires_ms,
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
            .get_consistent(&self.cursors, (PK, s(flow)), (SK_CURSOR, s(partition_sk(tp))))
            .await?;
        item.as_ref().map(|i| CursorItem::try_from((self.cursors.as_str(), i))).transpose()
    }

    /// Record, under the lease, the producer id this holder writes with
    /// (the provenance a later holder reconciles against) and its
    /// transactional id (which a later holder fences); from now until a
    /// release that says otherwise, its writes are not settled.
    /// `target_end` is recorded as the reconcile start if none is stored yet.
    pub async fn set_producer(&self, flow: &str, lease: &Lease, producer: &ProducerRecord<'_>, target_end: i64) -> Result<(), StateError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(&lease.tp)))
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

    /// The newest offset-map run of a partition, whole (see
    /// [`CursorItem::open_run`]).
    pub async fn last_run(&self, flow: &str, tp: &TopicPartition) -> Result<Option<OffsetRun>, StateError> {
        // The cursor first: see `StateStore::runs_from`.
        let cursor = self.get_cursor(flow, tp).await?;
        let mut run = self.newest_stored_run(flow, tp).await?;
        if let (Some(c), Some(r)) = (&cursor, run.as_mut()) {
            c.patch(r);
        }
        Ok(run)
    }

    /// The newest run's item in the offset-map table, as stored: its
    /// length may be short of the run's (the cursor item holds it whole;
    /// [`CursorItem::patch`] lengthens it).
    pub async fn newest_stored_run(&self, flow: &str, tp: &TopicPartition) -> Result<Option<OffsetRun>, StateError> {
        let out = self
            .client
            .query()
            .table_name(&self.offset_map)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK_MAP)
            .expression_attribute_values(":pk", s(map_pk(flow, tp)))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("Query", &self.offset_map, e))?;
        out.items().first().map(|i| run_from_item(&self.offset_map, i)).transpose()
    }

    /// Delete the runs that end at or below `below` (the source log-start
    /// offset: no committed group offset can point there any more), always
    /// keeping the newest run, the only one a holder extends. Returns how
    /// many were deleted.
    pub async fn prune_runs(&self, flow: &str, tp: &TopicPartition, below: i64) -> Result<usize, StateError> {
        let pk = map_pk(flow, tp);
        // Most plans find nothing to prune: one Query, no cursor read. Where
        // there are candidates, the cursor is read and then the runs again
        // (see `runs_from`): the run it holds open, and any started after
        // it, are live whatever their items say.
        if self.runs_below(&pk, below).await?.is_empty() {
            return Ok(0);
        }
        let open = self.get_cursor(flow, tp).await?;
        let mut doomed = self.runs_below(&pk, below).await?;
        if let Some(c) = &open {
            doomed.iter_mut().for_each(|r| c.patch(r));
            let live_from = c.open_run.map(|r| r.source_start).unwrap_or(i64::MAX);
            doomed.retain(|r| r.source_start < live_from);
        }
        doomed.retain(|r| r.source_end() <= below);
        if doomed.is_empty() {
            return Ok(0);
        }
        let newest = self.newest_stored_run(flow, tp).await?.map(|r| r.source_start);
        doomed.retain(|r| Some(r.source_start) != newest);
        self.batch_write(&self.offset_map, self.run_deletes(&pk, &doomed)?).await?;
        Ok(doomed.len())
    }

    /// Up to 1,000 stored runs of map partition `pk` starting below `below`
    /// that end at or below it by their items (which may be short of the
    /// open run: the caller checks with the cursor).
    async fn runs_below(&self, pk: &str, below: i64) -> Result<Vec<OffsetRun>, StateError> {
        let resp = self
            .client
            .query()
            .table_name(&self.offset_map)
            .key_condition_expression("#pk = :pk AND #sk < :below")
            .expression_attribute_names("#pk", PK_MAP)
            .expression_attribute_names("#sk", SK_MAP)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":below", n(below))
            .limit(1000)
            .send()
            .await
            .map_err(|e| dynamo_err("Query", &self.offset_map, e))?;
        let mut runs = resp
            .items()
            .iter()
            .map(|i| run_from_item(&self.offset_map, i))
            .collect::<Result<Vec<_>, _>>()?;
        runs.retain(|r| r.source_end() <= below);
        Ok(runs)
    }

    /// All stored runs of a partition, in source order.
    pub async fn runs(&self, flow: &str, tp: &TopicPartition) -> Result<Vec<OffsetRun>, StateError> {
        // The cursor before the runs: a checkpoint in between can only make
        // the runs read longer than the cursor's, never shorter (see
        // `StateStore::runs_from`).
        let cursor = self.get_cursor(flow, tp).await?;
        let items = self.query_all(&self.offset_map, PK_MAP, s(map_pk(flow, tp))).await?;
        let mut runs = items
            .iter()
            .map(|i| run_from_item(&self.offset_map, i))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(c) = &cursor {
            runs.iter_mut().for_each(|r| c.patch(r));
        }
        Ok(runs)
    }

    /// Move the cursor and store the mapping, atomically, under the lease.
    pub async fn checkpoint(&self, flow: &str, lease: &Lease, cp: &Checkpoint) -> Result<(), StateError> {
        let items = self.checkpoint_items(flow, lease, cp)?;
        let res = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        self.checkpoint_outcome(lease, res)
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
        for (i, (lease, cp)) in cps.iter().enumerate() {
            match self.checkpoint_items(flow, lease, cp) {
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
            let res = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
            match (members.as_slice(), res) {
                ([only], res) => results[*only] = Some(self.checkpoint_outcome(cps[*only].0, res)),
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
    fn checkpoint_items(&self, flow: &str, lease: &Lease, cp: &Checkpoint) -> Result<Vec<TransactWriteItem>, StateError> {
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
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(&lease.tp)))
            .update_expression(format!("{set} {remove}"))
            .condition_expression("lease_owner = :me AND lease_epoch = :epoch AND next_source_offset = :from")
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

    /// What one checkpoint's transaction did.
    fn checkpoint_outcome<T>(
        &self,
        lease: &Lease,
        res: Result<T, SdkError<TransactWriteItemsError, HttpResponse>>,
    ) -> Result<(), StateError> {
        match res {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => {
                // The cursor condition is the first item; any cancellation
                // there means the lease moved or the cursor moved under us.
                let reasons = match e.err() {
                    TransactWriteItemsError::TransactionCanceledException(t) => t.cancellation_reasons().to_vec(),
                    _ => Vec::new(),
                };
                let cursor_failed = reasons
                    .first()
                    .and_then(|r| r.code())
                    .is_some_and(|c| c == "ConditionalCheckFailed");
                if cursor_failed || reasons.is_empty() {
                    Err(StateError::LeaseLost {
                        tp: lease.tp.clone(),
                        epoch: lease.epoch,
                    })
                } else {
                    Err(StateError::Dynamo {
                        op: "TransactWriteItems",
                        table: self.offset_map.clone(),
                        detail: format!("{reasons:?}"),
                    })
                }
            }
            Err(e) => Err(dynamo_err("TransactWriteItems", &self.cursors, e)),
        }
    }

    /// Move a partition's cursor back from `from` to `to`, under the lease:
    /// the source's log was truncated at `to` (an unclean leader election)
    /// and Ferry follows its new history from there. The offset-map runs
    /// of source offsets at or past `to` describe records the source no
    /// longer has: they are deleted first, then the run holding `to - 1`
    /// is cut at `to` and the cursor moves, in one transaction conditional
    /// on the lease and the cursor. `open` is the holder's newest run,
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
        self.batch_write(&self.offset_map, self.run_deletes(&pk, &doomed)?).await?;
        let newest = keep.iter().max_by_key(|r| r.source_start).map(|r| OffsetRun {
            length: r.length.min(to - r.source_start),
            ..*r
        });
        let mut set = String::from("SET next_source_offset = :to, updated_ms = :now");
        let mut remove: Vec<&str> = vec!["last_error"];
        if target_end.is_some() {
            set.push_str(", next_target_offset = :tend, producer_id = :nopid, target_rewound_ms = :now");
            remove.push("target_leader_epoch");
        }
        if newest.is_some() {
            set.push_str(", open_run_source_start = :ors, open_run_target_start = :ort, open_run_length = :orl");
        } else {
            remove.extend(["open_run_source_start", "open_run_target_start", "open_run_length"]);
        }
        if leader_epochs.is_empty() {
            remove.extend(["leader_epoch", "leader_epoch_starts"]);
        } else {
            set.push_str(", leader_epoch = :lep, leader_epoch_starts = :leps");
        }
        let mut cursor_update = Update::builder()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(&lease.tp)))
            .update_expression(format!("{set} REMOVE {}", remove.join(", ")))
            .condition_expression("lease_owner = :me AND lease_epoch = :epoch AND next_source_offset = :from")
            .expression_attribute_values(":to", n(to))
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":me", s(&lease.owner))
            .expression_attribute_values(":epoch", n(lease.epoch));
        if let Some(end) = target_end {
            cursor_update = cursor_update
                .expression_attribute_values(":tend", n(end))
                .expression_attribute_values(":nopid", n(-1));
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
        let res = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        self.checkpoint_outcome(lease, res)?;
        Ok(newest)
    }

    /// Give the lease back (only if still ours). `settled`: this holder
    /// recorded its producer and has no write whose outcome it does not
    /// know, so the next holder need not fence it.
    pub async fn release_lease(&self, flow: &str, lease: &Lease, rate: Rate, settled: bool) -> Result<(), StateError> {
        let set_settled = if settled { ", writes_settled = :settled" } else { "" };
        let req = self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(&lease.tp)))
            .update_expression(format!(
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
            .await;
        self.fenced(res.map(|_| ()), lease, "UpdateItem")
    }

    /// Record why a partition stopped (shown by `ferry status`).
    pub async fn record_error(&self, flow: &str, tp: &TopicPartition, error: &str) -> Result<(), StateError> {
        self.client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(partition_sk(tp)))
            .update_expression("SET last_error = :e, updated_ms = :now")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":e", s(error))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await
            .map_err(|e| dynamo_err("UpdateItem", &self.cursors, e))?;
        Ok(())
    }
}

mod groups;
mod plans;
pub use groups::{GroupSyncItem, GroupSyncStatus, RunKey};
pub use plans::EXPIRES_AT;

fn pair_pk(source_cluster_id: &str, target_cluster_id: &str) -> String {
    format!("{PAIRS}{source_cluster_id}>{target_cluster_id}")
}

fn map_pk(flow: &str, tp: &TopicPartition) -> String {
    format!("{flow}/{}", partition_sk(tp))
}

fn run_from_item(table: &str, i: &HashMap<String, AttributeValue>) -> Result<OffsetRun, StateError> {
    let r = ItemReader::new(table, i);
    Ok(OffsetRun {
        source_start: r.req_n(SK_MAP)?,
        target_start: r.req_n("target_start")?,
        length: r.req_n("run_length")?,
    })
}
