//! The groups table: the last sync of each (flow, group, topic,
//! partition), the groups a flow knows, and where its next sync resumes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use ferry_core::domain::TopicPartition;

use super::calls::Bounded;
use super::error::{conditional, dynamo_err};
use super::schema::{delete_request, n, now_ms, s, spread_pk, ItemReader, PK, SK_GROUPS};
use super::{StateError, StateStore};

/// Outcome of one partition's last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSyncStatus {
    /// The translated offset was committed on the target.
    Synced,
    /// The target already held the translated offset.
    UpToDate,
    /// The target is ahead of the translation (the group moved on there):
    /// never moved back.
    TargetAhead,
    /// The group has active members on the target: never written.
    ActiveOnTarget,
    /// No record around the committed offset is replicated yet.
    NothingReplicated,
    /// The target holds a lower commit Ferry did not write: never
    /// overwritten.
    ForeignCommit,
    /// The commit failed; see `detail`.
    Failed,
    /// The topic is missing on the source or the target (deleted), and no
    /// plan has dealt with its cursors yet: not synced; see `detail`.
    TopicMissing,
}

impl GroupSyncStatus {
    /// The stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "synced",
            Self::UpToDate => "up-to-date",
            Self::TargetAhead => "target-ahead",
            Self::ActiveOnTarget => "active-on-target",
            Self::NothingReplicated => "nothing-replicated",
            Self::ForeignCommit => "foreign-commit",
            Self::Failed => "failed",
            Self::TopicMissing => "topic-missing",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        [
            Self::Synced,
            Self::UpToDate,
            Self::TargetAhead,
            Self::ActiveOnTarget,
            Self::NothingReplicated,
            Self::ForeignCommit,
            Self::Failed,
            Self::TopicMissing,
        ]
        .into_iter()
        .find(|s| s.as_str() == v)
    }
}

/// One partition of one group, as last synced by a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSyncItem {
    /// Group id.
    pub group: String,
    /// Source topic and partition.
    pub tp: TopicPartition,
    /// The target topic the sync looked at (`None` in items stored before
    /// Ferry kept it): a flow whose names changed since describes another
    /// topic's commits in its older items.
    pub target_topic: Option<String>,
    /// That topic's id, as the flow's cursor knew it (`None` if it did
    /// not, or in items stored before Ferry kept it): a topic deleted and
    /// created again under the same name holds another log, where these
    /// commits mean nothing.
    pub target_topic_id: Option<String>,
    /// Committed offset on the source.
    pub source_offset: i64,
    /// Its metadata string.
    pub metadata: Option<String>,
    /// The translation, if any.
    pub translated: Option<i64>,
    /// Whether the translation was exact (replication had reached it).
    pub exact: bool,
    /// The group's offset on the target after this sync, if any.
    pub target_offset: Option<i64>,
    /// The last offset this flow committed on the target (kept across
    /// syncs that write nothing): a target commit equal to it is Ferry's.
    pub written_offset: Option<i64>,
    /// The offset this flow itself last committed on the target: set only
    /// by a commit it made (or one it adopts, made by a sync that stopped
    /// before recording it), never by what it found in place, which may be
    /// the group's own. `None` in items stored before Ferry kept it. The
    /// opposite flow takes a commit equal to it on its source for a copy,
    /// and carries nothing back.
    pub own_commit: Option<i64>,
    /// When this flow made `own_commit` (ms since the epoch): of the two
    /// flows' own commits of a partition, only the later is a copy the
    /// other flow may find in place (after it, the other flow wrote, and
    /// the group may have come back to the same offset by itself).
    pub own_commit_ms: Option<i64>,
    /// How many times the target partition's log had been found truncated
    /// under Ferry's copies (the cursor's `target_rewinds`) in the cursor
    /// the translation behind `written_offset` was read from: a cursor
    /// that counts more since means that commit points into a history the
    /// target lost. `None` in items stored before Ferry recorded it (0).
    pub written_rewinds: Option<i64>,
    /// The last source offset whose translation the target held after one
    /// of this flow's syncs: the group's own commit, carried across. The
    /// opposite flow may overwrite that commit where it finds it.
    pub carried_source_offset: Option<i64>,
    /// The source commit this flow found to be the opposite flow's copy
    /// of the group's commit on its target (so it carried nothing back).
    /// Kept while the source holds that same commit: the opposite flow's
    /// record of it may be gone since (`ferry forget-flow`).
    pub copy_source_offset: Option<i64>,
    /// The offset a sync was about to commit on the target when it wrote
    /// this item (written before the commit, cleared after it is
    /// recorded): a target commit equal to it is Ferry's, though the sync
    /// stopped (timed out, crashed) before recording it.
    pub pending_offset: Option<i64>,
    /// How many records the group already read sit at or after the
    /// translation on the target (delivered again there, when the two
    /// clusters hold the partition's records in different orders).
    pub redelivered: i64,
    /// Outcome.
    pub status: GroupSyncStatus,
    /// Why, in words.
    pub detail: String,
    /// When checked (ms since the epoch).
    pub checked_ms: i64,
    /// The translation rule the sync that wrote this item followed (0 in
    /// items written before rules were counted): an item of an older rule
    /// is not reused as it stands (see the engine's `TRANSLATION_RULE`).
    pub rule: i64,
}

fn group_sk(tp: &TopicPartition, group: &str) -> String {
    // Topic names have no '/', partitions are numbers: the group is the rest.
    format!("{}/{}/{group}", tp.topic, tp.partition)
}

/// Sort key of the item listing the groups a flow syncs when new groups
/// are not detected (no '/', so never a partition).
const KNOWN_GROUPS: &str = "#known-groups";

/// Sort key of the item naming the group a flow's next sync starts at
/// (no '/', so never a partition).
const SYNC_RESUME: &str = "#sync-resume";

/// Sort key prefix of a group's sync lease: the group id follows.
const SYNC_LEASE: &str = "#sync-lease#";

/// Whether a group table sort key is a group partition's sync item (the
/// flow's other items have no '/' or start with '#', which no topic name
/// does).
fn is_group_partition(sk: &str) -> bool {
    sk.contains('/') && !sk.starts_with('#')
}

impl StateStore {
    /// Store the outcome of a sync, in batches.
    pub async fn put_group_syncs(&self, flow: &str, items: &[GroupSyncItem]) -> Result<(), StateError> {
        let shards = self.key_shards(flow).await?;
        let mut writes = Vec::with_capacity(items.len());
        for it in items {
            let mut item: HashMap<String, AttributeValue> = HashMap::new();
            item.insert(PK.into(), s(spread_pk(flow, shards, &it.tp)));
            item.insert(SK_GROUPS.into(), s(group_sk(&it.tp, &it.group)));
            item.insert("group_id".into(), s(&it.group));
            item.insert("topic".into(), s(&it.tp.topic));
            item.insert("partition_index".into(), n(i64::from(it.tp.partition)));
            item.insert("source_offset".into(), n(it.source_offset));
            if let Some(m) = &it.metadata {
                item.insert("metadata".into(), s(m));
            }
            if let Some(t) = it.translated {
                item.insert("translated_offset".into(), n(t));
            }
            item.insert("exact".into(), AttributeValue::Bool(it.exact));
            if let Some(t) = it.target_offset {
                item.insert("target_offset".into(), n(t));
            }
            item.insert("redelivered".into(), n(it.redelivered));
            item.insert("rule".into(), n(it.rule));
            if let Some(t) = it.written_offset {
                item.insert("written_offset".into(), n(t));
            }
            if let Some(t) = &it.target_topic {
                item.insert("target_topic".into(), s(t));
            }
            if let Some(t) = &it.target_topic_id {
                item.insert("target_topic_id".into(), s(t));
            }
            if let Some(t) = it.own_commit {
                item.insert("own_commit".into(), n(t));
            }
            if let Some(t) = it.own_commit_ms {
                item.insert("own_commit_ms".into(), n(t));
            }
            if let Some(t) = it.written_rewinds {
                item.insert("written_rewinds".into(), n(t));
            }
            if let Some(t) = it.carried_source_offset {
                item.insert("carried_source_offset".into(), n(t));
            }
            if let Some(t) = it.pending_offset {
                item.insert("pending_offset".into(), n(t));
            }
            if let Some(t) = it.copy_source_offset {
                item.insert("copy_source_offset".into(), n(t));
            }
            item.insert("status".into(), s(it.status.as_str()));
            item.insert("detail".into(), s(&it.detail));
            item.insert("checked_ms".into(), n(it.checked_ms));
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(|e| StateError::Dynamo {
                op: "BatchWriteItem",
                table: self.groups.clone(),
                detail: e.to_string(),
            })?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write_unordered(&self.groups, writes).await
    }

    /// Forget every group's last sync of one partition of `flow`: the
    /// partition's topic was deleted or replaced and its state forgotten,
    /// and an item kept would take a commit on a topic of the same name
    /// made later for Ferry's own (its `written_offset`), and overwrite an
    /// operator's reset there.
    pub async fn forget_group_syncs(&self, flow: &str, tp: &TopicPartition) -> Result<(), StateError> {
        let pk = spread_pk(flow, self.key_shards(flow).await?, tp);
        let prefix = format!("{}/{}/", tp.topic, tp.partition);
        let items = self.query_all_under(&self.groups, PK, s(&pk), Some((SK_GROUPS, &prefix))).await?;
        let keys: Vec<String> = items
            .iter()
            .filter_map(|i| i.get(SK_GROUPS).and_then(|v| v.as_s().ok()).cloned())
            .collect();
        let deletes = keys
            .iter()
            .map(|sk| delete_request(&self.groups, (PK, s(&pk)), (SK_GROUPS, s(sk))))
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&self.groups, deletes).await
    }

    /// Every stored group-sync item of a flow.
    pub async fn group_syncs(&self, flow: &str) -> Result<Vec<GroupSyncItem>, StateError> {
        let items = self.partition_items(&self.groups, flow, SK_GROUPS).await?;
        items
            .iter()
            .filter(|i| i.get(SK_GROUPS).and_then(|v| v.as_s().ok()).is_none_or(|k| is_group_partition(k)))
            .map(|i| self.group_item(i))
            .collect()
    }

    /// One group partition's last sync by `flow`, read consistently (what
    /// a sync of that flow stored before it committed is there).
    pub async fn group_sync(&self, flow: &str, group: &str, tp: &TopicPartition) -> Result<Option<GroupSyncItem>, StateError> {
        self.get_consistent(
            &self.groups,
            (PK, s(self.partition_pk(flow, tp).await?)),
            (SK_GROUPS, s(group_sk(tp, group))),
        )
        .await?
        .map(|i| self.group_item(&i))
        .transpose()
    }

    fn group_item(&self, i: &HashMap<String, AttributeValue>) -> Result<GroupSyncItem, StateError> {
        let r = ItemReader::new(&self.groups, i);
        Ok(GroupSyncItem {
            group: r.req_s("group_id")?,
            tp: TopicPartition::new(r.req_s("topic")?, r.req_n("partition_index")? as i32),
            source_offset: r.req_n("source_offset")?,
            target_topic: r.s("target_topic"),
            target_topic_id: r.s("target_topic_id"),
            metadata: r.s("metadata"),
            translated: r.n("translated_offset"),
            exact: r.bool("exact").unwrap_or(false),
            target_offset: r.n("target_offset"),
            written_offset: r.n("written_offset"),
            written_rewinds: r.n("written_rewinds"),
            own_commit: r.n("own_commit"),
            own_commit_ms: r.n("own_commit_ms"),
            redelivered: r.n("redelivered").unwrap_or(0),
            rule: r.n("rule").unwrap_or(0),
            carried_source_offset: r.n("carried_source_offset"),
            pending_offset: r.n("pending_offset"),
            copy_source_offset: r.n("copy_source_offset"),
            status: r
                .s("status")
                .as_deref()
                .and_then(GroupSyncStatus::parse)
                .ok_or_else(|| r.bad("status"))?,
            detail: r.s("detail").unwrap_or_default(),
            checked_ms: r.n("checked_ms").unwrap_or(0),
        })
    }

    /// Take (or renew) the lease on syncing `group` in `flow` for
    /// `owner`, until `ttl_ms` from now: between its read of the group's
    /// commits on the target and its own commit, no other sync of the same
    /// group may commit there, or a slower one would put back an older
    /// translation over a newer one (Kafka's offset commit has no
    /// condition). Returns when the lease ends (ms since the epoch), or
    /// None while another owner holds it.
    pub async fn acquire_group_sync(&self, flow: &str, group: &str, owner: &str, ttl_ms: i64) -> Result<Option<i64>, StateError> {
        let now = now_ms();
        let until = now + ttl_ms;
        let res = self
            .client
            .put_item()
            .table_name(&self.groups)
            .item(PK, s(flow))
            .item(SK_GROUPS, s(format!("{SYNC_LEASE}{group}")))
            .item("owner", s(owner))
            // One item per group, given back after each sync (one a
            // crash left is taken over once it ends): it never piles up.
            .item("lease_until_ms", n(until))
            .condition_expression("attribute_not_exists(#pk) OR lease_until_ms < :now OR #owner = :owner")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .bounded(&self.calls)
            .await;
        Ok(conditional("PutItem", &self.groups, res)?.then_some(until))
    }

    /// When the lease on syncing `group` ends, if one is recorded (taken
    /// by a sync that may still hold it).
    pub async fn group_sync_held_until(&self, flow: &str, group: &str) -> Result<Option<i64>, StateError> {
        let item = self
            .get_consistent(&self.groups, (PK, s(flow)), (SK_GROUPS, s(format!("{SYNC_LEASE}{group}"))))
            .await?;
        Ok(item.and_then(|i| i.get("lease_until_ms").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())))
    }

    /// Give the lease on syncing `group` back, if `owner` still holds it.
    pub async fn release_group_sync(&self, flow: &str, group: &str, owner: &str) -> Result<(), StateError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.groups)
            .key(PK, s(flow))
            .key(SK_GROUPS, s(format!("{SYNC_LEASE}{group}")))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("DeleteItem", &self.groups, res)?;
        Ok(())
    }

    /// The groups a flow syncs when it does not detect new ones, fixed at
    /// its first sync; `None` before that.
    pub async fn known_groups(&self, flow: &str) -> Result<Option<Vec<String>>, StateError> {
        let item = self
            .get_consistent(&self.groups, (PK, s(flow)), (SK_GROUPS, s(KNOWN_GROUPS)))
            .await?;
        Ok(item.map(|i| {
            i.get("groups")
                .and_then(|v| v.as_l().ok())
                .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                .unwrap_or_default()
        }))
    }

    /// Fix the groups a flow syncs (first writer wins).
    pub async fn set_known_groups(&self, flow: &str, groups: &[String]) -> Result<(), StateError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.groups)
            .item(PK, s(flow))
            .item(SK_GROUPS, s(KNOWN_GROUPS))
            .item("groups", AttributeValue::L(groups.iter().map(s).collect()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .bounded(&self.calls)
            .await;
        conditional("PutItem", &self.groups, res)?;
        Ok(())
    }

    /// The group a flow's next sync starts at: the first one an earlier
    /// sync had no time left for. `None`: from the first group.
    pub async fn group_sync_resume(&self, flow: &str) -> Result<Option<String>, StateError> {
        let item = self
            .get_consistent(&self.groups, (PK, s(flow)), (SK_GROUPS, s(SYNC_RESUME)))
            .await?;
        Ok(item.and_then(|i| i.get("group_id").and_then(|v| v.as_s().ok()).cloned()))
    }

    /// Set (or, with `None`, clear) the group a flow's next sync starts at.
    pub async fn set_group_sync_resume(&self, flow: &str, group: Option<&str>) -> Result<(), StateError> {
        match group {
            Some(g) => self
                .client
                .put_item()
                .table_name(&self.groups)
                .item(PK, s(flow))
                .item(SK_GROUPS, s(SYNC_RESUME))
                .item("group_id", s(g))
                .send()
                .bounded(&self.calls)
                .await
                .map(|_| ())
                .map_err(|e| dynamo_err("PutItem", &self.groups, e)),
            None => self.delete_one(&self.groups, (PK, s(flow)), (SK_GROUPS, s(SYNC_RESUME))).await,
        }
    }
}
