//! The ACLs a flow copies for the topics it replicates.

use super::*;

/// The topic ACLs a flow would copy to its target.
pub(super) struct AclPlan {
    /// Every topic ACL on the source.
    pub(super) source: Vec<AclBinding>,
    /// Those to copy (see `ferry_core::acls`).
    pub(super) wanted: Vec<AclBinding>,
    /// Those the target lacks; `None`: the target has no authorizer.
    pub(super) missing: Option<Vec<AclBinding>>,
}

/// The ACLs to copy for the topics of `work`; `None` when the source has
/// no authorizer (nothing to copy).
pub(super) async fn decide_acls(ferry: &Ferry, flow: &FlowSpec, work: &[PartitionWork]) -> Result<Option<AclPlan>, FerryError> {
    let topics: BTreeSet<&str> = work.iter().map(|w| w.source.topic.as_str()).collect();
    let Some(source) = ferry.cluster(&flow.source.id)?.topic_acls().await? else {
        return Ok(None);
    };
    let wanted = ferry_core::acls::to_copy(flow, topics.iter().copied(), &source);
    let existing = if wanted.is_empty() {
        Some(Vec::new())
    } else {
        ferry.cluster(&flow.target.id)?.topic_acls().await?
    };
    let missing = existing.map(|e| wanted.iter().filter(|a| !e.contains(a)).cloned().collect());
    Ok(Some(AclPlan { source, wanted, missing }))
}

/// Create on the target the topic ACLs it lacks. Never deletes.
pub(super) async fn apply_acls(ferry: &Ferry, flow: &FlowSpec, acls: AclPlan) -> Result<Vec<String>, FerryError> {
    if acls.wanted.is_empty() {
        return Ok(Vec::new());
    }
    let Some(missing) = acls.missing else {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, acls = acls.wanted.len(),
            "the target has no authorizer (SECURITY_DISABLED): topic ACLs are not copied; enable one, or set CopyAccessControlListsForTopics to false"
        );
        return Ok(Vec::new());
    };
    ferry.cluster(&flow.target.id)?.create_acls(&missing).await?;
    let described: Vec<String> = missing.iter().map(ToString::to_string).collect();
    for a in &described {
        tracing::info!(replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, acl = %a, "copied topic ACL");
    }
    Ok(described)
}
