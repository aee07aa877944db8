//! Topics a flow's filters select that are named like copies of a
//! PREFIXED flow (`<alias>.<topic>`): never copied again, or flows would
//! copy each other's copies forever. A name spelled out is refused with
//! the definition; a pattern written for such names, which selects
//! nothing else, is said here.

use std::collections::BTreeMap;

use ferry_adapters::kafka::TopicMeta;
use ferry_core::config::{as_written, FlowSpec};

use crate::context::Ferry;

/// Warns, once per plan, of each pattern of `TopicsToReplicate` written
/// for copy names (it starts with a PREFIXED alias and an escaped dot,
/// and has no alternation) whose every
/// topic on the source is named like a copy (`copies`), none of the
/// flow's `topics`: it copies nothing, and without this nothing would say
/// so. A broader pattern (`.*`) that selects only copies today, as a flow
/// back on a target holding nothing but copies yet, is not warned of: it
/// copies the topics created there later.
pub(super) fn warn_of_patterns_selecting_only_copies(
    ferry: &Ferry,
    flow: &FlowSpec,
    topics: &BTreeMap<String, TopicMeta>,
    copies: &[String],
) {
    if copies.is_empty() {
        return;
    }
    for r in &flow.topics_include {
        let named: Vec<&str> = copies.iter().map(String::as_str).filter(|t| r.is_match(t)).collect();
        if named.is_empty() || topics.keys().any(|t| r.is_match(t)) {
            continue;
        }
        let pattern = as_written(r);
        // Written for copy names: `<alias>\.` first, the dot escaped (an
        // unescaped one matches any character: `app.*` selects `app-events`
        // too, once it exists), and no alternation (another branch may
        // select topics created later).
        if pattern.contains('|') {
            continue;
        }
        let written = pattern.strip_prefix('^').unwrap_or(pattern);
        let Some(alias) = ferry
            .spec
            .replica_prefix(named[0])
            .filter(|a| written.starts_with(&format!("{a}\\.")))
        else {
            continue;
        };
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), pattern = %pattern, topics = %named.join(","),
            "TopicsToReplicate pattern `{pattern}` selects only topics named like copies (starting with `{alias}.`, the prefix \
             of copies named PREFIXED_WITH_SOURCE_CLUSTER_ALIAS), which Ferry never copies again: it copies nothing. Fix: if \
             they are copies, leave the pattern out (their records are copied from the topics they copy); if they are an \
             application's own topics, copy them with a replicator whose flows all use IDENTICAL naming"
        );
    }
}
