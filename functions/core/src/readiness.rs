//! The readiness verdict: may applications move to the target now? The
//! criteria are the ones published for MSK Replicator, evaluated on
//! measured numbers: no replication or group-sync failure, both clusters
//! answering, MessageLag under 1,000, ReplicationLatency under 90 s, the
//! same groups on both clusters, and each group's lag on the target close
//! to its lag on the source.

use serde::{Deserialize, Serialize};

/// The limits a verdict is judged against; a missing field keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// MessageLag (summed over every replicated partition) must stay below this.
    pub max_message_lag: i64,
    /// ReplicationLatency (ms, worst partition) must stay below this.
    pub max_latency_ms: i64,
    /// A group's SumOffsetLag on the target may differ from the source's by at most this.
    pub max_offset_lag_gap: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_message_lag: 1_000,
            max_latency_ms: 90_000,
            max_offset_lag_gap: 1_000,
        }
    }
}

/// One cluster as the report saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSeen {
    /// Alias in the replicator definition.
    pub alias: String,
    /// Whether it answered.
    pub ping_ok: bool,
}

/// The synced groups of one flow, as listed on both of its clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSet {
    /// Source cluster alias.
    pub source: String,
    /// Target cluster alias.
    pub target: String,
    /// Groups on the source matching the flow's group filters.
    pub source_groups: Vec<String>,
    /// Groups on the target matching the same filters.
    pub target_groups: Vec<String>,
}

/// One synced group of one flow, as measured: its lag summed over the
/// flow's replicated partitions on both clusters, and its sync health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLag {
    /// Flow id.
    pub flow: String,
    /// Group id.
    pub group: String,
    /// Source cluster alias.
    pub source_alias: String,
    /// Target cluster alias.
    pub target_alias: String,
    /// SumOffsetLag on the source (over the flow's partitions the group committed on the source).
    pub source_sum_offset_lag: i64,
    /// SumOffsetLag on the target, for the same partitions (a partition
    /// with no commit on the target counts its whole log).
    pub target_sum_offset_lag: i64,
    /// ConsumerGroupOffsetSyncFailure: partitions whose last sync failed.
    pub sync_failures: i64,
    /// OffsetSyncAge: seconds since the oldest of its partitions was last synced.
    pub offset_sync_age_s: Option<i64>,
}

/// What the verdict is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurements {
    /// Partitions stopped by an error.
    pub replicator_failures: i64,
    /// Every cluster of the replicator.
    pub clusters: Vec<ClusterSeen>,
    /// Total MessageLag.
    pub message_lag: i64,
    /// Age (ms) of the oldest record not yet on the target, 0 when caught up.
    pub replication_latency_ms: i64,
    /// Per flow with group replication.
    pub group_sets: Vec<GroupSet>,
    /// Per synced group and flow.
    pub group_lags: Vec<GroupLag>,
}

/// One criterion, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Criterion {
    /// What is judged, in words.
    pub name: String,
    /// The metric it reads.
    pub metric: String,
    /// The measured number(s), in words.
    pub measured: String,
    /// What passes.
    pub required: String,
    /// Whether it passes.
    pub go: bool,
}

/// The verdict: GO only when every criterion passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Every criterion passed.
    pub go: bool,
    /// Each criterion.
    pub criteria: Vec<Criterion>,
}

fn criterion(name: &str, metric: &str, measured: String, required: &str, go: bool) -> Criterion {
    Criterion {
        name: name.to_owned(),
        metric: metric.to_owned(),
        measured,
        required: required.to_owned(),
        go,
    }
}

/// Judge `m` against `t`.
pub fn evaluate(m: &Measurements, t: &Thresholds) -> Readiness {
    use crate::metrics::name;
    let mut criteria = vec![criterion(
        "no partition stopped by an error",
        name::REPLICATOR_FAILURE,
        m.replicator_failures.to_string(),
        "0",
        m.replicator_failures == 0,
    )];
    let group_sync_failures: i64 = m.group_lags.iter().map(|g| g.sync_failures).sum();
    criteria.push(criterion(
        "no failed group-offset sync",
        name::GROUP_SYNC_FAILURE,
        group_sync_failures.to_string(),
        "0",
        group_sync_failures == 0,
    ));
    for c in &m.clusters {
        criteria.push(criterion(
            &format!("cluster {} answers", c.alias),
            name::PING,
            u8::from(c.ping_ok).to_string(),
            "1",
            c.ping_ok,
        ));
    }
    criteria.push(criterion(
        "replication caught up",
        name::MESSAGE_LAG,
        m.message_lag.to_string(),
        &format!("< {}", t.max_message_lag),
        m.message_lag < t.max_message_lag,
    ));
    criteria.push(criterion(
        "records reach the target quickly",
        name::REPLICATION_LATENCY,
        format!("{} ms", m.replication_latency_ms),
        &format!("< {} ms", t.max_latency_ms),
        m.replication_latency_ms < t.max_latency_ms,
    ));
    for set in &m.group_sets {
        let missing: Vec<&str> = set
            .source_groups
            .iter()
            .filter(|g| !set.target_groups.contains(g))
            .map(String::as_str)
            .collect();
        let counts = format!(
            "{} on {}, {} on {}",
            set.source_groups.len(),
            set.source,
            set.target_groups.len(),
            set.target
        );
        criteria.push(criterion(
            &format!("the consumer groups of {} exist on {}", set.source, set.target),
            name::GROUP_COUNT,
            if missing.is_empty() {
                counts
            } else {
                format!("{counts}; missing on {}: {}", set.target, missing.join(", "))
            },
            &format!("every synced group of {} exists on {}", set.source, set.target),
            missing.is_empty(),
        ));
    }
    for g in &m.group_lags {
        let gap = (g.target_sum_offset_lag - g.source_sum_offset_lag).abs();
        criteria.push(criterion(
            &format!(
                "group {} is at the same place on {} and {}",
                g.group, g.source_alias, g.target_alias
            ),
            name::SUM_OFFSET_LAG,
            format!(
                "{} on {}, {} on {}",
                g.source_sum_offset_lag, g.source_alias, g.target_sum_offset_lag, g.target_alias
            ),
            &format!("differ by <= {}", t.max_offset_lag_gap),
            gap <= t.max_offset_lag_gap,
        ));
    }
    Readiness {
        go: criteria.iter().all(|c| c.go),
        criteria,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Measurements {
        let seen = |alias: &str| ClusterSeen {
            alias: alias.into(),
            ping_ok: true,
        };
        Measurements {
            replicator_failures: 0,
            clusters: vec![seen("source"), seen("target")],
            message_lag: 999,
            replication_latency_ms: 89_999,
            group_sets: vec![GroupSet {
                source: "source".into(),
                target: "target".into(),
                source_groups: vec!["billing".into(), "shipping".into()],
                target_groups: vec!["billing".into(), "shipping".into(), "new-on-target".into()],
            }],
            group_lags: vec![GroupLag {
                flow: "source->target".into(),
                group: "billing".into(),
                source_alias: "source".into(),
                target_alias: "target".into(),
                source_sum_offset_lag: 5_000,
                target_sum_offset_lag: 6_000,
                sync_failures: 0,
                offset_sync_age_s: Some(30),
            }],
        }
    }

    #[test]
    fn every_criterion_at_its_limit_is_go() {
        let r = evaluate(&healthy(), &Thresholds::default());
        assert!(r.go, "{r:#?}");
        assert_eq!(r.criteria.len(), 8);
    }

    #[test]
    fn each_failing_criterion_alone_is_no_go_and_says_why() {
        let t = Thresholds::default();
        type Break = Box<dyn Fn(&mut Measurements)>;
        let cases: Vec<(&str, Break)> = vec![
            ("ReplicatorFailure", Box::new(|m| m.replicator_failures = 1)),
            ("ConsumerGroupOffsetSyncFailure", Box::new(|m| m.group_lags[0].sync_failures = 2)),
            ("KafkaClusterPingSuccessCount", Box::new(|m| m.clusters[1].ping_ok = false)),
            ("MessageLag", Box::new(|m| m.message_lag = 1_000)),
            ("ReplicationLatency", Box::new(|m| m.replication_latency_ms = 90_000)),
            (
                "ConsumerGroupCount",
                Box::new(|m| m.group_sets[0].target_groups.retain(|g| g != "shipping")),
            ),
            ("SumOffsetLag", Box::new(|m| m.group_lags[0].target_sum_offset_lag = 3_999)),
        ];
        for (metric, break_it) in cases {
            let mut m = healthy();
            break_it(&mut m);
            let r = evaluate(&m, &t);
            assert!(!r.go, "{metric}: {r:#?}");
            let failed: Vec<&Criterion> = r.criteria.iter().filter(|c| !c.go).collect();
            assert_eq!(failed.len(), 1, "{metric}: {failed:#?}");
            assert_eq!(failed[0].metric, metric);
        }
        let mut m = healthy();
        m.group_sets[0].target_groups.clear();
        let r = evaluate(&m, &t);
        let c = r.criteria.iter().find(|c| c.metric == "ConsumerGroupCount").expect("group count");
        assert!(c.measured.contains("missing on target: billing, shipping"), "{}", c.measured);
    }
}
