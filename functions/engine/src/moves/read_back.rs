//! The move's last step: the groups synced once more under the move's
//! leases, their commits read back from the destination, the verdict, and
//! on GO the move recorded.

use super::*;

/// The move's last sync of its groups (under `owner`'s leases), their
/// commits read back from the destination, and, on GO, the move recorded.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sync_and_read_back(
    ferry: &Ferry,
    req: &MoveRequest,
    flow: &FlowSpec,
    src: &KafkaCluster,
    dst: &KafkaCluster,
    commits: &BTreeMap<String, BTreeMap<TopicPartition, Committed>>,
    mut report: MoveReport,
    owner: &str,
    until: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<MoveReport, FerryError> {
    let (from, to) = (flow.source.alias.clone(), flow.target.alias.clone());
    progress(&format!("replicated; syncing group(s) {} to {to}", req.groups.join(", ")));
    // Both ways, a translation is exact once the flow back has read the
    // destination past Ferry's copies (records produced there may sit
    // among them): until then, and within --wait, sync again.
    let mut told: Option<Instant> = None;
    let (summary, items) = loop {
        let (summary, items) = crate::groups::sync_groups_now(ferry, flow, &req.groups, Some(owner)).await?;
        let unread = items.iter().find(|i| !i.exact && i.detail.contains(crate::groups::OPPOSITE_UNREAD));
        match unread {
            Some(i) if summary.failures.is_empty() && Instant::now() < until => {
                if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    progress(&format!(
                        "waiting for the flow back to read {to}: group {} {}{}",
                        i.group, i.tp, i.detail
                    ));
                    told = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            _ => break (summary, items),
        }
    };
    if let Some(f) = summary.failures.first() {
        return Ok(report.no_go(
            format!("the group sync failed: {f}"),
            "fix the cause it gives, then run the move again".into(),
        ));
    }
    let items: HashMap<(&str, &TopicPartition), &GroupSyncItem> = items.iter().map(|i| ((i.group.as_str(), &i.tp), i)).collect();
    for (g, c) in commits {
        // Nothing committed for the group on the cluster it leaves since
        // the move began (a consumer using assign() joins no group, and no
        // member check sees it).
        let now = src.committed_offsets(g).await?;
        let changed = now
            .iter()
            .filter(|(tp, n)| c.get(*tp).map(|o| o.offset) != Some(n.offset))
            .map(|(tp, n)| format!("{tp}: {} → {}", c.get(tp).map_or("none".into(), |o| o.offset.to_string()), n.offset))
            .collect::<Vec<_>>();
        if !changed.is_empty() {
            return Ok(report.no_go(
                format!("group {g}'s commits on {from} changed during the move ({})", changed.join(", ")),
                format!(
                    "something still commits for group {g} on {from}: a consumer that uses assign() (it joins no group, so no \
                     member shows), or a tool; stop it, then run the move again"
                ),
            ));
        }
        let back = dst.committed_offsets(g).await?;
        for (tp, committed) in c {
            let Some(item) = items.get(&(g.as_str(), tp)) else {
                let cursor = ferry.store.get_cursor(&ferry.flow_key(flow), tp).await?;
                if let Some(at) = cursor.as_ref().and_then(|c| crate::groups::below_handover(c, committed.offset)) {
                    return Ok(report.no_go(
                        format!(
                            "group {g} {tp}: committed at offset {}, where flow {} does not place it: it took the topic over \
                             from another writer at offset {at}, and the records on {to} below that are the other writer's \
                             copies",
                            committed.offset,
                            flow.id()
                        ),
                        format!(
                            "let the application read past offset {at} on {from} (records produced after the handover; at \
                             {at} itself, once the flow has copied one), so that its commit is among this flow's copies, \
                             then run the move again"
                        ),
                    ));
                }
                return Ok(report.no_go(
                    format!("flow {} does not sync group {g}", flow.id()),
                    "add the group to ConsumerGroupsToReplicate in replication-info.json (with DetectAndCopyNewConsumerGroups \
                     false, a flow syncs only the groups it found at its first sync)"
                        .into(),
                ));
            };
            let target_tp = TopicPartition::new(flow.target_topic(&tp.topic), tp.partition);
            // The destination's commit is ahead of the translation by
            // offsets a consumer passes over (transaction markers, aborted
            // records): Kafka's consumers commit past a marker they read,
            // so a group moved and moved straight back lands here. The same
            // place: resume at the commit the destination holds.
            let (mut status, mut resume_at) = (item.status, item.translated);
            if status == GroupSyncStatus::TargetAhead && item.exact && item.source_offset == committed.offset {
                if let (Some(t), Some(cur)) = (item.translated, item.target_offset) {
                    if dst.next_record(&target_tp, t).await?.is_none_or(|r| r.offset >= cur) {
                        (status, resume_at) = (GroupSyncStatus::UpToDate, Some(cur));
                    }
                }
            }
            if !matches!(status, GroupSyncStatus::Synced | GroupSyncStatus::UpToDate) || item.source_offset != committed.offset {
                return Ok(report.no_go(
                    format!("group {g} {tp}: {} ({})", status.as_str(), item.detail),
                    status_fix(status, &to),
                ));
            }
            let Some(translated) = resume_at else {
                return Ok(report.no_go(format!("group {g} {tp}: no translation ({})", item.detail), status_fix(status, &to)));
            };
            // Not exact with records to deliver again: the clusters hold
            // the partition's records in different orders (re-delivery, no
            // skip). Not exact otherwise: records the group never read are
            // not on the destination (never copied, or deleted there), and
            // no flag makes that a GO.
            if !item.exact && item.detail.contains(crate::groups::OPPOSITE_UNREAD) {
                return Ok(report.no_go(
                    format!("group {g} {tp}: the translation is not exact yet{}", item.detail),
                    format!(
                        "the flow back reads {to} on its next round: check that the replicator that runs it is running and has no \
                         errors (`ferry status`), then run the move again, with a longer --wait"
                    ),
                ));
            }
            let skips = item.detail.contains(crate::groups::SKIPS);
            if !item.exact && (item.redelivered == 0 || !req.allow_redelivery || skips) {
                return Ok(if item.redelivered > 0 && !skips {
                    report.no_go(
                        format!(
                            "the translation of group {g} {tp} is not exact: {} record(s) it consumed on {from} would be delivered \
                             again on {to} ({})",
                            item.redelivered, item.detail
                        ),
                        "the two clusters hold the partition's records in different orders; move anyway, accepting the \
                         re-delivery, with --allow-redelivery"
                            .into(),
                    )
                } else {
                    report.no_go(
                        format!(
                            "group {g} {tp}: records it has not read are not on {to}, and it would skip them ({})",
                            item.detail
                        ),
                        format!(
                            "let the application read them on {from} first (start it there again, then stop it and move it), or, \
                             if it may skip them, reset the group on {to} yourself; Ferry does not move it past records it never read"
                        ),
                    )
                });
            }
            let read = back.get(&target_tp).map(|c| c.offset);
            if read != Some(translated) {
                return Ok(report.no_go(
                    format!(
                        "group {g} {target_tp}: read back {} on {to}, not the translation {translated}",
                        read.map_or("no commit".into(), |o| o.to_string())
                    ),
                    "something else commits for this group on the destination: stop it, then run the move again".into(),
                ));
            }
            report.resume.push(ResumeAt {
                group: g.clone(),
                topic: target_tp.topic.clone(),
                partition: target_tp.partition,
                source_offset: committed.offset,
                offset: translated,
                exact: item.exact,
                redelivered: item.redelivered,
                next_record: dst.next_record(&target_tp, translated).await?.map(view),
            });
        }
    }

    // Still stopped everywhere: no member joined while the move ran.
    for g in &req.groups {
        for (cluster, alias) in [(src, &from), (dst, &to)] {
            let state = cluster.group_state(g).await?;
            if state.members > 0 {
                return Ok(report.no_go(
                    format!(
                        "group {g} got {} member(s) on {alias} while the move ran: {}",
                        state.members,
                        state.clients.join(", ")
                    ),
                    format!("stop the group's consumers on {alias}, then run the move again"),
                ));
            }
        }
    }

    // 5. Recorded, group by group.
    record(ferry, src, dst, flow, &report).await?;
    report.recorded = true;
    Ok(report)
}

/// What to do about a group partition the sync left in `status`.
fn status_fix(status: GroupSyncStatus, to: &str) -> String {
    match status {
        GroupSyncStatus::TargetAhead => format!(
            "the group's commit on {to} is ahead of the translation (it consumed there since), and Ferry never moves a commit \
             back: if the application should resume at the translation, reset the group on {to} to it, then run the move again"
        ),
        GroupSyncStatus::ForeignCommit => "follow the detail: the commit on the destination is someone else's".into(),
        GroupSyncStatus::ActiveOnTarget => format!("stop the group's consumers on {to}, then run the move again"),
        GroupSyncStatus::NothingReplicated => "let the flow copy the group's records (`ferry status`), then run the move again".into(),
        GroupSyncStatus::TopicMissing => {
            "the topic is missing on a cluster (deleted): let the next plan deal with it (`ferry status`), then run the move again".into()
        }
        GroupSyncStatus::Failed | GroupSyncStatus::Synced | GroupSyncStatus::UpToDate => {
            "fix the cause the detail gives, then run the move again".into()
        }
    }
}

fn view(r: NextRecord) -> RecordView {
    RecordView {
        offset: r.offset,
        key: r.key.map(|k| match std::str::from_utf8(&k) {
            Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
            _ => format!("0x{}", k.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        }),
        timestamp_ms: r.timestamp_ms,
    }
}
