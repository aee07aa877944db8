//! The two files checked as `aws kafka create-replicator` checks them, and
//! more: every error names the file, the field and what to write instead.

use super::*;

/// Accept either a bare JSON list (the `--kafka-clusters file://...` form)
/// or an object with the list under `key` (the `--cli-input-json` form).
/// The file's JSON, or an error naming the line and column.
pub(super) fn parse_json(file: &str, json: &str) -> Result<serde_json::Value, ConfigError> {
    serde_json::from_str(json).map_err(|e| {
        ConfigError::new(
            file,
            format!("line {} column {}", e.line(), e.column()),
            format!("not valid JSON ({e})"),
            "fix the JSON syntax",
        )
    })
}

pub(super) fn parse_list<T: serde::de::DeserializeOwned>(file: &str, json: &str, key: &str) -> Result<Vec<T>, ConfigError> {
    let value = parse_json(file, json)?;
    let (value, prefix) = match value {
        serde_json::Value::Object(mut map) if map.len() == 1 && map.contains_key(key) => {
            (map.remove(key).unwrap_or_default(), key.to_string())
        }
        serde_json::Value::Array(_) => (value, String::new()),
        _ => {
            return Err(ConfigError::new(
                file,
                "(top level)",
                format!("expected a JSON list, or an object with only the key {key}"),
                format!("write the list as in `aws kafka create-replicator`, e.g. [{{...}}] or {{\"{key}\": [...]}}"),
            ))
        }
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let fix = if inner.starts_with("unknown field") {
            "remove the field or correct its spelling (names are as in MSK Replicator's API, e.g. TopicReplication)"
        } else if inner.starts_with("missing field") {
            "add the required field"
        } else {
            "give the field a value of the expected type"
        };
        ConfigError::new(file, format!("{prefix}{path}"), inner, fix)
    })
}

pub(super) fn validate_clusters(file: &str, clusters: &[wire::KafkaCluster]) -> Result<Vec<ClusterSpec>, ConfigError> {
    if clusters.is_empty() {
        return Err(ConfigError::new(
            file,
            "(top level)",
            "no clusters are defined",
            "define the source and target clusters",
        ));
    }
    let mut out: Vec<ClusterSpec> = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        let at = |f: &str| format!("[{i}]{f}");
        let (id, alias, bootstrap, msk) = match (&c.amazon_msk_cluster, &c.apache_kafka_cluster) {
            (Some(msk), None) => {
                let alias = msk_alias(&msk.msk_cluster_arn).ok_or_else(|| {
                    ConfigError::new(
                        file,
                        at(".AmazonMskCluster.MskClusterArn"),
                        format!("{:?} is not an MSK cluster ARN", msk.msk_cluster_arn),
                        "use arn:aws:kafka:<region>:<account>:cluster/<name>/<uuid>",
                    )
                })?;
                if msk_region(&msk.msk_cluster_arn).is_none() {
                    return Err(ConfigError::new(
                        file,
                        at(".AmazonMskCluster.MskClusterArn"),
                        format!("{:?} names no region", msk.msk_cluster_arn),
                        "use the ARN as MSK shows it: arn:aws:kafka:<region>:<account>:cluster/<name>/<uuid>",
                    ));
                }
                // Without BootstrapBrokerString (as create-replicator takes
                // it), the brokers are looked up at run time with
                // GetBootstrapBrokers, for the listener of the cluster's
                // authentication.
                (msk.msk_cluster_arn.clone(), alias, msk.bootstrap_broker_string.as_deref(), true)
            }
            (None, Some(ak)) => {
                if !valid_alias(&ak.apache_kafka_cluster_id) {
                    return Err(ConfigError::new(
                        file,
                        at(".ApacheKafkaCluster.ApacheKafkaClusterId"),
                        format!("{:?} is not a usable cluster id", ak.apache_kafka_cluster_id),
                        "use 1 to 64 letters, digits, '-' or '_'",
                    ));
                }
                (
                    ak.apache_kafka_cluster_id.clone(),
                    ak.apache_kafka_cluster_id.clone(),
                    Some(ak.bootstrap_broker_string.as_str()),
                    false,
                )
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    file,
                    at(""),
                    "both AmazonMskCluster and ApacheKafkaCluster are set",
                    "keep exactly one of them",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    file,
                    at(""),
                    "neither AmazonMskCluster nor ApacheKafkaCluster is set",
                    "add exactly one of them",
                ))
            }
        };
        let field = if msk {
            ".AmazonMskCluster.BootstrapBrokerString"
        } else {
            ".ApacheKafkaCluster.BootstrapBrokerString"
        };
        let bootstrap = match bootstrap {
            Some(b) => parse_bootstrap(b).map_err(|p| ConfigError::new(file, at(field), p, "use host:port[,host:port...]"))?,
            None => Vec::new(),
        };
        let auth = match c.client_authentication.as_ref().and_then(|a| a.sasl_scram.as_ref()) {
            Some(scram) => {
                let mechanism = match scram.mechanism.as_str() {
                    "SHA256" => ScramMechanism::Sha256,
                    "SHA512" => ScramMechanism::Sha512,
                    other => {
                        return Err(ConfigError::new(
                            file,
                            at(".ClientAuthentication.SaslScram.Mechanism"),
                            format!("{other:?} is not a SCRAM mechanism"),
                            "use SHA256 or SHA512",
                        ))
                    }
                };
                if !scram.secret_arn.starts_with("arn:") {
                    return Err(ConfigError::new(
                        file,
                        at(".ClientAuthentication.SaslScram.SecretArn"),
                        "not an ARN",
                        "give the Secrets Manager secret's ARN",
                    ));
                }
                ClusterAuth::Scram {
                    mechanism,
                    secret_arn: scram.secret_arn.clone(),
                }
            }
            None if msk => ClusterAuth::MskIam,
            None => ClusterAuth::None,
        };
        let tls = match &c.encryption_in_transit {
            None => Some(TlsSpec { root_ca_secret_arn: None }),
            Some(e) => match e.encryption_type.as_str() {
                "TLS" => {
                    if let Some(ca) = e.root_ca_certificate.as_deref().filter(|ca| !ca.starts_with("arn:")) {
                        return Err(ConfigError::new(
                            file,
                            at(".EncryptionInTransit.RootCaCertificate"),
                            format!("{:?} is not an ARN", ca.chars().take(40).collect::<String>()),
                            "give the ARN of a Secrets Manager secret whose `certificate` field holds the CA chain (PEM)",
                        ));
                    }
                    Some(TlsSpec {
                        root_ca_secret_arn: e.root_ca_certificate.clone(),
                    })
                }
                "PLAINTEXT" if msk => {
                    return Err(ConfigError::new(
                        file,
                        at(".EncryptionInTransit.EncryptionType"),
                        "PLAINTEXT is refused for an Amazon MSK cluster",
                        "use TLS",
                    ))
                }
                "PLAINTEXT" => None,
                other => {
                    return Err(ConfigError::new(
                        file,
                        at(".EncryptionInTransit.EncryptionType"),
                        format!("{other:?} is not an encryption type"),
                        "use TLS (or PLAINTEXT for local development)",
                    ))
                }
            },
        };
        if matches!(auth, ClusterAuth::Scram { .. }) && tls.is_none() {
            return Err(ConfigError::new(
                file,
                at(".EncryptionInTransit.EncryptionType"),
                "SASL/SCRAM credentials would travel over PLAINTEXT",
                "use TLS with SaslScram",
            ));
        }
        if out.iter().any(|o| o.id == id) {
            return Err(ConfigError::new(
                file,
                at(""),
                format!("cluster {id:?} is defined twice"),
                "define each cluster once",
            ));
        }
        let vpc = match &c.vpc_config {
            None => None,
            Some(v) => {
                let kinds = [
                    (&v.subnet_ids, "subnet", "SubnetIds", "a subnet id", ""),
                    (
                        &v.security_group_ids,
                        "sg",
                        "SecurityGroupIds",
                        "a security group id",
                        " (ids, not names)",
                    ),
                ];
                for (ids, prefix, field, what, note) in kinds {
                    if let Some((i, id)) = ids.iter().enumerate().find(|(_, id)| !is_ec2_id(id, prefix)) {
                        return Err(ConfigError::new(
                            file,
                            at(&format!(".VpcConfig.{field}[{i}]")),
                            format!("{id:?} is not {what}"),
                            format!("give ids as EC2 shows them, such as {prefix}-0123456789abcdef0{note}"),
                        ));
                    }
                }
                Some(VpcSpec {
                    subnet_ids: v.subnet_ids.clone(),
                    security_group_ids: v.security_group_ids.clone(),
                })
            }
        };
        out.push(ClusterSpec {
            id,
            alias,
            bootstrap,
            auth,
            tls,
            vpc,
        });
    }
    Ok(out)
}

/// The one name a pattern matches when it is plain text (`\\.` for a dot).
pub(super) fn literal_name(pattern: &str) -> Option<String> {
    let special = |c: char| ".^$*+?()[]{}|\\".contains(c);
    (!pattern.is_empty() && !pattern.replace("\\.", "").contains(special)).then(|| pattern.replace("\\.", "."))
}

#[cfg(test)]
#[test]
pub(super) fn literal_names_are_plain_text_only() {
    assert_eq!(literal_name("orders\\.eu-1").as_deref(), Some("orders.eu-1"));
    for pattern in ["orders.*", "a|b", "orders.eu", "x+", "[ab]", ""] {
        assert_eq!(literal_name(pattern), None, "{pattern}");
    }
}

pub(super) fn valid_alias(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The cluster name inside an MSK ARN: `arn:aws:kafka:r:a:cluster/<name>/<uuid>`
/// (the uuid part present: GetBootstrapBrokers and IAM need the whole ARN).
pub(super) fn msk_alias(arn: &str) -> Option<String> {
    let rest = arn.strip_prefix("arn:")?;
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    if parts.len() != 5 || parts[1] != "kafka" {
        return None;
    }
    let mut res = parts[4].split('/');
    if res.next()? != "cluster" {
        return None;
    }
    let name = res.next()?;
    let uuid = res.next()?;
    let uuid_ok = !uuid.is_empty() && uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (valid_alias(name) && uuid_ok && res.next().is_none()).then(|| name.to_owned())
}

pub(super) fn parse_bootstrap(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (host, port) = part.rsplit_once(':').ok_or_else(|| format!("{part:?} has no port"))?;
        if host.is_empty() {
            return Err(format!("{part:?} has no host"));
        }
        port.parse::<u16>().map_err(|_| format!("{part:?} has a bad port"))?;
        out.push(part.to_owned());
    }
    Ok(out)
}

pub(super) fn compile_regexes(file: &str, field: &str, list: &[String]) -> Result<Vec<Regex>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            // Checked alone first: wrapped, `a)|(b` (unbalanced on its own)
            // would compile, as an alternation anchored on neither side.
            Regex::new(r).and_then(|_| Regex::new(&format!("^(?:{r})$"))).map_err(|e| {
                ConfigError::new(
                    file,
                    format!("{field}[{i}]"),
                    format!(
                        "{r:?} is not a valid regular expression ({})",
                        e.to_string().lines().last().unwrap_or("")
                    ),
                    "write a Java/RE2-style regex such as \"orders.*\"",
                )
            })
        })
        .collect()
}

pub(super) fn validate_flow(file: &str, i: usize, info: &wire::ReplicationInfo, clusters: &[ClusterSpec]) -> Result<FlowSpec, ConfigError> {
    let at = |f: &str| format!("[{i}].{f}");
    let find = |field: &str, arn: &Option<String>, id: &Option<String>, what: &str| -> Result<ClusterSpec, ConfigError> {
        let key = match (arn, id) {
            (Some(a), None) => a,
            (None, Some(id)) => id,
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    file,
                    at(field),
                    format!("both {what}KafkaClusterArn and {what}KafkaClusterId are set"),
                    "keep one",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    file,
                    at(&format!("{what}KafkaClusterArn")),
                    format!("no {} cluster named", what.to_lowercase()),
                    format!("set {what}KafkaClusterArn (MSK) or {what}KafkaClusterId (an ApacheKafkaClusterId)"),
                ))
            }
        };
        clusters.iter().find(|c| &c.id == key).cloned().ok_or_else(|| {
            let known: Vec<&str> = clusters.iter().map(|c| c.id.as_str()).collect();
            ConfigError::new(
                file,
                at(field),
                format!("cluster {key:?} is not defined in the clusters file"),
                format!("use one of {known:?}, or add the cluster to the clusters file"),
            )
        })
    };
    let source_field = if info.source_kafka_cluster_id.is_some() {
        "SourceKafkaClusterId"
    } else {
        "SourceKafkaClusterArn"
    };
    let target_field = if info.target_kafka_cluster_id.is_some() {
        "TargetKafkaClusterId"
    } else {
        "TargetKafkaClusterArn"
    };
    let source = find(
        source_field,
        &info.source_kafka_cluster_arn,
        &info.source_kafka_cluster_id,
        "Source",
    )?;
    let target = find(
        target_field,
        &info.target_kafka_cluster_arn,
        &info.target_kafka_cluster_id,
        "Target",
    )?;
    if source.id == target.id {
        return Err(ConfigError::new(
            file,
            at(target_field),
            "the source and the target are the same cluster",
            "name two different clusters",
        ));
    }
    let compression = match info.target_compression_type.as_str() {
        "NONE" => Compression::None,
        "GZIP" => Compression::Gzip,
        "SNAPPY" => Compression::Snappy,
        "LZ4" => Compression::Lz4,
        "ZSTD" => Compression::Zstd,
        other => {
            return Err(ConfigError::new(
                file,
                at("TargetCompressionType"),
                format!("{other:?} is not a compression type"),
                "use NONE, GZIP, SNAPPY, LZ4 or ZSTD",
            ))
        }
    };
    let tr = &info.topic_replication;
    if tr.topics_to_replicate.is_empty() {
        return Err(ConfigError::new(
            file,
            at("TopicReplication.TopicsToReplicate"),
            "no topic patterns are given",
            "list at least one regex, e.g. [\".*\"]",
        ));
    }
    let topics_include = compile_regexes(file, &at("TopicReplication.TopicsToReplicate"), &tr.topics_to_replicate)?;
    let topics_exclude = compile_regexes(file, &at("TopicReplication.TopicsToExclude"), &tr.topics_to_exclude)?;
    let starting_position = match tr.starting_position.as_ref().map(|t| t.kind.as_str()) {
        None | Some("LATEST") => StartingPosition::Latest,
        Some("EARLIEST") => StartingPosition::Earliest,
        Some(other) => {
            return Err(ConfigError::new(
                file,
                at("TopicReplication.StartingPosition.Type"),
                format!("{other:?} is not a starting position"),
                "use EARLIEST or LATEST",
            ))
        }
    };
    let naming = match tr.topic_name_configuration.as_ref().map(|t| t.kind.as_str()) {
        None | Some("PREFIXED_WITH_SOURCE_CLUSTER_ALIAS") => TopicNaming::PrefixedWithSourceClusterAlias,
        Some("IDENTICAL") => TopicNaming::Identical,
        Some(other) => {
            return Err(ConfigError::new(
                file,
                at("TopicReplication.TopicNameConfiguration.Type"),
                format!("{other:?} is not a topic name configuration"),
                "use IDENTICAL or PREFIXED_WITH_SOURCE_CLUSTER_ALIAS",
            ))
        }
    };
    let target_replication_factor = match tr.target_replication_factor {
        None => None,
        Some(rf) if (1..=i64::from(i16::MAX)).contains(&rf) => Some(rf as i16),
        Some(rf) => {
            return Err(ConfigError::new(
                file,
                at("TopicReplication.TargetReplicationFactor"),
                format!("{rf} is not a replication factor"),
                "give a positive number no larger than the target's broker count, or leave it out for the target's default",
            ))
        }
    };
    let groups = match &info.consumer_group_replication {
        None => None,
        Some(g) => {
            let mode = match g.consumer_group_offset_sync_mode.as_deref() {
                None | Some("LEGACY") => GroupSyncMode::Legacy,
                Some("ENHANCED") => GroupSyncMode::Enhanced,
                Some(other) => {
                    return Err(ConfigError::new(
                        file,
                        at("ConsumerGroupReplication.ConsumerGroupOffsetSyncMode"),
                        format!("{other:?} is not a sync mode"),
                        "use LEGACY or ENHANCED",
                    ))
                }
            };
            Some(GroupSpec {
                include: compile_regexes(
                    file,
                    &at("ConsumerGroupReplication.ConsumerGroupsToReplicate"),
                    &g.consumer_groups_to_replicate,
                )?,
                exclude: compile_regexes(
                    file,
                    &at("ConsumerGroupReplication.ConsumerGroupsToExclude"),
                    &g.consumer_groups_to_exclude,
                )?,
                detect_new: g.detect_and_copy_new_consumer_groups.unwrap_or(true),
                sync_offsets: g.synchronise_consumer_group_offsets.unwrap_or(true),
                mode,
                mode_explicit: g.consumer_group_offset_sync_mode.is_some(),
            })
        }
    };
    Ok(FlowSpec {
        source,
        target,
        compression,
        topics_include,
        topics_exclude,
        starting_position,
        naming,
        copy_topic_configurations: tr.copy_topic_configurations.unwrap_or(true),
        copy_acls: tr.copy_access_control_lists_for_topics.unwrap_or(true),
        detect_new_topics: tr.detect_and_copy_new_topics.unwrap_or(true),
        target_replication_factor,
        propagate_topic_deletions: tr.propagate_topic_deletions.unwrap_or(false),
        groups,
    })
}
