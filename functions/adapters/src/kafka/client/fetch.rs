//! Fetch: from one leader, and the answers a quota throttled asked again.

use super::*;

/// How many throttled answers in a row a fetch waits out before it ends
/// with [`KafkaError::Throttled`] (a transient error: the caller asks
/// again later).
const THROTTLED_FETCHES: u32 = 4;

impl KafkaCluster {
    /// Fetch from one leader with the given isolation. Partition-level
    /// errors are returned per partition.
    pub async fn fetch(
        &self,
        leader: i32,
        positions: &[(TopicPartition, i64)],
        partition_max_bytes: i32,
        max_wait_ms: i32,
        isolation: Isolation,
    ) -> Result<HashMap<TopicPartition, Result<FetchedPartition, KafkaError>>, KafkaError> {
        let all = partition_max_bytes.saturating_mul(positions.len().max(1) as i32);
        self.fetch_capped(leader, positions, partition_max_bytes, all, max_wait_ms, isolation)
            .await
    }

    /// [`Self::fetch`], the whole response held to `request_max_bytes`: the
    /// broker fills it in the order of `positions` and leaves the
    /// partitions past the cap without data (they are asked again, earlier
    /// in the order, next time), though it always returns the first batch
    /// of the first partition that has one.
    pub async fn fetch_capped(
        &self,
        leader: i32,
        positions: &[(TopicPartition, i64)],
        partition_max_bytes: i32,
        request_max_bytes: i32,
        max_wait_ms: i32,
        isolation: Isolation,
    ) -> Result<HashMap<TopicPartition, Result<FetchedPartition, KafkaError>>, KafkaError> {
        let addr = self.leader_conn_addr(leader).await?;
        // In the order given: the broker fills its response in request
        // order, and returns a batch larger than `partition_max_bytes` only
        // to the first partition that has data (KIP-74).
        let mut topics: Vec<(&str, Vec<FetchPartition>)> = Vec::new();
        for (tp, offset) in positions {
            let at = match topics.iter().position(|(t, _)| *t == tp.topic) {
                Some(at) => at,
                None => {
                    topics.push((&tp.topic, Vec::new()));
                    topics.len() - 1
                }
            };
            topics[at].1.push(
                FetchPartition::default()
                    .with_partition(tp.partition)
                    .with_fetch_offset(*offset)
                    .with_partition_max_bytes(partition_max_bytes)
                    .with_current_leader_epoch(-1)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1),
            );
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(request_max_bytes.max(partition_max_bytes))
            .with_isolation_level(match isolation {
                Isolation::ReadCommitted => 1,
                Isolation::ReadUncommitted => 0,
            })
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| FetchTopic::default().with_topic(topic_name(t)).with_partitions(ps))
                    .collect(),
            );
        // A throttled answer carries no partition (KIP-219): never "this
        // partition does not exist". The connection waits the throttle
        // out before the fetch goes again (or refuses to send it, see
        // `throttle.rs`).
        let mut times = 0;
        let resp = loop {
            let resp = self.send_to(&addr, &req).await?;
            let Ok(ms @ 1..) = u64::try_from(resp.throttle_time_ms) else {
                break resp;
            };
            if !resp.responses.is_empty() {
                break resp;
            }
            times += 1;
            if times == THROTTLED_FETCHES {
                return Err(KafkaError::Throttled {
                    cluster: self.alias.clone(),
                    broker: addr,
                    client_id: self.client_id(),
                    what: format!("{times} fetches in a row answered without their partitions"),
                    wait_ms: ms,
                });
            }
        };
        if let Some(error) = ResponseError::try_from_code(resp.error_code) {
            return Err(KafkaError::Broker {
                cluster: self.alias.clone(),
                op: "Fetch",
                topic: "*".into(),
                partition: -1,
                error,
                detail: "whole request".into(),
            });
        }
        let mut out = HashMap::new();
        for t in resp.responses {
            for p in t.partitions {
                let tp = TopicPartition::new(t.topic.0.to_string(), p.partition_index);
                let res = match ResponseError::try_from_code(p.error_code) {
                    Some(error) => {
                        if matches!(
                            error,
                            ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition | ResponseError::FencedLeaderEpoch
                        ) {
                            self.invalidate_leaders();
                        }
                        Err(KafkaError::Broker {
                            cluster: self.alias.clone(),
                            op: "Fetch",
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            error,
                            detail: format!("log start offset {}", p.log_start_offset),
                        })
                    }
                    None => Ok(FetchedPartition {
                        high_watermark: p.high_watermark,
                        last_stable_offset: p.last_stable_offset,
                        log_start_offset: p.log_start_offset,
                        aborted: p
                            .aborted_transactions
                            .unwrap_or_default()
                            .iter()
                            .map(|a| (a.producer_id.0, a.first_offset))
                            .collect(),
                        records: p.records.unwrap_or_default(),
                    }),
                };
                out.insert(tp, res);
            }
        }
        Ok(out)
    }
}
