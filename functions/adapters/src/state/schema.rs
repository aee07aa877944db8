//! The four state tables: their names, keys and creation, and the reads
//! and writes every item kind shares (paged queries, consistent gets,
//! batched writes, attribute readers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType, KeysAndAttributes, LocalSecondaryIndex,
    Projection, ProjectionType, ScalarAttributeType, TableStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use ferry_core::domain::TopicPartition;
use futures::{StreamExt, TryStreamExt};

use super::calls::{Bounded, Calls};
use super::error::{dynamo_err, missing_table};
use super::StateError;

/// The store.
#[derive(Debug, Clone)]
pub struct StateStore {
    pub(super) client: Client,
    pub(super) cursors: String,
    pub(super) offset_map: String,
    pub(super) producers: String,
    pub(super) groups: String,
    /// Each flow's key layout as its marker records it ([`KEY_SHARDS`]),
    /// once read: shared by clones, kept for the life of the store.
    pub(super) layouts: Arc<Mutex<HashMap<String, u32>>>,
    /// The calls under way ([`Calls`]), shared by clones: every batch of a
    /// `ferry run` and every task of an invocation.
    pub(super) calls: Calls,
}

pub(super) const PK: &str = "flow";
pub(super) const SK_CURSOR: &str = "partition";
pub(super) const PK_MAP: &str = "flow_partition";
pub(super) const SK_MAP: &str = "source_start";
/// On a cursor: the source offset a backfill asked while the partition was
/// leased starts it at (see `StateStore::request_backfill`).
pub(super) const BACKFILL_FROM: &str = "backfill_from";
/// Offset-map index by target offset: where the opposite flow's records
/// sit in the cluster a flow reads (loop prevention, group translation).
pub(super) const BY_TARGET: &str = "by_target";
pub(super) const PK_PRODUCERS: &str = "cluster";
pub(super) const SK_PRODUCERS: &str = "producer_id";
pub(super) const SK_GROUPS: &str = "partition_group";
/// Sort key of the per-flow marker item (no '/', so never a partition).
pub(super) const FLOW_MARKER: &str = "#flow";
/// Partition key prefix of the items that list, per ordered pair of Kafka
/// cluster ids, the flows (of any replicator on these tables) that copy
/// from the first to the second: how a flow finds its opposite when the
/// two directions are two replicators.
pub(super) const PAIRS: &str = "#pairs/";
/// Partition key prefix of the items that say, per Kafka cluster id, which
/// flow writes each of its topics (see `writers`).
pub(super) const WRITERS: &str = "#writers/";
/// Attribute of a flow's marker: over how many partition keys its
/// cursors and group-sync items are spread. A marker without it is a flow
/// started before Ferry spread them: its items all sit under the flow key.
pub(super) const KEY_SHARDS: &str = "key_shards";
/// How many partition keys a flow started now spreads its partitions'
/// cursors and group-sync items over. DynamoDB takes at most 1,000 write
/// units a second on one partition key; a partition's checkpoints cost
/// about half a unit a second (one every 4 s, transactional), so one key
/// holds some 1,800 busy partitions and 16 a flow of some 27,000.
pub const NEW_FLOW_KEY_SHARDS: u32 = ferry_core::domain::FLOW_KEY_SHARDS;
/// The most a marker may record: more would be a damaged item.
const MAX_KEY_SHARDS: u32 = 1024;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn partition_sk(tp: &TopicPartition) -> String {
    // '/' never appears in a Kafka topic name.
    format!("{}/{}", tp.topic, tp.partition)
}

/// The partition key of a partition's items in a flow whose items are
/// spread over `shards` keys: the flow key itself when one (flows started
/// before the spread), else the flow key and `#` and the shard, which a
/// hash of the partition picks (FNV-1a: stable across builds and
/// platforms, as stored keys must be).
pub(super) fn spread_pk(flow: &str, shards: u32, tp: &TopicPartition) -> String {
    if shards <= 1 {
        return flow.to_owned();
    }
    let hash = partition_sk(tp)
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{flow}#{:02}", hash % shards)
}

/// Every partition key of a flow's partition items (see [`spread_pk`]).
pub(super) fn spread_pks(flow: &str, shards: u32) -> Vec<String> {
    if shards <= 1 {
        return vec![flow.to_owned()];
    }
    (0..shards).map(|i| format!("{flow}#{i:02}")).collect()
}

/// A BatchWriteItem request deleting the item of `table` with this key.
pub(super) fn delete_request(table: &str, pk: (&str, AttributeValue), sk: (&str, AttributeValue)) -> Result<WriteRequest, StateError> {
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

    /// A string-set attribute (empty if absent).
    pub(crate) fn ss(&self, k: &str) -> Vec<String> {
        self.item.get(k).and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default()
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

pub(super) fn pair_pk(source_cluster_id: &str, target_cluster_id: &str) -> String {
    format!("{PAIRS}{source_cluster_id}>{target_cluster_id}")
}

pub(super) fn map_pk(flow: &str, tp: &TopicPartition) -> String {
    format!("{flow}/{}", partition_sk(tp))
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
            layouts: Arc::default(),
            calls: Calls::default(),
        }
    }

    /// The same store with at most `n` DynamoDB calls under way at once,
    /// over it and its clones (see `calls.rs`: a `ferry` command, which
    /// runs every batch in one process).
    pub fn with_calls_in_flight(self, n: usize) -> Self {
        Self {
            calls: Calls::at_most(n),
            ..self
        }
    }

    /// Over how many partition keys `flow`'s partition items are spread,
    /// from its marker (read once, then kept). A flow without a marker has
    /// not started: it is laid out as a new flow will be, and not kept, so
    /// that the marker decides once it exists.
    pub(super) async fn key_shards(&self, flow: &str) -> Result<u32, StateError> {
        if let Some(&shards) = self.layouts.lock().expect("layouts lock").get(flow) {
            return Ok(shards);
        }
        let marker = self
            .get_consistent(&self.cursors, (PK, s(flow)), (SK_CURSOR, s(FLOW_MARKER)))
            .await?;
        match marker.filter(|m| !m.is_empty()) {
            None => Ok(NEW_FLOW_KEY_SHARDS),
            Some(m) => {
                let shards = self.layout_of(&m)?;
                self.layouts.lock().expect("layouts lock").insert(flow.to_owned(), shards);
                Ok(shards)
            }
        }
    }

    /// The key layout a flow's marker records (one key when it records none).
    pub(super) fn layout_of(&self, marker: &HashMap<String, AttributeValue>) -> Result<u32, StateError> {
        let r = ItemReader::new(&self.cursors, marker);
        match r.n(KEY_SHARDS) {
            None if marker.contains_key(KEY_SHARDS) => Err(r.bad(KEY_SHARDS)),
            None => Ok(1),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_KEY_SHARDS).contains(n))
                .ok_or_else(|| r.bad(KEY_SHARDS)),
        }
    }

    /// Keep what a marker just read or written says of a flow's layout.
    pub(super) fn remember_layout(&self, flow: &str, shards: u32) {
        self.layouts.lock().expect("layouts lock").insert(flow.to_owned(), shards);
    }

    /// Forget a flow's layout (the flow was forgotten: it may start anew).
    pub(super) fn forget_layout(&self, flow: &str) {
        self.layouts.lock().expect("layouts lock").remove(flow);
    }

    /// Forget every layout read so far: each is read again from its
    /// marker when next needed. A store that lives across invocations (a
    /// warm Lambda, `ferry run`'s rounds) calls it as each begins: a flow
    /// forgotten and started again by another process meanwhile may be
    /// laid out anew.
    pub fn clear_layouts(&self) {
        self.layouts.lock().expect("layouts lock").clear();
    }

    /// The partition key of `tp`'s cursor and group-sync items in `flow`.
    pub(super) async fn partition_pk(&self, flow: &str, tp: &TopicPartition) -> Result<String, StateError> {
        Ok(spread_pk(flow, self.key_shards(flow).await?, tp))
    }

    /// An update of `tp`'s cursor item in `flow` (conditions its own).
    pub(super) async fn update_cursor(
        &self,
        flow: &str,
        tp: &TopicPartition,
    ) -> Result<aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder, StateError> {
        Ok(self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(self.partition_pk(flow, tp).await?))
            .key(SK_CURSOR, s(partition_sk(tp))))
    }

    /// Every partition key of `flow`'s partition items.
    pub(super) async fn partition_pks(&self, flow: &str) -> Result<Vec<String>, StateError> {
        Ok(spread_pks(flow, self.key_shards(flow).await?))
    }

    /// Every item of `table` under `flow`'s partition keys, the keys read
    /// at once, in one key's order (by sort key `sk`) whatever the layout.
    pub(super) async fn partition_items(
        &self,
        table: &str,
        flow: &str,
        sk: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StateError> {
        let pks = self.partition_pks(flow).await?;
        let pages = futures::future::join_all(pks.into_iter().map(|pk| self.query_all(table, PK, s(pk)))).await;
        let mut items = Vec::new();
        for page in pages {
            items.extend(page?);
        }
        items.sort_by_cached_key(|i| i.get(sk).and_then(|v| v.as_s().ok()).cloned());
        Ok(items)
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
        match self.client.describe_table().table_name(table).send().bounded(&self.calls).await {
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
            match req.send().bounded(&self.calls).await {
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
                    .bounded(&self.calls)
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

    /// Whether the cursors table exists (a replicator that never ran has none).
    pub async fn has_tables(&self) -> Result<bool, StateError> {
        match self
            .client
            .describe_table()
            .table_name(&self.cursors)
            .send()
            .bounded(&self.calls)
            .await
        {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(false),
            Err(e) => Err(dynamo_err("DescribeTable", &self.cursors, e)),
        }
    }

    /// Every item under one partition key, all pages, read consistently.
    pub(crate) async fn query_all(
        &self,
        table: &str,
        pk_name: &str,
        pk: AttributeValue,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StateError> {
        self.query_all_under(table, pk_name, pk, None).await
    }

    /// [`Self::query_all`], only the items whose sort key `sk_name` begins
    /// with a prefix, when `sk_prefix` gives one (`(sk_name, prefix)`).
    pub(crate) async fn query_all_under(
        &self,
        table: &str,
        pk_name: &str,
        pk: AttributeValue,
        sk_prefix: Option<(&str, &str)>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StateError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let req = self
                .client
                .query()
                .table_name(table)
                .expression_attribute_names("#pk", pk_name)
                .expression_attribute_values(":pk", pk.clone());
            let req = match sk_prefix {
                Some((sk_name, prefix)) => req
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", sk_name)
                    .expression_attribute_values(":prefix", s(prefix)),
                None => req.key_condition_expression("#pk = :pk"),
            };
            let resp = req
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .bounded(&self.calls)
                .await
                .map_err(|e| dynamo_err("Query", table, e))?;
            out.extend(resp.items().iter().cloned());
            start = resp.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Delete one item of `table` by its key (nothing there is no error).
    pub(crate) async fn delete_one(&self, table: &str, pk: (&str, AttributeValue), sk: (&str, AttributeValue)) -> Result<(), StateError> {
        self.client
            .delete_item()
            .table_name(table)
            .key(pk.0, pk.1)
            .key(sk.0, sk.1)
            .send()
            .bounded(&self.calls)
            .await
            .map(|_| ())
            .map_err(|e| dynamo_err("DeleteItem", table, e))
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
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("GetItem", table, e))?;
        Ok(out.item)
    }

    /// The items of `table` at `keys`, strongly consistent, in
    /// BatchGetItems of 100 keys (its most), the keys DynamoDB leaves
    /// unprocessed asked again: one call where a GetItem each would be
    /// `keys.len()`. Items found, in no order (absent keys are not there).
    pub(crate) async fn get_consistent_many(
        &self,
        table: &str,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StateError> {
        let mut found = Vec::with_capacity(keys.len());
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            let chunk: Vec<_> = keys.by_ref().take(100).collect();
            let ask = |keys: Vec<HashMap<String, AttributeValue>>| {
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StateError::Dynamo {
                        op: "BatchGetItem",
                        table: table.to_owned(),
                        detail: e.to_string(),
                    })
            };
            let mut pending = Some(ask(chunk)?);
            for attempt in 0..8u64 {
                let Some(req) = pending.take().filter(|k| !k.keys().is_empty()) else {
                    break;
                };
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(table, req)
                    .send()
                    .bounded(&self.calls)
                    .await
                    .map_err(|e| dynamo_err("BatchGetItem", table, e))?;
                found.extend(out.responses.and_then(|mut r| r.remove(table)).unwrap_or_default());
                // Asked again as the first time, strongly consistent
                // whatever the unprocessed keys came back with.
                pending = match out.unprocessed_keys.and_then(|mut u| u.remove(table)) {
                    Some(left) if !left.keys().is_empty() => Some(ask(left.keys)?),
                    _ => None,
                };
                if pending.as_ref().is_some_and(|k| !k.keys().is_empty()) {
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
            }
            if pending.is_some_and(|k| !k.keys().is_empty()) {
                return Err(StateError::Dynamo {
                    op: "BatchGetItem",
                    table: table.to_owned(),
                    detail: "keys still unprocessed after retries".into(),
                });
            }
        }
        Ok(found)
    }

    /// Apply `writes` to `table` in BatchWriteItems of 25 (its most),
    /// retrying the items DynamoDB leaves unprocessed, one after another
    /// and in order: a failure leaves the writes before it done and none
    /// after (the offset map's runs are deleted oldest first, and must
    /// never be left with a hole).
    pub(crate) async fn batch_write(&self, table: &str, writes: Vec<WriteRequest>) -> Result<(), StateError> {
        for chunk in chunks_of_25(writes) {
            self.batch_write_chunk(table, chunk).await?;
        }
        Ok(())
    }

    /// As [`batch_write`](Self::batch_write), a few BatchWriteItems in
    /// flight at once, in no order: for items each of its own key whose
    /// readers take each one as it is (a group's sync results, a plan's
    /// batches). One after another, a group on 10,000 partitions took 400
    /// round trips.
    pub(crate) async fn batch_write_unordered(&self, table: &str, writes: Vec<WriteRequest>) -> Result<(), StateError> {
        futures::stream::iter(chunks_of_25(writes))
            .map(|chunk| self.batch_write_chunk(table, chunk))
            .buffer_unordered(BATCH_WRITES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn batch_write_chunk(&self, table: &str, chunk: Vec<WriteRequest>) -> Result<(), StateError> {
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
                .bounded(&self.calls)
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
        Ok(())
    }
}

/// BatchWriteItem requests of one unordered write in flight at once.
const BATCH_WRITES_IN_FLIGHT: usize = 4;

fn chunks_of_25(writes: Vec<WriteRequest>) -> Vec<Vec<WriteRequest>> {
    let mut writes = writes.into_iter().peekable();
    let mut chunks = Vec::new();
    while writes.peek().is_some() {
        chunks.push(writes.by_ref().take(25).collect());
    }
    chunks
}

/// The stored form of `Checkpoint::leader_epochs`: `offset:epoch`
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
