//! The replicator definition: parsed from MSK Replicator's JSON, validated
//! whole before anything is written, and turned into a [`ReplicatorSpec`].

pub mod log_delivery;
pub mod msk;
pub mod wire;

use std::collections::BTreeSet;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

mod validate;

use validate::*;

/// A configuration problem: which file, which field, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {problem}. Fix: {fix}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The file (or input) the problem is in.
    pub file: String,
    /// JSON path of the field, e.g. `[0].TopicReplication.TopicsToReplicate[1]`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    fn new(file: &str, field: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Compression the target batches are written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing, as Kafka writes it).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec id in a record batch's attributes.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Where a partition seen for the first time starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    /// The source's log-start offset.
    Earliest,
    /// The source's end offset when the replicator first sees the partition.
    Latest,
}

/// How target topics are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TopicNaming {
    /// Same name on both clusters.
    Identical,
    /// `<source alias>.<topic>` on the target.
    PrefixedWithSourceClusterAlias,
}

/// Consumer-group offset sync mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GroupSyncMode {
    /// One direction only.
    Legacy,
    /// Both directions, using both flows' mappings.
    Enhanced,
}

/// SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

/// How Ferry authenticates to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterAuth {
    /// No authentication (local development only).
    None,
    /// SASL/SCRAM, credentials in the named secret.
    Scram {
        /// The mechanism.
        mechanism: ScramMechanism,
        /// Secrets Manager ARN with `username` and `password`.
        secret_arn: String,
    },
    /// MSK IAM (SASL OAUTHBEARER with a SigV4 token).
    MskIam,
}

/// A validated cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The id flows name it by: `ApacheKafkaClusterId`, or the MSK ARN.
    pub id: String,
    /// Short alias used in metric dimensions and topic prefixes.
    pub alias: String,
    /// `host:port` bootstrap brokers; empty for an MSK cluster given by
    /// its ARN alone, whose brokers are looked up at run time
    /// ([`ClusterSpec::msk_lookup`]).
    pub bootstrap: Vec<String>,
    /// Authentication.
    pub auth: ClusterAuth,
    /// TLS on; `None` for PLAINTEXT.
    pub tls: Option<TlsSpec>,
    /// `VpcConfig`: where the functions' network interfaces go to reach
    /// it (subnet ids, security group ids), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<VpcSpec>,
}

/// A cluster's `VpcConfig`, its ids checked for form.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VpcSpec {
    /// `subnet-...` ids.
    pub subnet_ids: Vec<String>,
    /// `sg-...` ids.
    pub security_group_ids: Vec<String>,
}

/// Whether `id` is an EC2 id of this prefix: `<prefix>-` and 8 or 17
/// lower-case hex digits.
fn is_ec2_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|h| matches!(h.len(), 8 | 17) && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSpec {
    /// Secret holding the private root CA under `certificate`, if any.
    pub root_ca_secret_arn: Option<String>,
}

/// A validated flow: one source, one target, and what to copy.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// The source cluster.
    pub source: ClusterSpec,
    /// The target cluster.
    pub target: ClusterSpec,
    /// Target compression.
    pub compression: Compression,
    /// Topic include regexes (anchored).
    pub topics_include: Vec<Regex>,
    /// Topic exclude regexes (anchored).
    pub topics_exclude: Vec<Regex>,
    /// Starting position for partitions seen for the first time.
    pub starting_position: StartingPosition,
    /// Target topic naming.
    pub naming: TopicNaming,
    /// Copy topic configurations.
    pub copy_topic_configurations: bool,
    /// Copy topic ACLs.
    pub copy_acls: bool,
    /// Detect new topics on every plan.
    pub detect_new_topics: bool,
    /// Replication factor of created target topics; `None`: the target's default.
    pub target_replication_factor: Option<i16>,
    /// Delete a target topic when its source topic is deleted.
    pub propagate_topic_deletions: bool,
    /// Consumer-group replication, if configured.
    pub groups: Option<GroupSpec>,
}

/// Validated consumer-group settings.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Include regexes.
    pub include: Vec<Regex>,
    /// Exclude regexes.
    pub exclude: Vec<Regex>,
    /// Detect new groups.
    pub detect_new: bool,
    /// Sync offsets.
    pub sync_offsets: bool,
    /// Sync mode.
    pub mode: GroupSyncMode,
    /// Whether the definition names the mode (LEGACY is also the default:
    /// a default LEGACY becomes ENHANCED where the topics come back under
    /// the same names, a named one is refused there).
    pub mode_explicit: bool,
}

impl FlowSpec {
    /// Stable identifier of the flow, used in state keys: `<source>><target>`.
    pub fn id(&self) -> String {
        format!("{}>{}", self.source.alias, self.target.alias)
    }

    /// The topic names that TopicsToReplicate spells out literally (no
    /// pattern syntax but escaped dots), and that no exclusion removes.
    pub fn literal_topics(&self) -> Vec<String> {
        self.topics_include
            .iter()
            .filter_map(|r| literal_name(as_written(r)))
            .filter(|t| self.selects_topic(t))
            .collect()
    }

    /// Whether a source topic is selected by this flow's filters.
    /// Internal topics (`__` prefix) are never selected.
    pub fn selects_topic(&self, topic: &str) -> bool {
        !topic.starts_with("__")
            && self.topics_include.iter().any(|r| r.is_match(topic))
            && !self.topics_exclude.iter().any(|r| r.is_match(topic))
    }

    /// The target topic name for a source topic.
    pub fn target_topic(&self, source_topic: &str) -> String {
        match self.naming {
            TopicNaming::Identical => source_topic.to_owned(),
            TopicNaming::PrefixedWithSourceClusterAlias => {
                format!("{}.{}", self.source.alias, source_topic)
            }
        }
    }
}

/// A whole validated replicator.
#[derive(Debug, Clone)]
pub struct ReplicatorSpec {
    /// Replicator name (state keys, metrics).
    pub name: String,
    /// Its flows, in file order.
    pub flows: Vec<FlowSpec>,
}

impl ReplicatorSpec {
    /// The flow replicating `flow`'s topics back under the same names, if any
    /// (bidirectional replication with IDENTICAL names).
    pub fn opposite(&self, flow: &FlowSpec) -> Option<&FlowSpec> {
        self.flows.iter().find(|o| is_opposite(flow, o))
    }

    /// Whether `topic` may itself be a replica made by prefixed naming
    /// (`<cluster alias>.<topic>`): such topics are never replicated again,
    /// or flows would copy each other's copies forever. Every alias of a
    /// PREFIXED flow's clusters counts, on either cluster: the flow back
    /// may be another replicator's, which this definition does not show,
    /// and an IDENTICAL flow back carries a copy `source.x` into the
    /// cluster aliased `source` under that same name.
    pub fn is_prefixed_replica(&self, topic: &str) -> bool {
        self.replica_prefix(topic).is_some()
    }

    /// The alias whose prefix (`<alias>.`) makes `topic` a possible
    /// replica (see `is_prefixed_replica`).
    pub fn replica_prefix(&self, topic: &str) -> Option<&str> {
        self.flows
            .iter()
            .filter(|f| f.naming == TopicNaming::PrefixedWithSourceClusterAlias)
            .flat_map(|f| [f.source.alias.as_str(), f.target.alias.as_str()])
            .find(|alias| topic.strip_prefix(alias).is_some_and(|rest| rest.starts_with('.')))
    }
}

/// A pattern of TopicsToReplicate or TopicsToExclude as its file wrote it,
/// without the anchors it is compiled in (`^(?:...)$`, see `compile_regexes`).
pub fn as_written(r: &Regex) -> &str {
    r.as_str()
        .strip_prefix("^(?:")
        .and_then(|p| p.strip_suffix(")$"))
        .unwrap_or(r.as_str())
}

impl fmt::Display for ReplicatorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replicator {}", self.name)?;
        for flow in &self.flows {
            write!(f, " [{}]", flow.id())?;
        }
        Ok(())
    }
}

/// Parse and validate both files. `clusters_file` and `info_file` are the
/// names used in error messages.
pub fn load(name: &str, clusters_file: &str, clusters_json: &str, info_file: &str, info_json: &str) -> Result<ReplicatorSpec, ConfigError> {
    validate_name(name)?;
    let clusters: Vec<wire::KafkaCluster> = parse_list(clusters_file, clusters_json, "KafkaClusters")?;
    let infos: Vec<wire::ReplicationInfo> = parse_list(info_file, info_json, "ReplicationInfoList")?;
    let clusters = validate_clusters(clusters_file, &clusters)?;
    if infos.is_empty() {
        return Err(ConfigError::new(
            info_file,
            "(top level)",
            "the list of replication flows is empty",
            "add one ReplicationInfo object naming a source and a target cluster",
        ));
    }
    let mut flows = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, info) in infos.iter().enumerate() {
        let flow = validate_flow(info_file, i, info, &clusters)?;
        if !seen.insert(flow.id()) {
            return Err(ConfigError::new(
                info_file,
                format!("[{i}]"),
                format!("the flow {} is declared twice", flow.id()),
                "declare each source/target pair once",
            ));
        }
        flows.push(flow);
    }
    // Both directions with identical names: group offsets must be
    // translated with both flows' maps (ENHANCED); the flow's own map alone
    // cannot place the records the opposite flow wrote, and would skip them.
    for i in 0..flows.len() {
        let bidirectional = flows.iter().any(|o| is_opposite(&flows[i], o));
        let Some(g) = flows[i].groups.as_mut() else { continue };
        if !bidirectional || g.mode == GroupSyncMode::Enhanced {
            continue;
        }
        let explicit = infos[i]
            .consumer_group_replication
            .as_ref()
            .and_then(|c| c.consumer_group_offset_sync_mode.as_deref())
            .is_some();
        if explicit {
            return Err(ConfigError::new(
                info_file,
                format!("[{i}].ConsumerGroupReplication.ConsumerGroupOffsetSyncMode"),
                format!(
                    "LEGACY cannot translate group offsets exactly when {} is also replicated back with IDENTICAL names: \
                     the flow's own offset map does not know the records the opposite flow wrote",
                    flows[i].id()
                ),
                "use ENHANCED (or leave the field out) for both directions",
            ));
        }
        g.mode = GroupSyncMode::Enhanced;
    }
    let spec = ReplicatorSpec {
        name: name.to_owned(),
        flows,
    };
    // A topic asked for by its name, which no flow would ever copy: named
    // like a copy, it is taken for one (the flows would otherwise copy
    // each other's copies forever), and nothing else would say so. Only a
    // name spelled out (its dots escaped): `source.orders` is a pattern
    // that selects `source-orders` too, which is no copy.
    for (i, flow) in spec.flows.iter().enumerate() {
        for topic in flow.literal_topics() {
            if let Some(alias) = spec.replica_prefix(&topic) {
                return Err(ConfigError::new(
                    info_file,
                    format!("[{i}].TopicReplication.TopicsToReplicate"),
                    format!(
                        "names the topic {topic}, which starts with `{alias}.`, the prefix of copies named \
                         PREFIXED_WITH_SOURCE_CLUSTER_ALIAS between the clusters aliased {alias}: Ferry takes a topic named so for a \
                         copy and never copies it (flows would copy each other's copies forever), so it would not be copied"
                    ),
                    format!(
                        "if {topic} is a copy, leave it out (its records are copied from the topic it copies); if it is an \
                         application's own topic, copy it with a replicator whose flows all use IDENTICAL naming, or give \
                         a self-managed cluster an ApacheKafkaClusterId that no topic name starts with (an MSK cluster's alias is its name)"
                    ),
                ));
            }
        }
    }
    Ok(spec)
}

/// Whether `b` replicates `a`'s topics back under the same names.
fn is_opposite(a: &FlowSpec, b: &FlowSpec) -> bool {
    a.source.id == b.target.id && a.target.id == b.source.id && a.naming == TopicNaming::Identical && b.naming == TopicNaming::Identical
}

fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "--name",
            "ReplicatorName",
            format!("{name:?} is not a valid replicator name"),
            "use 1 to 128 letters, digits and '-' (as MSK Replicator does)",
        ))
    }
}

/// The region of an MSK ARN: `arn:<partition>:kafka:<region>:...`.
pub fn msk_region(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next()? == "arn").then_some(())?;
    parts.next()?;
    (parts.next()? == "kafka").then_some(())?;
    let region = parts.next()?;
    (!region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')).then_some(region)
}

#[cfg(test)]
mod tests;
