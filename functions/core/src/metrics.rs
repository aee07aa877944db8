//! Metrics, named and dimensioned as MSK Replicator names them, and their
//! CloudWatch embedded-metric-format (EMF) rendering: one JSON document per
//! log line, which CloudWatch Logs turns into metrics with no API call.
//!
//! The same data points go to CloudWatch `PutMetricData` when the CLI
//! publishes them (see the engine's `report` module).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::domain::{ReplicateOutput, StopReason};

/// The CloudWatch namespace Ferry publishes to.
pub const NAMESPACE: &str = "Ferry";

/// Dimension names, as MSK Replicator spells them.
pub mod dim {
    /// The replicator's name.
    pub const REPLICATOR: &str = "ReplicatorName";
    /// A source topic.
    pub const TOPIC: &str = "Topic";
    /// A cluster's alias in the replicator definition.
    pub const CLUSTER: &str = "ClusterAlias";
    /// A consumer group id.
    pub const GROUP: &str = "ConsumerGroup";
}

/// Metric names. docs/src/operations/metrics.md lists each with its meaning.
pub mod name {
    /// Records on the source not yet replicated (per topic: the sum over its partitions).
    pub const MESSAGE_LAG: &str = "MessageLag";
    /// How long the newest replicated record waited, or the oldest unreplicated one is waiting (ms).
    pub const REPLICATION_LATENCY: &str = "ReplicationLatency";
    /// Records replicated per second.
    pub const THROUGHPUT: &str = "ReplicatorThroughput";
    /// Bytes replicated per second.
    pub const BYTES_IN_PER_SEC: &str = "ReplicatorBytesInPerSec";
    /// Partitions stopped by an error (0 when healthy).
    pub const REPLICATOR_FAILURE: &str = "ReplicatorFailure";
    /// Partitions whose replication failed in this invocation.
    pub const REPLICATION_FAILURES: &str = "ReplicationFailures";
    /// 1 when the cluster answered, 0 when it did not.
    pub const PING: &str = "KafkaClusterPingSuccessCount";
    /// Consumer groups on a cluster that the replicator syncs (matching its filters).
    pub const GROUP_COUNT: &str = "ConsumerGroupCount";
    /// Group partitions whose last offset sync failed.
    pub const GROUP_SYNC_FAILURE: &str = "ConsumerGroupOffsetSyncFailure";
    /// Failures to authenticate or authorise against a cluster.
    pub const AUTH_ERROR: &str = "AuthError";
    /// Time the brokers throttled this replicator (ms), per invocation.
    pub const THROTTLE_TIME: &str = "ThrottleTime";
    /// A group's lag summed over its partitions, on one cluster.
    pub const SUM_OFFSET_LAG: &str = "SumOffsetLag";
    /// Bytes not sent back to their origin by loop prevention.
    pub const FILTERED_BYTES: &str = "FilteredBytes";
    /// Age of the oldest group-offset sync (seconds).
    pub const OFFSET_SYNC_AGE: &str = "OffsetSyncAge";
    /// Records deleted on the source before they were replicated, skipped
    /// because the operator allowed it.
    pub const DATA_LOSS: &str = "DataLoss";
    /// Consumer groups a SyncGroups invocation had no time left for (they
    /// go first the next time); above zero for long, groups are starved.
    pub const GROUPS_DEFERRED: &str = "ConsumerGroupsDeferred";
}

/// A CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
    /// Bytes per second.
    BytesPerSecond,
    /// Count per second.
    CountPerSecond,
}

impl Unit {
    /// The unit's CloudWatch name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::Seconds => "Seconds",
            Self::Bytes => "Bytes",
            Self::BytesPerSecond => "Bytes/Second",
            Self::CountPerSecond => "Count/Second",
        }
    }
}

/// One data point.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// Metric name (see [`name`]).
    pub name: &'static str,
    /// Unit.
    pub unit: Unit,
    /// Value.
    pub value: f64,
    /// Dimensions, name and value, in a fixed order.
    pub dimensions: Vec<(&'static str, String)>,
}

impl Datum {
    /// A data point of replicator `replicator` with further dimensions.
    pub fn new(name: &'static str, unit: Unit, value: f64, replicator: &str, more: &[(&'static str, &str)]) -> Self {
        let mut dimensions = vec![(dim::REPLICATOR, replicator.to_owned())];
        dimensions.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Self {
            name,
            unit,
            value,
            dimensions,
        }
    }
}

/// The metrics of one Replicate invocation that ran `elapsed_s` seconds,
/// per source topic: records and bytes per second, partitions that failed,
/// bytes filtered by loop prevention and records lost to source deletion.
pub fn replicate_metrics(replicator: &str, out: &ReplicateOutput, elapsed_s: f64) -> Vec<Datum> {
    #[derive(Default)]
    struct Sums {
        records: u64,
        bytes: u64,
        failures: u64,
        filtered_bytes: u64,
        lost: u64,
    }
    let mut topics: BTreeMap<&str, Sums> = BTreeMap::new();
    for p in &out.partitions {
        let t = topics.entry(&p.source.topic).or_default();
        t.records += p.records;
        t.bytes += p.bytes;
        t.failures += u64::from(p.stopped == StopReason::Error);
        t.filtered_bytes += p.filtered_bytes;
        t.lost += p.lost_records;
    }
    let secs = elapsed_s.max(0.001);
    let mut data = Vec::new();
    for (topic, t) in topics {
        let d = [(dim::TOPIC, topic)];
        for (metric, unit, value) in [
            (name::THROUGHPUT, Unit::CountPerSecond, t.records as f64 / secs),
            (name::BYTES_IN_PER_SEC, Unit::BytesPerSecond, t.bytes as f64 / secs),
            (name::REPLICATION_FAILURES, Unit::Count, t.failures as f64),
            (name::FILTERED_BYTES, Unit::Bytes, t.filtered_bytes as f64),
            (name::DATA_LOSS, Unit::Count, t.lost as f64),
        ] {
            data.push(Datum::new(metric, unit, value, replicator, &d));
        }
    }
    data
}

/// The most metrics one EMF document may declare.
const EMF_MAX_METRICS: usize = 100;

/// Which points per topic and per consumer group become CloudWatch
/// metrics of their own. Each metric (each name and set of dimension
/// values) is billed by the month, so metrics per topic or per group cost
/// in proportion to the topics or groups; the roll-up to the replicator
/// (and, for a group's, to its cluster) costs the same for one or
/// thousands. A point not asked for is still a line of the log, its topic
/// or group a field of it (CloudWatch Logs Insights finds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricDetail {
    /// Metrics per topic as well (`Topic` dimension).
    pub per_topic: bool,
    /// Metrics per consumer group as well (`ConsumerGroup` dimension).
    pub per_group: bool,
}

impl MetricDetail {
    /// From the `FERRY_TOPIC_METRICS` and `FERRY_GROUP_METRICS` settings:
    /// `true` asks for that detail.
    pub fn from_settings(topics: Option<&str>, groups: Option<&str>) -> Self {
        let yes = |v: Option<&str>| v.map(str::trim).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Self {
            per_topic: yes(topics),
            per_group: yes(groups),
        }
    }

    /// From the environment the functions run in.
    pub fn from_env() -> Self {
        Self::from_settings(
            std::env::var(TOPIC_METRICS_ENV).ok().as_deref(),
            std::env::var(GROUP_METRICS_ENV).ok().as_deref(),
        )
    }

    /// The dimensions of a point this detail does not ask for.
    fn leaves_out(&self, dimension: &str) -> bool {
        (dimension == dim::TOPIC && !self.per_topic) || (dimension == dim::GROUP && !self.per_group)
    }

    /// A point's dimensions without those this detail does not ask for.
    pub fn kept<'a>(&self, dims: &'a [(&'static str, String)]) -> Vec<&'a (&'static str, String)> {
        dims.iter().filter(|(k, _)| !self.leaves_out(k)).collect()
    }
}

/// The environment variable that asks for metrics per topic.
pub const TOPIC_METRICS_ENV: &str = "FERRY_TOPIC_METRICS";
/// The environment variable that asks for metrics per consumer group.
pub const GROUP_METRICS_ENV: &str = "FERRY_GROUP_METRICS";

/// The data points as EMF documents (one per line), grouped by dimension
/// values so each document carries one set of them, declared both as is
/// and rolled up to the replicator alone (points per topic or group:
/// without those dimensions, unless `detail` asks for them). Two points of
/// the same metric and dimensions go into separate documents.
pub fn emf_lines(namespace: &str, timestamp_ms: i64, data: &[Datum], detail: MetricDetail) -> Vec<String> {
    let mut groups: BTreeMap<Vec<(&'static str, String)>, Vec<Vec<&Datum>>> = BTreeMap::new();
    for d in data {
        let docs = groups.entry(d.dimensions.clone()).or_default();
        let slot = docs
            .iter()
            .position(|doc| doc.len() < EMF_MAX_METRICS && doc.iter().all(|o| o.name != d.name));
        match slot {
            Some(i) => docs[i].push(d),
            None => docs.push(vec![d]),
        }
    }
    let mut lines = Vec::new();
    for (dims, docs) in groups {
        for doc in docs {
            let mut root = Map::new();
            let metrics: Vec<Value> = doc.iter().map(|d| json!({"Name": d.name, "Unit": d.unit.as_str()})).collect();
            root.insert(
                "_aws".into(),
                json!({
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": namespace,
                        "Dimensions": dimension_sets(&dims, detail),
                        "Metrics": metrics,
                    }],
                }),
            );
            for (k, v) in &dims {
                root.insert((*k).to_owned(), Value::String(v.clone()));
            }
            for d in doc {
                root.insert(d.name.to_owned(), json!(d.value));
            }
            lines.push(Value::Object(root).to_string());
        }
    }
    lines
}

/// The dimension sets a document declares: its own less those `detail`
/// does not ask for; the sets declared without any detail, when they
/// differ (a group's cluster roll-up stays when its groups are asked for
/// too); and the replicator alone as a roll-up (what the template's
/// alarms watch).
fn dimension_sets(dims: &[(&'static str, String)], detail: MetricDetail) -> Vec<Vec<&'static str>> {
    let keys = |d: MetricDetail| -> Vec<&'static str> { d.kept(dims).into_iter().map(|(k, _)| *k).collect() };
    let own = keys(detail);
    let rolled = keys(MetricDetail::default());
    if own.is_empty() || own[0] != dim::REPLICATOR {
        return vec![own];
    }
    let mut sets = vec![own.clone()];
    if rolled != own && rolled.len() > 1 {
        sets.push(rolled);
    }
    if own.len() > 1 {
        sets.push(vec![dim::REPLICATOR]);
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).expect("each line is one JSON document")
    }

    #[test]
    fn points_with_the_same_dimensions_share_a_document() {
        let data = vec![
            Datum::new(name::MESSAGE_LAG, Unit::Count, 12.0, "r", &[(dim::TOPIC, "orders")]),
            Datum::new(name::REPLICATION_LATENCY, Unit::Milliseconds, 250.0, "r", &[(dim::TOPIC, "orders")]),
            Datum::new(name::MESSAGE_LAG, Unit::Count, 0.0, "r", &[(dim::TOPIC, "payments")]),
        ];
        let lines = emf_lines(
            NAMESPACE,
            1_700_000_000_000,
            &data,
            MetricDetail {
                per_topic: true,
                per_group: false,
            },
        );
        assert_eq!(lines.len(), 2);
        let orders = parse(&lines[0]);
        assert_eq!(orders["Topic"], "orders");
        assert_eq!(orders["ReplicatorName"], "r");
        assert_eq!(orders["MessageLag"], 12.0);
        assert_eq!(orders["ReplicationLatency"], 250.0);
        let decl = &orders["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(orders["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(decl["Namespace"], "Ferry");
        assert_eq!(decl["Dimensions"], json!([["ReplicatorName", "Topic"], ["ReplicatorName"]]));
        assert_eq!(
            decl["Metrics"],
            json!([{"Name": "MessageLag", "Unit": "Count"}, {"Name": "ReplicationLatency", "Unit": "Milliseconds"}])
        );
        assert_eq!(parse(&lines[1])["Topic"], "payments");
    }

    #[test]
    fn by_default_a_point_per_topic_is_a_metric_of_the_replicator_with_its_topic_as_a_field() {
        let data = vec![
            Datum::new(name::MESSAGE_LAG, Unit::Count, 12.0, "r", &[(dim::TOPIC, "orders")]),
            Datum::new(name::PING, Unit::Count, 1.0, "r", &[(dim::CLUSTER, "source")]),
        ];
        let lines = emf_lines(NAMESPACE, 0, &data, MetricDetail::default());
        let docs: Vec<Value> = lines.iter().map(|l| parse(l)).collect();
        let orders = docs.iter().find(|d| d.get("Topic").is_some()).expect("the topic's document");
        assert_eq!(orders["Topic"], "orders", "still in the log line");
        assert_eq!(orders["MessageLag"], 12.0);
        assert_eq!(orders["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["ReplicatorName"]]));
        let ping = docs
            .iter()
            .find(|d| d.get("ClusterAlias").is_some())
            .expect("the cluster's document");
        assert_eq!(
            ping["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["ReplicatorName", "ClusterAlias"], ["ReplicatorName"]]),
            "other dimensions are unchanged"
        );
        let topics = |v| MetricDetail::from_settings(v, None).per_topic;
        assert!(topics(Some("true")) && topics(Some(" TRUE ")));
        assert!(!topics(Some("false")) && !topics(None) && !topics(Some("yes")));
    }

    #[test]
    fn by_default_a_point_per_group_is_a_metric_of_its_cluster_and_the_replicator_with_its_group_as_a_field() {
        let lag = |group: &str, v| {
            Datum::new(
                name::SUM_OFFSET_LAG,
                Unit::Count,
                v,
                "r",
                &[(dim::CLUSTER, "target"), (dim::GROUP, group)],
            )
        };
        let failed = Datum::new(name::GROUP_SYNC_FAILURE, Unit::Count, 1.0, "r", &[(dim::GROUP, "billing")]);
        let data = vec![lag("billing", 7.0), lag("audit", 3.0), failed];
        let declared = |detail: MetricDetail| -> Vec<(String, Value, Value)> {
            emf_lines(NAMESPACE, 0, &data, detail)
                .iter()
                .map(|l| parse(l))
                .map(|d| {
                    (
                        d["ConsumerGroup"].as_str().unwrap_or_default().to_owned(),
                        d["_aws"]["CloudWatchMetrics"][0]["Dimensions"].clone(),
                        d["SumOffsetLag"].clone(),
                    )
                })
                .collect()
        };
        for (group, dims, _) in declared(MetricDetail::default()) {
            let want = if dims == json!([["ReplicatorName"]]) {
                "billing"
            } else {
                assert_eq!(dims, json!([["ReplicatorName", "ClusterAlias"], ["ReplicatorName"]]), "{group}");
                group.as_str()
            };
            assert!(["billing", "audit"].contains(&want), "each line keeps its group: {group}");
        }
        let asked = MetricDetail::from_settings(None, Some("true"));
        assert!(asked.per_group && !asked.per_topic);
        let per_group = declared(asked);
        assert!(per_group.iter().any(|(g, dims, v)| g == "audit"
            && *v == json!(3.0)
            && *dims
                == json!([
                    ["ReplicatorName", "ClusterAlias", "ConsumerGroup"],
                    ["ReplicatorName", "ClusterAlias"],
                    ["ReplicatorName"]
                ])));
        assert!(per_group
            .iter()
            .any(|(g, dims, _)| g == "billing" && *dims == json!([["ReplicatorName", "ConsumerGroup"], ["ReplicatorName"]])));
    }

    #[test]
    fn an_invocation_is_summed_per_topic_and_divided_by_its_duration() {
        use crate::domain::{PartitionProgress, TopicPartition};
        let p = |topic: &str, partition, records, bytes, stopped| PartitionProgress {
            source: TopicPartition::new(topic, partition),
            cursor: 0,
            source_end: 0,
            records,
            bytes,
            stopped,
            error: None,
            reconciled: 0,
            filtered_records: 1,
            filtered_bytes: 10,
            lost_records: 0,
            checkpoints: 0,
        };
        let out = ReplicateOutput {
            partitions: vec![
                p("orders", 0, 100, 1_000, StopReason::CaughtUp),
                p("orders", 1, 300, 3_000, StopReason::Error),
                p("users", 0, 50, 500, StopReason::Budget),
            ],
        };
        let data = replicate_metrics("r", &out, 2.0);
        let get = |metric: &str, topic: &str| {
            data.iter()
                .find(|d| d.name == metric && d.dimensions.contains(&(dim::TOPIC, topic.to_owned())))
                .map(|d| d.value)
        };
        assert_eq!(get(name::THROUGHPUT, "orders"), Some(200.0));
        assert_eq!(get(name::BYTES_IN_PER_SEC, "orders"), Some(2_000.0));
        assert_eq!(get(name::REPLICATION_FAILURES, "orders"), Some(1.0));
        assert_eq!(get(name::FILTERED_BYTES, "orders"), Some(20.0));
        assert_eq!(get(name::THROUGHPUT, "users"), Some(25.0));
        assert_eq!(get(name::REPLICATION_FAILURES, "users"), Some(0.0));
        assert_eq!(get(name::DATA_LOSS, "users"), Some(0.0));
    }

    #[test]
    fn a_repeated_metric_and_more_than_a_hundred_metrics_split_documents() {
        let mut data = vec![
            Datum::new(name::PING, Unit::Count, 1.0, "r", &[(dim::CLUSTER, "source")]),
            Datum::new(name::PING, Unit::Count, 0.0, "r", &[(dim::CLUSTER, "source")]),
        ];
        let names: Vec<&'static str> = (0..150).map(|i| &*Box::leak(format!("M{i}").into_boxed_str())).collect();
        data.extend(names.iter().map(|n| Datum::new(n, Unit::Count, 1.0, "r", &[])));
        let lines = emf_lines(NAMESPACE, 0, &data, MetricDetail::default());
        let docs: Vec<Value> = lines.iter().map(|l| parse(l)).collect();
        let pings: Vec<f64> = docs
            .iter()
            .filter_map(|d| d.get("KafkaClusterPingSuccessCount").and_then(Value::as_f64))
            .collect();
        assert_eq!(pings, vec![1.0, 0.0], "both points kept, in separate documents");
        let declared: usize = docs
            .iter()
            .map(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().expect("metrics").len())
            .inspect(|n| assert!(*n <= 100))
            .sum();
        assert_eq!(declared, 152);
    }
}
