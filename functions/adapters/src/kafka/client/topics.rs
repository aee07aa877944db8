//! Topics: creation, deletion, partitions and configurations (the admin
//! requests, sent to the controller or any broker).

use super::*;

impl KafkaCluster {
    /// Create topics (name, partitions) with the cluster's default
    /// replication factor. Topics that already exist are not an error.
    pub async fn create_topics(&self, topics: &[(String, i32)]) -> Result<(), KafkaError> {
        let with_configs: Vec<(String, i32, BTreeMap<String, String>)> =
            topics.iter().map(|(t, n)| (t.clone(), *n, BTreeMap::new())).collect();
        self.create_topics_with_configs(&with_configs, None).await
    }

    /// Create topics (name, partitions, configuration overrides) with
    /// `replication_factor`, or the cluster's default when `None`. Existing
    /// topics are not an error.
    pub async fn create_topics_with_configs(
        &self,
        topics: &[(String, i32, BTreeMap<String, String>)],
        replication_factor: Option<i16>,
    ) -> Result<(), KafkaError> {
        match self.send_create_topics(topics, replication_factor, false).await?.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether an answer of this cluster that knows none of several topics
    /// it was asked for can be believed: it lists some topic (an internal
    /// one counts). A broker just back from a restart answers "unknown
    /// topic" for every topic, listing none, until it has the cluster's
    /// metadata.
    pub async fn knows_its_topics(&self) -> Result<bool, KafkaError> {
        Ok(!self.metadata(None).await?.is_empty())
    }

    /// Ask the cluster whether it would create these topics (CreateTopics
    /// with validateOnly: its checks of names, partitions, replication
    /// factor, configurations and creation policy), creating none. Returns
    /// each topic it would refuse, with why: a topic Ferry may not create
    /// too (the broker authorizes a validate-only request as it would the
    /// creation). An error that is not the topic's own (a broker away)
    /// fails the call.
    pub async fn topics_refused_creation(
        &self,
        topics: &[(String, i32, BTreeMap<String, String>)],
        replication_factor: Option<i16>,
    ) -> Result<BTreeMap<String, KafkaError>, KafkaError> {
        let mut refused = BTreeMap::new();
        for (topic, e) in self.send_create_topics(topics, replication_factor, true).await? {
            match &e {
                KafkaError::Broker {
                    error:
                        ResponseError::InvalidTopicException
                        | ResponseError::InvalidPartitions
                        | ResponseError::InvalidReplicationFactor
                        | ResponseError::InvalidReplicaAssignment
                        | ResponseError::InvalidConfig
                        | ResponseError::PolicyViolation
                        | ResponseError::TopicAuthorizationFailed
                        | ResponseError::ClusterAuthorizationFailed,
                    ..
                } => {
                    refused.insert(topic, e);
                }
                _ => return Err(e),
            }
        }
        Ok(refused)
    }

    /// One CreateTopics request; each topic's error but TopicAlreadyExists.
    async fn send_create_topics(
        &self,
        topics: &[(String, i32, BTreeMap<String, String>)],
        replication_factor: Option<i16>,
        validate_only: bool,
    ) -> Result<Vec<(String, KafkaError)>, KafkaError> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only)
            .with_topics(
                topics
                    .iter()
                    .map(|(name, n, configs)| {
                        let configs = configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(k.clone()))
                                    .with_value(Some(StrBytes::from_string(v.clone())))
                            })
                            .collect();
                        CreatableTopic::default()
                            .with_name(topic_name(name))
                            .with_num_partitions(*n)
                            .with_replication_factor(replication_factor.unwrap_or(-1))
                            .with_configs(configs)
                    })
                    .collect(),
            );
        // CreateTopics must reach the controller; any broker forwards it under KRaft.
        let resp = self.send_any(&req).await?;
        Ok(resp
            .topics
            .into_iter()
            .filter_map(|t| {
                let error = ResponseError::try_from_code(t.error_code).filter(|e| *e != ResponseError::TopicAlreadyExists)?;
                let topic = t.name.0.to_string();
                Some((
                    topic.clone(),
                    KafkaError::Broker {
                        cluster: self.alias.clone(),
                        op: "CreateTopics",
                        topic,
                        partition: -1,
                        error,
                        detail: t.error_message.map(|m| m.to_string()).unwrap_or_default(),
                    },
                ))
            })
            .collect())
    }

    /// Delete topics. Topics already gone are not an error.
    pub async fn delete_topics(&self, topics: &[String]) -> Result<(), KafkaError> {
        if topics.is_empty() {
            return Ok(());
        }
        // Names (up to v5, the version Ferry sends), not topic ids.
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topic_names(topics.iter().map(|t| topic_name(t)).collect());
        let resp = self.send_any(&req).await?;
        for r in resp.responses {
            match ResponseError::try_from_code(r.error_code) {
                None | Some(ResponseError::UnknownTopicOrPartition) => {}
                Some(error) => {
                    return Err(KafkaError::Broker {
                        cluster: self.alias.clone(),
                        op: "DeleteTopics",
                        topic: r.name.map(|n| n.0.to_string()).unwrap_or_default(),
                        partition: -1,
                        error,
                        detail: r.error_message.map(|m| m.to_string()).unwrap_or_default(),
                    })
                }
            }
        }
        self.invalidate_leaders();
        Ok(())
    }

    /// The configuration of each topic.
    pub async fn topic_configs(&self, topics: &[String]) -> Result<HashMap<String, TopicConfig>, KafkaError> {
        let mut out = HashMap::new();
        if topics.is_empty() {
            return Ok(out);
        }
        let req = DescribeConfigsRequest::default().with_resources(
            topics
                .iter()
                .map(|t| {
                    DescribeConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(StrBytes::from_string(t.clone()))
                })
                .collect(),
        );
        let resp = self.send_any(&req).await?;
        for r in resp.results {
            let topic = r.resource_name.to_string();
            if let Some(error) = ResponseError::try_from_code(r.error_code) {
                return Err(KafkaError::Broker {
                    cluster: self.alias.clone(),
                    op: "DescribeConfigs",
                    topic,
                    partition: -1,
                    error,
                    detail: r.error_message.map(|m| m.to_string()).unwrap_or_default(),
                });
            }
            let mut cfg = TopicConfig::default();
            for c in r.configs {
                let Some(value) = c.value.filter(|_| !c.is_sensitive) else {
                    continue;
                };
                if c.config_source == DYNAMIC_TOPIC_CONFIG {
                    cfg.overrides.insert(c.name.to_string(), value.to_string());
                }
                cfg.effective.insert(c.name.to_string(), value.to_string());
            }
            out.insert(topic, cfg);
        }
        Ok(out)
    }

    /// Grow topics to the given partition counts.
    pub async fn create_partitions(&self, topics: &[(String, i32)]) -> Result<(), KafkaError> {
        if topics.is_empty() {
            return Ok(());
        }
        let req = CreatePartitionsRequest::default().with_timeout_ms(30_000).with_topics(
            topics
                .iter()
                .map(|(t, n)| {
                    CreatePartitionsTopic::default()
                        .with_name(topic_name(t))
                        .with_count(*n)
                        .with_assignments(None)
                })
                .collect(),
        );
        let resp = self.send_any(&req).await?;
        for r in resp.results {
            if let Some(error) = ResponseError::try_from_code(r.error_code) {
                return Err(KafkaError::Broker {
                    cluster: self.alias.clone(),
                    op: "CreatePartitions",
                    topic: r.name.0.to_string(),
                    partition: -1,
                    error,
                    detail: r.error_message.map(|m| m.to_string()).unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    /// Set and delete topic configuration overrides.
    pub async fn alter_topic_configs(&self, topic: &str, set: &BTreeMap<String, String>, delete: &[String]) -> Result<(), KafkaError> {
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        configs.extend(delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1)
        }));
        if configs.is_empty() {
            return Ok(());
        }
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configs(configs)]);
        let resp = self.send_any(&req).await?;
        for r in resp.responses {
            if let Some(error) = ResponseError::try_from_code(r.error_code) {
                return Err(KafkaError::Broker {
                    cluster: self.alias.clone(),
                    op: "IncrementalAlterConfigs",
                    topic: topic.to_owned(),
                    partition: -1,
                    error,
                    detail: r.error_message.map(|m| m.to_string()).unwrap_or_default(),
                });
            }
        }
        Ok(())
    }
}

impl KafkaCluster {
    /// The expected id of each of `topics` that has one (see
    /// `expect_topic_id`).
    pub(super) fn expected_ids<'a>(&self, topics: impl Iterator<Item = &'a str>) -> HashMap<String, Uuid> {
        let expected = lock(&self.expected_topic_ids);
        topics
            .filter_map(|t| {
                let id = expected.get(t)?.parse::<Uuid>().ok()?;
                Some((t.to_owned(), id))
            })
            .collect()
    }

    /// The id metadata last gave each of `topics` that has one.
    pub(super) fn known_ids<'a>(&self, topics: impl Iterator<Item = &'a str>) -> HashMap<String, Uuid> {
        let known = lock(&self.topic_ids);
        topics
            .filter_map(|t| Some((t.to_owned(), known.get(t)?.parse::<Uuid>().ok()?)))
            .collect()
    }

    /// The refusal of a write to `tp` when metadata shows its topic (`now`:
    /// the id it last gave) is no longer the one with the `expected` id:
    /// deleted, and perhaps created again, since Ferry began writing it.
    pub(super) fn recreated(&self, tp: &TopicPartition, expected: Option<&Uuid>, now: Option<&Uuid>) -> Option<KafkaError> {
        let (expected, now) = (expected?, now?);
        (now != expected).then(|| KafkaError::Broker {
            cluster: self.alias.clone(),
            op: "Produce",
            topic: tp.topic.clone(),
            partition: tp.partition,
            error: ResponseError::InconsistentTopicId,
            detail: format!(
                "the latest metadata gives the topic id {now}, and Ferry's cursor was made for {expected}: the topic was \
                 deleted and perhaps created again since Ferry began writing it. Nothing was written; metadata is read \
                 again before the next attempt, and if the topic was replaced the next plan starts the partition again"
            ),
        })
    }
}
