//! Offsets: a partition's start, end and last stable offsets, with their
//! leader epochs, and where an epoch ends (OffsetForLeaderEpoch).

use super::*;

impl KafkaCluster {
    /// Offsets of `tps` at `spec`. Under `read_committed`, Latest is the
    /// last stable offset. A leader that moved or is not elected yet (a
    /// topic just created) is looked up again for about 15 s before the
    /// error is returned.
    pub async fn list_offsets(
        &self,
        tps: &[TopicPartition],
        spec: OffsetSpec,
        read_committed: bool,
    ) -> Result<HashMap<TopicPartition, i64>, KafkaError> {
        let found = self.list_offsets_with_epochs(tps, spec, read_committed).await?;
        Ok(found.into_iter().map(|(tp, (offset, _))| (tp, offset)).collect())
    }

    /// [`Self::list_offsets`], each offset with the leader epoch the
    /// leader answers with (for `Latest`, its current epoch; -1 when it
    /// gives none).
    pub async fn list_offsets_with_epochs(
        &self,
        tps: &[TopicPartition],
        spec: OffsetSpec,
        read_committed: bool,
    ) -> Result<HashMap<TopicPartition, (i64, i32)>, KafkaError> {
        // About 15 s in all: a broker that was just asked for hundreds of
        // partitions takes a while to lead them all.
        let mut attempt = 0u64;
        loop {
            match self.list_offsets_once(tps, spec, read_committed).await {
                Err(e) if e.is_transient() && attempt < 20 => {
                    // A throttled broker still leads what it led.
                    if !e.is_throttled() {
                        self.invalidate_leaders();
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis((100 * attempt).min(1000))).await;
                }
                res => return res,
            }
        }
    }

    async fn list_offsets_once(
        &self,
        tps: &[TopicPartition],
        spec: OffsetSpec,
        read_committed: bool,
    ) -> Result<HashMap<TopicPartition, (i64, i32)>, KafkaError> {
        let leaders = self.leaders_of(tps).await?;
        let mut by_leader: BTreeMap<i32, Vec<&TopicPartition>> = BTreeMap::new();
        for tp in tps {
            by_leader.entry(leaders[tp]).or_default().push(tp);
        }
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms.max(0),
        };
        let mut out = HashMap::new();
        for (leader, tps) in by_leader {
            let addr = self.leader_conn_addr(leader).await?;
            let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
            for tp in &tps {
                topics.entry(&tp.topic).or_default().push(
                    ListOffsetsPartition::default()
                        .with_partition_index(tp.partition)
                        .with_timestamp(timestamp)
                        .with_current_leader_epoch(-1),
                );
            }
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(i8::from(read_committed))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| ListOffsetsTopic::default().with_name(topic_name(t)).with_partitions(ps))
                        .collect(),
                );
            let resp = self.send_to(&addr, &req).await?;
            for t in resp.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    if let Some(error) = ResponseError::try_from_code(p.error_code) {
                        self.invalidate_leaders();
                        return Err(KafkaError::Broker {
                            cluster: self.alias.clone(),
                            op: "ListOffsets",
                            topic: tp.topic,
                            partition: tp.partition,
                            error,
                            detail: String::new(),
                        });
                    }
                    out.insert(tp, (p.offset, p.leader_epoch));
                }
            }
        }
        Ok(out)
    }

    /// Where leader epoch `epoch` ends in `tp`'s log, as its leader says
    /// (OffsetForLeaderEpoch, as a consumer asks it: replica id -1). A
    /// leader that moved or is not known yet, or that has not caught up
    /// with the epoch (UNKNOWN_LEADER_EPOCH, FENCED_LEADER_EPOCH), is
    /// looked up again for about 15 s before the error is returned.
    pub async fn offset_for_leader_epoch(&self, tp: &TopicPartition, epoch: i32) -> Result<EpochEnd, KafkaError> {
        let mut attempt = 0u64;
        loop {
            match self.offset_for_leader_epoch_once(tp, epoch).await {
                Err(e) if e.is_transient() && attempt < 20 => {
                    if !e.is_throttled() {
                        self.invalidate_leaders();
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis((100 * attempt).min(1000))).await;
                }
                res => return res,
            }
        }
    }

    async fn offset_for_leader_epoch_once(&self, tp: &TopicPartition, epoch: i32) -> Result<EpochEnd, KafkaError> {
        let leader = self.leaders_of(std::slice::from_ref(tp)).await?[tp];
        let addr = self.leader_conn_addr(leader).await?;
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic_name(&tp.topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(tp.partition)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(epoch)])]);
        let resp = self.send_to(&addr, &req).await?;
        let found = resp
            .topics
            .iter()
            .filter(|t| t.topic.0.as_str() == tp.topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition == tp.partition);
        let Some(p) = found else {
            return Err(KafkaError::UnknownPartition {
                cluster: self.alias.clone(),
                topic: tp.topic.clone(),
                partition: tp.partition,
            });
        };
        if let Some(error) = ResponseError::try_from_code(p.error_code) {
            self.invalidate_leaders();
            return Err(KafkaError::Broker {
                cluster: self.alias.clone(),
                op: "OffsetForLeaderEpoch",
                topic: tp.topic.clone(),
                partition: tp.partition,
                error,
                detail: format!("asking where leader epoch {epoch} ends"),
            });
        }
        Ok(EpochEnd {
            leader_epoch: p.leader_epoch,
            end_offset: p.end_offset,
        })
    }
}
