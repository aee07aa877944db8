//! The SyncGroups step: for every flow with consumer-group replication,
//! translate each selected group's committed offsets on the source into
//! the target's offsets, exactly (see `ferry_core::groups`), and commit
//! them on the target, never to a group with members there and never
//! backwards. Each partition's outcome goes to the groups table, where
//! `ferry status` and operators read it.

use std::collections::{BTreeMap, HashMap};

use tokio::time::Instant;

use ferry_adapters::kafka::groups::Committed;
use ferry_adapters::kafka::KafkaCluster;
use ferry_adapters::kafka::OffsetSpec;
use ferry_adapters::state::{now_ms, GroupSyncItem, GroupSyncStatus};
use ferry_adapters::state::{CursorItem, RunKey};
use ferry_core::config::{FlowSpec, GroupSpec};
use ferry_core::domain::TopicPartition;
use ferry_core::groups::{
    decide, first_uncovered, first_uncovered_source, redelivered, translate, CommitOwner, Forward, Reverse, SyncDecision, Translation,
};
use ferry_core::offset_map::OffsetRun;
use serde::{Deserialize, Serialize};

use crate::context::Ferry;
use crate::error::FerryError;

/// What one flow's sync did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowGroupSync {
    /// Flow id.
    pub flow: String,
    /// Groups looked at (the ConsumerGroupCount metric).
    pub groups: usize,
    /// Partitions whose offset was committed on the target.
    pub committed: usize,
    /// Partitions already at their translation.
    pub up_to_date: usize,
    /// Partitions skipped because the group has members on the target.
    pub active_on_target: usize,
    /// Partitions not synced: nothing replicated yet, or the target ahead.
    pub waiting: usize,
    /// Failures (the ConsumerGroupOffsetSyncFailure metric), with causes.
    pub failures: Vec<String>,
    /// Groups left for the next execution: the invocation ran out of time.
    #[serde(default)]
    pub deferred: usize,
    /// Groups left for the next sync: another sync of the same group (an
    /// overlapping execution, or `ferry move`) held its lease.
    #[serde(default)]
    pub busy: usize,
}

/// Output of a SyncGroups invocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncGroupsOutput {
    /// One entry per flow with consumer-group replication.
    pub flows: Vec<FlowGroupSync>,
    /// Failures of all flows together: of a flow as a whole, of a group
    /// (refused by IAM, state unreadable), of a group partition. The state
    /// machine fails the execution on any (the ExecutionsFailed alarm): the
    /// first two leave no sync item behind, so no metric counts them.
    #[serde(default)]
    pub failures: usize,
}

/// Time a SyncGroups invocation keeps back from its deadline: no group is
/// started after it (one group's sync is a few requests, each bounded by
/// the request timeout).
pub const SYNC_DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_secs(20);

/// A sync commits a group only while its lease (`Settings::group_sync_lease`,
/// see [`ferry_adapters::state::StateStore::acquire_group_sync`]) has
/// this much left: a request timeout and some seconds (at most half the
/// lease), so that the commit of a sync that stalled does not land after
/// the next holder read the target.
pub(crate) fn commit_margin_ms(ferry: &Ferry) -> i64 {
    let s = &ferry.settings;
    let wanted = s.request_timeout + std::time::Duration::from_secs(5);
    i64::try_from(wanted.min(s.group_sync_lease / 2).as_millis()).unwrap_or(i64::MAX / 2)
}

/// The lease a sync of one group takes, in ms.
pub(crate) fn lease_ms(ferry: &Ferry) -> i64 {
    i64::try_from(ferry.settings.group_sync_lease.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Sync every flow's groups once; no group is started at or after
/// `deadline` (those left are counted in `deferred`, and the next sync
/// starts at the first of them), and each flow has an equal share of the
/// time.
pub async fn sync_groups(ferry: &Ferry, deadline: Option<Instant>) -> Result<SyncGroupsOutput, FerryError> {
    let mut out = SyncGroupsOutput::default();
    let syncing: Vec<(&FlowSpec, &GroupSpec)> = ferry
        .spec
        .flows
        .iter()
        .filter_map(|f| f.groups.as_ref().filter(|g| g.sync_offsets).map(|g| (f, g)))
        .collect();
    for (n, &(flow, g)) in syncing.iter().enumerate() {
        // Each flow gets an equal share of the time left (what one leaves
        // unused goes to the next): one flow's many groups never starve
        // the others'.
        let share = deadline.map(|d| {
            let now = Instant::now();
            now + d.saturating_duration_since(now) / u32::try_from(syncing.len() - n).unwrap_or(1)
        });
        // A flow that cannot sync (its configuration refused against
        // another replicator's, state unreadable) is a failure of that
        // flow's group sync, not of the others'.
        match sync_flow(ferry, flow, g, share, None, None).await {
            Ok((f, _)) => out.flows.push(f),
            Err(e) => {
                tracing::error!(
                    replicator = %ferry.spec.name, flow = %flow.id(), cause = %e, error_type = e.error_type(),
                    "ConsumerGroupOffsetSyncFailure: the flow's groups were not synced"
                );
                out.flows.push(FlowGroupSync {
                    flow: flow.id(),
                    failures: vec![e.to_string()],
                    ..Default::default()
                });
            }
        }
    }
    out.failures = out.flows.iter().map(|f| f.failures.len()).sum();
    Ok(out)
}

/// `groups` (sorted) in the order a sync takes them: from `resume` (the
/// first at or after it) to the end, then those before it.
fn in_turn(mut groups: Vec<String>, resume: Option<&str>) -> Vec<String> {
    if let Some(r) = resume {
        let at = groups.partition_point(|g| g.as_str() < r);
        groups.rotate_left(at);
    }
    groups
}

fn selected(g: &GroupSpec, group: &str) -> bool {
    g.include.iter().any(|r| r.is_match(group)) && !g.exclude.iter().any(|r| r.is_match(group))
}

/// The consumer groups on `cluster` that `g` selects, sorted: groups of
/// either consumer protocol and groups that only ever committed offsets.
pub(crate) async fn consumer_groups(cluster: &KafkaCluster, g: &GroupSpec) -> Result<Vec<String>, FerryError> {
    let mut groups: Vec<String> = cluster
        .list_groups()
        .await?
        .into_iter()
        .filter(|l| l.protocol_type == "consumer" || l.protocol_type.is_empty())
        .map(|l| l.group_id)
        .filter(|id| selected(g, id))
        .collect();
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// Sync the groups of `flow` that `g` selects now, whatever the schedule
/// (`ferry move`'s last sync before an application starts on the target):
/// only those of `groups` that the flow syncs. Returns the outcome per
/// group partition, as stored; the round robin of the scheduled syncs is
/// left as it was.
/// `holder` holds (or takes, and keeps) the groups' sync leases: the
/// caller gives them back.
pub async fn sync_groups_now(
    ferry: &Ferry,
    flow: &FlowSpec,
    groups: &[String],
    holder: &str,
) -> Result<(FlowGroupSync, Vec<GroupSyncItem>), FerryError> {
    let g = flow.groups.as_ref().filter(|g| g.sync_offsets).ok_or_else(|| {
        FerryError::Input(format!(
            "flow {} does not sync consumer group offsets. Fix: set SynchroniseConsumerGroupOffsets to true in its \
             ConsumerGroupReplication (replication-info.json)",
            flow.id()
        ))
    })?;
    sync_flow(ferry, flow, g, None, Some(groups), Some(holder)).await
}

async fn sync_flow(
    ferry: &Ferry,
    flow: &FlowSpec,
    g: &GroupSpec,
    deadline: Option<Instant>,
    only: Option<&[String]>,
    holder: Option<&str>,
) -> Result<(FlowGroupSync, Vec<GroupSyncItem>), FerryError> {
    let flow_key = ferry.flow_key(flow);
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let mut report = FlowGroupSync {
        flow: flow.id(),
        ..Default::default()
    };

    let mut groups = consumer_groups(&source, g).await?;
    if !g.detect_new {
        match ferry.store.known_groups(&flow_key).await? {
            Some(known) => groups.retain(|id| known.contains(id)),
            None => ferry.store.set_known_groups(&flow_key, &groups).await?,
        }
    }
    if let Some(only) = only {
        groups.retain(|id| only.contains(id));
    }
    report.groups = groups.len();

    // Cursors before runs, always (see `StateStore::runs_from`): the
    // cursors read here bound what the runs read later must hold.
    let cursors: HashMap<TopicPartition, CursorItem> = ferry
        .store
        .list_cursors(&flow_key)
        .await?
        .into_iter()
        .map(|c| (c.tp.clone(), c))
        .collect();
    let opposite = match crate::opposite::translates_through(ferry, flow, g).await? {
        Some(key) => {
            let opposite_cursors = ferry
                .store
                .list_cursors(&key)
                .await?
                .into_iter()
                .map(|c| (c.tp.clone(), c))
                .collect();
            // Where the source's logs end (read_committed, as the groups
            // read them): records past this flow's cursor may be in flight
            // to the target. Read after BOTH flows' cursors: an end read
            // before the opposite cursor could miss a record produced here
            // that sits below an opposite copy that cursor already covers,
            // and the translation could then pass its copy (a skip).
            let tps: Vec<TopicPartition> = cursors.keys().cloned().collect();
            let ends = if tps.is_empty() {
                HashMap::new()
            } else {
                source.list_offsets(&tps, OffsetSpec::Latest, true).await?
            };
            Some(Opposite {
                flow_key: key,
                cursors: opposite_cursors,
                source_ends: ends,
            })
        }
        None => None,
    };
    let previous = syncs_by_partition(ferry.store.group_syncs(&flow_key).await?);
    // The opposite flow's syncs, whatever the mode: a target commit it
    // carried over to the other cluster is the group's own, not a foreign one.
    let carried = match crate::opposite::flow_key(ferry, flow).await? {
        Some(o) => syncs_by_partition(ferry.store.group_syncs(&o).await?),
        None => HashMap::new(),
    };
    // Where the target's logs start: a translation below it (records the
    // target no longer holds) is committed at it instead, never at an
    // offset the broker would answer "out of range" for (the consumer's
    // auto.offset.reset could then jump to the end).
    let target_tps: Vec<TopicPartition> = cursors
        .values()
        .map(|c| TopicPartition::new(c.target_topic.clone(), c.tp.partition))
        .collect();
    let target_starts = if target_tps.is_empty() {
        HashMap::new()
    } else {
        target.list_offsets(&target_tps, OffsetSpec::Earliest, false).await?
    };
    let seen = Seen {
        cursors: &cursors,
        previous: &previous,
        carried: &carried,
        target_starts: &target_starts,
    };

    // Round robin: the sync starts at the first group an earlier one had
    // no time left for, and goes on from there (those before it last), so
    // every group gets its turn whatever the others do: ones that commit
    // nothing or fail take no more turns than the rest.
    let resume = match only {
        Some(_) => None,
        None => ferry.store.group_sync_resume(&flow_key).await?,
    };
    let groups = in_turn(groups, resume.as_deref());
    let owner = holder.map_or_else(|| format!("sync-{}", uuid::Uuid::new_v4()), str::to_owned);
    let mut items: Vec<GroupSyncItem> = Vec::new();
    let mut stopped_at: Option<&str> = None;
    for (n, group) in groups.iter().enumerate() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            report.deferred = groups.len() - n;
            stopped_at = Some(group.as_str());
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), synced = n, deferred = report.deferred, next = %group,
                "out of time: the next execution starts at the first group left"
            );
            break;
        }
        failpoint::before_group_sync().await;
        let Some(lease_until) = ferry.store.acquire_group_sync(&flow_key, group, &owner, lease_ms(ferry)).await? else {
            report.busy += 1;
            tracing::info!(
                replicator = %ferry.spec.name, flow = %flow.id(), group = %group,
                "another sync of this group is under way: left to the next sync"
            );
            continue;
        };
        let res = sync_group(
            ferry,
            flow,
            &flow_key,
            opposite.as_ref(),
            &source,
            &target,
            group,
            &seen,
            lease_until,
        )
        .await;
        // Recorded group by group, under the lease: a sync that runs out
        // of time loses nothing it did.
        let stored = match &res {
            Ok(done) => ferry.store.put_group_syncs(&flow_key, done).await,
            Err(_) => Ok(()),
        };
        if holder.is_none() {
            if let Err(e) = ferry.store.release_group_sync(&flow_key, group, &owner).await {
                tracing::warn!(
                    replicator = %ferry.spec.name, flow = %flow.id(), group = %group, cause = %e,
                    "the group's sync lease was not given back: the next sync of it waits until it ends"
                );
            }
        }
        stored?;
        match res {
            Ok(mut done) => items.append(&mut done),
            Err(e) => {
                tracing::error!(
                    replicator = %ferry.spec.name, flow = %flow.id(), group = %group, cause = %e,
                    error_type = e.error_type(), "ConsumerGroupOffsetSyncFailure: group not synced"
                );
                report.failures.push(format!("group {group}: {e}"));
            }
        }
    }
    if only.is_none() && stopped_at != resume.as_deref() {
        ferry.store.set_group_sync_resume(&flow_key, stopped_at).await?;
    }
    for i in &items {
        match i.status {
            GroupSyncStatus::Synced => report.committed += 1,
            GroupSyncStatus::UpToDate => report.up_to_date += 1,
            GroupSyncStatus::ActiveOnTarget => report.active_on_target += 1,
            GroupSyncStatus::TargetAhead | GroupSyncStatus::NothingReplicated | GroupSyncStatus::ForeignCommit => report.waiting += 1,
            GroupSyncStatus::Failed => report.failures.push(format!("group {} {}: {}", i.group, i.tp, i.detail)),
        }
    }
    tracing::info!(
        replicator = %ferry.spec.name, flow = %flow.id(), groups = report.groups, committed = report.committed,
        up_to_date = report.up_to_date, active_on_target = report.active_on_target, waiting = report.waiting,
        failures = report.failures.len(), "consumer groups synced"
    );
    Ok((report, items))
}

type SyncsByPartition = HashMap<(String, TopicPartition), GroupSyncItem>;

fn syncs_by_partition(items: Vec<GroupSyncItem>) -> SyncsByPartition {
    items.into_iter().map(|i| ((i.group.clone(), i.tp.clone()), i)).collect()
}

/// The opposite flow, as ENHANCED translation reads it.
struct Opposite {
    /// Its state key.
    flow_key: String,
    /// Its cursors, by its source partition (this flow's target).
    cursors: HashMap<TopicPartition, CursorItem>,
    /// This flow's source end offsets (read_committed), read after both
    /// flows' cursors.
    source_ends: HashMap<TopicPartition, i64>,
}

/// At most this many runs are read for one lookup of a translation (the
/// runs between two clusters' orders of one partition): past it, the
/// translation is not called exact.
const RUNS_PER_LOOKUP: i32 = 100;

/// What a flow's sync knows before it looks at any group.
struct Seen<'a> {
    /// The flow's cursors.
    cursors: &'a HashMap<TopicPartition, CursorItem>,
    /// This flow's last sync of each group partition.
    previous: &'a SyncsByPartition,
    /// The opposite flow's, keyed by its source partition (this flow's target).
    carried: &'a SyncsByPartition,
    /// The target partitions' log-start offsets.
    target_starts: &'a HashMap<TopicPartition, i64>,
}

impl Seen<'_> {
    /// Who wrote the target's `current` commit of `group` on `target_tp`.
    fn owner(&self, group: &str, tp: &TopicPartition, target_tp: &TopicPartition, current: Option<i64>) -> CommitOwner {
        let Some(cur) = current else { return CommitOwner::Nobody };
        let key = (group.to_owned(), tp.clone());
        let prev = self.previous.get(&key);
        let written = prev.and_then(written_offset);
        // What a sync was about to commit when it stopped before recording
        // that it had (the function timed out or died in between).
        let pending = prev.and_then(|p| p.pending_offset);
        let carried = self
            .carried
            .get(&(group.to_owned(), target_tp.clone()))
            .and_then(|o| o.carried_source_offset);
        // At or past what this flow wrote: the group itself went on from
        // Ferry's commit there (it consumed, then moved away), or Ferry's
        // own later commit whose sync item is not stored yet (an
        // overlapping sync, or one that stopped between its commit and its
        // write). Ferry only ever moves a commit forward; a reset below it
        // is someone else's.
        if written.is_some_and(|w| cur >= w) || carried == Some(cur) || pending.is_some_and(|p| cur >= p) {
            CommitOwner::Ferry
        } else {
            CommitOwner::Other
        }
    }
}

/// A target commit made before the target's log was last found truncated
/// under Ferry's copies (the cursor's `target_rewinds`, `target_rewound_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LostUnder {
    /// Ferry's own commit (this flow wrote it, or was about to), from a
    /// translation read before the truncation: it may point past records
    /// the group never read, and moves to the new translation, even below
    /// it (never above: re-delivery at worst). Where the log parted, if
    /// known.
    Ferrys(Option<i64>),
    /// Someone else's, past where the log parted: reported, never
    /// overwritten.
    Others(i64),
}

/// Whether the target's commit `current` of a partition was made in a
/// history of its log that the target lost since (`prev`: this flow's
/// last sync of it; `cursor`, read before the translation).
fn lost_under(cursor: &CursorItem, prev: Option<&GroupSyncItem>, current: Option<i64>) -> Option<LostUnder> {
    let cur = current?;
    let p = prev?;
    if written_offset(p) == Some(cur) || p.pending_offset == Some(cur) {
        // Counted, not timed: a sync that read its cursors before a rewind
        // and committed after it still made its commit in the old history.
        return (p.written_rewinds.unwrap_or(0) < cursor.target_rewinds).then_some(LostUnder::Ferrys(cursor.target_rewound_from));
    }
    // Someone else's, in place before the rewind (or reported since, and
    // still in place).
    let (at_ms, from) = cursor.target_rewound_ms.zip(cursor.target_rewound_from)?;
    let reported = p.detail.contains(OTHERS_LOST);
    (cur > from && p.target_offset == Some(cur) && (p.checked_ms < at_ms || reported)).then_some(LostUnder::Others(from))
}

/// The words that mark [`LostUnder::Others`] in a sync item's detail.
const OTHERS_LOST: &str = "after this commit, which is not Ferry's";

/// The last offset a flow wrote on the target, from its last sync. Items
/// stored before `written_offset` existed hold it in `target_offset`
/// when that sync wrote it or found it in place.
fn written_offset(p: &GroupSyncItem) -> Option<i64> {
    p.written_offset.or_else(|| {
        matches!(p.status, GroupSyncStatus::Synced | GroupSyncStatus::UpToDate)
            .then_some(p.target_offset)
            .flatten()
    })
}

/// Where the history a group committed `offset` in (`epoch`: the leader
/// epoch of the last record it read, as Kafka's clients commit it since
/// KIP-320) parts from the source's history that the cursor's leader
/// epochs `history` describe ((first offset, epoch), oldest first), if it
/// does below `offset`: the commit is then in records an unclean leader
/// election replaced, and the group never read the new history's records
/// from there. Found without a request, as Kafka's consumer finds it with
/// the leader's answer: the source's largest epoch at or below `epoch`
/// ends (the next epoch starts) below `offset`. An epoch newer than all
/// the cursor read, older than all it kept, or none (-1): nothing to
/// compare, taken as the same history.
fn replaced_from(offset: i64, epoch: i32, history: &[(i64, i32)]) -> Option<i64> {
    if epoch < 0 {
        return None;
    }
    let i = history.iter().rposition(|&(_, e)| e <= epoch)?;
    let &(end, _) = history.get(i + 1)?;
    (end < offset).then_some(end)
}

/// Translate commit `c` of source partition `tp` (target `target_tp`),
/// with how many records the group consumed will be delivered again.
async fn translation(
    ferry: &Ferry,
    flow_key: &str,
    cursor: &CursorItem,
    opposite: Option<&Opposite>,
    tp: &TopicPartition,
    target_tp: &TopicPartition,
    c: i64,
) -> Result<Option<(Translation, i64)>, FerryError> {
    let store = &ferry.store;
    // From the run holding the group's last record (below `c`), which
    // may end where the next starts, at `c`: one way, the group resumes
    // just after its copy.
    let fwd = store.runs_from(flow_key, tp, RunKey::Source, c - 1, 2, Some(cursor)).await?;
    let target_end = cursor.next_target_offset.unwrap_or(0);
    let fc = cursor.next_source_offset;
    // Without an opposite flow, the records past the cursor are this
    // flow's to copy: behind when the group consumed some of them.
    let mut forward = Forward {
        runs: &fwd,
        cursor: fc,
        target_end,
        behind: c > fc,
        next_write: target_end,
    };
    // The opposite flow counts only if it copies this partition back into
    // this very topic (it may select other topics, or name them otherwise).
    let ocursor = opposite.and_then(|o| o.cursors.get(target_tp).filter(|oc| oc.target_topic == tp.topic));
    let (Some(o), Some(oc)) = (opposite, ocursor) else {
        return Ok(translate(c, &forward, None).map(|t| (t, 0)));
    };
    let ocursor = Some(oc);
    let gc = oc.next_source_offset;
    let rev = store.runs_around(&o.flow_key, target_tp, RunKey::Target, c, ocursor).await?;
    let fwd_from_gc = store
        .runs_from(flow_key, tp, RunKey::Target, gc, RUNS_PER_LOOKUP, Some(cursor))
        .await?;
    // A lookup cut at the limit covers only as far as its last run.
    let until = |runs: &[OffsetRun], end: i64| {
        if runs.len() > RUNS_PER_LOOKUP as usize {
            runs.last().map_or(end, |r| r.target_end().min(end))
        } else {
            end
        }
    };
    // Source offsets past this flow's cursor (up to the source's end, or
    // `c` if the group read further than that end was) that no record of
    // the opposite flow accounts for: records this flow may have written
    // and not checkpointed yet. Only the opposite flow's copies there (a
    // cursor that lags while it filters them) leave nothing to write.
    // No end read for the partition: count everything past the cursor as
    // possibly this flow's (never exact, never a skip).
    let source_end = o.source_ends.get(tp).copied().unwrap_or(i64::MAX).max(c);
    forward.behind = false;
    if source_end > fc {
        let rev_from_fc = store
            .runs_from(&o.flow_key, target_tp, RunKey::Target, fc, RUNS_PER_LOOKUP, ocursor)
            .await?;
        forward.behind =
            first_uncovered(&rev_from_fc, fc, until(&rev_from_fc, source_end)).is_some() || rev_from_fc.len() > RUNS_PER_LOOKUP as usize;
    }
    // This flow's next write lands on the target after the records
    // produced there that the opposite flow has copied since (the target
    // went on growing while this flow's checkpoint stayed put).
    if forward.behind {
        let rev_from_te = store
            .runs_from(&o.flow_key, target_tp, RunKey::Source, target_end, RUNS_PER_LOOKUP, ocursor)
            .await?;
        forward.next_write = first_uncovered_source(&rev_from_te, target_end, i64::MAX).unwrap_or(target_end);
    }
    let reverse = Reverse {
        runs: &rev,
        cursor: gc,
        forward_from_cursor: &fwd_from_gc,
    };
    let cut = fwd_from_gc.len() > RUNS_PER_LOOKUP as usize && until(&fwd_from_gc, target_end) < target_end;
    let Some(mut t) = translate(c, &forward, Some(&reverse)) else {
        return Ok(None);
    };
    // What the group read that sits at or after the translation.
    let fwd_from_d = store
        .runs_from(flow_key, tp, RunKey::Target, t.offset, RUNS_PER_LOOKUP, Some(cursor))
        .await?;
    let rev_from_d = store
        .runs_from(&o.flow_key, target_tp, RunKey::Source, t.offset, RUNS_PER_LOOKUP, ocursor)
        .await?;
    let again = redelivered(t.offset, c, &fwd_from_d, &rev_from_d);
    let counted = fwd_from_d.len() <= RUNS_PER_LOOKUP as usize && rev_from_d.len() <= RUNS_PER_LOOKUP as usize;
    t.exact &= again == 0 && counted && !cut;
    Ok(Some((t, again)))
}

#[allow(clippy::too_many_arguments)]
async fn sync_group(
    ferry: &Ferry,
    flow: &FlowSpec,
    flow_key: &str,
    opposite: Option<&Opposite>,
    source: &KafkaCluster,
    target: &KafkaCluster,
    group: &str,
    seen: &Seen<'_>,
    lease_until_ms: i64,
) -> Result<Vec<GroupSyncItem>, FerryError> {
    let (cursors, previous) = (seen.cursors, seen.previous);
    // Only partitions this flow replicates (it has a cursor for them).
    let committed: BTreeMap<TopicPartition, Committed> = source
        .committed_offsets(group)
        .await?
        .into_iter()
        .filter(|(tp, _)| flow.selects_topic(&tp.topic) && !ferry.spec.is_prefixed_replica(&tp.topic) && cursors.contains_key(tp))
        .collect();
    if committed.is_empty() {
        return Ok(Vec::new());
    }
    let state = target.group_state(group).await?;
    let on_target = target.committed_offsets(group).await?;
    let now = now_ms();
    let mut items = Vec::new();
    let mut to_commit: BTreeMap<TopicPartition, Committed> = BTreeMap::new();
    let mut source_of: HashMap<TopicPartition, usize> = HashMap::new();
    // The rewinds counted in the cursor each commit's translation came from.
    let mut rewinds: HashMap<TopicPartition, i64> = HashMap::new();
    for (tp, c) in &committed {
        let target_tp = TopicPartition::new(flow.target_topic(&tp.topic), tp.partition);
        let current = on_target.get(&target_tp).map(|x| x.offset);
        let Some(cursor) = cursors.get(tp) else { continue };
        // Nothing moved since an exact sync: no need to look the maps up
        // (records arriving later land after an exact translation).
        // Where the target's log starts: a translation below it (records
        // the target no longer holds) is committed at it instead, and is
        // not exact.
        let start = seen.target_starts.get(&target_tp).copied();
        let unchanged = previous.get(&(group.to_owned(), tp.clone())).is_some_and(|p| {
            p.source_offset == c.offset
                && p.exact
                && matches!(p.status, GroupSyncStatus::Synced | GroupSyncStatus::UpToDate)
                && p.target_offset == current
                && p.translated.is_some_and(|t| start.is_none_or(|s| t >= s))
                // The map it came from was cut back since (the target lost
                // the copies it may point at).
                && cursor.target_rewound_ms.is_none_or(|r| r < p.checked_ms)
                // Made by a Ferry that did not compare it with where the
                // flow began.
                && cursor.start_offset.is_none_or(|s| c.offset >= s)
        });
        // A commit made in a history of the partition that an unclean
        // leader election replaced (its leader epoch, KIP-320, says which)
        // resumes where the new history parts from it.
        let replaced = replaced_from(c.offset, c.leader_epoch, &cursor.leader_epochs);
        let from = replaced.unwrap_or(c.offset);
        // A commit below where the flow began copying (StartingPosition
        // LATEST or a time, while the group lagged): the records between
        // were never copied, and the translation passes them.
        let before_start = cursor.start_offset.filter(|&s| from < s);
        let (translation, again) = if unchanged && replaced.is_none() {
            let t = previous
                .get(&(group.to_owned(), tp.clone()))
                .and_then(|p| p.translated.map(|offset| Translation { offset, exact: true }));
            (t, 0)
        } else {
            match translation(ferry, flow_key, cursor, opposite, tp, &target_tp, from).await? {
                Some((mut t, again)) => {
                    t.exact &= replaced.is_none() && before_start.is_none();
                    (Some(t), again)
                }
                None => (None, 0),
            }
        };
        let mut deleted_from = None;
        let translation = translation.map(|mut t| {
            if let Some(s) = start.filter(|&s| t.offset < s) {
                deleted_from = Some(t.offset);
                t.offset = s;
                t.exact = false;
            }
            t
        });
        let prev = previous.get(&(group.to_owned(), tp.clone()));
        let pending = prev.and_then(|p| p.pending_offset);
        let adopted = pending.filter(|&p| current.is_some_and(|c| c >= p));
        let mut item = GroupSyncItem {
            group: group.to_owned(),
            tp: tp.clone(),
            source_offset: c.offset,
            metadata: c.metadata.clone(),
            translated: translation.map(|t| t.offset),
            exact: translation.is_some_and(|t| t.exact),
            target_offset: current,
            // A commit a stopped sync made and could not record is adopted
            // once the target holds it or more (the group may have gone on
            // from it there); until then it is kept.
            written_offset: prev.and_then(written_offset).max(adopted),
            written_rewinds: prev.and_then(|p| p.written_rewinds),
            redelivered: 0,
            carried_source_offset: prev.and_then(|p| p.carried_source_offset),
            pending_offset: pending.filter(|_| adopted.is_none()),
            status: GroupSyncStatus::UpToDate,
            detail: String::new(),
            checked_ms: now,
        };
        let not_exact = if item.exact {
            String::new()
        } else if let Some(d) = replaced {
            format!(
                " (not exact: the group committed source offset {} in leader epoch {}, of a history the source replaced from offset \
                 {d} on (an unclean leader election): it resumes at the new history's record {d}, which it never read; none is \
                 skipped)",
                c.offset, c.leader_epoch
            )
        } else if let Some(s) = before_start {
            format!(
                " (not exact: the flow began copying this partition at source offset {s} (its StartingPosition, or a backfill), \
                 past the group's commit {from}: the records from {from} to {s} that the group never read were never copied, and \
                 it resumes after them on the target, skipping them)"
            )
        } else if let (Some(d), Some(s)) = (deleted_from, start) {
            format!(
                " (not exact: the group's next record is at target offset {d}, but the target no longer holds offsets {d}..{} \
                 (its log start moved past them: retention or DeleteRecords there); it resumes at the log start {s}, and the \
                 records before it that it never read are not on the target)",
                s - 1
            )
        } else if again > 0 {
            format!(
                " (not exact: the two clusters hold this partition's records in different orders; {again} record(s) the group \
                 already read come before records it has not, and will be delivered again there; none is skipped)"
            )
        } else {
            format!(" (replication has not reached source offset {} yet: not exact)", c.offset)
        };
        item.redelivered = again;
        let lost = lost_under(cursor, prev, current);
        let decision = match (lost, translation) {
            // Ferry's own commit, into copies the target lost since: the
            // group's next record is at the new translation, lower.
            (Some(LostUnder::Ferrys(_)), Some(t)) if current.is_some_and(|cur| cur > t.offset) => SyncDecision::Commit(t.offset),
            _ => decide(translation, current, seen.owner(group, tp, &target_tp, current)),
        };
        let lost_note = match lost {
            Some(LostUnder::Ferrys(from)) => format!(
                "; Ferry's commit {} was made before the target's log parted from Ferry's copies{} (an unclean leader \
                 election): moved to the copy of the group's next record",
                current.unwrap_or_default(),
                from.map(|f| format!(" at offset {f}")).unwrap_or_default()
            ),
            Some(LostUnder::Others(from)) => format!(
                "; the target's log parted from Ferry's copies at offset {from} (an unclean leader election) {OTHERS_LOST}: \
                 it may point past records the group never read there. If the group has not \
                 consumed on the target since, reset it to the translation: kafka-consumer-groups --bootstrap-server \
                 <target> --group {group} --reset-offsets --topic {}:{} --to-offset <translation> --execute",
                target_tp.topic, target_tp.partition
            ),
            None => String::new(),
        };
        match decision {
            SyncDecision::NothingReplicated => {
                item.status = GroupSyncStatus::NothingReplicated;
                item.detail = format!("no record at or around source offset {} is replicated yet", c.offset);
            }
            SyncDecision::UpToDate => {
                item.detail = format!("target holds the translation{not_exact}");
                item.carried_source_offset = Some(c.offset);
            }
            SyncDecision::TargetAhead { current, translated } => {
                item.status = GroupSyncStatus::TargetAhead;
                item.detail = format!("target offset {current} is ahead of the translation {translated}: never moved back{lost_note}");
            }
            SyncDecision::Commit(d) | SyncDecision::ForeignCommit { translated: d, .. } if state.is_active() => {
                item.status = GroupSyncStatus::ActiveOnTarget;
                item.detail = format!(
                    "group is {} with {} member(s) on the target: not written (would be {d})",
                    state.state, state.members
                );
            }
            SyncDecision::ForeignCommit { current, translated } => {
                item.status = GroupSyncStatus::ForeignCommit;
                item.detail = format!(
                    "target offset {current} was committed by someone other than Ferry (an operator's reset, or a consumer that commits \
                     without joining the group): never overwritten (the translation is {translated}). To let Ferry sync this group again, \
                     delete its offsets on the target: kafka-consumer-groups --bootstrap-server <target> --group {group} --delete-offsets \
                     --topic {}",
                    target_tp.topic
                );
            }
            SyncDecision::Commit(d) => {
                item.status = GroupSyncStatus::Synced;
                // Someone else's commit that Ferry's translation passes
                // forward is Ferry's to write: no warning about it.
                let note = if matches!(lost, Some(LostUnder::Ferrys(_))) {
                    lost_note.as_str()
                } else {
                    ""
                };
                item.detail = format!("committed {d}{not_exact}{note}");
                to_commit.insert(
                    target_tp.clone(),
                    Committed {
                        offset: d,
                        metadata: c.metadata.clone(),
                        leader_epoch: -1,
                    },
                );
                rewinds.insert(target_tp.clone(), cursor.target_rewinds);
                source_of.insert(target_tp, items.len());
            }
        }
        items.push(item);
    }
    if !to_commit.is_empty() {
        // Ferry's intent first: should this function stop between the
        // commit and the record of it, the next sync still knows the
        // commit for its own (not an operator's reset, never synced again).
        let intents: Vec<GroupSyncItem> = to_commit
            .iter()
            .filter_map(|(target_tp, c)| {
                let i = *source_of.get(target_tp)?;
                let prev = previous.get(&(group.to_owned(), items[i].tp.clone()));
                // Until the commit is recorded, the item shows what the
                // last sync found; a first one shows the sync stopped
                // (a failure, counted) and keeps its place in the order.
                let (status, detail, checked_ms) = match prev {
                    Some(p) => (p.status, p.detail.clone(), p.checked_ms),
                    None => (
                        GroupSyncStatus::Failed,
                        format!(
                            "the sync stopped while committing {} on the target; the next one checks it",
                            c.offset
                        ),
                        0,
                    ),
                };
                Some(GroupSyncItem {
                    pending_offset: Some(c.offset),
                    status,
                    detail,
                    checked_ms,
                    ..items[i].clone()
                })
            })
            .collect();
        failpoint::before_group_commit().await;
        // A commit sent with less of the lease left than a request may
        // take could land after the next holder read the target.
        if now_ms() + commit_margin_ms(ferry) > lease_until_ms {
            return Err(FerryError::NotReady(format!(
                "group {group}: its sync lease ends in less than a request timeout: not committed, the next sync does it"
            )));
        }
        ferry.store.put_group_syncs(flow_key, &intents).await?;
        let results = target.commit_offsets(group, &to_commit).await?;
        failpoint::after_group_commit();
        for (target_tp, res) in results {
            let Some(&i) = source_of.get(&target_tp) else { continue };
            let item = &mut items[i];
            match res {
                Ok(()) => {
                    item.target_offset = to_commit.get(&target_tp).map(|c| c.offset);
                    item.written_offset = item.target_offset;
                    item.written_rewinds = rewinds.get(&target_tp).copied();
                    item.carried_source_offset = Some(item.source_offset);
                }
                Err(e) if e.is_group_active_error() => {
                    item.status = GroupSyncStatus::ActiveOnTarget;
                    item.detail = format!("the target refused the commit: the group has members there ({e})");
                }
                Err(e) => {
                    item.status = GroupSyncStatus::Failed;
                    item.detail = e.to_string();
                }
            }
        }
    }
    Ok(items)
}

/// Failpoints for the crash tests, set by FERRY_FAILPOINT; off unless set.
mod failpoint {
    /// `slow-group-sync:<ms>`: wait that long before each group's sync, as
    /// a slow cluster or many partitions per group would take.
    pub(super) async fn before_group_sync() {
        let ms = std::env::var("FERRY_FAILPOINT")
            .ok()
            .and_then(|v| v.strip_prefix("slow-group-sync:").and_then(|n| n.parse::<u64>().ok()));
        if let Some(ms) = ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    /// `slow-group-commit:<ms>`: wait that long between reading a
    /// group's commits on the target and committing there, as a stalled
    /// sync (CPU starved, a slow coordinator) would.
    pub(super) async fn before_group_commit() {
        let ms = std::env::var("FERRY_FAILPOINT")
            .ok()
            .and_then(|v| v.strip_prefix("slow-group-commit:").and_then(|n| n.parse::<u64>().ok()));
        if let Some(ms) = ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    /// `crash-after-group-commit`: abort once a group's offsets are
    /// committed on the target, before anything records that Ferry wrote
    /// them (a Lambda timing out or dying there).
    pub(super) fn after_group_commit() {
        if std::env::var("FERRY_FAILPOINT").is_ok_and(|v| v == "crash-after-group-commit") {
            eprintln!("ferry: failpoint crash-after-group-commit reached; aborting before the sync is recorded");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{in_turn, lost_under, replaced_from, LostUnder};
    use ferry_adapters::state::{CursorItem, GroupSyncItem, GroupSyncStatus};
    use ferry_core::domain::TopicPartition;

    fn synced(written: Option<i64>, rewinds: Option<i64>, target: i64, checked_ms: i64) -> GroupSyncItem {
        GroupSyncItem {
            group: "g".into(),
            tp: TopicPartition::new("t", 0),
            source_offset: 120,
            metadata: None,
            translated: written,
            exact: true,
            target_offset: Some(target),
            written_offset: written,
            written_rewinds: rewinds,
            carried_source_offset: None,
            pending_offset: None,
            redelivered: 0,
            status: GroupSyncStatus::UpToDate,
            detail: String::new(),
            checked_ms,
        }
    }

    #[test]
    fn a_commit_made_before_the_target_lost_copies_is_told_by_count_not_time() {
        let rewound = |n: i64| CursorItem {
            target_rewinds: n,
            target_rewound_ms: (n > 0).then_some(1_000),
            target_rewound_from: (n > 0).then_some(100),
            ..CursorItem::default()
        };
        // Ferry's commit 140 from a cursor that counted no rewind; the
        // target lost copies once since: moved, wherever it points.
        assert_eq!(
            lost_under(&rewound(1), Some(&synced(Some(140), Some(0), 140, 500)), Some(140)),
            Some(LostUnder::Ferrys(Some(100)))
        );
        // Also when the sync that wrote it read its cursors before the
        // rewind and finished after it (its check time says nothing), and
        // in items from before Ferry counted (none stored: 0).
        assert_eq!(
            lost_under(&rewound(1), Some(&synced(Some(140), Some(0), 140, 5_000)), Some(140)),
            Some(LostUnder::Ferrys(Some(100)))
        );
        assert_eq!(
            lost_under(&rewound(1), Some(&synced(Some(140), None, 140, 5_000)), Some(140)),
            Some(LostUnder::Ferrys(Some(100)))
        );
        // Below where the log parted too: a second truncation may have
        // parted it lower first (only ever moved down to the translation).
        assert_eq!(
            lost_under(&rewound(2), Some(&synced(Some(90), Some(1), 90, 500)), Some(90)),
            Some(LostUnder::Ferrys(Some(100)))
        );
        // Made from a cursor that counted the rewind: the new history's.
        assert_eq!(
            lost_under(&rewound(1), Some(&synced(Some(140), Some(1), 140, 500)), Some(140)),
            None
        );
        assert_eq!(lost_under(&rewound(0), Some(&synced(Some(140), None, 140, 500)), Some(140)), None);
        // Someone else's commit past where the log parted, there before the
        // rewind: reported; after it, or below where it parted: not.
        let theirs = synced(Some(130), Some(0), 165, 500);
        assert_eq!(lost_under(&rewound(1), Some(&theirs), Some(165)), Some(LostUnder::Others(100)));
        assert_eq!(
            lost_under(&rewound(1), Some(&synced(Some(130), Some(0), 165, 5_000)), Some(165)),
            None
        );
        assert_eq!(lost_under(&rewound(1), Some(&synced(Some(130), Some(0), 95, 500)), Some(95)), None);
        // No commit, or never synced: nothing to say.
        assert_eq!(lost_under(&rewound(1), Some(&theirs), None), None);
        assert_eq!(lost_under(&rewound(1), None, Some(140)), None);
    }

    #[test]
    fn a_sync_takes_the_groups_in_turn_from_where_the_last_one_stopped() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = g(&["a", "b", "c", "d"]);
        assert_eq!(in_turn(all.clone(), None), all);
        assert_eq!(in_turn(all.clone(), Some("c")), g(&["c", "d", "a", "b"]));
        // The group it stopped at is gone: the next one after it.
        assert_eq!(in_turn(all.clone(), Some("bb")), g(&["c", "d", "a", "b"]));
        assert_eq!(in_turn(all.clone(), Some("z")), all);
        assert_eq!(in_turn(all.clone(), Some("a")), all);
    }

    /// The source's history: epoch 0 from offset 0, epoch 2 from 100 (an
    /// unclean election at 100 replaced what a replica had there in 0).
    #[test]
    fn a_commit_in_a_replaced_history_resumes_where_the_histories_part() {
        let history = [(0, 0), (100, 2)];
        assert_eq!(replaced_from(140, 0, &history), Some(100), "read 100..139 in epoch 0: replaced");
        assert_eq!(replaced_from(100, 0, &history), None, "read up to 99 in epoch 0: the same history");
        assert_eq!(replaced_from(60, 0, &history), None);
        assert_eq!(replaced_from(140, 2, &history), None, "the new history's epoch");
        assert_eq!(replaced_from(140, 1, &history), Some(100), "an epoch the source never had");
        assert_eq!(replaced_from(140, 5, &history), None, "newer than all read: nothing to compare");
        assert_eq!(replaced_from(140, -1, &history), None, "no epoch committed");
        assert_eq!(replaced_from(140, 0, &[]), None, "no epochs kept");
    }
}
