//! Routing by partition leader: each partition's leader (from the cache
//! `metadata` fills), and fetch and produce across many partitions, one
//! request per leader (all at once), each partition's own result handed
//! back in the order asked. Any leader whose request breaks its connection,
//! or that the cluster no longer has, clears the cached leaders, so the
//! next call looks them up again (a leader that moved).

use super::*;

/// The longest [`KafkaCluster::fetch_partition`] waits for quotas in all.
pub const READ_THROTTLE_MAX: Duration = Duration::from_secs(30);

impl KafkaCluster {
    /// The leader of each partition, from cache, refreshing metadata once
    /// for any that are missing.
    pub(super) async fn leaders_of(&self, tps: &[TopicPartition]) -> Result<HashMap<TopicPartition, i32>, KafkaError> {
        let lookup = |tps: &[TopicPartition]| -> (HashMap<TopicPartition, i32>, Vec<TopicPartition>) {
            let leaders = lock(&self.leaders);
            let mut found = HashMap::new();
            let mut missing = Vec::new();
            for tp in tps {
                match leaders.get(&(tp.topic.clone(), tp.partition)) {
                    Some(&l) if l >= 0 => {
                        found.insert(tp.clone(), l);
                    }
                    _ => missing.push(tp.clone()),
                }
            }
            (found, missing)
        };
        let (mut found, missing) = lookup(tps);
        if missing.is_empty() {
            return Ok(found);
        }
        let mut topics: Vec<String> = missing.iter().map(|tp| tp.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        self.metadata(Some(&topics)).await?;
        let (again, still) = lookup(&missing);
        found.extend(again);
        if let Some(tp) = still.first() {
            if lock(&self.leaders).contains_key(&(tp.topic.clone(), tp.partition)) {
                // There, without a leader for now (an election under way, or
                // every replica in its ISR down): passing, never "missing".
                return Err(KafkaError::Broker {
                    cluster: self.alias.clone(),
                    op: "Metadata",
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    error: ResponseError::LeaderNotAvailable,
                    detail: "the partition has no leader now".into(),
                });
            }
            return Err(KafkaError::UnknownPartition {
                cluster: self.alias.clone(),
                topic: tp.topic.clone(),
                partition: tp.partition,
            });
        }
        Ok(found)
    }

    /// The leader broker id of each partition.
    pub async fn leaders(&self, tps: &[TopicPartition]) -> Result<HashMap<TopicPartition, i32>, KafkaError> {
        self.leaders_of(tps).await
    }

    /// Fetch `positions` (partition, offset) from their leaders, one
    /// request per leader at once, each of at most `request_max_bytes`
    /// with at most `partition_max_bytes` per partition; each partition's
    /// result in the order of `positions`. A request that fails fails the
    /// call (and clears the cached leaders when it broke the connection).
    pub async fn fetch_across(
        &self,
        positions: &[(TopicPartition, i64)],
        (partition_max_bytes, request_max_bytes): (i32, i32),
        max_wait_ms: i32,
        isolation: Isolation,
    ) -> Result<Vec<Result<FetchedPartition, KafkaError>>, KafkaError> {
        self.across_leaders(positions, |leader, mine: Vec<(TopicPartition, i64)>| async move {
            self.fetch_capped(leader, &mine, partition_max_bytes, request_max_bytes, max_wait_ms, isolation)
                .await
        })
        .await
    }

    /// Produce one batch to each partition of `batches` through its leader,
    /// one request per leader at once; each partition's result (its base
    /// offset) in the order of `batches`. Failures as [`Self::fetch_across`].
    pub async fn produce_across(
        &self,
        batches: &[(TopicPartition, Bytes)],
        timeout_ms: i32,
    ) -> Result<Vec<Result<i64, KafkaError>>, KafkaError> {
        self.across_leaders(batches, |leader, mine: Vec<(TopicPartition, Bytes)>| async move {
            self.produce(leader, mine, timeout_ms).await
        })
        .await
    }

    /// One partition's records from `pos`, without waiting: at least one
    /// batch whenever the partition's end (its high watermark, or its last
    /// stable offset read committed) is past `pos`; an answer without one
    /// there is [`KafkaError::NoRecordsBelowEnd`], never the end of the log.
    /// A quota's throttle is waited out, up to [`READ_THROTTLE_MAX`] in all:
    /// the reads that go through a log chunk by chunk (a check of the
    /// target, a takeover's reconcile) then go at the quota's pace instead
    /// of stopping at the first throttle longer than a request waits.
    pub async fn fetch_partition(
        &self,
        tp: &TopicPartition,
        pos: i64,
        max_bytes: i32,
        isolation: Isolation,
    ) -> Result<FetchedPartition, KafkaError> {
        let mut waited = Duration::ZERO;
        loop {
            match self.fetch_partition_once(tp, pos, max_bytes, isolation).await {
                Err(KafkaError::Throttled { wait_ms, .. }) if waited < READ_THROTTLE_MAX => {
                    let wait = Duration::from_millis(wait_ms).min(READ_THROTTLE_MAX - waited);
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
                res => return res,
            }
        }
    }

    async fn fetch_partition_once(
        &self,
        tp: &TopicPartition,
        pos: i64,
        max_bytes: i32,
        isolation: Isolation,
    ) -> Result<FetchedPartition, KafkaError> {
        let leader = self.leaders_of(std::slice::from_ref(tp)).await?[tp];
        let mut res = self.fetch(leader, &[(tp.clone(), pos)], max_bytes, 0, isolation).await?;
        let f = res.remove(tp).unwrap_or_else(|| Err(self.unknown_partition(tp)))?;
        let end = match isolation {
            Isolation::ReadCommitted => f.last_stable_offset,
            Isolation::ReadUncommitted => f.high_watermark,
        };
        if f.records.is_empty() && pos < end {
            return Err(KafkaError::NoRecordsBelowEnd {
                cluster: self.alias.clone(),
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: pos,
                end,
            });
        }
        Ok(f)
    }

    /// `items` grouped by their partition's leader, `call` once per leader
    /// (all at once), and each item's result in the order of `items`.
    async fn across_leaders<I, T, F, Fut>(&self, items: &[(TopicPartition, I)], call: F) -> Result<Vec<Result<T, KafkaError>>, KafkaError>
    where
        I: Clone,
        F: Fn(i32, Vec<(TopicPartition, I)>) -> Fut,
        Fut: std::future::Future<Output = Result<HashMap<TopicPartition, Result<T, KafkaError>>, KafkaError>>,
    {
        let tps: Vec<TopicPartition> = items.iter().map(|(tp, _)| tp.clone()).collect();
        let leaders = self.leaders_of(&tps).await?;
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, I)>> = BTreeMap::new();
        for (tp, item) in items {
            by_leader.entry(leaders[tp]).or_default().push((tp.clone(), item.clone()));
        }
        let answers = futures::future::join_all(by_leader.into_iter().map(|(leader, mine)| call(leader, mine))).await;
        let mut found: HashMap<TopicPartition, Result<T, KafkaError>> = HashMap::with_capacity(items.len());
        let mut failed = None;
        for answer in answers {
            match answer {
                Ok(map) => found.extend(map),
                Err(e) => {
                    // Any leader whose connection broke, or that the
                    // cluster no longer has, may have moved: every cached
                    // leader is looked up again next time.
                    if e.breaks_connection() || matches!(e, KafkaError::NoBroker { .. }) {
                        self.invalidate_leaders();
                    }
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(tps
            .iter()
            .map(|tp| found.remove(tp).unwrap_or_else(|| Err(self.unknown_partition(tp))))
            .collect())
    }

    /// A partition a response or a metadata answer left out.
    pub fn unknown_partition(&self, tp: &TopicPartition) -> KafkaError {
        KafkaError::UnknownPartition {
            cluster: self.alias.clone(),
            topic: tp.topic.clone(),
            partition: tp.partition,
        }
    }
}
