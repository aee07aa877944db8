//! `ferry move`: may this application start on the other cluster now, and
//! where will it resume? One application is its consumer groups and the
//! topics it produces. The move refuses while any of its groups has
//! members on either cluster, waits until the flow toward the destination
//! has copied every record up to the groups' commits and to the end of
//! the produced topics, syncs the groups once more, reads their commits
//! back from the destination, and says GO only when each is the exact
//! translation. A GO is recorded (per group, under the two clusters' ids),
//! so that `ferry status` shows where each group lives now, whichever
//! replicator on these tables moved it; the move the other way is the
//! rollback.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use ferry_adapters::kafka::groups::Committed;
use ferry_adapters::kafka::{KafkaCluster, NextRecord, OffsetSpec};
use ferry_adapters::state::{now_ms, CursorItem, GroupSyncItem, GroupSyncStatus, MoveItem};
use ferry_core::config::FlowSpec;
use ferry_core::domain::TopicPartition;
use serde::Serialize;
use tokio::time::Instant;

use crate::context::Ferry;
use crate::error::FerryError;

mod homes;
mod read_back;

use homes::record;
pub use homes::{homes, GroupHome};
use read_back::sync_and_read_back;

/// What to move, and where.
#[derive(Debug, Clone, Default)]
pub struct MoveRequest {
    /// The application's consumer groups.
    pub groups: Vec<String>,
    /// The topics it produces.
    pub topics: Vec<String>,
    /// The destination: a cluster id of `kafka-clusters.json` (or its alias).
    pub to: String,
    /// How long to wait for replication to catch up.
    pub wait: Duration,
    /// GO even where a translation is not exact (records the group
    /// consumed will be delivered again; never skipped).
    pub allow_redelivery: bool,
}

/// Where one group partition resumes on the destination.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResumeAt {
    /// The group.
    pub group: String,
    /// The topic on the destination.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's commit on the cluster it left.
    pub source_offset: i64,
    /// Its commit on the destination, read back.
    pub offset: i64,
    /// Whether `offset` is the exact translation.
    pub exact: bool,
    /// Records the group consumed that it will read again (0 when exact).
    pub redelivered: i64,
    /// The record it reads first; none when it is at the end of the log.
    pub next_record: Option<RecordView>,
}

/// A record as the move shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordView {
    /// Its offset on the destination.
    pub offset: i64,
    /// Its key: as text when it is UTF-8, else `0x` and hex; none when null.
    pub key: Option<String>,
    /// Its timestamp, ms since the epoch.
    pub timestamp_ms: i64,
}

/// How far the flow had to copy one produced partition.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProducedEnd {
    /// The topic on the cluster the application left.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its end offset when the move began (the application had stopped).
    pub end_offset: i64,
}

/// The verdict of a move, with everything it found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MoveReport {
    /// "GO" or "NO-GO".
    pub verdict: String,
    /// Why not, for a NO-GO.
    pub reason: Option<String>,
    /// What to do about it.
    pub fix: Option<String>,
    /// The replicator and the flow that carries the application.
    pub replicator: String,
    pub flow: String,
    /// The clusters' aliases.
    pub from: String,
    pub to: String,
    /// What was asked.
    pub groups: Vec<String>,
    pub topics: Vec<String>,
    /// How long the move waited for replication, ms.
    pub waited_ms: u64,
    /// Where each group partition resumes (GO, or NO-GO found at the read-back).
    pub resume: Vec<ResumeAt>,
    /// The produced partitions the flow had to copy to their end.
    pub produced: Vec<ProducedEnd>,
    /// Whether the move was recorded in the state table (GO only).
    pub recorded: bool,
}

impl MoveReport {
    /// Whether the application may start on the destination.
    pub fn go(&self) -> bool {
        self.verdict == "GO"
    }

    fn no_go(mut self, reason: String, fix: String) -> Self {
        self.verdict = "NO-GO".into();
        self.reason = Some(reason);
        self.fix = Some(fix);
        self
    }
}

/// The flow that carries an application to cluster `to` (an id of the
/// definition or its alias).
fn flow_to<'a>(ferry: &'a Ferry, to: &str) -> Result<&'a FlowSpec, FerryError> {
    let toward: Vec<&FlowSpec> = ferry
        .spec
        .flows
        .iter()
        .filter(|f| f.target.id == to || f.target.alias == to)
        .collect();
    match toward.as_slice() {
        [one] => Ok(one),
        [] => {
            let mut known: Vec<String> = ferry
                .spec
                .flows
                .iter()
                .flat_map(|f| [&f.source, &f.target])
                .map(|c| c.id.clone())
                .collect();
            known.sort();
            known.dedup();
            Err(FerryError::Input(if known.iter().any(|k| k == to) {
                format!(
                    "no flow of replicator {} copies to {to}: its group offsets could not follow the application. Fix: give --to \
                     the cluster a flow of this replicator targets, or the --name of the replicator that copies to {to}",
                    ferry.spec.name
                )
            } else {
                format!(
                    "--to {to:?} is not a cluster of this replicator (its clusters: {}). Fix: give one of them",
                    known.join(", ")
                )
            }))
        }
        many => Err(FerryError::Input(format!(
            "{} flows of replicator {} copy to {to} ({}): a move follows one. Fix: move with a replicator whose definition has one \
             flow into {to}",
            many.len(),
            ferry.spec.name,
            many.iter().map(|f| f.id()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Move an application (its groups and produced topics) along the flow
/// toward `req.to`: see the module's documentation. `progress` is told
/// what the move waits for, every few seconds. Writes nothing but the
/// groups' final sync and, on GO, the move's record.
pub async fn move_app(ferry: &Ferry, req: &MoveRequest, progress: &mut dyn FnMut(&str)) -> Result<MoveReport, FerryError> {
    if req.groups.is_empty() && req.topics.is_empty() {
        return Err(FerryError::Input(
            "nothing to move. Fix: name the application's consumer groups with --group and the topics it produces with --topics".into(),
        ));
    }
    let flow = flow_to(ferry, &req.to)?;
    let flow_key = ferry.flow_key(flow);
    let (from, to) = (flow.source.alias.clone(), flow.target.alias.clone());
    let src = ferry.cluster(&flow.source.id)?;
    let dst = ferry.cluster(&flow.target.id)?;
    let report = MoveReport {
        verdict: "GO".into(),
        reason: None,
        fix: None,
        replicator: ferry.spec.name.clone(),
        flow: flow.id(),
        from: from.clone(),
        to: to.clone(),
        groups: req.groups.clone(),
        topics: req.topics.clone(),
        waited_ms: 0,
        resume: Vec::new(),
        produced: Vec::new(),
        recorded: false,
    };

    let started = Instant::now();
    let deadline = started + req.wait;

    // 1. The application is stopped: none of its groups has members on
    // either cluster.
    for g in &req.groups {
        for (cluster, alias, fix) in [
            (
                &src,
                &from,
                format!("stop the application on {from} (every consumer of group {g}), then run the move again"),
            ),
            (
                &dst,
                &to,
                format!(
                    "the application must not run on {to} before its move: stop the consumers of group {g} there, then run the move again"
                ),
            ),
        ] {
            let mut state = cluster.group_state(g).await?;
            // A group its last member just left may still be rebalancing
            // (no members, not yet Empty): it settles in moments.
            while state.is_active() && state.members == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(300)).await;
                state = cluster.group_state(g).await?;
            }
            if state.is_active() {
                let who = if state.clients.is_empty() {
                    String::new()
                } else {
                    format!(": {}", state.clients.join(", "))
                };
                return Ok(report.no_go(
                    format!("group {g} is {} with {} member(s) on {alias}{who}", state.state, state.members),
                    fix,
                ));
            }
        }
    }

    // 2. What the flow must have copied: every record up to each group's
    // commits, and every produced partition to its end now.
    let cursors = cursors_by_partition(ferry, &flow_key).await?;
    let mut commits: BTreeMap<String, BTreeMap<TopicPartition, Committed>> = BTreeMap::new();
    for g in &req.groups {
        let c = src.committed_offsets(g).await?;
        if c.is_empty() {
            // The destination may still hold commits of an earlier life
            // (a topic deleted and created again on `from` took the
            // group's commits with it): the application resumes there, not
            // where its auto.offset.reset says.
            let left: Vec<(TopicPartition, i64)> = dst.committed_offsets(g).await?.into_iter().map(|(tp, c)| (tp, c.offset)).collect();
            if !left.is_empty() {
                let (listed, delete) = leftover_commits(g, &to, &left);
                return Ok(report.no_go(
                    format!(
                        "group {g} has no committed offsets on {from}, but {to} still holds commits for it: {listed}; started on \
                         {to}, the application resumes there"
                    ),
                    format!(
                        "if they are left from before (a topic deleted and created again on {from}), delete them on {to} with \
                         {delete}; or start the application on {from} until it commits, then move it"
                    ),
                ));
            }
            return Ok(report.no_go(
                format!("group {g} has no committed offsets on {from}: there is nothing to carry to {to}"),
                format!("check the group id; an application that never committed starts on {to} where its auto.offset.reset says"),
            ));
        }
        if let Some(tp) = c.keys().find(|tp| ferry.spec.is_prefixed_replica(&tp.topic)) {
            return Ok(report.no_go(
                format!("group {g} consumes {tp}, a replica Ferry wrote on {from} (PREFIXED names): no flow copies it back to {to}"),
                format!(
                    "move the application only once it reads the topic under its own name; on {to} its records are in the topic \
                     they were copied from"
                ),
            ));
        }
        if let Some(tp) = c.keys().find(|tp| !flow.selects_topic(&tp.topic)) {
            return Ok(report.no_go(
                format!("group {g} consumes {tp}, which flow {} does not replicate", flow.id()),
                "add its topic to TopicsToReplicate in replication-info.json (and let the flow catch up), or move the application \
                 only once it no longer reads that topic"
                    .into(),
            ));
        }
        // Commits the destination holds on a topic the flow copies into
        // that the group has none for here (the topic deleted and created
        // again on `from` took them): the application would resume there,
        // in records of the topic's earlier life it never read.
        let read_here: BTreeSet<String> = c.keys().map(|tp| flow.target_topic(&tp.topic)).collect();
        let copied_into: BTreeSet<&str> = cursors.values().map(|c| c.target_topic.as_str()).collect();
        let stale: Vec<(TopicPartition, i64)> = dst
            .committed_offsets(g)
            .await?
            .into_iter()
            .filter(|(tp, _)| copied_into.contains(tp.topic.as_str()) && !read_here.contains(&tp.topic))
            .map(|(tp, c)| (tp, c.offset))
            .collect();
        if !stale.is_empty() {
            let (listed, delete) = leftover_commits(g, &to, &stale);
            return Ok(report.no_go(
                format!(
                    "group {g} has commits on {to} for topic(s) it has none for on {from}: {listed}; started on {to}, the \
                     application resumes there"
                ),
                format!(
                    "if they are left from before (a topic deleted and created again on {from}), delete them on {to} with {delete}; \
                     otherwise let the application commit on those topics on {from} first, then move it"
                ),
            ));
        }
        commits.insert(g.clone(), c);
    }
    let mut report = report;
    let mut needed: Vec<(TopicPartition, i64, String)> = Vec::new();
    for (g, c) in &commits {
        needed.extend(c.iter().map(|(tp, c)| (tp.clone(), c.offset, format!("group {g}"))));
    }
    if !req.topics.is_empty() {
        let meta = src.metadata(Some(&req.topics)).await?;
        let mut tps = Vec::new();
        for t in &req.topics {
            let Some(m) = meta.get(t) else {
                return Ok(report.no_go(
                    format!("topic {t} does not exist on {from}"),
                    "check --topics: name the topics the application produces".into(),
                ));
            };
            tps.extend(m.partitions.keys().map(|&p| TopicPartition::new(t.clone(), p)));
        }
        if let Some(tp) = tps.iter().find(|tp| !cursors.contains_key(tp) && !flow.selects_topic(&tp.topic)) {
            return Ok(report.no_go(
                format!("the application produces {tp}, which flow {} does not replicate", flow.id()),
                "add the topic to TopicsToReplicate in replication-info.json and let the flow catch up".into(),
            ));
        }
        // The high watermark, not the last stable offset: a transaction
        // the stopped application left open holds records a consumer on
        // the destination must see once it commits.
        let ends = src.list_offsets(&tps, OffsetSpec::Latest, false).await?;
        for tp in tps {
            let end = ends.get(&tp).copied().unwrap_or(0);
            needed.push((tp.clone(), end, "produced".into()));
            report.produced.push(ProducedEnd {
                topic: tp.topic,
                partition: tp.partition,
                end_offset: end,
            });
        }
    }

    // A topic the flow refuses is not copied, wherever its cursor stands
    // (at the end, with StartingPosition LATEST).
    if let Some((tp, why)) = needed
        .iter()
        .find_map(|(tp, _, _)| Some((tp, cursors.get(tp)?.plan_refusal.as_deref()?)))
    {
        return Ok(report.no_go(
            format!("flow {} refuses to copy {tp}: {why}", flow.id()),
            "mend what the refusal names; once a plan copies the topic (`ferry status` shows no error on it), run the move again".into(),
        ));
    }

    // 3. Wait for the flow.
    let mut told: Option<Instant> = None;
    loop {
        let cursors = cursors_by_partition(ferry, &flow_key).await?;
        let behind: Vec<(&TopicPartition, i64, &str)> = needed
            .iter()
            .filter_map(|(tp, want, why)| {
                let at = cursors.get(tp).map_or(0, |c| c.next_source_offset);
                (at < *want).then_some((tp, want - at, why.as_str()))
            })
            .collect();
        report.waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if behind.is_empty() {
            break;
        }
        let records: i64 = behind.iter().map(|b| b.1).sum();
        let (tp, n, why) = behind[0];
        if Instant::now() >= deadline {
            // Caught up to the last stable offset but not the end: a
            // transaction left open holds the rest, not the replicator.
            let tps: Vec<TopicPartition> = behind.iter().map(|b| b.0.clone()).collect();
            let stable = src.list_offsets(&tps, OffsetSpec::Latest, true).await?;
            let open = behind.iter().find_map(|&(tp, _, _)| {
                let at = cursors.get(tp).map_or(0, |c| c.next_source_offset);
                stable.get(tp).filter(|&&lso| at >= lso).map(|&lso| (tp, lso))
            });
            if let Some((tp, lso)) = open {
                return Ok(report.no_go(
                    format!("a transaction left open on {from} holds {tp} from offset {lso}: no consumer reads past it yet"),
                    "the producer that opened it commits or aborts it (a stopped application's open transaction aborts at its \
                     transaction.timeout.ms); then run the move again"
                        .into(),
                ));
            }
            return Ok(report.no_go(
                format!(
                    "flow {} has not yet copied {records} record(s) on {} partition(s) that the move needs (first: {tp}, {n} behind, for {why})",
                    flow.id(),
                    behind.len()
                ),
                format!(
                    "check that the replicator is running and has no errors (`ferry status`), then run the move again, with a longer \
                     --wait (it waited {} s)",
                    req.wait.as_secs()
                ),
            ));
        }
        if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            progress(&format!(
                "waiting for flow {}: {records} record(s) to copy on {} partition(s) ({} s of {} s)",
                flow.id(),
                behind.len(),
                started.elapsed().as_secs(),
                req.wait.as_secs()
            ));
            told = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if req.groups.is_empty() {
        return Ok(report);
    }

    // 4. The last sync, and the commits read back, under the groups' sync
    // leases: no scheduled sync that read the target before this one can
    // commit an older translation over it until the application starts.
    let owner = format!("move-{}", uuid::Uuid::new_v4());
    let mut held = Vec::new();
    let mut outcome = None;
    for g in &req.groups {
        // What --wait leaves, and a few seconds at least.
        let until = deadline.max(Instant::now() + Duration::from_secs(5));
        let mut told: Option<Instant> = None;
        loop {
            if ferry
                .store
                .acquire_group_sync(&flow_key, g, &owner, crate::groups::lease_ms(ferry))
                .await?
                .is_some()
            {
                held.push(g.clone());
                break;
            }
            if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                progress(&format!(
                    "waiting for another sync of group {g} to give its lease back (one that was killed holds it up to {} s) \
                     ({} s of {} s)",
                    ferry.settings.group_sync_lease.as_secs(),
                    started.elapsed().as_secs(),
                    req.wait.as_secs()
                ));
                told = Some(Instant::now());
            }
            if Instant::now() >= until {
                outcome = Some(report.clone().no_go(
                    format!("another sync of group {g} (flow {}) held its lease throughout", flow.id()),
                    format!(
                        "a sync that was killed leaves its lease for {} s at most: run the move again then, or with a longer --wait",
                        ferry.settings.group_sync_lease.as_secs()
                    ),
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if outcome.is_some() {
            break;
        }
    }
    report.waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let res = match outcome {
        Some(no_go) => Ok(no_go),
        None => sync_and_read_back(ferry, req, flow, &src, &dst, &commits, report, &owner, deadline, progress).await,
    };
    for g in &held {
        if let Err(e) = ferry.store.release_group_sync(&flow_key, g, &owner).await {
            tracing::warn!(group = %g, cause = %e, "the move's lease on the group's sync was not given back: it ends in two minutes");
        }
    }
    res
}

async fn cursors_by_partition(ferry: &Ferry, flow_key: &str) -> Result<HashMap<TopicPartition, CursorItem>, FerryError> {
    Ok(ferry
        .store
        .list_cursors(flow_key)
        .await?
        .into_iter()
        .map(|c| (c.tp.clone(), c))
        .collect())
}

/// Commits `to` holds for group `g` that it would resume at, as
/// `topic/partition=offset, …`, and the commands that delete them.
fn leftover_commits(g: &str, to: &str, commits: &[(TopicPartition, i64)]) -> (String, String) {
    let listed = commits
        .iter()
        .map(|(tp, o)| format!("{}/{}={o}", tp.topic, tp.partition))
        .collect::<Vec<_>>()
        .join(", ");
    let topics: BTreeSet<&str> = commits.iter().map(|(tp, _)| tp.topic.as_str()).collect();
    let delete = topics
        .iter()
        .map(|t| format!("`kafka-consumer-groups.sh --bootstrap-server <{to}> --group {g} --delete-offsets --topic {t}`"))
        .collect::<Vec<_>>()
        .join("; ");
    (listed, delete)
}
