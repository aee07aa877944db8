//! Consumer groups as an administrator sees them: the cluster id, the groups
//! of every broker, one group's state, its committed offsets, and offset
//! commits made from outside the group (generation -1, no member id), which
//! the broker accepts only while the group has no members.
//!
//! Group requests go to the group's coordinator, found with FindCoordinator
//! and cached per group until the broker says it moved.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use ferry_core::domain::TopicPartition;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::client::{lock, topic_name, KafkaCluster};
use super::error::KafkaError;

/// Attempts of one group operation while the coordinator moves or loads.
const ATTEMPTS: u32 = 10;
/// FindCoordinator key type of a group (`txn.rs` uses 1, a transactional id).
pub(super) const GROUP_KEY_TYPE: i8 = 0;
/// The first OffsetFetch version that takes `require_stable`.
const OFFSET_FETCH_REQUIRE_STABLE: i16 = 7;
/// The first OffsetFetch version that names groups in a `groups` array.
const OFFSET_FETCH_BATCHED: i16 = 8;
/// The first FindCoordinator version that takes a list of keys.
const FIND_COORDINATOR_BATCHED: i16 = 4;

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// "consumer" for consumer groups of either protocol, "" for groups that
    /// only ever committed offsets, other values for Connect and the like.
    pub protocol_type: String,
    /// State ("Stable", "Empty", ...); "" from brokers older than ListGroups v4.
    pub state: String,
    /// "classic", "consumer" (KIP-848), "share", ...; "" from brokers older
    /// than ListGroups v5.
    pub group_type: String,
}

/// One group's state and member count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// State as the coordinator names it; "Dead" for a group that does not exist.
    pub state: String,
    /// Live members.
    pub members: usize,
    /// Who they are: "client id (member id) on host", for an operator's
    /// message.
    pub clients: Vec<String>,
}

impl GroupState {
    /// Whether the group has (or may have) members that commit offsets.
    pub fn is_active(&self) -> bool {
        !(matches!(self.state.as_str(), "Empty" | "Dead") && self.members == 0)
    }
}

/// A member as an operator knows it: its client id, member id and host.
fn member_name(client_id: &str, member_id: &str, host: &str) -> String {
    format!("{client_id} ({member_id}) on {}", host.trim_start_matches('/'))
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: i64,
    /// The committer's metadata string.
    pub metadata: Option<String>,
    /// Leader epoch of the last consumed record, -1 when unknown.
    pub leader_epoch: i32,
}

/// What one attempt of a coordinator operation came to.
pub(super) enum Step<T> {
    Done(T),
    /// The coordinator moved, is loading, or offsets are not yet stable.
    Retry(ResponseError),
}

/// Errors after which the same group request may succeed (on a coordinator
/// found afresh for the first two).
pub(super) fn is_coordinator_retry(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable | ResponseError::CoordinatorLoadInProgress
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 * u64::from(attempt.min(10)))
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

/// FindCoordinator for one key (a group, or a transactional id), shaped
/// for `version`.
fn find_coordinator_request(key_type: i8, key: &str, version: i16) -> FindCoordinatorRequest {
    let req = FindCoordinatorRequest::default().with_key_type(key_type);
    let key = StrBytes::from_string(key.to_owned());
    if version >= FIND_COORDINATOR_BATCHED {
        req.with_coordinator_keys(vec![key])
    } else {
        req.with_key(key)
    }
}

/// OffsetFetch of all topics of one group, shaped for `version`.
fn offset_fetch_all_request(group: &str, version: i16) -> OffsetFetchRequest {
    if version >= OFFSET_FETCH_BATCHED {
        OffsetFetchRequest::default()
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(None)])
            .with_require_stable(true)
    } else {
        // topics = null (all topics) needs v2+, which every broker since 0.10.2 speaks.
        OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None)
            .with_require_stable(version >= OFFSET_FETCH_REQUIRE_STABLE)
    }
}

/// One partition of an OffsetFetch answer, whichever version shaped it.
struct FetchedOffset {
    topic: String,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<StrBytes>,
    error_code: i16,
}

impl KafkaCluster {
    pub(super) fn broker_error(&self, op: &'static str, topic: &str, partition: i32, error: ResponseError, detail: String) -> KafkaError {
        KafkaError::Broker {
            cluster: self.alias().to_owned(),
            op,
            topic: topic.to_owned(),
            partition,
            error,
            detail,
        }
    }

    /// Cluster id and broker addresses, from a Metadata request for no topics.
    async fn cluster_brief(&self) -> Result<(Option<String>, Vec<String>), KafkaError> {
        let req = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(Vec::new()));
        let resp = self.send_any(&req).await?;
        let mut brokers: Vec<String> = resp.brokers.iter().map(|b| format!("{}:{}", b.host.as_str(), b.port)).collect();
        brokers.sort();
        brokers.dedup();
        Ok((resp.cluster_id.map(|c| c.to_string()).filter(|c| !c.is_empty()), brokers))
    }

    /// The cluster id the brokers report, asked once per `KafkaCluster`
    /// (a warm Lambda asks again only after a cold start).
    pub async fn cluster_id(&self) -> Result<String, KafkaError> {
        if let Some(id) = self.cluster_id.get() {
            return Ok(id.clone());
        }
        let (id, _) = self.cluster_brief().await?;
        let id = id.ok_or_else(|| KafkaError::Unsupported {
            broker: self.alias().to_owned(),
            api: "Metadata".into(),
            detail: "no cluster id in the answer (Metadata v2+ carries it)".into(),
        })?;
        Ok(self.cluster_id.get_or_init(|| id).clone())
    }

    /// Every group of every broker (each broker lists the groups it
    /// coordinates), classic and KIP-848 consumer groups alike, by group id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, KafkaError> {
        let (_, brokers) = self.cluster_brief().await?;
        let req = ListGroupsRequest::default();
        let mut merged = BTreeMap::new();
        for addr in &brokers {
            let mut attempt = 0;
            let resp = loop {
                let resp = self.send_to(addr, &req).await?;
                match ResponseError::try_from_code(resp.error_code) {
                    None => break resp,
                    Some(e) if is_coordinator_retry(e) && attempt + 1 < ATTEMPTS => {
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    Some(error) => return Err(self.broker_error("ListGroups", "*", -1, error, format!("broker {addr}"))),
                }
            };
            for g in resp.groups {
                let listing = GroupListing {
                    group_id: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state: g.group_state.to_string(),
                    group_type: g.group_type.to_string(),
                };
                merged.insert(listing.group_id.clone(), listing);
            }
        }
        Ok(merged.into_values().collect())
    }

    /// The address of the coordinator of `key` (a group or a transactional
    /// id, by `key_type`), cached.
    async fn coordinator(&self, key_type: i8, key: &str) -> Result<String, KafkaError> {
        if let Some(addr) = lock(&self.coordinators).get(&(key_type, key.to_owned())) {
            return Ok(addr.clone());
        }
        let what = if key_type == GROUP_KEY_TYPE { "group" } else { "transactional id" };
        let mut attempt = 0;
        loop {
            let resp = self
                .send_any_built::<FindCoordinatorRequest, _>(|version| find_coordinator_request(key_type, key, version))
                .await?;
            // v4+ answers per key, older versions at the top level.
            let (code, message, host, port) = match resp.coordinators.into_iter().next() {
                Some(c) => (c.error_code, c.error_message, c.host, c.port),
                None => (resp.error_code, resp.error_message, resp.host, resp.port),
            };
            match ResponseError::try_from_code(code) {
                None if host.is_empty() => return Err(KafkaError::protocol(self.alias(), "FindCoordinator answered no coordinator")),
                None => {
                    let addr = format!("{}:{port}", host.as_str());
                    lock(&self.coordinators).insert((key_type, key.to_owned()), addr.clone());
                    return Ok(addr);
                }
                Some(ResponseError::CoordinatorNotAvailable | ResponseError::CoordinatorLoadInProgress) if attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Some(error) => {
                    let detail = format!("{what} {key}: {}", message.map(|m| m.to_string()).unwrap_or_default());
                    return Err(self.broker_error("FindCoordinator", "*", -1, error, detail));
                }
            }
        }
    }

    /// Run `attempt` on `group`'s coordinator until it is done, finding the
    /// coordinator again when it moved or its connection broke.
    async fn on_coordinator<T, F, Fut>(&self, group: &str, op: &'static str, attempt: F) -> Result<T, KafkaError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<Step<T>, KafkaError>>,
    {
        self.on_coordinator_of(GROUP_KEY_TYPE, group, op, attempt).await
    }

    /// `on_coordinator` for any kind of coordinator key.
    pub(super) async fn on_coordinator_of<T, F, Fut>(
        &self,
        key_type: i8,
        key: &str,
        op: &'static str,
        mut attempt: F,
    ) -> Result<T, KafkaError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<Step<T>, KafkaError>>,
    {
        let what = if key_type == GROUP_KEY_TYPE { "group" } else { "transactional id" };
        let forget = || {
            lock(&self.coordinators).remove(&(key_type, key.to_owned()));
        };
        let mut tries = 0;
        loop {
            let addr = self.coordinator(key_type, key).await?;
            let err = match attempt(addr).await {
                Ok(Step::Done(v)) => return Ok(v),
                Ok(Step::Retry(error)) => {
                    if matches!(error, ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) {
                        forget();
                    }
                    self.broker_error(op, "*", -1, error, format!("{what} {key}"))
                }
                Err(e) if e.breaks_connection() => {
                    forget();
                    e
                }
                Err(e) => return Err(e),
            };
            tries += 1;
            if tries >= ATTEMPTS {
                return Err(err);
            }
            tracing::debug!(cluster = %self.alias(), key, op, error = %err, "retrying on the coordinator");
            tokio::time::sleep(backoff(tries)).await;
        }
    }

    /// The state and member count of `group`, classic or KIP-848 consumer
    /// group. A group that does not exist is "Dead" with no members.
    pub async fn group_state(&self, group: &str) -> Result<GroupState, KafkaError> {
        // Ok(state) for a classic group; Err(error) when the broker described
        // none (a KIP-848 group, or no group at all).
        let classic: Result<GroupState, Option<KafkaError>> = self
            .on_coordinator(group, "DescribeGroups", |addr| async move {
                let req = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
                let resp = self.send_to(&addr, &req).await?;
                let g = resp
                    .groups
                    .into_iter()
                    .find(|g| g.group_id.0.as_str() == group)
                    .ok_or_else(|| KafkaError::protocol(&addr, format!("DescribeGroups did not describe group {group}")))?;
                Ok(match ResponseError::try_from_code(g.error_code) {
                    Some(e) if is_coordinator_retry(e) => Step::Retry(e),
                    None if g.group_state.as_str() == "Dead" => Step::Done(Err(None)),
                    None => Step::Done(Ok(GroupState {
                        state: g.group_state.to_string(),
                        members: g.members.len(),
                        clients: g
                            .members
                            .iter()
                            .map(|m| member_name(m.client_id.as_str(), m.member_id.as_str(), m.client_host.as_str()))
                            .collect(),
                    })),
                    Some(ResponseError::GroupIdNotFound) => Step::Done(Err(None)),
                    Some(error) => {
                        let detail = format!("group {group}: {}", g.error_message.map(|m| m.to_string()).unwrap_or_default());
                        Step::Done(Err(Some(self.broker_error("DescribeGroups", "*", -1, error, detail))))
                    }
                })
            })
            .await?;
        let classic_error = match classic {
            Ok(state) => return Ok(state),
            Err(e) => e,
        };
        let consumer = self
            .on_coordinator(group, "ConsumerGroupDescribe", |addr| async move {
                let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
                let resp = match self.send_to(&addr, &req).await {
                    Ok(resp) => resp,
                    // A broker without KIP-848 has no such groups.
                    Err(KafkaError::Unsupported { .. }) => return Ok(Step::Done(None)),
                    Err(e) => return Err(e),
                };
                let g = resp
                    .groups
                    .into_iter()
                    .find(|g| g.group_id.0.as_str() == group)
                    .ok_or_else(|| KafkaError::protocol(&addr, format!("ConsumerGroupDescribe did not describe group {group}")))?;
                match ResponseError::try_from_code(g.error_code) {
                    Some(e) if is_coordinator_retry(e) => Ok(Step::Retry(e)),
                    None => Ok(Step::Done(Some(GroupState {
                        state: g.group_state.to_string(),
                        members: g.members.len(),
                        clients: g
                            .members
                            .iter()
                            .map(|m| member_name(m.client_id.as_str(), m.member_id.as_str(), m.client_host.as_str()))
                            .collect(),
                    }))),
                    // Kafka 3.7 to 3.9 list the API but answer it so unless
                    // their new group coordinator is on: no such groups
                    // there either (the groups are classic, described above).
                    Some(ResponseError::GroupIdNotFound | ResponseError::UnsupportedVersion) => Ok(Step::Done(None)),
                    Some(error) => {
                        let detail = format!("group {group}: {}", g.error_message.map(|m| m.to_string()).unwrap_or_default());
                        Err(self.broker_error("ConsumerGroupDescribe", "*", -1, error, detail))
                    }
                }
            })
            .await?;
        match (consumer, classic_error) {
            (Some(state), _) => Ok(state),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(GroupState {
                state: "Dead".into(),
                members: 0,
                clients: Vec::new(),
            }),
        }
    }

    /// The offsets `group` committed, for all its topics, read with
    /// `require_stable` (pending transactional commits are waited out).
    /// Partitions without an offset are left out; a group that does not
    /// exist has none.
    pub async fn committed_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, Committed>, KafkaError> {
        self.on_coordinator(group, "OffsetFetch", |addr| async move {
            let mut version = 0;
            let resp = self
                .send_to_built::<OffsetFetchRequest, _>(&addr, |v| {
                    version = v;
                    offset_fetch_all_request(group, v)
                })
                .await?;
            let (error_code, rows) = if version >= OFFSET_FETCH_BATCHED {
                let g = resp
                    .groups
                    .into_iter()
                    .find(|g| g.group_id.0.as_str() == group)
                    .ok_or_else(|| KafkaError::protocol(&addr, format!("OffsetFetch did not answer for group {group}")))?;
                let rows: Vec<FetchedOffset> = g
                    .topics
                    .into_iter()
                    .flat_map(|t| {
                        let topic = t.name.0.to_string();
                        t.partitions.into_iter().map(move |p| FetchedOffset {
                            topic: topic.clone(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.metadata,
                            error_code: p.error_code,
                        })
                    })
                    .collect();
                (g.error_code, rows)
            } else {
                let rows: Vec<FetchedOffset> = resp
                    .topics
                    .into_iter()
                    .flat_map(|t| {
                        let topic = t.name.0.to_string();
                        t.partitions.into_iter().map(move |p| FetchedOffset {
                            topic: topic.clone(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.metadata,
                            error_code: p.error_code,
                        })
                    })
                    .collect();
                (resp.error_code, rows)
            };
            match ResponseError::try_from_code(error_code) {
                None => {}
                Some(e) if is_coordinator_retry(e) || e == ResponseError::UnstableOffsetCommit => return Ok(Step::Retry(e)),
                Some(ResponseError::GroupIdNotFound) => return Ok(Step::Done(BTreeMap::new())),
                Some(error) => return Err(self.broker_error("OffsetFetch", "*", -1, error, format!("group {group}"))),
            }
            let mut out = BTreeMap::new();
            for row in rows {
                match ResponseError::try_from_code(row.error_code) {
                    None => {}
                    Some(e) if is_coordinator_retry(e) || e == ResponseError::UnstableOffsetCommit => return Ok(Step::Retry(e)),
                    Some(error) => {
                        return Err(self.broker_error("OffsetFetch", &row.topic, row.partition, error, format!("group {group}")));
                    }
                }
                if row.offset < 0 {
                    continue;
                }
                out.insert(
                    TopicPartition::new(row.topic, row.partition),
                    Committed {
                        offset: row.offset,
                        metadata: row.metadata.map(|m| m.to_string()),
                        leader_epoch: row.leader_epoch,
                    },
                );
            }
            Ok(Step::Done(out))
        })
        .await
    }

    /// Commit `offsets` for `group` from outside it (generation -1, no
    /// member id), metadata and leader epochs included. The broker refuses
    /// this per partition while the group has members; those refusals come
    /// back as errors for which `KafkaError::is_group_active_error` holds.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, Committed>,
    ) -> Result<BTreeMap<TopicPartition, Result<(), KafkaError>>, KafkaError> {
        if offsets.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, c) in offsets {
            topics.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(c.offset)
                    .with_committed_leader_epoch(c.leader_epoch)
                    .with_committed_metadata(c.metadata.clone().map(StrBytes::from_string)),
            );
        }
        // Every field below means the same at every version up to 9:
        // retention_time_ms is sent only up to v4, leader epochs from v6.
        let req = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_group_instance_id(None)
            .with_retention_time_ms(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| OffsetCommitRequestTopic::default().with_name(topic_name(t)).with_partitions(ps))
                    .collect(),
            );
        let req = &req;
        self.on_coordinator(group, "OffsetCommit", |addr| async move {
            let resp = self.send_to(&addr, req).await?;
            let mut out = BTreeMap::new();
            for t in resp.topics {
                let topic = t.name.0.to_string();
                for p in t.partitions {
                    let res = match ResponseError::try_from_code(p.error_code) {
                        None => Ok(()),
                        Some(e) if is_coordinator_retry(e) => return Ok(Step::Retry(e)),
                        Some(error) => Err(self.broker_error("OffsetCommit", &topic, p.partition_index, error, format!("group {group}"))),
                    };
                    out.insert(TopicPartition::new(topic.clone(), p.partition_index), res);
                }
            }
            for tp in offsets.keys() {
                out.entry(tp.clone())
                    .or_insert_with(|| Err(KafkaError::protocol(&addr, format!("OffsetCommit did not answer for {tp}"))));
            }
            Ok(Step::Done(out))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::{FindCoordinatorRequest, OffsetFetchRequest};
    use kafka_protocol::protocol::{Encodable, Message};

    use super::*;

    /// Each version-shaped request encodes at every version the crate knows.
    #[test]
    fn version_shaped_requests_encode_at_every_version() {
        for v in FindCoordinatorRequest::VERSIONS.min..=FindCoordinatorRequest::VERSIONS.max {
            let mut buf = BytesMut::new();
            find_coordinator_request(GROUP_KEY_TYPE, "g", v)
                .encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("FindCoordinator v{v}: {e}"));
        }
        for v in OffsetFetchRequest::VERSIONS.min.max(2)..=OffsetFetchRequest::VERSIONS.max {
            let mut buf = BytesMut::new();
            offset_fetch_all_request("g", v)
                .encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("OffsetFetch v{v}: {e}"));
        }
    }

    #[test]
    fn active_unless_empty_or_dead_without_members() {
        let state = |s: &str, members| GroupState {
            state: s.into(),
            members,
            clients: Vec::new(),
        };
        assert!(state("Stable", 1).is_active());
        assert!(state("PreparingRebalance", 0).is_active());
        assert!(!state("Empty", 0).is_active());
        assert!(!state("Dead", 0).is_active());
    }
}
