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

/// How long a record written now may stay in a topic with these
/// configuration values in effect (defaults included): until retention
/// deletes its segment, which happens once the segment's newest record is
/// `retention.ms` old, and a segment takes records for up to `segment.ms`
/// before it rolls. `None` when the topic may keep it for ever: compacted
/// (the latest record of a key stays), retention -1, or the values
/// unknown.
pub fn record_lifetime(effective: &BTreeMap<String, String>) -> Option<std::time::Duration> {
    if effective
        .get("cleanup.policy")
        .is_none_or(|p| p.split(',').any(|v| v.trim() == "compact"))
    {
        return None;
    }
    let ms = |name: &str| effective.get(name).and_then(|v| v.trim().parse::<i64>().ok());
    let retention = ms("retention.ms").filter(|&r| r >= 0)?;
    let segment = ms("segment.ms").filter(|&s| s >= 0)?;
    Some(std::time::Duration::from_millis(
        u64::try_from(retention.saturating_add(segment)).ok()?,
    ))
}

/// How long the state store keeps the record of an idempotent producer
/// Ferry wrote into these topics with (by which the opposite flow knows
/// its copies and does not send them back): twice the longest
/// [`record_lifetime`] of the topics, and a week more, so that retention
/// doubled since, or a flow back a week behind, still finds it. `None`
/// (kept for ever) when any topic may keep a record for ever, or when
/// there are no topics to judge by.
pub fn producer_record_lifetime<'a>(topics: impl IntoIterator<Item = &'a BTreeMap<String, String>>) -> Option<std::time::Duration> {
    let mut longest: Option<std::time::Duration> = None;
    for effective in topics {
        let l = record_lifetime(effective)?;
        longest = Some(longest.map_or(l, |m| m.max(l)));
    }
    Some(longest? * 2 + std::time::Duration::from_secs(7 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_record_outlives_every_record_it_wrote_and_compacted_topics_keep_it_for_ever() {
        use std::time::Duration;
        let week = Duration::from_secs(7 * 24 * 3600);
        let hour = m(&[("cleanup.policy", "delete"), ("retention.ms", "3600000"), ("segment.ms", "600000")]);
        let day = m(&[
            ("cleanup.policy", "delete"),
            ("retention.ms", "86400000"),
            ("segment.ms", "3600000"),
        ]);
        assert_eq!(record_lifetime(&hour), Some(Duration::from_secs(4200)));
        assert_eq!(producer_record_lifetime([&hour]), Some(Duration::from_secs(8400) + week));
        // The longest of the topics, doubled, and a week.
        assert_eq!(
            producer_record_lifetime([&hour, &day]),
            Some(Duration::from_secs(2 * 90_000) + week)
        );
        // Any topic that may keep a record for ever keeps the producer's record for ever.
        for forever in [
            m(&[("cleanup.policy", "compact"), ("retention.ms", "3600000"), ("segment.ms", "600000")]),
            m(&[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "3600000"),
                ("segment.ms", "600000"),
            ]),
            m(&[("cleanup.policy", "delete"), ("retention.ms", "-1"), ("segment.ms", "600000")]),
            m(&[("cleanup.policy", "delete"), ("segment.ms", "600000")]),
            m(&[("cleanup.policy", "delete"), ("retention.ms", "3600000")]),
            m(&[("retention.ms", "3600000"), ("segment.ms", "600000")]),
            m(&[("cleanup.policy", "delete"), ("retention.ms", "soon"), ("segment.ms", "600000")]),
        ] {
            assert_eq!(record_lifetime(&forever), None, "{forever:?}");
            assert_eq!(producer_record_lifetime([&hour, &forever]), None, "{forever:?}");
        }
        assert_eq!(producer_record_lifetime([]), None);
    }

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
