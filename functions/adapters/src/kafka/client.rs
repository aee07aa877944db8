//! A Kafka cluster as Ferry uses it: metadata, topic creation, offsets,
//! fetch (read_committed), idempotent produce. Connections are cached per
//! broker and dropped on any I/O or protocol failure.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_core::domain::TopicPartition;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::batch;
use super::connection::Connection;
use super::error::KafkaError;
use super::security::Security;
use super::throttle::Throttled;

mod fetch;
mod login;
mod offsets;
mod routing;
mod topics;

use login::AuthBackoff;

/// Metadata of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    /// Leader broker id (-1 when none).
    pub leader: i32,
}

/// Metadata of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// Kafka flags it internal.
    pub internal: bool,
    /// The topic's id (Kafka 2.8 and later): a topic deleted and created
    /// again under the same name gets another. `None` where the broker
    /// names none.
    pub topic_id: Option<String>,
    /// Partitions by index.
    pub partitions: BTreeMap<i32, PartitionMeta>,
}

/// What one fetch returned for one partition.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset (read_committed reads stop here).
    pub last_stable_offset: i64,
    /// Log-start offset.
    pub log_start_offset: i64,
    /// Producer ids and first offsets of aborted transactions in range.
    pub aborted: Vec<(i64, i64)>,
    /// Raw record batches.
    pub records: Bytes,
}

impl FetchedPartition {
    /// Its batches in order, each marked as a read_committed consumer
    /// treats it (markers and aborted transactions return no records).
    pub fn read_committed(&self) -> Result<Vec<batch::ReadBatch>, batch::BatchError> {
        batch::read_committed(self.records.clone(), &self.aborted)
    }
}

/// Where one leader epoch ends in a partition's log, as its current leader
/// answers OffsetForLeaderEpoch (KIP-320).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch the leader knows at or below the one asked for
    /// (-1 when it knows none): the epoch of the record just before
    /// `end_offset` in the leader's log.
    pub leader_epoch: i32,
    /// The first offset after that epoch in the leader's log (its end
    /// offset when the epoch is the current one); -1 when unknown.
    pub end_offset: i64,
}

/// One topic's configuration as the broker reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfig {
    /// Every readable, non-sensitive value in effect (defaults included).
    pub effective: BTreeMap<String, String>,
    /// Only the values set on the topic itself (dynamic topic overrides).
    pub overrides: BTreeMap<String, String>,
}

/// Config source code of a dynamic topic override in DescribeConfigs.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
/// Resource type code of a topic.
const RESOURCE_TOPIC: i8 = 2;

/// Which offset ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// Log-start offset.
    Earliest,
    /// End offset (high watermark, or last stable offset under read_committed).
    Latest,
    /// The first offset whose record timestamp is at or after this (ms);
    /// the end offset when there is none.
    Timestamp(i64),
}

/// Which records a fetch may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Up to the last stable offset, without the records of aborted
    /// transactions: what a consumer sees. Replication reads the source so.
    ReadCommitted,
    /// Up to the high watermark, open transactions included. A takeover
    /// reads its own (non-transactional) records on the target so: another
    /// producer's open transaction pins the last stable offset below them.
    ReadUncommitted,
}

/// One cluster.
pub struct KafkaCluster {
    alias: String,
    bootstrap: Vec<String>,
    /// For an MSK cluster given by its ARN alone: the lookup of its
    /// bootstrap brokers, and what it found (kept while they answer).
    msk: Option<crate::msk::MskBootstrap>,
    looked_up: Mutex<Option<Vec<String>>>,
    request_timeout: Duration,
    brokers: std::sync::Mutex<HashMap<i32, String>>,
    leaders: std::sync::Mutex<HashMap<(String, i32), i32>>,
    /// Topic ids by name, from the latest metadata answer naming each.
    topic_ids: std::sync::Mutex<HashMap<String, String>>,
    /// The id each topic had when Ferry began writing it (see
    /// [`KafkaCluster::expect_topic_id`]).
    expected_topic_ids: std::sync::Mutex<HashMap<String, String>>,
    conns: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<Connection>>>>>,
    /// Coordinator address by FindCoordinator key type and key: groups
    /// (see `groups.rs`) and transactional ids (`txn.rs`).
    pub(super) coordinators: std::sync::Mutex<HashMap<(i8, String), String>>,
    /// The cluster id, learnt once: it never changes for a cluster's life.
    pub(super) cluster_id: std::sync::OnceLock<String>,
    /// Milliseconds the brokers asked this client to wait (quotas), summed
    /// over every answer.
    throttle_ms: std::sync::atomic::AtomicU64,
    /// When a throttle was last logged (at most one line a minute).
    throttle_said: std::sync::Mutex<Option<std::time::Instant>>,
    security: Security,
    auth_backoff: std::sync::Mutex<Option<AuthBackoff>>,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCluster")
            .field("alias", &self.alias)
            .field("bootstrap", &self.bootstrap)
            .field("msk", &self.msk.as_ref().map(crate::msk::MskBootstrap::arn))
            .finish()
    }
}

pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(super) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

impl KafkaCluster {
    /// A cluster reached through `bootstrap`; nothing is connected yet.
    pub fn new(alias: &str, bootstrap: Vec<String>, request_timeout: Duration) -> Self {
        Self {
            alias: alias.to_owned(),
            bootstrap,
            msk: None,
            looked_up: Mutex::new(None),
            request_timeout,
            brokers: Default::default(),
            leaders: Default::default(),
            topic_ids: Default::default(),
            expected_topic_ids: Default::default(),
            conns: Default::default(),
            coordinators: Default::default(),
            cluster_id: Default::default(),
            throttle_ms: Default::default(),
            throttle_said: Default::default(),
            security: Security::plaintext(alias),
            auth_backoff: Default::default(),
        }
    }

    /// This cluster reached with `security` (TLS, SASL) instead of PLAINTEXT.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// This cluster's bootstrap brokers looked up with `msk` (MSK's
    /// GetBootstrapBrokers) at the first connection, instead of given.
    pub fn with_msk_lookup(mut self, msk: crate::msk::MskBootstrap) -> Self {
        self.msk = Some(msk);
        self
    }

    /// The bootstrap brokers: as given, or looked up once and kept while
    /// they answer (every caller of one client shares the one lookup).
    async fn bootstrap_brokers(&self) -> Result<Vec<String>, KafkaError> {
        let Some(msk) = &self.msk else {
            return Ok(self.bootstrap.clone());
        };
        let mut held = self.looked_up.lock().await;
        if let Some(found) = held.as_ref() {
            return Ok(found.clone());
        }
        // Boxed: the SDK call is a deep future, and made once.
        let found = Box::pin(msk.brokers(&self.alias)).await?;
        *held = Some(found.clone());
        Ok(found)
    }

    /// Where this cluster is reached, for messages: the bootstrap brokers,
    /// or the MSK cluster they are looked up from.
    pub async fn bootstrap_description(&self) -> String {
        match &self.msk {
            None => self.bootstrap.join(","),
            Some(msk) => match self.looked_up.lock().await.as_ref() {
                Some(found) => format!("{} ({} of {})", found.join(","), msk.listener().field(), msk.arn()),
                None => format!("MSK cluster {} ({})", msk.arn(), msk.listener().field()),
            },
        }
    }

    /// The alias used in errors and logs.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// Milliseconds of quota throttling the brokers reported to this client
    /// so far (every answer); the ThrottleTime metric is its growth.
    pub fn throttle_ms(&self) -> u64 {
        self.throttle_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The client id Ferry's connections to this cluster send: what a
    /// quota on this client is set for.
    pub fn client_id(&self) -> String {
        format!("ferry-{}", self.alias)
    }

    /// Count a throttle `addr` asked for, and say so at most once a minute:
    /// the connection waits it out before its next request (see
    /// `throttle.rs`).
    fn add_throttle(&self, ms: i32, addr: &str) {
        let Ok(ms @ 1..) = u64::try_from(ms) else {
            return;
        };
        let total = self.throttle_ms.fetch_add(ms, std::sync::atomic::Ordering::Relaxed) + ms;
        let now = std::time::Instant::now();
        let mut said = lock(&self.throttle_said);
        if said.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
            *said = Some(now);
            tracing::warn!(
                cluster = %self.alias, broker = addr, client_id = %self.client_id(), wait_ms = ms, throttled_ms_so_far = total,
                "the broker throttled Ferry's client for a quota; the next request to it waits that long, or is refused and asked again later when that is longer than a request may take (raise the quota of this client id if Ferry falls behind)"
            );
        }
    }

    pub(super) async fn send_to<R: Throttled>(&self, addr: &str, req: &R) -> Result<R::Response, KafkaError> {
        self.send_to_built::<R, &R>(addr, |_| req).await
    }

    /// Like `send_to`, for requests whose shape depends on the version:
    /// `build` gets the version negotiated with `addr`.
    pub(super) async fn send_to_built<R: Throttled, Q: Borrow<R>>(
        &self,
        addr: &str,
        build: impl FnOnce(i16) -> Q,
    ) -> Result<R::Response, KafkaError> {
        // Produce goes on a connection of its own to each broker: a broker
        // mutes a connection for as long as it throttles the answer on it
        // (KIP-219), and a produce quota would otherwise hold back the
        // reads that check the target's log, which no quota holds.
        let lane = if R::KEY == <ProduceRequest as kafka_protocol::protocol::Request>::KEY {
            format!("{addr} (produce)")
        } else {
            addr.to_owned()
        };
        let slot = lock(&self.conns).entry(lane).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_mut().filter(|c| c.session_ending()) {
            match conn.reauthenticate().await {
                Ok(()) => {}
                Err(e @ KafkaError::Auth { .. }) => {
                    // Refused when the session was renewed: the password may
                    // have been rotated since this connection logged in.
                    // Connect again: a refusal then reads the secret's
                    // versions again (see `connect`).
                    tracing::info!(cluster = %self.alias, broker = addr, error = %e,
                        "re-authentication refused; connecting again, reading the credentials again if refused");
                    *guard = None;
                }
                Err(e) => {
                    if e.breaks_connection() {
                        *guard = None;
                    }
                    return Err(e);
                }
            }
        }
        if guard.is_none() {
            // Boxed: connecting (TLS, SASL) is a deep future, and rare.
            *guard = Some(Box::pin(self.connect(addr)).await?);
        }
        let conn = guard.as_mut().ok_or_else(|| KafkaError::protocol(addr, "connection vanished"))?;
        let res = conn.send_built::<R, Q>(build).await;
        if let Ok(resp) = &res {
            self.add_throttle(R::throttle_ms(resp), addr);
        }
        if let Err(e) = &res {
            if e.breaks_connection() {
                *guard = None;
            }
            if matches!(e, KafkaError::Auth { .. }) {
                self.auth_failed(e); // re-authentication refused
            }
        }
        res
    }

    /// Send to any broker that answers: known brokers first, then bootstrap.
    pub(super) async fn send_any<R: Throttled>(&self, req: &R) -> Result<R::Response, KafkaError> {
        self.send_any_built::<R, &R>(|_| req).await
    }

    /// Like `send_any`, for requests whose shape depends on the version.
    pub(super) async fn send_any_built<R: Throttled, Q: Borrow<R>>(&self, build: impl Fn(i16) -> Q) -> Result<R::Response, KafkaError> {
        let mut addrs: Vec<String> = lock(&self.brokers).values().cloned().collect();
        addrs.sort();
        for b in self.bootstrap_brokers().await? {
            if !addrs.contains(&b) {
                addrs.push(b);
            }
        }
        let mut last = String::from("no address");
        // The throttle, while every broker tried throttles Ferry: that is
        // the fault to name (a quota), not "no broker answered".
        let mut throttled: Option<KafkaError> = None;
        let mut unreachable = false;
        for addr in &addrs {
            match self.send_to_built::<R, Q>(addr, &build).await {
                Ok(r) => return Ok(r),
                // Every broker of a cluster shares its credentials and CA;
                // a handshake cut is that broker's, the next may answer.
                Err(e) if e.is_auth_error() && !e.is_transient() => return Err(e),
                // A broker that throttles Ferry for long: another may answer.
                Err(e) if e.is_throttled() => {
                    last = e.to_string();
                    throttled = Some(e);
                }
                Err(e) if e.breaks_connection() => {
                    last = e.to_string();
                    unreachable = true;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = throttled.filter(|_| !unreachable) {
            return Err(e);
        }
        // None answered: brokers looked up may have been replaced since;
        // the next attempt looks them up again.
        *self.looked_up.lock().await = None;
        Err(KafkaError::NoBroker {
            cluster: self.alias.clone(),
            tried: addrs.join(","),
            last,
        })
    }

    fn broker_addr(&self, id: i32) -> Option<String> {
        lock(&self.brokers).get(&id).cloned()
    }

    /// Metadata for `topics`, or for every topic when `None`. Refreshes the
    /// broker and leader caches.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<BTreeMap<String, TopicMeta>, KafkaError> {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect()
            }));
        let resp = self.send_any(&req).await?;
        {
            let mut brokers = lock(&self.brokers);
            brokers.clear();
            for b in &resp.brokers {
                brokers.insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
            }
        }
        let mut out = BTreeMap::new();
        let mut leaders = lock(&self.leaders);
        for t in resp.topics {
            let Some(name) = t.name.map(|n| n.0.to_string()) else { continue };
            match ResponseError::try_from_code(t.error_code) {
                None => {}
                Some(ResponseError::UnknownTopicOrPartition) => continue,
                Some(error) => {
                    let detail = if error == ResponseError::TopicAuthorizationFailed {
                        "Ferry's user may not describe the topic: grant it DESCRIBE and READ on the source topic \
                         (WRITE, CREATE and ALTER_CONFIGS on the target), or kafka-cluster:DescribeTopic and ReadData with MSK IAM"
                    } else {
                        "reading topic metadata"
                    };
                    return Err(KafkaError::Broker {
                        cluster: self.alias.clone(),
                        op: "Metadata",
                        topic: name,
                        partition: -1,
                        error,
                        detail: detail.into(),
                    });
                }
            }
            let topic_id = (!t.topic_id.is_nil()).then(|| t.topic_id.to_string());
            if let Some(id) = &topic_id {
                lock(&self.topic_ids).insert(name.clone(), id.clone());
            }
            let mut partitions = BTreeMap::new();
            for p in t.partitions {
                leaders.insert((name.clone(), p.partition_index), p.leader_id.0);
                partitions.insert(p.partition_index, PartitionMeta { leader: p.leader_id.0 });
            }
            out.insert(
                name,
                TopicMeta {
                    internal: t.is_internal,
                    topic_id,
                    partitions,
                },
            );
        }
        Ok(out)
    }

    /// The id of `topic` as the latest metadata answer naming it gave (no
    /// request): a holder compares it with the id its cursor was made for,
    /// which catches a topic deleted and created again once a fetch error
    /// has made this client read metadata anew.
    pub fn known_topic_id(&self, topic: &str) -> Option<String> {
        lock(&self.topic_ids).get(topic).cloned()
    }

    /// Write to `topic` only while it is the topic with this id (`None`:
    /// any): a produce to a topic deleted and created again since is
    /// refused, by the broker where it takes the id with the records
    /// (Produce v13) and here once metadata shows another id, with
    /// nothing written.
    /// A cached id that is not the expected one is dropped with the cached
    /// leaders, so the next request reads metadata afresh: a warm process
    /// may hold the id of a topic the plan has since replaced.
    pub fn expect_topic_id(&self, topic: &str, id: Option<&str>) {
        match id {
            Some(id) => {
                lock(&self.expected_topic_ids).insert(topic.to_owned(), id.to_owned());
                if lock(&self.topic_ids).get(topic).is_some_and(|known| known != id) {
                    self.forget_topic(topic);
                }
            }
            None => {
                lock(&self.expected_topic_ids).remove(topic);
            }
        }
    }

    /// Forget what metadata said of `topic` (its id) and every cached
    /// leader: the next request reads metadata again.
    pub(super) fn forget_topic(&self, topic: &str) {
        lock(&self.topic_ids).remove(topic);
        self.invalidate_leaders();
    }

    /// Forget cached leaders (after NOT_LEADER and similar).
    pub fn invalidate_leaders(&self) {
        lock(&self.leaders).clear();
    }

    async fn leader_conn_addr(&self, leader: i32) -> Result<String, KafkaError> {
        if let Some(a) = self.broker_addr(leader) {
            return Ok(a);
        }
        self.metadata(Some(&[])).await?;
        self.broker_addr(leader).ok_or_else(|| KafkaError::NoBroker {
            cluster: self.alias.clone(),
            tried: format!("broker id {leader}"),
            last: "not in metadata".into(),
        })
    }

    /// Produce one batch per partition to `leader` with acks=all. Returns
    /// each partition's base offset, or its error.
    pub async fn produce(
        &self,
        leader: i32,
        batches: Vec<(TopicPartition, Bytes)>,
        timeout_ms: i32,
    ) -> Result<HashMap<TopicPartition, Result<i64, KafkaError>>, KafkaError> {
        let addr = self.leader_conn_addr(leader).await?;
        let mut out = HashMap::new();
        let expected = self.expected_ids(batches.iter().map(|(tp, _)| tp.topic.as_str()));
        let mut known = self.known_ids(batches.iter().map(|(tp, _)| tp.topic.as_str()));
        let mut topics: BTreeMap<String, Vec<PartitionProduceData>> = BTreeMap::new();
        for (tp, bytes) in batches {
            if let Some(e) = self.recreated(&tp, expected.get(&tp.topic), known.get(&tp.topic)) {
                // Read again before the next attempt: a stale answer heals.
                // `known` keeps the id it read, so that every partition of
                // the topic in this request is refused alike: before
                // Produce v13 (Kafka 4.1) the others would go out by name,
                // into the topic that replaced the one the cursor was made for.
                self.forget_topic(&tp.topic);
                out.insert(tp, Err(e));
                continue;
            }
            topics
                .entry(tp.topic)
                .or_default()
                .push(PartitionProduceData::default().with_index(tp.partition).with_records(Some(bytes)));
        }
        if topics.is_empty() {
            return Ok(out);
        }
        // Produce v13 names every topic by its id: the expected one, else
        // the one metadata gave.
        let ids_of = |known: &HashMap<String, Uuid>| -> HashMap<String, Uuid> {
            topics
                .keys()
                .filter_map(|t| Some((t.clone(), expected.get(t).or_else(|| known.get(t)).copied()?)))
                .collect()
        };
        let mut ids = ids_of(&known);
        if ids.len() < topics.len() {
            // An id forgotten meanwhile (see `forget_topic`): read it, or a
            // v13 request would name the topic by a nil id.
            let missing: Vec<String> = topics.keys().filter(|t| !ids.contains_key(*t)).cloned().collect();
            if let Err(e) = self.metadata(Some(&missing)).await {
                tracing::debug!(cluster = %self.alias, error = %e, "reading topic ids before a produce");
            }
            known = self.known_ids(topics.keys().map(String::as_str));
            ids = ids_of(&known);
        }
        let names: HashMap<Uuid, String> = ids.iter().map(|(t, id)| (*id, t.clone())).collect();
        let req = |version: i16| {
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(timeout_ms)
                .with_transactional_id(None)
                .with_topic_data(
                    topics
                        .iter()
                        .map(|(t, ps)| {
                            // The broker refuses a write meant for an earlier topic.
                            let id = ids.get(t).copied().filter(|_| version >= 13).unwrap_or_default();
                            TopicProduceData::default()
                                .with_name(topic_name(t))
                                .with_topic_id(id)
                                .with_partition_data(ps.clone())
                        })
                        .collect(),
                )
        };
        let resp = self.send_to_built::<ProduceRequest, _>(&addr, req).await?;
        for t in resp.responses {
            let topic = match names.get(&t.topic_id) {
                Some(name) if t.name.0.is_empty() => name.clone(),
                _ => t.name.0.to_string(),
            };
            for p in t.partition_responses {
                let tp = TopicPartition::new(topic.clone(), p.index);
                let res = match ResponseError::try_from_code(p.error_code) {
                    None => Ok(p.base_offset),
                    Some(error) => {
                        if matches!(
                            error,
                            ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition | ResponseError::UnknownTopicId
                        ) {
                            self.invalidate_leaders();
                        }
                        let mut detail = p.error_message.map(|m| m.to_string()).unwrap_or_default();
                        for re in &p.record_errors {
                            if let Some(m) = &re.batch_index_error_message {
                                detail.push_str(&format!("; record {}: {}", re.batch_index, m.as_str()));
                            }
                        }
                        Err(KafkaError::Broker {
                            cluster: self.alias.clone(),
                            op: "Produce",
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            error,
                            detail,
                        })
                    }
                };
                out.insert(tp, res);
            }
        }
        Ok(out)
    }
}
