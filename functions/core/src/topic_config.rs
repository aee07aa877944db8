//! Which topic configurations are copied to the target, and what has to
//! change there to match the source.

use std::collections::BTreeMap;

/// Topic settings never copied: those that describe the source cluster's
/// own operation rather than the topic's data, or exist only on one
/// vendor's brokers; the target's durability, which depends on its own
/// brokers (`min.insync.replicas` above a target's replication factor
/// would stop every write while a broker is down); and those that would
/// change or refuse the records Ferry copies: `message.timestamp.type`
/// (`LogAppendTime` on the target replaces every record's timestamp) and
/// the timestamp windows (history copied later than it was written falls
/// outside them).
const NEVER_COPIED: &[&str] = &[
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
    "message.downconversion.enable",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "message.timestamp.type",
    "message.timestamp.difference.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
];

/// Of those, the ones an earlier Ferry copied, and which change or refuse
/// the copies: removed from a target whose value is the source's (almost
/// surely that copy).
pub const UNDONE: &[&str] = &[
    "message.timestamp.type",
    "message.timestamp.difference.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
];

/// Only ever raised on the target: a record the source took under a
/// larger limit may still be on its way.
pub const ONLY_RAISED: &str = "max.message.bytes";

/// Kafka's default `max.message.bytes`: a target topic is never created
/// with less (the source may hold records it took under a larger limit).
pub const DEFAULT_MAX_MESSAGE_BYTES: i64 = 1_048_588;

/// Whether a topic setting is copied to the target (see [`NEVER_COPIED`]).
pub fn is_copyable(name: &str) -> bool {
    !(name.starts_with("confluent.") || NEVER_COPIED.contains(&name))
}

/// The copyable overrides of a source topic, for a new target topic:
/// `max.message.bytes` only above Kafka's default.
pub fn copyable(overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    overrides
        .iter()
        .filter(|(k, _)| is_copyable(k))
        .filter(|(k, v)| *k != ONLY_RAISED || v.parse::<i64>().is_ok_and(|n| n > DEFAULT_MAX_MESSAGE_BYTES))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether two `cleanup.policy` values keep the same records: a list,
/// whose order means nothing (`compact,delete` is `delete,compact`).
pub fn same_cleanup_policy(a: &str, b: &str) -> bool {
    let set = |v: &str| -> std::collections::BTreeSet<String> {
        v.split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect()
    };
    set(a) == set(b)
}

/// What to set and what to delete on an existing target topic so that its
/// copyable overrides are the source's: set every source override whose
/// value differs on the target; delete every copyable target override the
/// source no longer has. `max.message.bytes` is the exception: raised to
/// the source's effective value when that is larger, never lowered nor
/// deleted (records the source took under its earlier limit may not be
/// copied yet).
pub fn changes(
    source_overrides: &BTreeMap<String, String>,
    source_effective: &BTreeMap<String, String>,
    target_effective: &BTreeMap<String, String>,
    target_overrides: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let want: BTreeMap<&String, &String> = source_overrides
        .iter()
        .filter(|(k, _)| is_copyable(k) && *k != ONLY_RAISED)
        .collect();
    let mut set: BTreeMap<String, String> = want
        .iter()
        .filter(|(k, v)| target_effective.get(**k) != Some(**v))
        .map(|(k, v)| ((*k).clone(), (*v).clone()))
        .collect();
    let number = |c: &BTreeMap<String, String>| c.get(ONLY_RAISED).and_then(|v| v.parse::<i64>().ok());
    if let Some(larger) = number(source_effective).filter(|s| number(target_effective).is_none_or(|t| s > &t)) {
        set.insert(ONLY_RAISED.to_owned(), larger.to_string());
    }
    let delete = target_overrides
        .iter()
        .filter(|(k, v)| {
            (is_copyable(k) && *k != ONLY_RAISED && !want.contains_key(k))
                || (UNDONE.contains(&k.as_str()) && source_overrides.get(*k) == Some(*v))
        })
        .map(|(k, _)| k.clone())
        .collect();
    (set, delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn sets_differences_and_deletes_what_the_source_dropped() {
        let source = m(&[
            ("retention.ms", "1000"),
            ("confluent.placement.constraints", "x"),
            ("segment.ms", "5"),
        ]);
        let target_eff = m(&[("retention.ms", "604800000"), ("segment.ms", "5"), ("cleanup.policy", "compact")]);
        let target_over = m(&[("segment.ms", "5"), ("cleanup.policy", "compact")]);
        let (set, delete) = changes(&source, &source, &target_eff, &target_over);
        assert_eq!(set, m(&[("retention.ms", "1000")]));
        assert_eq!(delete, vec!["cleanup.policy".to_string()]);
    }

    #[test]
    fn what_an_earlier_ferry_copied_that_changes_the_copies_is_removed() {
        let source = m(&[("message.timestamp.type", "LogAppendTime"), ("min.insync.replicas", "2")]);
        let target = m(&[("message.timestamp.type", "LogAppendTime"), ("min.insync.replicas", "2")]);
        let (set, delete) = changes(&source, &source, &target, &target);
        assert!(set.is_empty());
        assert_eq!(
            delete,
            vec!["message.timestamp.type".to_string()],
            "the target's own durability stays"
        );
        let operators = m(&[("message.timestamp.type", "LogAppendTime")]);
        let (_, delete) = changes(&m(&[]), &m(&[]), &operators, &operators);
        assert!(delete.is_empty(), "a target's own setting, not the source's, stays");
    }

    #[test]
    fn a_new_target_is_never_created_with_less_than_kafkas_largest_record_default() {
        assert!(copyable(&m(&[("max.message.bytes", "100000")])).is_empty());
        assert_eq!(
            copyable(&m(&[("max.message.bytes", "2000000")])),
            m(&[("max.message.bytes", "2000000")])
        );
    }

    #[test]
    fn a_cleanup_policy_is_a_set() {
        assert!(same_cleanup_policy("compact,delete", "delete, compact"));
        assert!(!same_cleanup_policy("compact", "compact,delete"));
        assert!(!same_cleanup_policy("delete", "compact"));
    }

    #[test]
    fn the_largest_record_size_is_only_ever_raised() {
        let target = m(&[("max.message.bytes", "2000000")]);
        let lower = m(&[("max.message.bytes", "100000")]);
        let (set, delete) = changes(&lower, &lower, &target, &target);
        assert!(set.is_empty() && delete.is_empty(), "lowered: {set:?} {delete:?}");
        let default = m(&[("max.message.bytes", "1048588")]);
        let (set, delete) = changes(&m(&[]), &default, &target, &target);
        assert!(set.is_empty() && delete.is_empty(), "dropped on the source: {set:?} {delete:?}");
        let higher = m(&[("max.message.bytes", "3000000")]);
        let (set, _) = changes(&higher, &higher, &target, &target);
        assert_eq!(set, m(&[("max.message.bytes", "3000000")]));
        // A target below the source's effective value is raised, the
        // source's own value being its broker's default or an override at
        // or below Kafka's default.
        let small = m(&[("max.message.bytes", "200000")]);
        let (set, _) = changes(&m(&[]), &default, &small, &small);
        assert_eq!(set, m(&[("max.message.bytes", "1048588")]));
        let (set, _) = changes(&lower, &lower, &m(&[("max.message.bytes", "50000")]), &m(&[]));
        assert_eq!(set, m(&[("max.message.bytes", "100000")]));
    }

    #[test]
    fn settings_that_would_change_or_refuse_the_copies_are_never_copied() {
        for name in [
            "message.timestamp.type",
            "message.timestamp.before.max.ms",
            "message.timestamp.after.max.ms",
            "message.timestamp.difference.max.ms",
            "min.insync.replicas",
            "unclean.leader.election.enable",
        ] {
            assert!(!is_copyable(name), "{name}");
        }
    }

    #[test]
    fn vendor_and_throttle_settings_are_never_copied() {
        assert!(!is_copyable("confluent.tier.enable"));
        assert!(!is_copyable("leader.replication.throttled.replicas"));
        assert!(is_copyable("cleanup.policy"));
    }
}
