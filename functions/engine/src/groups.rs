//! The SyncGroups step: for every flow with consumer-group replication,
//! translate each selected group's committed offsets on the source into
//! the target's offsets, exactly (see `ferry_core::groups`), and commit
//! them on the target, never to a group with members there and never
//! backwards. Each partition's outcome goes to the groups table, where
//! `ferry status` and operators read it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::Instant;

use ferry_adapters::kafka::groups::Committed;
use ferry_adapters::kafka::OffsetSpec;
use ferry_adapters::kafka::{KafkaCluster, TopicMeta};
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

mod commit;
mod failpoint;
mod retire;
mod sync_group;
#[cfg(test)]
mod tests;
mod translation;

use commit::*;
pub(crate) use commit::{OPPOSITE_UNREAD, SKIPS};
pub(crate) use retire::translating_through;
pub(crate) use sync_group::below_handover;
use sync_group::*;
use translation::*;

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
    /// Those groups, by name: for the process that ran the sync (a `ferry
    /// run --once` tries them again), not in the state machine's payload.
    #[serde(skip)]
    pub held: Vec<String>,
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
/// this much left: a request timeout, the longest throttle a request
/// waits out before it is sent, and some seconds (at most half the
/// lease), so that the commit of a sync that stalled does not land after
/// the next holder read the target.
pub(crate) fn commit_margin_ms(ferry: &Ferry) -> i64 {
    let s = &ferry.settings;
    let wanted = s.request_timeout + ferry_adapters::kafka::throttle::MAX_WAIT + std::time::Duration::from_secs(5);
    i64::try_from(wanted.min(s.group_sync_lease / 2).as_millis()).unwrap_or(i64::MAX / 2)
}

/// The lease a sync of one group takes, in ms.
pub(crate) fn lease_ms(ferry: &Ferry) -> i64 {
    i64::try_from(ferry.settings.group_sync_lease.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Sync every flow's groups once; no group is started at or after
/// `deadline`, or once `stop` is set (those left are counted in
/// `deferred`, and the next sync starts at the first of them), and each
/// flow has an equal share of the time. A group under way when `stop` is
/// set is finished, and its lease given back.
pub async fn sync_groups(ferry: &Ferry, deadline: Option<Instant>, stop: Option<&AtomicBool>) -> Result<SyncGroupsOutput, FerryError> {
    let mut out = SyncGroupsOutput::default();
    let syncing: Vec<(&FlowSpec, &GroupSpec)> = ferry
        .spec
        .flows
        .iter()
        .filter_map(|f| f.groups.as_ref().filter(|g| g.sync_offsets).map(|g| (f, g)))
        .collect();
    for (n, &(flow, g)) in syncing.iter().enumerate() {
        if stopped(stop) {
            break;
        }
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
        match sync_flow(ferry, flow, g, (share, stop), None, None).await {
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

/// Sync the groups of `flow` named in `groups` now, whatever the schedule
/// (`ferry move`'s last sync before an application starts on the target;
/// a `--once` run syncing again the groups another sync held): only those
/// the flow syncs. Returns the outcome per group partition, as stored; the
/// round robin of the scheduled syncs is left as it was.
/// `holder` holds (or takes, and keeps) the groups' sync leases: the
/// caller gives them back. Without one, each group is synced under a lease
/// of its own, given back after it; those another sync still holds are
/// counted in `busy` and named in `held`.
pub async fn sync_groups_now(
    ferry: &Ferry,
    flow: &FlowSpec,
    groups: &[String],
    holder: Option<&str>,
) -> Result<(FlowGroupSync, Vec<GroupSyncItem>), FerryError> {
    let g = flow.groups.as_ref().filter(|g| g.sync_offsets).ok_or_else(|| {
        FerryError::Input(format!(
            "flow {} does not sync consumer group offsets. Fix: set SynchroniseConsumerGroupOffsets to true in its \
             ConsumerGroupReplication (replication-info.json)",
            flow.id()
        ))
    })?;
    sync_flow(ferry, flow, g, (None, None), Some(groups), holder).await
}

fn stopped(stop: Option<&AtomicBool>) -> bool {
    stop.is_some_and(|s| s.load(Ordering::SeqCst))
}

/// No group is started at or after `deadline`, or once `stop` is set.
async fn sync_flow(
    ferry: &Ferry,
    flow: &FlowSpec,
    g: &GroupSpec,
    (deadline, stop): (Option<Instant>, Option<&AtomicBool>),
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
    // cursors read here bound what the runs read later must hold. A topic
    // the plan refuses is not copied: its partitions are synced as those
    // not started yet are (not at all), whatever its target holds.
    let cursors: HashMap<TopicPartition, CursorItem> = ferry
        .store
        .list_cursors(&flow_key)
        .await?
        .into_iter()
        .filter(|c| c.plan_refusal.is_none())
        .map(|c| (c.tp.clone(), c))
        .collect();
    let (cursors, missing) = on_both_clusters(flow, &source, &target, cursors).await?;
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
    let handed = handed_commits(ferry, &flow_key, cursors.values()).await?;
    // The opposite flow's syncs, whatever the mode: a target commit it
    // carried over to the other cluster is the group's own, not a foreign one.
    let opposite_key = crate::opposite::flow_key(ferry, flow).await?;
    let carried = match &opposite_key {
        Some(o) => syncs_by_partition(ferry.store.group_syncs(o).await?),
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
        handed: &handed,
        carried: &carried,
        target_starts: &target_starts,
        opposite_key: opposite_key.as_deref(),
        missing: &missing,
    };
    let sync = SyncFlow {
        ferry,
        flow,
        key: &flow_key,
        opposite: opposite.as_ref(),
        source: &source,
        target: &target,
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
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        if out_of_time || stopped(stop) {
            report.deferred = groups.len() - n;
            stopped_at = Some(group.as_str());
            if out_of_time {
                tracing::warn!(
                    replicator = %ferry.spec.name, flow = %flow.id(), synced = n, deferred = report.deferred, next = %group,
                    "out of time: the next execution starts at the first group left"
                );
            } else {
                tracing::info!(
                    replicator = %ferry.spec.name, flow = %flow.id(), synced = n, deferred = report.deferred, next = %group,
                    "stopping: the next sync starts at the first group left"
                );
            }
            break;
        }
        failpoint::before_group_sync().await;
        let Some(lease_until) = ferry.store.acquire_group_sync(&flow_key, group, &owner, lease_ms(ferry)).await? else {
            report.busy += 1;
            report.held.push(group.clone());
            tracing::info!(
                replicator = %ferry.spec.name, flow = %flow.id(), group = %group,
                "another sync of this group is under way: left to the next sync"
            );
            continue;
        };
        let res = sync_group(&sync, group, &seen, lease_until).await;
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
            GroupSyncStatus::TargetAhead
            | GroupSyncStatus::NothingReplicated
            | GroupSyncStatus::ForeignCommit
            | GroupSyncStatus::TopicMissing => report.waiting += 1,
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

/// Whether a sync item speaks of the target topic `cursor` copies into:
/// the same name, and the same topic id where both are known (items and
/// cursors stored before Ferry kept them say nothing against it).
fn describes(item: &GroupSyncItem, cursor: &CursorItem) -> bool {
    item.target_topic.as_deref().is_none_or(|t| t == cursor.target_topic)
        && item
            .target_topic_id
            .as_deref()
            .is_none_or(|id| cursor.target_topic_id.as_deref().is_none_or(|t| t == id))
}

/// Every flow a cursor's partition was taken over from (items written
/// before `handed_from` name only the latest, `handed_by`).
fn handed_from(c: &CursorItem) -> impl Iterator<Item = &str> {
    c.handed_from.iter().map(String::as_str).chain(c.handed_by.as_deref())
}

/// Ferry's commits of a group partition on the target, as syncs recorded
/// them: the latest recorded, and the latest a sync was about to make when
/// it stopped before recording it (the function timed out or died in
/// between; the commit may or may not have been made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Commits {
    written: Option<i64>,
    pending: Option<i64>,
}

impl Commits {
    pub(super) fn of(p: &GroupSyncItem) -> Self {
        Self {
            written: written_offset(p),
            pending: p.pending_offset,
        }
    }

    pub(super) fn and(self, o: Self) -> Self {
        Self {
            written: self.written.max(o.written),
            pending: self.pending.max(o.pending),
        }
    }

    /// The commit at or past which the target's commit is Ferry's: the
    /// latest recorded; before any, the pending one. Ferry only ever moves
    /// a commit forward, so a pending commit below a recorded one is older
    /// than it (its sync died before the later one) and counts for nothing.
    pub(super) fn latest(self) -> Option<i64> {
        self.written.or(self.pending)
    }
}

/// What `ferry forget-flow` keeps of a flow's group syncs, under
/// `forgotten_key`: each group partition's latest commit of Ferry's on
/// the target, made by the flow or by the flows it took the partition over
/// from (whose trail, its cursors, goes with it).
pub(crate) async fn bequest(ferry: &Ferry, flow_key: &str) -> Result<Vec<GroupSyncItem>, FerryError> {
    let cursors = ferry.store.list_cursors(flow_key).await?;
    let mut handed = handed_commits(ferry, flow_key, cursors.iter()).await?;
    let targets: HashMap<&TopicPartition, &CursorItem> = cursors.iter().map(|c| (&c.tp, c)).collect();
    let mut rows = ferry.store.group_syncs(flow_key).await?;
    for row in &mut rows {
        let all = Commits::of(row).and(handed.remove(&(row.group.clone(), row.tp.clone())).unwrap_or_default());
        (row.written_offset, row.pending_offset) = (all.written, all.pending);
    }
    let now = now_ms();
    rows.extend(handed.into_iter().map(|((group, tp), all)| GroupSyncItem {
        group,
        target_topic: targets.get(&tp).map(|c| c.target_topic.clone()),
        target_topic_id: targets.get(&tp).and_then(|c| c.target_topic_id.clone()),
        tp,
        source_offset: 0,
        metadata: None,
        translated: None,
        exact: false,
        target_offset: None,
        written_offset: all.written,
        own_commit: None,
        own_commit_ms: None,
        written_rewinds: None,
        carried_source_offset: None,
        copy_source_offset: None,
        pending_offset: all.pending,
        redelivered: 0,
        rule: 0,
        status: GroupSyncStatus::UpToDate,
        detail: "kept by forget-flow: Ferry's commit, made by a flow the forgotten one took the partition over from".to_owned(),
        checked_ms: now,
    }));
    Ok(rows)
}

/// Where `ferry forget-flow` keeps a forgotten flow's group syncs: they
/// tell the flows that take its topics over which commits on the target
/// were Ferry's. Not a flow's key: nothing else reads them.
pub(crate) fn forgotten_key(flow_key: &str) -> String {
    format!("{flow_key}~forgotten")
}

/// Ferry's commits on the target of each group partition that the flow
/// `flow_key` took over from a flow that stopped copying it: what that
/// flow's syncs recorded, and what those of the flows it had taken the
/// partition over from recorded in turn, back along every handover (a
/// group that read nothing while a flow in the middle held the topic
/// still sits at a commit of the first writer's; a topic handed back and
/// forth names each flow more than once), forgotten or not
/// (`forgotten_key`), and this flow's own kept from before it was
/// forgotten, if it was. This flow's own syncs are its own.
async fn handed_commits(
    ferry: &Ferry,
    flow_key: &str,
    cursors: impl Iterator<Item = &CursorItem>,
) -> Result<HashMap<(String, TopicPartition), Commits>, FerryError> {
    let mut out: HashMap<(String, TopicPartition), Commits> = HashMap::new();
    let mut todo: BTreeMap<String, BTreeSet<TopicPartition>> = BTreeMap::new();
    // The target topic each partition is copied into: a sync item of
    // another (a flow renamed since) describes another topic's commits,
    // and one of another topic id (the topic deleted and created again
    // since) commits in another log.
    let mut targets: HashMap<&TopicPartition, &CursorItem> = HashMap::new();
    for c in cursors {
        targets.insert(&c.tp, c);
        for by in handed_from(c) {
            todo.entry(by.to_owned()).or_default().insert(c.tp.clone());
        }
    }
    // This flow's own kept record, if it was forgotten and started again
    // under the same key: its earlier life's commits, in the same topic
    // (`describes`), are Ferry's too.
    let kept = ferry.store.group_syncs(&forgotten_key(flow_key)).await?;
    fold_commits(&mut out, &targets, &kept, |_| true);
    // Each flow's syncs of a partition read once: a topic handed back and
    // forth names its flows more than once.
    let mut read: HashSet<(String, TopicPartition)> = HashSet::new();
    while let Some((by, mut tps)) = todo.pop_first() {
        tps.retain(|tp| by != flow_key && read.insert((by.clone(), tp.clone())));
        if tps.is_empty() {
            continue;
        }
        let mut synced = ferry.store.group_syncs(&by).await?;
        synced.extend(ferry.store.group_syncs(&forgotten_key(&by)).await?);
        fold_commits(&mut out, &targets, &synced, |tp| tps.contains(tp));
        for c in ferry.store.list_cursors(&by).await? {
            if tps.contains(&c.tp) {
                for before in handed_from(&c) {
                    todo.entry(before.to_owned()).or_default().insert(c.tp.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Adds to `out` the commits of the `items` of partitions `wanted` takes
/// whose target topic is the one the flow copies that partition into now
/// (`targets`, see `describes`).
fn fold_commits(
    out: &mut HashMap<(String, TopicPartition), Commits>,
    targets: &HashMap<&TopicPartition, &CursorItem>,
    items: &[GroupSyncItem],
    wanted: impl Fn(&TopicPartition) -> bool,
) {
    for item in items {
        if wanted(&item.tp) && targets.get(&item.tp).is_some_and(|c| describes(item, c)) {
            let all = out.entry((item.group.clone(), item.tp.clone())).or_default();
            *all = all.and(Commits::of(item));
        }
    }
}

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

/// The cursors whose partition is on both clusters, and why each other
/// one is left out. A topic deleted on either keeps its cursors until a
/// plan has dealt with it (forgotten it, copied it again, or left it to the
/// flow back to delete); until then its partitions are not synced, each
/// group partition synced before shown as `topic-missing`, and the flow's
/// other topics are synced as ever. An answer that knows none of them from
/// a cluster that lists no topic at all (a broker just back from a
/// restart) is not believed: the sync fails, as a commit to a missing
/// topic would.
async fn on_both_clusters(
    flow: &FlowSpec,
    source: &KafkaCluster,
    target: &KafkaCluster,
    cursors: HashMap<TopicPartition, CursorItem>,
) -> Result<(HashMap<TopicPartition, CursorItem>, HashMap<TopicPartition, String>), FerryError> {
    let mut missing = HashMap::new();
    if cursors.is_empty() {
        return Ok((cursors, missing));
    }
    let names = |f: fn(&CursorItem) -> &str| -> Vec<String> {
        let set: BTreeSet<&str> = cursors.values().map(f).collect();
        set.into_iter().map(str::to_string).collect()
    };
    let (source_names, target_names) = (names(|c| c.tp.topic.as_str()), names(|c| c.target_topic.as_str()));
    let (on_source, on_target) = (
        source.metadata(Some(&source_names)).await?,
        target.metadata(Some(&target_names)).await?,
    );
    for (cluster, alias, found) in [(source, &flow.source.alias, &on_source), (target, &flow.target.alias, &on_target)] {
        if found.is_empty() && !cluster.knows_its_topics().await? {
            return Err(FerryError::NotReady(format!(
                "cluster {alias} answered that it has none of the flow's topics, and lists no topic: not believed (a broker \
                 just restarted answers so); the next sync tries again"
            )));
        }
    }
    let has = |on: &BTreeMap<String, TopicMeta>, c: &CursorItem, topic: &str| {
        on.get(topic).is_some_and(|m| m.partitions.contains_key(&c.tp.partition))
    };
    let mut kept = HashMap::new();
    for (tp, c) in cursors {
        let why = if !has(&on_source, &c, &c.tp.topic) {
            format!(
                "source topic {} partition {} is not on cluster {}",
                c.tp.topic, c.tp.partition, flow.source.alias
            )
        } else if !has(&on_target, &c, &c.target_topic) {
            format!(
                "target topic {} partition {} is not on cluster {}",
                c.target_topic, c.tp.partition, flow.target.alias
            )
        } else {
            kept.insert(tp, c);
            continue;
        };
        missing.insert(tp, format!("{why} (deleted?): not synced while it is missing"));
    }
    Ok((kept, missing))
}
