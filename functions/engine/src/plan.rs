//! The Plan step: select source topics, check and create target topics,
//! create cursors for partitions seen for the first time, and split the
//! partitions into bounded Replicate batches.
//!
//! Planning a flow has two halves: `decide` reads both clusters and the
//! state tables and works out everything to do, checking it all before
//! anything is written; `apply` does it. A dry run (`dry_run`) decides and
//! reports, and never applies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_adapters::kafka::{KafkaCluster, KafkaError, OffsetSpec, TopicConfig, TopicMeta};
use ferry_adapters::state::{now_ms, CursorItem, FlowStart, StateError};
use ferry_core::acls::AclBinding;
use ferry_core::config::{FlowSpec, StartingPosition};
use ferry_core::domain::{Backfill, BackfillFrom, PartitionWork, PlanInput, PlanOutput, RefusedTopic, ReplicateInput, TopicPartition};
use ferry_core::plan::{partitions_per_batch, split_into_batches};
use ferry_core::topic_config;
use futures::{StreamExt, TryStreamExt};

use crate::context::Ferry;
use crate::error::{ClusterReplaced, FerryError};

mod acls;
mod backfill;
mod copies;
mod failpoint;
mod first_plan;
mod producers;
mod recreated;
mod stored;
mod targets;
mod writers;
pub use stored::{batch_partitions, store_batches, PLAN_KEPT, STORED_BATCH_MAX_BYTES};

use acls::*;
use backfill::{apply_backfills, check_backfill};
use first_plan::FirstPlan;
use recreated::*;

mod dry_run;
pub use dry_run::{
    dry_run, AclNotCopied, ConfigChange, DryRun, DryRunOptions, FlowDryRun, PartitionIncrease, PartitionStart, RecordSizeRisk,
    TopicToCreate,
};

/// State calls of one kind (cursor creations, prunes, forgets) in flight
/// at once during a plan.
const STATE_CALLS_IN_FLIGHT: usize = 16;
/// The longest topic name Kafka takes.
const MAX_TOPIC_NAME: usize = 249;

/// Run `calls` [`STATE_CALLS_IN_FLIGHT`] at a time; their results in
/// order, or the first error.
async fn in_flight<T, E>(calls: impl IntoIterator<Item = impl std::future::Future<Output = Result<T, E>>>) -> Result<Vec<T>, E> {
    futures::stream::iter(calls).buffered(STATE_CALLS_IN_FLIGHT).try_collect().await
}

/// Plan every flow of the replicator (outside Lambda: no deadline).
pub async fn plan(ferry: &Ferry, input: &PlanInput) -> Result<PlanOutput, FerryError> {
    plan_until(ferry, input, None).await
}

/// Plan every flow of the replicator, in a Lambda invocation that ends at
/// `deadline` (`None`: a process without one).
pub async fn plan_until(ferry: &Ferry, input: &PlanInput, deadline: Option<SystemTime>) -> Result<PlanOutput, FerryError> {
    let max = input.max_partitions_per_batch.unwrap_or(ferry.settings.max_partitions_per_batch);
    let mut out = PlanOutput {
        replicator: ferry.spec.name.clone(),
        created_topics: Vec::new(),
        copied_acls: Vec::new(),
        batches: Vec::new(),
        left_flows: Vec::new(),
        refused_topics: Vec::new(),
    };
    if let Some(b) = &input.backfill {
        check_backfill(ferry, b).await?;
    }
    let mut planned = Vec::with_capacity(ferry.spec.flows.len());
    for flow in &ferry.spec.flows {
        let (started, ids) = start_flow(ferry, flow).await?;
        // Each flow's hold from when it is taken: the flows before it may
        // have taken longer than a hold outside Lambda lasts.
        let hold_until_ms = first_plan::hold_until_ms(deadline);
        let claimed = first_plan::Moment::now();
        let first_plan::Turn::Plan { hold } = first_plan::take(ferry, flow, &started, hold_until_ms, deadline.is_none()).await? else {
            if let Some(b) = input.backfill.as_ref().filter(|b| b.topics.iter().any(|t| flow.selects_topic(t))) {
                return Err(FerryError::Input(format!(
                    "flow {}: its first plan is running in another plan, and the backfill of {:?} waits for it; nothing was moved for this flow. \
                     Fix: run the backfill again in a few minutes",
                    flow.id(),
                    b.topics
                )));
            }
            out.left_flows.push(flow.id());
            continue;
        };
        let planned_flow = plan_flow(ferry, flow, input, &started, hold.as_deref(), deadline, &mut out);
        let work = match first_plan::renewing(ferry, flow, hold.as_deref(), claimed, deadline, planned_flow).await {
            // Registered once planned, before any of its batches runs: a
            // plan refused (a first plan never run again) leaves no pair
            // that another replicator would take for an opposite flow.
            Ok(work) => {
                crate::opposite::register(ferry, flow, &ids.0, &ids.1).await?;
                work
            }
            Err(e) => {
                first_plan::release(ferry, flow, hold).await;
                return Err(e);
            }
        };
        planned.push((flow, work));
    }
    // As many batches as the state machine runs at once, at most.
    let per_flow: Vec<usize> = planned.iter().map(|(_, w)| w.len()).collect();
    let max = partitions_per_batch(&per_flow, max, ferry.settings.max_concurrency);
    for (flow, work) in planned {
        for partitions in split_into_batches(work, max) {
            out.batches.push(ReplicateInput {
                stored: None,
                flow: flow.id(),
                partitions,
                stop_at_plan_end: input.stop_at_plan_end,
                max_seconds: input.replicate_max_seconds,
            });
        }
    }
    Ok(out)
}

/// Plan one flow: its topics, cursors and ACLs, the producer items'
/// housekeeping; the created topics and copied ACLs go to `out`. Returns
/// the flow's work for the Replicate batches. `hold`: this plan's hold on
/// the flow's first plan, if it is one; `deadline`: the plan's (see
/// [`plan_until`]), which bounds the housekeeping.
async fn plan_flow(
    ferry: &Ferry,
    flow: &FlowSpec,
    input: &PlanInput,
    started: &FlowStart,
    hold: Option<&str>,
    deadline: Option<SystemTime>,
    out: &mut PlanOutput,
) -> Result<Vec<PartitionWork>, FerryError> {
    let mut decided = decide(ferry, flow, input.backfill.as_ref(), true, FirstPlan::from(started)).await?;
    decided.prune_round = started.plans;
    let handed = writers::settle(ferry, flow, &mut decided).await?;
    let was_first = decided.first_plan;
    // Told at error level when it starts or changes; each plan after that
    // (every minute, or every round of `ferry run`) at debug level.
    let news: BTreeSet<String> = targets::refusal_writes(&decided)
        .into_iter()
        .filter(|(_, why)| why.is_some())
        .map(|(tp, _)| tp.topic)
        .collect();
    for r in decided.refused_topics(flow) {
        if news.contains(&r.topic) {
            tracing::error!(replicator = %ferry.spec.name, flow = %flow.id(), topic = %r.topic, "TopicRefused: {}; the flow's other topics go on", r.why);
        } else {
            tracing::debug!(flow = %flow.id(), topic = %r.topic, "TopicRefused (as before): {}", r.why);
        }
        out.refused_topics.push(r);
    }
    let (created, work) = apply(ferry, flow, decided).await?;
    writers::finish(ferry, flow, &handed).await?;
    // A marker an earlier Ferry wrote, once planned (as the first or as
    // started), records it: read as started from now on, whatever its
    // cursors become (all its topics deleted).
    if was_first || started.legacy {
        ferry.store.finish_first_plan(&ferry.flow_key(flow), started, hold).await?;
    }
    // Housekeeping: a failure leaves the items to the next plan.
    let until = producers::prune_until(deadline);
    match producers::prune_producers(ferry, flow, started.producers_pruned_after, until).await {
        Ok(p) if p != producers::Pruned::default() => {
            tracing::info!(flow = %flow.id(), ended = p.ended, passed = p.passed, deleted = p.deleted, "pruned producer items whose records are gone")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(flow = %flow.id(), error = %e, "could not prune producer items; the next plan tries again"),
    }
    out.created_topics.extend(created);
    if flow.copy_acls {
        if let Some(acls) = decide_acls(ferry, flow, &work).await? {
            out.copied_acls.extend(apply_acls(ferry, flow, acls).await?);
        }
    }
    Ok(work)
}

/// Mark the flow started (first: true until a plan has finished the
/// flow's first plan; plans: how many plans started it before), after checking that its clusters are those
/// its state was written for. Returns that and the clusters' ids.
async fn start_flow(ferry: &Ferry, flow: &FlowSpec) -> Result<(FlowStart, (String, String)), FerryError> {
    let ids = cluster_ids(ferry, flow).await?;
    let started = ferry.store.start_flow(&ferry.flow_key(flow), &ids.0, &ids.1).await?;
    check_clusters(ferry, flow, &started, &ids).await?;
    Ok((started, ids))
}

/// The cluster ids of the flow's source and target; "" for a broker that
/// names no cluster (none of Kafka's since 0.10.1), which is not checked.
async fn cluster_ids(ferry: &Ferry, flow: &FlowSpec) -> Result<(String, String), FerryError> {
    let id = |c: Arc<KafkaCluster>| async move {
        match c.cluster_id().await {
            Err(KafkaError::Unsupported { .. }) => Ok(String::new()),
            other => other,
        }
    };
    Ok((
        id(ferry.cluster(&flow.source.id)?).await?,
        id(ferry.cluster(&flow.target.id)?).await?,
    ))
}

/// Refuse to go on when a cluster answers with another id than the one the
/// flow's state was written for: a cluster re-created or replaced under the
/// same bootstrap address starts its logs afresh, and cursors into the old
/// one would skip or misplace records.
async fn check_clusters(ferry: &Ferry, flow: &FlowSpec, marker: &FlowStart, ids: &(String, String)) -> Result<(), FerryError> {
    let sides = [
        ("source", &flow.source, &ids.0, &marker.source_cluster_id),
        ("target", &flow.target, &ids.1, &marker.target_cluster_id),
    ];
    for (role, cluster, current, recorded) in sides {
        if let Some(recorded) = recorded.as_ref().filter(|r| *r != current && !r.is_empty() && !current.is_empty()) {
            let (cursors, offset_map) = ferry.store.table_names();
            return Err(FerryError::ClusterReplaced(Box::new(ClusterReplaced {
                flow: ferry.flow_key(flow),
                flow_id: flow.id(),
                role,
                alias: cluster.alias.clone(),
                bootstrap: ferry.cluster(&cluster.id)?.bootstrap_description().await,
                recorded: recorded.clone(),
                current: current.clone(),
                cursors: cursors.to_owned(),
                offset_map: offset_map.to_owned(),
            })));
        }
    }
    Ok(())
}

/// The source topics this flow replicates, with their metadata.
pub async fn selected_topics(ferry: &Ferry, flow: &FlowSpec) -> Result<BTreeMap<String, TopicMeta>, FerryError> {
    Ok(selection(ferry, flow).await?.0)
}

/// The topics this flow's filters select: those it replicates, and the
/// names of those named like copies, never copied again (see
/// `ReplicatorSpec::is_prefixed_replica`).
async fn selection(ferry: &Ferry, flow: &FlowSpec) -> Result<(BTreeMap<String, TopicMeta>, Vec<String>), FerryError> {
    let source = ferry.cluster(&flow.source.id)?;
    let mut all = source.metadata(None).await?;
    // A listing leaves out the topics Ferry may not describe; asked by name,
    // the broker says so, and the plan stops with that instead of
    // replicating nothing in silence.
    let unlisted: Vec<String> = flow.literal_topics().into_iter().filter(|t| !all.contains_key(t)).collect();
    if !unlisted.is_empty() {
        all.extend(source.metadata(Some(&unlisted)).await?);
    }
    let (copies, topics): (BTreeMap<_, _>, BTreeMap<_, _>) = all
        .into_iter()
        .filter(|(name, meta)| !meta.internal && flow.selects_topic(name))
        .partition(|(name, _)| ferry.spec.is_prefixed_replica(name));
    Ok((topics, copies.into_keys().collect()))
}

/// Everything planning one flow decided, before anything is written.
#[derive(Default)]
struct FlowPlan {
    /// No plan ran for this flow yet (StartingPosition applies).
    first_plan: bool,
    /// A first plan that did not finish made some cursors already: the
    /// flow started then, and where each partition without a cursor was at
    /// that moment is not known (see `decide`).
    started_before: bool,
    /// Plans of the flow before this one: whose turn it is to have its
    /// offset-map runs pruned (`prune_turn`).
    prune_round: u64,
    /// Target topics to delete: their source topics were deleted (PropagateTopicDeletions).
    deleted: Vec<String>,
    /// The partitions of those topics, whose state goes too.
    forget: Vec<TopicPartition>,
    /// Partitions whose source or target topic was deleted and created
    /// again: their state is forgotten and they start again at the
    /// source's first record (see `histories_replaced`).
    restart: Vec<TopicPartition>,
    /// Cursors to record the topic ids of (source, target), where they
    /// have none yet.
    record_ids: Vec<(TopicPartition, Option<String>, Option<String>)>,
    /// Target topics to create.
    create: Vec<TopicToCreate>,
    /// Target topics to give more partitions.
    grow: Vec<PartitionIncrease>,
    /// Target topic configurations to change.
    alter: Vec<ConfigChange>,
    /// Topics whose source allows larger records than the target would.
    record_size_risks: Vec<RecordSizeRisk>,
    /// Every partition the flow replicates, its end offset now and its log start.
    tps: Vec<TopicPartition>,
    ends: HashMap<TopicPartition, i64>,
    log_starts: HashMap<TopicPartition, i64>,
    /// The partitions with a cursor, and where it stands.
    cursors: HashMap<TopicPartition, i64>,
    /// Partitions to (re)start, and where: backfills, then partitions seen
    /// for the first time.
    starts: Vec<Start>,
    /// Source topics refused (see `targets`), with what is wrong and the
    /// fix: their partitions get cursors, and no work.
    refused: BTreeMap<String, String>,
    /// The refusals the flow's cursors carry now.
    recorded_refusals: HashMap<TopicPartition, String>,
    /// Source topics whose target topic was there before Ferry copied into
    /// it, with that topic's id (see `targets::adopted`).
    adopted: BTreeMap<String, String>,
    /// The target topics to take, and to let go (see `writers`).
    writers: writers::Writers,
}

impl FlowPlan {
    /// The topics refused, as the plan's output names them.
    fn refused_topics(&self, flow: &FlowSpec) -> Vec<RefusedTopic> {
        self.refused
            .iter()
            .map(|(topic, why)| RefusedTopic {
                flow: flow.id(),
                topic: topic.clone(),
                why: why.clone(),
            })
            .collect()
    }
}

/// A partition to (re)start at a source offset.
struct Start {
    tp: TopicPartition,
    from: i64,
    /// The end offset now.
    end: i64,
    /// A backfill moves an existing cursor; otherwise the cursor is new.
    backfill: bool,
}

/// Work out what planning `flow` would do, checking every target topic;
/// reads only. `stateful`: the state tables exist (a dry run of a new
/// replicator has none).
async fn decide(
    ferry: &Ferry,
    flow: &FlowSpec,
    backfill: Option<&Backfill>,
    stateful: bool,
    first: FirstPlan,
) -> Result<FlowPlan, FerryError> {
    let source = ferry.cluster(&flow.source.id)?;
    let target = ferry.cluster(&flow.target.id)?;
    let items: Vec<CursorItem> = if stateful {
        ferry.store.list_cursors(&ferry.flow_key(flow)).await?
    } else {
        Vec::new()
    };
    let mut cursors: HashMap<TopicPartition, i64> = items.iter().map(|c| (c.tp.clone(), c.next_source_offset)).collect();
    let (mut topics, copies) = selection(ferry, flow).await?;
    copies::warn_of_patterns_selecting_only_copies(ferry, flow, &topics, &copies);
    let gone = deleted_topics(ferry, flow, &topics, &cursors).await?;
    let forget: Vec<TopicPartition> = cursors.keys().filter(|tp| gone.contains(&tp.topic)).cloned().collect();
    cursors.retain(|tp, _| !gone.contains(&tp.topic));
    let backfilled = |name: &str| backfill.is_some_and(|b| b.topics.iter().any(|t| t == name));
    // A marker an earlier Ferry wrote does not say whether its first plan
    // finished. A flow that detects no new topics and has no cursor can
    // only be one whose first plan did not (a refused target topic): read
    // as started, it would copy nothing, ever.
    let first_plan = first.first || (first.legacy && !flow.detect_new_topics && cursors.is_empty());
    if first_plan && !first.first {
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(),
            "the flow's marker predates the record of its first plan, and it has no cursor and does not detect new topics: \
             planned as its first plan, each partition from StartingPosition as of now (where the flow stood when it was started is not recorded)"
        );
    }
    if !first_plan && !flow.detect_new_topics {
        // A topic another flow handed over is this flow's to go on with.
        let handed = if stateful {
            writers::handed_here(ferry, flow, &topics).await?
        } else {
            BTreeSet::new()
        };
        let started = |name: &String| cursors.keys().any(|tp| &tp.topic == name) || backfilled(name) || handed.contains(name);
        let left: Vec<&String> = topics.keys().filter(|name| !started(name)).collect();
        if !left.is_empty() {
            tracing::warn!(replicator = %ferry.spec.name, flow = %flow.id(), topics = ?left,
                "topics selected by TopicsToReplicate that were not there when the flow started are not copied (DetectAndCopyNewTopics is false): `ferry backfill --topics` starts them");
        }
        topics.retain(|name, _| started(name));
    }
    let mut p = FlowPlan {
        first_plan,
        started_before: first_plan && !first.created && !cursors.is_empty(),
        prune_round: 0,
        deleted: copies_to_delete(ferry, flow, &gone, &items).await?,
        forget,
        cursors,
        recorded_refusals: items.iter().filter_map(|c| Some((c.tp.clone(), c.plan_refusal.clone()?))).collect(),
        ..FlowPlan::default()
    };

    // Every target topic is checked before anything is written; a topic
    // whose target conflicts with it is refused alone.
    let source_names: Vec<String> = topics.keys().cloned().collect();
    let target_names: Vec<String> = topics
        .keys()
        .map(|t| flow.target_topic(t))
        .filter(|t| t.len() <= MAX_TOPIC_NAME)
        .collect();
    let target_meta = target.metadata(Some(&target_names)).await?;
    let existing_targets: Vec<String> = target_names.iter().filter(|t| target_meta.contains_key(*t)).cloned().collect();
    if stateful {
        histories_replaced(ferry, flow, &items, &mut topics, &target_meta, &mut p).await?;
    }
    let source_configs = source.topic_configs(&source_names).await?;
    let target_configs = target.topic_configs(&existing_targets).await?;
    p.adopted = targets::adopted(flow, &topics, &target_meta, &items, &p.restart);
    targets::check(ferry, flow, &topics, &target_meta, &source_configs, &target_configs, &mut p);
    // The target's own checks of the topics to create (a name colliding
    // with one of its topics, a creation policy, a configuration it does
    // not take), asked without creating any: such a topic is refused alone.
    let to_create: Vec<(String, i32, BTreeMap<String, String>)> = p
        .create
        .iter()
        .map(|t| (t.topic.clone(), t.partitions, t.configs.clone()))
        .collect();
    let refused = target.topics_refused_creation(&to_create, flow.target_replication_factor).await?;
    targets::refuse_creations(flow, &topics, refused, &mut p)?;
    if stateful {
        writers::decide(ferry, flow, &topics, &gone, &items, &mut p).await?;
    }

    p.tps = topics
        .iter()
        .flat_map(|(name, meta)| meta.partitions.keys().map(move |part| TopicPartition::new(name.clone(), *part)))
        .collect();
    if p.tps.is_empty() {
        return Ok(p);
    }
    p.ends = source.list_offsets(&p.tps, OffsetSpec::Latest, true).await?;
    p.log_starts = source.list_offsets(&p.tps, OffsetSpec::Earliest, false).await?;
    // A backfill (re)starts its partitions at the chosen position;
    // check_backfill made sure Ferry wrote nothing for them yet.
    if let Some(b) = backfill {
        let mine: Vec<TopicPartition> = p.tps.iter().filter(|tp| backfilled(&tp.topic)).cloned().collect();
        if !mine.is_empty() {
            let spec = match b.from {
                BackfillFrom::Earliest => OffsetSpec::Earliest,
                BackfillFrom::Timestamp(ms) => OffsetSpec::Timestamp(ms),
            };
            let at = source.list_offsets(&mine, spec, true).await?;
            for tp in mine {
                let end = p.ends.get(&tp).copied().unwrap_or(0);
                let from = at.get(&tp).copied().filter(|o| *o >= 0).unwrap_or(end);
                // A backfill only goes back: records past the cursor are
                // the flow's to copy, whatever time the backfill names.
                if let Some(&cursor) = p.cursors.get(&tp) {
                    if from >= cursor {
                        tracing::info!(
                            flow = %flow.id(), topic = %tp.topic, partition = tp.partition, start = from, cursor,
                            "backfill: the partition already starts at or before this position; left where it is"
                        );
                        continue;
                    }
                }
                p.starts.push(Start {
                    tp,
                    from,
                    end,
                    backfill: true,
                });
            }
        }
    }
    let new_tps: Vec<TopicPartition> = p
        .tps
        .iter()
        .filter(|tp| !p.cursors.contains_key(*tp) && !p.starts.iter().any(|s| &s.tp == *tp))
        .cloned()
        .collect();
    if !new_tps.is_empty() {
        // A topic that appears after the first plan starts from its first
        // record whatever StartingPosition says: nothing produced before
        // Ferry noticed it is lost. So does a partition without a cursor
        // after a first plan that made some and did not finish (cut short
        // before it, or added since): the flow started then, and where the
        // partition was at that moment is not known; guessing (the end now,
        // a record timestamp) would skip records produced since.
        let position = if first_plan && !p.started_before {
            flow.starting_position
        } else {
            StartingPosition::Earliest
        };
        let at = match position {
            StartingPosition::Earliest => source.list_offsets(&new_tps, OffsetSpec::Earliest, true).await?,
            StartingPosition::Latest => HashMap::new(),
        };
        for tp in new_tps {
            let end = p.ends.get(&tp).copied().unwrap_or(0);
            let from = at.get(&tp).copied().unwrap_or(match position {
                StartingPosition::Earliest => 0,
                StartingPosition::Latest => end,
            });
            p.starts.push(Start {
                tp,
                from,
                end,
                backfill: false,
            });
        }
    }
    Ok(p)
}

/// Do what `decide` decided: delete, create, grow and reconfigure target
/// topics, prune old offset-map runs, and create or move cursors. Returns
/// the topics created and the flow's work for the Replicate batches.
async fn apply(ferry: &Ferry, flow: &FlowSpec, mut p: FlowPlan) -> Result<(Vec<String>, Vec<PartitionWork>), FerryError> {
    let flow_key = ferry.flow_key(flow);
    let target = ferry.cluster(&flow.target.id)?;
    if !p.deleted.is_empty() {
        target.delete_topics(&p.deleted).await?;
        tracing::warn!(
            replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topics = ?p.deleted,
            "source topics were deleted: deleted their target topics and Ferry's state for them (PropagateTopicDeletions)"
        );
    }
    forget_partitions(ferry, &flow_key, &p.forget).await?;
    forget_partitions(ferry, &flow_key, &p.restart).await?;
    let created: Vec<String> = p.create.iter().map(|t| t.topic.clone()).collect();
    if !p.create.is_empty() {
        let topics: Vec<(String, i32, BTreeMap<String, String>)> = p.create.drain(..).map(|t| (t.topic, t.partitions, t.configs)).collect();
        target.create_topics_with_configs(&topics, flow.target_replication_factor).await?;
        wait_for_topics(ferry, flow, &created).await?;
        tracing::info!(flow = %flow.id(), topics = ?created, "created target topics");
    }
    if !p.grow.is_empty() {
        let to_grow: Vec<(String, i32)> = p.grow.iter().map(|g| (g.topic.clone(), g.to)).collect();
        target.create_partitions(&to_grow).await?;
        let grown: Vec<String> = to_grow.iter().map(|(n, _)| n.clone()).collect();
        wait_for_topics(ferry, flow, &grown).await?;
        tracing::info!(flow = %flow.id(), topics = ?to_grow, "added partitions to target topics");
    }
    for c in &p.alter {
        target.alter_topic_configs(&c.topic, &c.set, &c.delete).await?;
        tracing::info!(flow = %flow.id(), topic = %c.topic, set = ?c.set, deleted = ?c.delete, "copied topic configuration");
    }
    // Keep state bounded: runs below the source log-start offset map
    // records nobody can read or commit to any more. One Query a
    // partition: a share of the partitions each plan, a few at once.
    let turn = ferry_core::plan::prune_turn(p.tps.len(), p.prune_round);
    in_flight(
        p.tps
            .iter()
            .enumerate()
            .filter(|(i, tp)| turn(*i) && p.cursors.contains_key(*tp))
            .map(|(_, tp)| {
                let (store, flow_key, below) = (&ferry.store, &flow_key, p.log_starts.get(tp).copied().unwrap_or(0));
                async move {
                    let pruned = store.prune_runs(flow_key, tp, below).await?;
                    if pruned > 0 {
                        tracing::info!(flow = %flow.id(), topic = %tp.topic, partition = tp.partition, pruned, "pruned offset-map runs below the source log start");
                    }
                    Ok::<_, StateError>(())
                }
            }),
    )
    .await?;
    apply_backfills(ferry, flow, &p).await?;
    // One conditional PutItem each (a batch cannot be conditional), a few
    // in flight at once: a plan of thousands of new partitions.
    in_flight(p.starts.iter().filter(|s| !s.backfill).map(|s| {
        let (store, flow_key, target) = (&ferry.store, &flow_key, flow.target_topic(&s.tp.topic));
        async move {
            failpoint::before_cursor(&s.tp).await;
            store.init_cursor(flow_key, &s.tp, &target, s.from).await
        }
    }))
    .await?;
    if !p.starts.is_empty() {
        // Re-read: a concurrent plan may have created some first.
        p.cursors = cursor_positions(ferry, &flow_key).await?;
        // New cursors count in the topics as they are now.
        let source = ferry.cluster(&flow.source.id)?;
        if !created.is_empty() {
            // Learns the new target topics' ids.
            target.metadata(Some(&created)).await?;
        }
        for s in &p.starts {
            let source_id = source.known_topic_id(&s.tp.topic);
            let target_id = (!p.refused.contains_key(&s.tp.topic))
                .then(|| target.known_topic_id(&flow.target_topic(&s.tp.topic)))
                .flatten();
            p.record_ids.push((s.tp.clone(), source_id, target_id));
        }
    }
    // Once per cursor's life (the first plan after an upgrade: every one),
    // a few in flight at once.
    in_flight(p.record_ids.iter().map(|(tp, source_id, target_id)| {
        let (store, flow_key, adopted) = (&ferry.store, &flow_key, p.adopted.get(&tp.topic));
        async move {
            store
                .record_topic_ids(
                    flow_key,
                    tp,
                    source_id.as_deref(),
                    target_id.as_deref(),
                    adopted.map(String::as_str),
                )
                .await
        }
    }))
    .await?;
    in_flight(targets::refusal_writes(&p).into_iter().map(|(tp, why)| {
        let flow_key = &flow_key;
        async move { ferry.store.set_plan_refusal(flow_key, &tp, why).await }
    }))
    .await?;
    Ok((created, selected_work(flow, &p)))
}

/// Forget these partitions' state (a few at once: a deleted topic of
/// thousands of partitions, each several calls, within one plan).
async fn forget_partitions(ferry: &Ferry, flow_key: &str, tps: &[TopicPartition]) -> Result<(), FerryError> {
    in_flight(tps.iter().map(|tp| ferry.store.forget_partition(flow_key, tp))).await?;
    Ok(())
}

/// The flow's partitions with their lag from each cursor, but those of
/// refused topics.
fn selected_work(flow: &FlowSpec, p: &FlowPlan) -> Vec<PartitionWork> {
    p.tps
        .iter()
        .filter(|tp| !p.refused.contains_key(&tp.topic))
        .map(|tp| {
            let end = p.ends.get(tp).copied().unwrap_or(0);
            let cursor = p.cursors.get(tp).copied().unwrap_or(end);
            PartitionWork {
                target_topic: flow.target_topic(&tp.topic),
                source: tp.clone(),
                end_offset: end,
                lag: (end - cursor).max(0),
            }
        })
        .collect()
}

/// Newly created topics take a moment to get leaders.
async fn wait_for_topics(ferry: &Ferry, flow: &FlowSpec, topics: &[String]) -> Result<(), FerryError> {
    let target = ferry.cluster(&flow.target.id)?;
    for _ in 0..100 {
        let meta = target.metadata(Some(topics)).await?;
        let ready = topics.iter().all(|t| {
            meta.get(t)
                .is_some_and(|m| !m.partitions.is_empty() && m.partitions.values().all(|p| p.leader >= 0))
        });
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(FerryError::Input(format!(
        "target topics {topics:?} were created but have no leaders after 10 s (the target's controller is slow, or it has \
         fewer live brokers than their replication factor); the next plan checks them again. Fix, if it lasts: check the \
         target's brokers and the topics' replication factor (ReplicationFactor in replication-info.json)"
    )))
}

/// Each partition's cursor.
async fn cursor_positions(ferry: &Ferry, flow_key: &str) -> Result<HashMap<TopicPartition, i64>, FerryError> {
    Ok(ferry
        .store
        .list_cursors(flow_key)
        .await?
        .into_iter()
        .map(|c| (c.tp, c.next_source_offset))
        .collect())
}
