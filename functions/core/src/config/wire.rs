//! The replicator definition exactly as `aws kafka create-replicator` takes it
//! (`kafka-clusters.json`, `replication-info.json`), plus the few extensions
//! Ferry documents in docs/src/configuration/. Field names are MSK's PascalCase; the
//! camelCase spelling of the service's own examples is accepted as an alias.
//! Nothing here is validated beyond its shape: see `super::validate`.

use serde::Deserialize;

/// One entry of `kafka-clusters.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaCluster {
    /// An Amazon MSK cluster, named by its ARN.
    #[serde(rename = "AmazonMskCluster", alias = "amazonMskCluster")]
    pub amazon_msk_cluster: Option<AmazonMskCluster>,
    /// A self-managed (or any Kafka-protocol) cluster.
    #[serde(rename = "ApacheKafkaCluster", alias = "apacheKafkaCluster")]
    pub apache_kafka_cluster: Option<ApacheKafkaCluster>,
    /// How Ferry authenticates to this cluster.
    #[serde(rename = "ClientAuthentication", alias = "clientAuthentication")]
    pub client_authentication: Option<ClientAuthentication>,
    /// TLS settings for this cluster.
    #[serde(rename = "EncryptionInTransit", alias = "encryptionInTransit")]
    pub encryption_in_transit: Option<EncryptionInTransit>,
    /// Subnets and security groups the functions use to reach the cluster.
    #[serde(rename = "VpcConfig", alias = "vpcConfig")]
    pub vpc_config: Option<VpcConfig>,
}

/// `AmazonMskCluster`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonMskCluster {
    /// The cluster's ARN.
    #[serde(rename = "MskClusterArn", alias = "mskClusterArn")]
    pub msk_cluster_arn: String,
    /// Ferry extension: the cluster's bootstrap brokers (MSK's IAM listener),
    /// since Ferry does not call the MSK control plane to look them up.
    #[serde(rename = "BootstrapBrokerString", alias = "bootstrapBrokerString")]
    pub bootstrap_broker_string: Option<String>,
}

/// `ApacheKafkaCluster`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApacheKafkaCluster {
    /// The identifier replication-info.json uses to name this cluster.
    #[serde(rename = "ApacheKafkaClusterId", alias = "apacheKafkaClusterId")]
    pub apache_kafka_cluster_id: String,
    /// Comma-separated `host:port` list.
    #[serde(rename = "BootstrapBrokerString", alias = "bootstrapBrokerString")]
    pub bootstrap_broker_string: String,
}

/// `ClientAuthentication`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthentication {
    /// SASL/SCRAM with credentials in Secrets Manager.
    #[serde(rename = "SaslScram", alias = "saslScram")]
    pub sasl_scram: Option<SaslScram>,
}

/// `SaslScram`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslScram {
    /// `SHA256` or `SHA512`.
    #[serde(rename = "Mechanism", alias = "mechanism")]
    pub mechanism: String,
    /// Secret whose JSON has `username` and `password`.
    #[serde(rename = "SecretArn", alias = "secretArn")]
    pub secret_arn: String,
}

/// `EncryptionInTransit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionInTransit {
    /// `TLS`, or Ferry's local-development extension `PLAINTEXT`.
    #[serde(rename = "EncryptionType", alias = "encryptionType")]
    pub encryption_type: String,
    /// Secret holding the PEM root CA (and intermediates) under `certificate`.
    #[serde(rename = "RootCaCertificate", alias = "rootCaCertificate")]
    pub root_ca_certificate: Option<String>,
}

/// `VpcConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcConfig {
    /// Security groups for the functions' network interfaces.
    #[serde(rename = "SecurityGroupIds", alias = "securityGroupIds", default)]
    pub security_group_ids: Vec<String>,
    /// Subnets for the functions' network interfaces.
    #[serde(rename = "SubnetIds", alias = "subnetIds", default)]
    pub subnet_ids: Vec<String>,
}

/// One entry of `replication-info.json`: one flow from a source to a target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationInfo {
    /// Source MSK cluster ARN.
    #[serde(rename = "SourceKafkaClusterArn", alias = "sourceKafkaClusterArn")]
    pub source_kafka_cluster_arn: Option<String>,
    /// Source self-managed cluster id (an `ApacheKafkaClusterId`).
    #[serde(rename = "SourceKafkaClusterId", alias = "sourceKafkaClusterId")]
    pub source_kafka_cluster_id: Option<String>,
    /// Target MSK cluster ARN.
    #[serde(rename = "TargetKafkaClusterArn", alias = "targetKafkaClusterArn")]
    pub target_kafka_cluster_arn: Option<String>,
    /// Ferry extension: a self-managed target, named by `ApacheKafkaClusterId`.
    #[serde(rename = "TargetKafkaClusterId", alias = "targetKafkaClusterId")]
    pub target_kafka_cluster_id: Option<String>,
    /// `NONE | GZIP | SNAPPY | LZ4 | ZSTD`.
    #[serde(rename = "TargetCompressionType", alias = "targetCompressionType")]
    pub target_compression_type: String,
    /// Which topics, and how.
    #[serde(rename = "TopicReplication", alias = "topicReplication")]
    pub topic_replication: TopicReplication,
    /// Which consumer groups, and how.
    #[serde(rename = "ConsumerGroupReplication", alias = "consumerGroupReplication")]
    pub consumer_group_replication: Option<ConsumerGroupReplication>,
}

/// `TopicReplication`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicReplication {
    /// Regexes of topics to replicate (full match).
    #[serde(rename = "TopicsToReplicate", alias = "topicsToReplicate")]
    pub topics_to_replicate: Vec<String>,
    /// Regexes of topics never to replicate (full match).
    #[serde(rename = "TopicsToExclude", alias = "topicsToExclude", default)]
    pub topics_to_exclude: Vec<String>,
    /// Copy non-default topic configurations.
    #[serde(rename = "CopyTopicConfigurations", alias = "copyTopicConfigurations")]
    pub copy_topic_configurations: Option<bool>,
    /// Copy topic ACLs.
    #[serde(rename = "CopyAccessControlListsForTopics", alias = "copyAccessControlListsForTopics")]
    pub copy_access_control_lists_for_topics: Option<bool>,
    /// Pick up topics created after the replicator started.
    #[serde(rename = "DetectAndCopyNewTopics", alias = "detectAndCopyNewTopics")]
    pub detect_and_copy_new_topics: Option<bool>,
    /// Where a partition seen for the first time starts.
    #[serde(rename = "StartingPosition", alias = "startingPosition")]
    pub starting_position: Option<TypeField>,
    /// `IDENTICAL` or `PREFIXED_WITH_SOURCE_CLUSTER_ALIAS`.
    #[serde(rename = "TopicNameConfiguration", alias = "topicNameConfiguration")]
    pub topic_name_configuration: Option<TypeField>,
    /// Ferry extension: replication factor of the topics Ferry creates on
    /// the target (the target's default when absent).
    #[serde(rename = "TargetReplicationFactor", alias = "targetReplicationFactor")]
    pub target_replication_factor: Option<i64>,
    /// Ferry extension: delete a target topic (and Ferry's state for it)
    /// when its source topic is deleted. Off by default.
    #[serde(rename = "PropagateTopicDeletions", alias = "propagateTopicDeletions")]
    pub propagate_topic_deletions: Option<bool>,
}

/// A `{ "Type": "..." }` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeField {
    /// The enum value.
    #[serde(rename = "Type", alias = "type")]
    pub kind: String,
}

/// `ConsumerGroupReplication`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerGroupReplication {
    /// Regexes of groups to replicate.
    #[serde(rename = "ConsumerGroupsToReplicate", alias = "consumerGroupsToReplicate")]
    pub consumer_groups_to_replicate: Vec<String>,
    /// Regexes of groups never to replicate.
    #[serde(rename = "ConsumerGroupsToExclude", alias = "consumerGroupsToExclude", default)]
    pub consumer_groups_to_exclude: Vec<String>,
    /// Pick up groups created after the replicator started.
    #[serde(rename = "DetectAndCopyNewConsumerGroups", alias = "detectAndCopyNewConsumerGroups")]
    pub detect_and_copy_new_consumer_groups: Option<bool>,
    /// Translate and commit group offsets on the target.
    #[serde(rename = "SynchroniseConsumerGroupOffsets", alias = "synchroniseConsumerGroupOffsets")]
    pub synchronise_consumer_group_offsets: Option<bool>,
    /// `LEGACY` or `ENHANCED`.
    #[serde(rename = "ConsumerGroupOffsetSyncMode", alias = "consumerGroupOffsetSyncMode")]
    pub consumer_group_offset_sync_mode: Option<String>,
}
