//! Which topic ACLs a flow copies, and what they become on the target.
//!
//! Ferry copies every ACL on a topic resource (LITERAL and PREFIXED
//! patterns, every operation, ALLOW and DENY) that applies to a topic the
//! flow replicates, renamed as the topic is: MSK Replicator copies only
//! LITERAL ones and never WRITE, which leaves producers that move to the
//! target without their grants. Not copied: LITERAL `*` (it names every
//! topic of the target cluster, not a replicated one), ACLs on groups,
//! the cluster or transactional ids, and deletions.

use serde::{Deserialize, Serialize};

use crate::config::{FlowSpec, TopicNaming};

/// Kafka's resource type code of a topic.
pub const RESOURCE_TOPIC: i8 = 2;
/// Pattern type codes.
pub const PATTERN_LITERAL: i8 = 3;
/// Prefixed pattern.
pub const PATTERN_PREFIXED: i8 = 4;

/// One ACL binding, as Kafka's admin API carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// Resource type code (2 = topic).
    pub resource_type: i8,
    /// Resource name (a topic, or a topic-name prefix).
    pub resource_name: String,
    /// Pattern type code (3 = LITERAL, 4 = PREFIXED).
    pub pattern_type: i8,
    /// Principal, e.g. `User:alice`.
    pub principal: String,
    /// Host, `*` for any.
    pub host: String,
    /// Operation code (2 = ALL, 3 = READ, 4 = WRITE, ...).
    pub operation: i8,
    /// Permission code (2 = DENY, 3 = ALLOW).
    pub permission_type: i8,
}

impl std::fmt::Display for AclBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pattern = match self.pattern_type {
            PATTERN_LITERAL => "LITERAL",
            PATTERN_PREFIXED => "PREFIXED",
            _ => "OTHER",
        };
        let op = match self.operation {
            2 => "ALL",
            3 => "READ",
            4 => "WRITE",
            5 => "CREATE",
            6 => "DELETE",
            7 => "ALTER",
            8 => "DESCRIBE",
            10 => "DESCRIBE_CONFIGS",
            11 => "ALTER_CONFIGS",
            _ => "OTHER",
        };
        let perm = if self.permission_type == 2 { "DENY" } else { "ALLOW" };
        write!(
            f,
            "{perm} {} {op} on topic {pattern} {:?} from {}",
            self.principal, self.resource_name, self.host
        )
    }
}

/// The target ACLs for the source's topic ACLs `source`, given the source
/// topics the flow replicates.
pub fn to_copy<'a>(flow: &FlowSpec, replicated: impl Iterator<Item = &'a str> + Clone, source: &[AclBinding]) -> Vec<AclBinding> {
    let rename = |name: &str| match flow.naming {
        TopicNaming::Identical => name.to_owned(),
        TopicNaming::PrefixedWithSourceClusterAlias => format!("{}.{name}", flow.source.alias),
    };
    let mut out: Vec<AclBinding> = source
        .iter()
        .filter(|a| a.resource_type == RESOURCE_TOPIC)
        .filter(|a| match a.pattern_type {
            PATTERN_LITERAL => a.resource_name != "*" && replicated.clone().any(|t| t == a.resource_name),
            PATTERN_PREFIXED => replicated.clone().any(|t| t.starts_with(a.resource_name.as_str())),
            _ => false,
        })
        .map(|a| AclBinding {
            resource_name: rename(&a.resource_name),
            ..a.clone()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The source's topic ACLs that concern the replicated topics but are not
/// copied, each with the reason.
pub fn not_copied(source: &[AclBinding]) -> Vec<(AclBinding, &'static str)> {
    source
        .iter()
        .filter(|a| a.resource_type == RESOURCE_TOPIC)
        .filter_map(|a| match a.pattern_type {
            PATTERN_LITERAL if a.resource_name == "*" => Some((
                a.clone(),
                "LITERAL * names every topic of the target cluster, not a replicated one: grant it there by hand if it is wanted",
            )),
            PATTERN_LITERAL | PATTERN_PREFIXED => None,
            _ => Some((a.clone(), "only LITERAL and PREFIXED patterns are copied")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    fn acl(name: &str, pattern: i8, op: i8) -> AclBinding {
        AclBinding {
            resource_type: RESOURCE_TOPIC,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission_type: 3,
        }
    }

    fn flow(naming: &str) -> FlowSpec {
        let clusters = r#"[{"ApacheKafkaCluster": {"ApacheKafkaClusterId": "onprem", "BootstrapBrokerString": "a:9092"}, "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}},
                           {"ApacheKafkaCluster": {"ApacheKafkaClusterId": "msk", "BootstrapBrokerString": "b:9092"}, "EncryptionInTransit": {"EncryptionType": "PLAINTEXT"}}]"#;
        let info = format!(
            r#"[{{"SourceKafkaClusterId": "onprem", "TargetKafkaClusterId": "msk", "TargetCompressionType": "NONE",
                 "TopicReplication": {{"TopicsToReplicate": ["orders.*"], "TopicNameConfiguration": {{"Type": "{naming}"}}}}}}]"#
        );
        load("t", "c.json", clusters, "i.json", &info).expect("valid").flows.remove(0)
    }

    #[test]
    fn literal_and_prefixed_acls_of_replicated_topics_are_copied_with_every_operation() {
        let source = vec![
            acl("orders", PATTERN_LITERAL, 3),
            acl("orders", PATTERN_LITERAL, 4),
            acl("ord", PATTERN_PREFIXED, 2),
            acl("payments", PATTERN_LITERAL, 3),
            acl("pay", PATTERN_PREFIXED, 3),
            acl("*", PATTERN_LITERAL, 3),
            AclBinding {
                resource_type: 3,
                ..acl("orders", PATTERN_LITERAL, 3)
            },
        ];
        let topics = ["orders", "orders_eu"];
        let got = to_copy(&flow("IDENTICAL"), topics.iter().copied(), &source);
        assert_eq!(got, {
            let mut v = vec![
                acl("orders", PATTERN_LITERAL, 3),
                acl("orders", PATTERN_LITERAL, 4),
                acl("ord", PATTERN_PREFIXED, 2),
            ];
            v.sort();
            v
        });
        let prefixed = to_copy(&flow("PREFIXED_WITH_SOURCE_CLUSTER_ALIAS"), topics.iter().copied(), &source);
        let names: Vec<&str> = prefixed.iter().map(|a| a.resource_name.as_str()).collect();
        assert!(names.iter().all(|n| n.starts_with("onprem.")), "{names:?}");
        assert_eq!(prefixed.len(), 3);
    }
}
