//! Table tests for configuration validation: each bad input names its field.

use super::*;

const CLUSTERS: &str = r#"[
  {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "source", "BootstrapBrokerString": "127.0.0.1:19092"},
   "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}},
  {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "target", "BootstrapBrokerString": "127.0.0.1:29092"},
   "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}}
]"#;

const INFO: &str = r#"[{
  "SourceKafkaClusterId": "source",
  "TargetKafkaClusterId": "target",
  "TargetCompressionType": "NONE",
  "TopicReplication": {
    "TopicsToReplicate": ["orders.*", "notifications"],
    "TopicsToExclude": ["orders_tmp"],
    "StartingPosition": {"Type": "EARLIEST"},
    "TopicNameConfiguration": {"Type": "IDENTICAL"}
  }
}]"#;

fn load_pair(clusters: &str, info: &str) -> Result<ReplicatorSpec, ConfigError> {
    load("local", "kafka-clusters.json", clusters, "replication-info.json", info)
}

#[test]
fn good_config_loads() {
    let spec = load_pair(CLUSTERS, INFO).expect("valid");
    let flow = &spec.flows[0];
    assert_eq!(flow.id(), "source>target");
    assert_eq!(flow.starting_position, StartingPosition::Earliest);
    assert!(flow.selects_topic("orders"));
    assert!(!flow.selects_topic("order_status"));
    assert!(flow.selects_topic("orders_x"));
    assert!(!flow.selects_topic("orders_tmp"));
    assert!(!flow.selects_topic("__consumer_offsets"));
    assert_eq!(flow.target_topic("orders"), "orders");
}

#[test]
fn camel_case_and_cli_input_forms_load() {
    let clusters = CLUSTERS.replace("ApacheKafkaClusterId", "apacheKafkaClusterId");
    let info = format!("{{\"ReplicationInfoList\": {INFO}}}");
    let spec = load_pair(&clusters, &info).expect("valid");
    assert_eq!(spec.flows.len(), 1);
}

#[test]
fn msk_target_defaults_to_iam_and_tls_and_prefix_naming() {
    let clusters = r#"[
      {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "onprem", "BootstrapBrokerString": "k1:9096"},
       "ClientAuthentication": {"SaslScram": {"Mechanism": "SHA512", "SecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:s"}}},
      {"AmazonMskCluster": {"MskClusterArn": "arn:aws:kafka:us-east-1:123:cluster/prod/abc-1", "BootstrapBrokerString": "b-1:9098"}}
    ]"#;
    let info = r#"[{"SourceKafkaClusterId": "onprem", "TargetKafkaClusterArn": "arn:aws:kafka:us-east-1:123:cluster/prod/abc-1",
      "TargetCompressionType": "ZSTD", "TopicReplication": {"TopicsToReplicate": [".*"]}}]"#;
    let spec = load_pair(clusters, info).expect("valid");
    let flow = &spec.flows[0];
    assert_eq!(flow.target.auth, ClusterAuth::MskIam);
    assert!(flow.target.tls.is_some());
    assert_eq!(flow.target.alias, "prod");
    assert_eq!(flow.naming, TopicNaming::PrefixedWithSourceClusterAlias);
    assert_eq!(flow.target_topic("orders"), "onprem.orders");
    assert_eq!(flow.starting_position, StartingPosition::Latest);
}

/// (what is changed, file the error must name, field it must name, words the problem must contain)
#[test]
fn bad_inputs_are_rejected_with_field_and_fix() {
    let cases: Vec<(String, String, &str, &str, &str)> = vec![
        (
            CLUSTERS.into(),
            INFO.replace("\"NONE\"", "\"BROTLI\""),
            "replication-info.json",
            "[0].TargetCompressionType",
            "BROTLI",
        ),
        (
            CLUSTERS.into(),
            INFO.replace("orders_tmp", "orders(["),
            "replication-info.json",
            "[0].TopicReplication.TopicsToExclude[0]",
            "not a valid regular expression",
        ),
        (
            // Balanced only once wrapped in the anchors: refused.
            CLUSTERS.into(),
            INFO.replace("orders_tmp", "orders_tmp)|(x"),
            "replication-info.json",
            "[0].TopicReplication.TopicsToExclude[0]",
            "not a valid regular expression",
        ),
        (
            CLUSTERS.into(),
            INFO.replace("EARLIEST", "BEGINNING"),
            "replication-info.json",
            "[0].TopicReplication.StartingPosition.Type",
            "BEGINNING",
        ),
        (
            CLUSTERS.into(),
            INFO.replace("IDENTICAL", "SAME"),
            "replication-info.json",
            "[0].TopicReplication.TopicNameConfiguration.Type",
            "SAME",
        ),
        (
            CLUSTERS.into(),
            INFO.replace("\"TopicsToExclude\"", "\"TopicsToExclud\""),
            "replication-info.json",
            "[0].TopicReplication",
            "unknown field `TopicsToExclud`",
        ),
        (
            CLUSTERS.into(),
            INFO.replace("\"SourceKafkaClusterId\": \"source\"", "\"SourceKafkaClusterId\": \"nowhere\""),
            "replication-info.json",
            "[0].SourceKafkaClusterId",
            "not defined",
        ),
        (
            CLUSTERS.into(),
            INFO.replace("\"target\"", "\"source\""),
            "replication-info.json",
            "[0].TargetKafkaClusterId",
            "same cluster",
        ),
        (
            CLUSTERS.replacen(
                "{\"EncryptionType\": \"PLAINTEXT\"}",
                "{\"EncryptionType\": \"TLS\", \"RootCaCertificate\": \"-----BEGIN CERTIFICATE-----\"}",
                1,
            ),
            INFO.into(),
            "kafka-clusters.json",
            "[0].EncryptionInTransit.RootCaCertificate",
            "not an ARN",
        ),
        (CLUSTERS.into(), "[]".into(), "replication-info.json", "(top level)", "empty"),
        (CLUSTERS.into(), "{".into(), "replication-info.json", "line", "not valid JSON"),
        (
            CLUSTERS.replace("127.0.0.1:19092", "127.0.0.1"),
            INFO.into(),
            "kafka-clusters.json",
            "[0].ApacheKafkaCluster.BootstrapBrokerString",
            "no port",
        ),
        (
            CLUSTERS.replace("\"PLAINTEXT\"}},\n  {", "\"NOISE\"}},\n  {"),
            INFO.into(),
            "kafka-clusters.json",
            "[0].EncryptionInTransit.EncryptionType",
            "NOISE",
        ),
        (
            CLUSTERS.replace("\"ApacheKafkaClusterId\": \"target\"", "\"ApacheKafkaClusterId\": \"source\""),
            INFO.into(),
            "kafka-clusters.json",
            "[1]",
            "defined twice",
        ),
        (
            CLUSTERS.replace("{\"ApacheKafkaCluster\"", "{\"Cluster\""),
            INFO.into(),
            "kafka-clusters.json",
            "[0]",
            "unknown field `Cluster`",
        ),
        (
            CLUSTERS.into(),
            INFO.replace(
                "\"TopicsToReplicate\": [\"orders.*\", \"notifications\"]",
                "\"TopicsToReplicate\": []",
            ),
            "replication-info.json",
            "[0].TopicReplication.TopicsToReplicate",
            "no topic patterns",
        ),
    ];
    for (clusters, info, file, field, words) in cases {
        let err = load_pair(&clusters, &info).expect_err(&format!("must reject: {field} {words}"));
        assert_eq!(err.file, file, "{err}");
        assert!(
            err.field.starts_with(field),
            "field {:?} should start with {field:?}: {err}",
            err.field
        );
        assert!(err.problem.contains(words) || err.field.contains(words), "{err}");
        assert!(!err.fix.is_empty());
    }
}

#[test]
fn bad_replicator_name_is_rejected() {
    let err = load("bad name!", "a", CLUSTERS, "b", INFO).expect_err("reject");
    assert_eq!(err.field, "ReplicatorName");
}

#[test]
fn plaintext_to_msk_is_refused() {
    let clusters = r#"[
      {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "s", "BootstrapBrokerString": "k1:9092"}, "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}},
      {"AmazonMskCluster": {"MskClusterArn": "arn:aws:kafka:us-east-1:123:cluster/prod/abc-1", "BootstrapBrokerString": "b-1:9098"},
       "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}}
    ]"#;
    let info = r#"[{"SourceKafkaClusterId": "s", "TargetKafkaClusterArn": "arn:aws:kafka:us-east-1:123:cluster/prod/abc-1",
      "TargetCompressionType": "NONE", "TopicReplication": {"TopicsToReplicate": [".*"]}}]"#;
    let err = load_pair(clusters, info).expect_err("reject");
    assert!(err.problem.contains("refused"), "{err}");
}

fn bidirectional(mode: Option<&str>) -> String {
    let groups = match mode {
        Some(m) => format!(r#""ConsumerGroupReplication": {{"ConsumerGroupsToReplicate": [".*"], "ConsumerGroupOffsetSyncMode": "{m}"}}"#),
        None => r#""ConsumerGroupReplication": {"ConsumerGroupsToReplicate": [".*"]}"#.to_owned(),
    };
    let one = |s: &str, t: &str| {
        format!(
            r#"{{"SourceKafkaClusterId": "{s}", "TargetKafkaClusterId": "{t}", "TargetCompressionType": "NONE",
               "TopicReplication": {{"TopicsToReplicate": ["orders"], "TopicNameConfiguration": {{"Type": "IDENTICAL"}}}}, {groups}}}"#
        )
    };
    format!("[{}, {}]", one("source", "target"), one("target", "source"))
}

#[test]
fn both_directions_translate_with_both_maps() {
    let spec = load_pair(CLUSTERS, &bidirectional(None)).expect("valid");
    assert_eq!(spec.flows.len(), 2);
    for f in &spec.flows {
        assert_eq!(f.groups.as_ref().map(|g| g.mode), Some(GroupSyncMode::Enhanced));
        assert_eq!(
            spec.opposite(f).map(|o| o.id()),
            Some(format!("{}>{}", f.target.alias, f.source.alias))
        );
    }
    let err = load_pair(CLUSTERS, &bidirectional(Some("LEGACY"))).expect_err("LEGACY both ways");
    assert_eq!(err.field, "[0].ConsumerGroupReplication.ConsumerGroupOffsetSyncMode");
    assert!(err.fix.contains("ENHANCED"), "{err}");
    // One way, LEGACY stays LEGACY and there is no opposite flow.
    let spec = load_pair(CLUSTERS, INFO).expect("valid");
    assert!(spec.opposite(&spec.flows[0]).is_none());
}

#[test]
fn a_topic_named_like_a_prefixed_copy_is_refused_by_name_not_by_pattern() {
    let info = |topics: &str, exclude: &str| {
        format!(
            r#"[{{"SourceKafkaClusterId": "source", "TargetKafkaClusterId": "target", "TargetCompressionType": "NONE",
                "TopicReplication": {{"TopicsToReplicate": [{topics}], "TopicsToExclude": [{exclude}],
                "TopicNameConfiguration": {{"Type": "PREFIXED_WITH_SOURCE_CLUSTER_ALIAS"}}}}}}]"#
        )
    };
    // Either cluster's alias, spelled out: never copied.
    for topics in [r#""orders", "source\\.orders""#, r#""target\\.audit""#] {
        let err = load_pair(CLUSTERS, &info(topics, "")).expect_err(topics);
        assert_eq!(err.field, "[0].TopicReplication.TopicsToReplicate", "{err}");
        assert!(err.problem.contains("never copies it") && err.fix.contains("IDENTICAL"), "{err}");
    }
    // A pattern may select copies along with the rest (`source.orders`
    // selects `source-orders` too: breaker helper-94); an excluded name is
    // not asked for; a name that only starts with an alias is no copy.
    for (topics, exclude) in [
        (r#"".*""#, ""),
        (r#""source.orders""#, ""),
        (r#""source\\.orders""#, r#""source\\.orders""#),
        (r#""sourceorders", "source-x""#, ""),
    ] {
        load_pair(CLUSTERS, &info(topics, exclude)).expect(topics);
    }
}

#[test]
fn ferry_topic_extensions_are_validated() {
    let with = |extra: &str| INFO.replace(r#""TopicsToExclude""#, &format!(r#"{extra}, "TopicsToExclude""#));
    let spec = load_pair(CLUSTERS, &with(r#""TargetReplicationFactor": 3, "PropagateTopicDeletions": true"#)).expect("valid");
    assert_eq!(spec.flows[0].target_replication_factor, Some(3));
    assert!(spec.flows[0].propagate_topic_deletions);
    let spec = load_pair(CLUSTERS, INFO).expect("valid");
    assert_eq!(spec.flows[0].target_replication_factor, None);
    assert!(!spec.flows[0].propagate_topic_deletions);
    let err = load_pair(CLUSTERS, &with(r#""TargetReplicationFactor": 0"#)).expect_err("zero");
    assert_eq!(err.field, "[0].TopicReplication.TargetReplicationFactor");
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// Replace the character at `at` (rounded down to a boundary) with `c`.
    fn mutate(s: &str, at: usize, c: char) -> String {
        let mut at = at % s.len();
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let mut out = s.to_owned();
        let end = at + out[at..].chars().next().map_or(0, char::len_utf8);
        out.replace_range(at..end, &c.to_string());
        out
    }

    proptest! {
        /// Any text at all, in either file: accepted or refused, never a panic.
        #[test]
        fn any_text_never_panics(clusters in "\\PC{0,200}", info in "\\PC{0,200}") {
            let _ = load_pair(&clusters, &info);
        }

        /// A valid definition with one character changed anywhere: still
        /// no panic, and a refusal names a file and says how to fix it.
        #[test]
        fn one_changed_character_never_panics(at in any::<usize>(), c in any::<char>(), which in any::<bool>()) {
            let (clusters, info) = if which {
                (mutate(CLUSTERS, at, c), INFO.to_owned())
            } else {
                (CLUSTERS.to_owned(), mutate(INFO, at, c))
            };
            if let Err(e) = load_pair(&clusters, &info) {
                prop_assert!(!e.file.is_empty() && !e.fix.is_empty(), "{}", e);
            }
        }
    }
}

/// A definition written for `aws kafka create-replicator`: MSK clusters by
/// their ARN alone, looked up at run time for their authentication.
#[test]
fn msk_cluster_by_arn_alone_is_looked_up_for_its_authentication() {
    let clusters = r#"[
      {"AmazonMskCluster": {"MskClusterArn": "arn:aws:kafka:eu-west-1:123456789012:cluster/old/0a1b-2"},
       "ClientAuthentication": {"SaslScram": {"Mechanism": "SHA512", "SecretArn": "arn:aws:secretsmanager:eu-west-1:1:secret:s"}}},
      {"AmazonMskCluster": {"MskClusterArn": "arn:aws:kafka:us-east-1:123456789012:cluster/new/3c4d-5"}}
    ]"#;
    let info = r#"[{"SourceKafkaClusterArn": "arn:aws:kafka:eu-west-1:123456789012:cluster/old/0a1b-2",
      "TargetKafkaClusterArn": "arn:aws:kafka:us-east-1:123456789012:cluster/new/3c4d-5",
      "TargetCompressionType": "NONE", "TopicReplication": {"TopicsToReplicate": [".*"]}}]"#;
    let spec = load_pair(clusters, info).expect("valid");
    let flow = &spec.flows[0];
    let source = flow.source.msk_lookup().expect("looked up");
    assert_eq!(source.region, "eu-west-1");
    assert_eq!(source.listener.field(), "BootstrapBrokerStringSaslScram");
    let target = flow.target.msk_lookup().expect("looked up");
    assert_eq!(
        (target.arn.as_str(), target.region.as_str(), target.listener.field()),
        (
            "arn:aws:kafka:us-east-1:123456789012:cluster/new/3c4d-5",
            "us-east-1",
            "BootstrapBrokerStringSaslIam"
        )
    );
    // The ARN stays the cluster's id (state keys), the name its alias.
    assert_eq!((flow.target.id.as_str(), flow.target.alias.as_str()), (target.arn.as_str(), "new"));
    // Given brokers are used as they are, with nothing looked up.
    let given = clusters.replace(
        r#"cluster/new/3c4d-5"}"#,
        r#"cluster/new/3c4d-5", "BootstrapBrokerString": "b-1:9098"}"#,
    );
    let spec = load_pair(&given, info).expect("valid");
    assert_eq!(spec.flows[0].target.msk_lookup(), None);
    assert_eq!(spec.flows[0].target.bootstrap, vec!["b-1:9098".to_owned()]);
}

#[test]
fn msk_arns_are_checked_for_shape_and_region() {
    let info = r#"[{"SourceKafkaClusterId": "s", "TargetKafkaClusterArn": "ARN",
      "TargetCompressionType": "NONE", "TopicReplication": {"TopicsToReplicate": [".*"]}}]"#;
    for (arn, problem) in [
        ("arn:aws:kafka::123456789012:cluster/new/3c4d-5", "names no region"),
        ("arn:aws:kafka:US_EAST:123456789012:cluster/new/3c4d-5", "names no region"),
        ("arn:aws:kafka:us-east-1:123456789012:cluster/new", "is not an MSK cluster ARN"),
        ("arn:aws:kafka:us-east-1:123456789012:cluster/new/", "is not an MSK cluster ARN"),
        (
            "arn:aws:kafka:us-east-1:123456789012:topic/new/3c4d-5/orders",
            "is not an MSK cluster ARN",
        ),
        ("arn:aws:s3:us-east-1:123456789012:cluster/new/3c4d-5", "is not an MSK cluster ARN"),
    ] {
        let clusters = format!(
            r#"[{{"ApacheKafkaCluster": {{"ApacheKafkaClusterId": "s", "BootstrapBrokerString": "k1:9096"}}}},
                {{"AmazonMskCluster": {{"MskClusterArn": "{arn}"}}}}]"#
        );
        let err = load_pair(&clusters, &info.replace("ARN", arn)).expect_err(arn);
        assert_eq!(err.field, "[1].AmazonMskCluster.MskClusterArn", "{arn}: {err}");
        assert!(err.problem.contains(problem), "{arn}: {err}");
    }
}
