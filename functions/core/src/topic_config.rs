//! Which topic configurations are copied to the target, and what has to
//! change there to match the source.

use std::collections::BTreeMap;

/// Topic settings that describe the source cluster's own operation rather
/// than the topic's data, or exist only on one vendor's brokers: never
/// copied.
pub fn is_copyable(name: &str) -> bool {
    !(name.starts_with("confluent.")
        || name == "leader.replication.throttled.replicas"
        || name == "follower.replication.throttled.replicas"
        || name == "message.downconversion.enable")
}

/// The copyable overrides of a source topic.
pub fn copyable(overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    overrides
        .iter()
        .filter(|(k, _)| is_copyable(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What to set and what to delete on an existing target topic so that its
/// copyable overrides are the source's: set every source override whose
/// value differs on the target; delete every copyable target override the
/// source no longer has.
pub fn changes(
    source_overrides: &BTreeMap<String, String>,
    target_effective: &BTreeMap<String, String>,
    target_overrides: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let want = copyable(source_overrides);
    let set = want
        .iter()
        .filter(|(k, v)| target_effective.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete = target_overrides
        .keys()
        .filter(|k| is_copyable(k) && !want.contains_key(*k))
        .cloned()
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
        let target_eff = m(&[("retention.ms", "604800000"), ("segment.ms", "5"), ("max.message.bytes", "2000")]);
        let target_over = m(&[("segment.ms", "5"), ("max.message.bytes", "2000")]);
        let (set, delete) = changes(&source, &target_eff, &target_over);
        assert_eq!(set, m(&[("retention.ms", "1000")]));
        assert_eq!(delete, vec!["max.message.bytes".to_string()]);
    }

    #[test]
    fn vendor_and_throttle_settings_are_never_copied() {
        assert!(!is_copyable("confluent.tier.enable"));
        assert!(!is_copyable("leader.replication.throttled.replicas"));
        assert!(is_copyable("cleanup.policy"));
    }
}
