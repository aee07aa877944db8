//! One group's sync on one flow: what the target holds, who wrote it, the
//! translation, the decision, and the commit under the group's lease.

use super::*;
use futures::{StreamExt, TryStreamExt};

/// What a flow's group sync works with: the replicator, the flow, its key
/// in the state tables, the opposite flow (when the groups translate
/// through it) and the two clusters.
#[derive(Clone, Copy)]
pub(super) struct SyncFlow<'a> {
    pub(super) ferry: &'a Ferry,
    pub(super) flow: &'a FlowSpec,
    pub(super) key: &'a str,
    pub(super) opposite: Option<&'a Opposite>,
    pub(super) source: &'a KafkaCluster,
    pub(super) target: &'a KafkaCluster,
}

/// What a flow's sync knows before it looks at any group.
pub(super) struct Seen<'a> {
    /// The flow's cursors.
    pub(super) cursors: &'a HashMap<TopicPartition, CursorItem>,
    /// This flow's last sync of each group partition.
    pub(super) previous: &'a SyncsByPartition,
    /// Ferry's commits of each group partition by the flows this one took
    /// the partition over from (see `handed_commits`).
    pub(super) handed: &'a HashMap<(String, TopicPartition), Commits>,
    /// The opposite flow's, keyed by its source partition (this flow's target).
    pub(super) carried: &'a SyncsByPartition,
    /// The target partitions' log-start offsets.
    pub(super) target_starts: &'a HashMap<TopicPartition, i64>,
    /// The opposite flow's key in the state tables, if there is one.
    pub(super) opposite_key: Option<&'a str>,
    /// Partitions with a cursor whose topic is missing on either cluster,
    /// and why: not synced.
    pub(super) missing: &'a HashMap<TopicPartition, String>,
}

impl Seen<'_> {
    /// Who wrote the target's `current` commit of `group` on `target_tp`.
    pub(super) fn owner(&self, group: &str, tp: &TopicPartition, target_tp: &TopicPartition, current: Option<i64>) -> CommitOwner {
        let Some(cur) = current else { return CommitOwner::Nobody };
        let key = (group.to_owned(), tp.clone());
        let prev = self.previous.get(&key);
        // This flow's commits, and those of the flows it took the partition
        // over from: their commits are the group's last synced position,
        // not a reset.
        let commits = prev
            .map(Commits::of)
            .unwrap_or_default()
            .and(self.handed.get(&key).copied().unwrap_or_default());
        let carried = self
            .carried
            .get(&(group.to_owned(), target_tp.clone()))
            .and_then(|o| o.carried_source_offset);
        // At or past what this flow wrote: the group itself went on from
        // Ferry's commit there (it consumed, then moved away), or Ferry's
        // own later commit whose sync item is not stored yet (an
        // overlapping sync, or one that stopped between its commit and its
        // write). Ferry only ever moves a commit forward (of its own and
        // the handing flows', the latest counts; see `Commits::latest`): a
        // reset below it is someone else's.
        if commits.latest().is_some_and(|w| cur >= w) || carried == Some(cur) {
            CommitOwner::Ferry
        } else {
            CommitOwner::Other
        }
    }
}

/// Lookups of a group's partitions in flight at once (each one to three
/// DynamoDB calls, or a ListOffsets).
const LOOKUPS_IN_FLIGHT: usize = 16;

/// Lookups made (as futures, before they run) at a time.
const LOOKUPS_MADE_AT_ONCE: usize = 256;

/// Where the flow took `cursor`'s partition over from a flow that stopped
/// copying it, when a commit at `offset` lies below it: the records there
/// are that flow's copies, which this flow's offset map does not place (at
/// the handover itself, only until this flow has copied from there).
pub(crate) fn below_handover(cursor: &CursorItem, offset: i64) -> Option<i64> {
    cursor
        .handed_at
        .filter(|&at| offset < at || (offset == at && cursor.next_source_offset <= at))
}

/// A partition's commit, with what is known of it before any lookup.
struct Known<'a> {
    tp: &'a TopicPartition,
    c: &'a Committed,
    target_tp: TopicPartition,
    /// The group's commit on the target.
    current: Option<i64>,
    cursor: &'a CursorItem,
    /// Where the target's log starts.
    start: Option<i64>,
    /// Nothing moved since an exact sync: no need to look the maps up.
    unchanged: bool,
    /// Where the history the commit was made in parts from the source's.
    replaced: Option<i64>,
    /// The source offset the group resumes at.
    from: i64,
    /// Where the flow began copying, when past the commit.
    before_start: Option<i64>,
}

impl<'a> Known<'a> {
    fn of(
        flow: &FlowSpec,
        group: &str,
        seen: &Seen<'a>,
        on_target: &BTreeMap<TopicPartition, Committed>,
        tp: &'a TopicPartition,
        c: &'a Committed,
    ) -> Option<Self> {
        let target_tp = TopicPartition::new(flow.target_topic(&tp.topic), tp.partition);
        let current = on_target.get(&target_tp).map(|x| x.offset);
        let cursor = seen.cursors.get(tp)?;
        // Below where this flow took the partition over from a flow that
        // stopped copying it: the records there are that flow's copies,
        // which this flow's offset map does not place. Not synced (the
        // group's commit on the target stays as it is) until the group
        // reads past it (at it, once this flow has copied from there: its
        // map places the record at the handover only then).
        if below_handover(cursor, c.offset).is_some() {
            tracing::debug!(group, topic = %tp.topic, partition = tp.partition, commit = c.offset, "below where the flow took the topic over; not synced");
            return None;
        }
        // Nothing moved since an exact sync: no need to look the maps up
        // (records arriving later land after an exact translation).
        // Where the target's log starts: a translation below it (records
        // the target no longer holds) is committed at it instead, and is
        // not exact.
        let start = seen.target_starts.get(&target_tp).copied();
        let unchanged = seen.previous.get(&(group.to_owned(), tp.clone())).is_some_and(|p| {
            p.source_offset == c.offset
                // Translated by this rule (an older one may differ).
                && p.rule >= TRANSLATION_RULE
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
        Some(Self {
            tp,
            c,
            target_tp,
            current,
            cursor,
            start,
            unchanged,
            replaced,
            from,
            before_start,
        })
    }
}

/// What a partition's lookups found: the commit's translation (with the
/// records it delivers again, and where the opposite flow has not read
/// yet), and whether the commit is the opposite flow's copy of the
/// group's commit on the target.
struct Found {
    translation: Option<Translation>,
    again: i64,
    unread: Option<i64>,
    copy_of_target: bool,
}

async fn look_up(sf: &SyncFlow<'_>, group: &str, seen: &Seen<'_>, k: &Known<'_>) -> Result<Found, FerryError> {
    let SyncFlow {
        ferry,
        key: flow_key,
        opposite,
        target,
        ..
    } = *sf;
    let Known {
        tp,
        c,
        ref target_tp,
        current,
        cursor,
        start,
        unchanged,
        replaced,
        from,
        before_start,
    } = *k;
    let previous = seen.previous;
    let mut unread = None;
    let (translation, again) = if unchanged && replaced.is_none() {
        let t = previous
            .get(&(group.to_owned(), tp.clone()))
            .and_then(|p| p.translated.map(|offset| Translation { offset, exact: true }));
        (t, 0)
    } else {
        match translation(ferry, flow_key, cursor, opposite, tp, target_tp, from).await? {
            Some((mut t, again, u)) => {
                t.exact &= replaced.is_none() && before_start.is_none();
                unread = u;
                (Some(t), again)
            }
            // Nothing copied around the commit, and nothing below it
            // left to copy: a partition with no records the flow copies
            // (Kafka's Java consumer commits 0 for an empty partition it
            // was assigned). With the target's partition empty as well,
            // the group resumes at its start, exactly. Only a commit at
            // where the flow began: past it, the source's
            // records below the commit may be copies the opposite flow
            // made of records the target no longer holds.
            None if replaced.is_none()
                && before_start.is_none()
                && from <= cursor.start_offset.unwrap_or(0)
                && from <= cursor.next_source_offset =>
            {
                let end = target
                    .list_offsets(std::slice::from_ref(target_tp), OffsetSpec::Latest, false)
                    .await?;
                match (end.get(target_tp).copied(), start) {
                    (Some(e), Some(s)) if e == s => (Some(Translation { offset: e, exact: true }), 0),
                    _ => (None, 0),
                }
            }
            None => (None, 0),
        }
    };
    // The commit on this flow's source is the opposite flow's copy of
    // the group's commit on this flow's target (the group lives there,
    // or came back without consuming): nothing to carry. Carried anyway,
    // a translation that passed over records (the other cluster's
    // retention, a flow that began past the group's commit) would come
    // back over the group's own commit, or over an operator's reset
    // there, and skip records where they exist. The opposite flow's item
    // as read at the start of this sync may predate its commit (another
    // replicator runs it): read again after the commit was, since that
    // flow stores its intent before it commits.
    // Once found a copy, it stays one while the source holds it: the
    // opposite flow's record may be gone since (`ferry forget-flow`
    // retired it), and without it the copy would look like the
    // group's own commit.
    let mine = previous.get(&(group.to_owned(), tp.clone()));
    let copy_of_target = mine.is_some_and(|p| p.copy_source_offset == Some(c.offset))
        || match seen.carried.get(&(group.to_owned(), target_tp.clone())) {
            Some(o) if is_opposite_write(Some(o), mine, c.offset) => true,
            _ => match seen.opposite_key {
                Some(key) => is_opposite_write(ferry.store.group_sync(key, group, target_tp).await?.as_ref(), mine, c.offset),
                None => false,
            },
        };
    // No commit of the group here (it expired where the group lives):
    // nothing either; the copy is not the group's to resume at.
    let (translation, again) = match current {
        Some(cur) if copy_of_target => (Some(Translation { offset: cur, exact: true }), 0),
        None if copy_of_target => (None, 0),
        _ => (translation, again),
    };
    Ok(Found {
        translation,
        again,
        unread,
        copy_of_target,
    })
}

pub(super) async fn sync_group(
    sf: &SyncFlow<'_>,
    group: &str,
    seen: &Seen<'_>,
    lease_until_ms: i64,
) -> Result<Vec<GroupSyncItem>, FerryError> {
    let SyncFlow {
        ferry,
        flow,
        key: flow_key,
        opposite,
        source,
        target,
    } = *sf;
    let (cursors, previous) = (seen.cursors, seen.previous);
    // Only partitions this flow replicates (it has a cursor for them).
    let committed: BTreeMap<TopicPartition, Committed> = source
        .committed_offsets(group)
        .await?
        .into_iter()
        .filter(|(tp, _)| flow.selects_topic(&tp.topic) && !ferry.spec.is_prefixed_replica(&tp.topic) && cursors.contains_key(tp))
        .collect();
    // A partition synced before whose topic is missing now says so,
    // rather than show its last sync as current.
    let now = now_ms();
    let mut items: Vec<GroupSyncItem> = seen
        .missing
        .iter()
        .filter_map(|(tp, why)| previous.get(&(group.to_owned(), tp.clone())).map(|p| (p, why)))
        .map(|(p, why)| GroupSyncItem {
            // What the status told of Ferry's own commits, kept in place.
            written_offset: written_offset(p),
            own_commit: own_committed(p).map(|(c, _)| c),
            own_commit_ms: own_committed(p).map(|(_, at)| at),
            status: GroupSyncStatus::TopicMissing,
            detail: why.clone(),
            checked_ms: now,
            ..p.clone()
        })
        .collect();
    if committed.is_empty() {
        return Ok(items);
    }
    let state = target.group_state(group).await?;
    let on_target = target.committed_offsets(group).await?;
    let mut to_commit: BTreeMap<TopicPartition, Committed> = BTreeMap::new();
    let mut source_of: HashMap<TopicPartition, usize> = HashMap::new();
    // The rewinds counted in the cursor each commit's translation came from.
    let mut rewinds: HashMap<TopicPartition, i64> = HashMap::new();
    // Each partition's lookups (its translation in the offset maps, the
    // opposite flow's item) are reads only, made a few at once: one after
    // another they took two DynamoDB calls and more a partition, and a group
    // on 10,000 partitions outlived SyncGroups' timeout.
    let known: Vec<Known<'_>> = committed
        .iter()
        .filter_map(|(tp, c)| Known::of(flow, group, seen, &on_target, tp, c))
        .collect();
    // Made a few hundred at a time, then run a few at once: a closure over
    // the borrowed partitions in the stream is not `Send` for every
    // lifetime, as a spawned task (ferry run's background sync) needs, and
    // all of a group's futures at once would take memory with its
    // partitions.
    let mut found: Vec<Found> = Vec::with_capacity(known.len());
    for some in known.chunks(LOOKUPS_MADE_AT_ONCE) {
        let lookups: Vec<_> = some.iter().map(|k| look_up(sf, group, seen, k)).collect();
        found.extend(
            futures::stream::iter(lookups)
                .buffered(LOOKUPS_IN_FLIGHT)
                .try_collect::<Vec<_>>()
                .await?,
        );
    }
    for (k, f) in known.iter().zip(found) {
        let Known {
            tp,
            c,
            ref target_tp,
            current,
            cursor,
            start,
            replaced,
            from,
            before_start,
            ..
        } = *k;
        let Found {
            translation,
            again,
            unread,
            copy_of_target,
        } = f;
        let mut deleted_from = None;
        let translation = translation.map(|mut t| {
            // The group's own commit is left as it is, even below the log
            // start (its consumer's auto.offset.reset decides there).
            if let Some(s) = start.filter(|&s| t.offset < s && !copy_of_target) {
                deleted_from = Some(t.offset);
                t.offset = s;
                t.exact = false;
            }
            t
        });
        let prev = previous.get(&(group.to_owned(), tp.clone()));
        let pending = prev.and_then(|p| p.pending_offset);
        let adopted = pending.filter(|&p| current.is_some_and(|c| c >= p));
        // The commit this flow made itself, kept across syncs that write
        // nothing (one a stopped sync made is adopted: now).
        let kept = prev.and_then(own_committed);
        let mut item = GroupSyncItem {
            group: group.to_owned(),
            tp: tp.clone(),
            target_topic: Some(target_tp.topic.clone()),
            target_topic_id: cursor.target_topic_id.clone(),
            source_offset: c.offset,
            metadata: c.metadata.clone(),
            translated: translation.map(|t| t.offset),
            exact: translation.is_some_and(|t| t.exact),
            target_offset: current,
            // A commit a stopped sync made and could not record is adopted
            // once the target holds it or more (the group may have gone on
            // from it there); until then it is kept.
            written_offset: prev.and_then(written_offset).max(adopted),
            // An item stored before Ferry kept its own commits says so only
            // while its sync's record is of a commit (see `own_write`).
            own_commit: adopted.or(kept.map(|(c, _)| c)),
            own_commit_ms: adopted.map(|_| now).or(kept.map(|(_, at)| at)),
            written_rewinds: prev.and_then(|p| p.written_rewinds),
            redelivered: 0,
            carried_source_offset: prev.and_then(|p| p.carried_source_offset),
            pending_offset: pending.filter(|_| adopted.is_none()),
            copy_source_offset: copy_of_target.then_some(c.offset),
            status: GroupSyncStatus::UpToDate,
            detail: String::new(),
            checked_ms: now,
            rule: TRANSLATION_RULE,
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
                 it resumes after them on the target: {SKIPS})"
            )
        } else if let (Some(d), Some(s)) = (deleted_from, start) {
            format!(
                " (not exact: the group's next record is at target offset {d}, but the target no longer holds offsets {d}..{} \
                 (its log start moved past them: retention or DeleteRecords there); it resumes at the log start {s}, and the \
                 records before it that it never read are not on the target: {SKIPS}{})",
                s - 1,
                if again > 0 {
                    format!("; and {again} record(s) it already read will be delivered again")
                } else {
                    String::new()
                }
            )
        } else if again > 0 {
            format!(
                " (not exact: the two clusters hold this partition's records in different orders; {again} record(s) the group \
                 already read come before records it has not, and will be delivered again there; none is skipped)"
            )
        } else if let (Some(y), Some(o)) = (unread, opposite) {
            format!(
                " ({OPPOSITE_UNREAD} {} has not read the target's records from offset {y} on: records produced there may sit \
                 before the translation; it is exact once that flow has read them)",
                o.flow_key
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
            // Ferry's own commit of the same source commit, made by an
            // older translation rule that placed it further on: the group
            // has not consumed there since (the target still holds exactly
            // that commit), and the new rule's lower offset only adds what
            // the old one passed over.
            (None, Some(t))
                if prev.is_some_and(|p| {
                    p.rule < TRANSLATION_RULE && p.source_offset == c.offset && written_offset(p).is_some_and(|w| current == Some(w))
                }) && current.is_some_and(|cur| cur > t.offset) =>
            {
                SyncDecision::Commit(t.offset)
            }
            _ => decide(translation, current, seen.owner(group, tp, target_tp, current)),
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
            SyncDecision::NothingReplicated if copy_of_target => {
                item.status = GroupSyncStatus::NothingReplicated;
                item.detail = format!(
                    "the group has no commit on the target, and the source's {} is the opposite flow's copy of its last one \
                     there: nothing carried back",
                    c.offset
                );
            }
            SyncDecision::NothingReplicated => {
                item.status = GroupSyncStatus::NothingReplicated;
                item.detail = format!("no record at or around source offset {} is replicated yet", c.offset);
            }
            SyncDecision::UpToDate => {
                item.detail = if copy_of_target {
                    format!("target holds the group's own commit, and the source {COPY_OF_TARGET}")
                } else {
                    format!("target holds the translation{not_exact}")
                };
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
                source_of.insert(target_tp.clone(), items.len());
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
        // Again once the intents are written: their calls may have queued
        // behind the process's others (a `ferry run` setting up its
        // batches). Not committed, they are what a sync that died before
        // its commit leaves.
        if now_ms() + commit_margin_ms(ferry) > lease_until_ms {
            return Err(FerryError::NotReady(format!(
                "group {group}: its sync lease ended while its intents were written: not committed, the next sync does it"
            )));
        }
        let results = target.commit_offsets(group, &to_commit).await?;
        failpoint::after_group_commit();
        for (target_tp, res) in results {
            let Some(&i) = source_of.get(&target_tp) else { continue };
            let item = &mut items[i];
            match res {
                Ok(()) => {
                    item.target_offset = to_commit.get(&target_tp).map(|c| c.offset);
                    item.written_offset = item.target_offset;
                    item.own_commit = item.target_offset;
                    item.own_commit_ms = Some(now_ms());
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
