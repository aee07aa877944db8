//! A flow's marker (started, and between which clusters), the pairs that
//! let a flow find its opposite in another replicator, and forgetting a
//! flow.

use std::collections::HashMap;

use ferry_core::domain::TopicPartition;

use aws_sdk_dynamodb::types::AttributeValue;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

use super::calls::Bounded;
use super::cursor::CursorItem;
use super::error::{conditional, dynamo_err};
use super::schema::{
    delete_request, map_pk, n, now_ms, pair_pk, partition_sk, s, ItemReader, FLOW_MARKER, KEY_SHARDS, NEW_FLOW_KEY_SHARDS, PK, SK_CURSOR,
    SK_GROUPS,
};
use super::{StateError, StateStore};

/// A flow pair's registration: copies with IDENTICAL names; propagates
/// topic deletions.
const IDENTICAL_NAMES: &str = "identical_names";
const PROPAGATES_DELETIONS: &str = "propagates_deletions";
/// When a plan last registered the pair (ms), and how often its
/// replicator plans (ms), if it said.
const REGISTERED_MS: &str = "registered_ms";
const PLANS_EVERY_MS: &str = "plans_every_ms";

/// A flow's registration as copying between two clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredFlow {
    /// The flow's state key.
    pub flow: String,
    /// When a plan last registered it (ms since the epoch).
    pub registered_ms: i64,
    /// How often its replicator plans (ms), if the plan said.
    pub plans_every_ms: Option<i64>,
}

/// On a flow's marker: where the next prune of its producer items starts.
const PRODUCERS_PRUNED_AFTER: &str = "producers_pruned_after";

/// On a flow's marker while its first plan has not finished.
const FIRST_PLAN_OPEN: &str = "first_plan_open";
/// On a flow's marker once its first plan has finished.
const FIRST_PLAN_DONE: &str = "first_plan_done";
/// On a flow's marker while a plan runs its first plan: that plan's mark,
/// and the time (ms) after which it cannot be running any more.
const FIRST_PLAN_BY: &str = "first_plan_by";
const FIRST_PLAN_UNTIL: &str = "first_plan_until";
/// On a flow's marker while a plan without a deadline (the CLI's) runs its
/// first plan: that plan's mark (as `first_plan_by`), for it renews its
/// hold every few seconds, so a hold it stopped renewing (a killed `ferry
/// run`) may be taken by a plan that saw it unchanged for long enough, by
/// that plan's own clock. The mark, not a flag: a hold taken since by a
/// Ferry that does not write it (an earlier release) does not read as
/// renewing.
const FIRST_PLAN_RENEWS: &str = "first_plan_renews";

/// What [`StateStore::claim_first_plan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPlanClaim {
    /// This plan runs the flow's first plan; the mark releases it.
    Ours(String),
    /// Another plan runs it, and may be running until `until_ms` (ms);
    /// `by` is its mark, `renews` whether it renews its hold as it goes
    /// (each renewal writes a later `until_ms`).
    Held {
        /// See above.
        until_ms: i64,
        /// See above.
        by: String,
        /// See above.
        renews: bool,
    },
    /// The first plan finished, or the marker was deleted (a forget),
    /// since the caller read it.
    Gone,
}

/// What [`StateStore::start_flow`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStart {
    /// No plan has finished the flow's first plan: no marker, or one
    /// whose first plan stopped before it made every cursor (refused on a
    /// target topic's configuration, timed out, cut short). Such a plan
    /// did not finish starting the flow, so the next one is the first
    /// again.
    pub first: bool,
    /// This call wrote the marker: the flow starts now.
    pub created: bool,
    /// The marker was written by a Ferry that did not record whether its
    /// first plan finished (neither `first_plan_open` nor
    /// `first_plan_done`): read as started, unless the caller finds
    /// nothing else to go by (see the plan).
    pub legacy: bool,
    /// The mark of the plan that wrote the marker (`None` on a marker
    /// written before Ferry marked them).
    pub started_by: Option<String>,
    /// The source's cluster id recorded before, if any.
    pub source_cluster_id: Option<String>,
    /// The target's cluster id recorded before, if any.
    pub target_cluster_id: Option<String>,
    /// Plans that started the flow before this one (counted since Ferry
    /// counts them): what a plan takes turns by, whatever the schedule.
    pub plans: u64,
    /// The producer id the flow's last prune of producer items stopped
    /// after (see [`StateStore::set_producers_pruned_after`]).
    pub producers_pruned_after: Option<i64>,
}

impl StateStore {
    /// Delete everything stored for a flow: each partition's cursor and
    /// offset-map runs, its group-sync items, the flow's marker last (it
    /// records the layout of the flow's keys, so a forget cut short is
    /// finished by running it again). The next plan starts the flow as
    /// new. Returns how many partitions it had.
    pub async fn forget_flow(&self, flow: &str) -> Result<usize, StateError> {
        let cursors = self.list_cursors(flow).await?;
        // The target topics it writes, handed over where its cursors
        // stand, before they go.
        let marker = self.flow_marker(flow).await?;
        if let Some(tgt) = marker.target_cluster_id.as_deref().filter(|t| !t.is_empty()) {
            self.release_topics_of(tgt, flow, &cursors).await?;
        }
        for c in &cursors {
            self.forget_partition(flow, &c.tp).await?;
        }
        // A spread flow's cursor under the flow key itself is one an
        // earlier Ferry wrote on these tables (it knows one key only): it
        // goes too, or a flow laid out on one key again would resume there.
        let mut strays = 0;
        if self.key_shards(flow).await? > 1 {
            for item in self.query_all(&self.cursors, PK, s(flow)).await? {
                if item.get(SK_CURSOR).and_then(|v| v.as_s().ok()).is_none_or(|sk| sk == FLOW_MARKER) {
                    continue;
                }
                let c = CursorItem::try_from((self.cursors.as_str(), &item))?;
                self.forget_partition_under(flow, &c.tp, flow).await?;
                strays += 1;
            }
        }
        let mut pks = vec![flow.to_owned()];
        pks.extend(self.partition_pks(flow).await?.into_iter().filter(|pk| pk != flow));
        for pk in pks {
            let groups = self.query_all(&self.groups, PK, s(&pk)).await?;
            let deletes = groups
                .iter()
                .filter_map(|i| i.get(SK_GROUPS).cloned())
                .map(|sk| delete_request(&self.groups, (PK, s(&pk)), (SK_GROUPS, sk)))
                .collect::<Result<Vec<_>, StateError>>()?;
            self.batch_write(&self.groups, deletes).await?;
        }
        if let (Some(src), Some(tgt)) = (marker.source_cluster_id, marker.target_cluster_id) {
            self.delete_one(&self.cursors, (PK, s(pair_pk(&src, &tgt))), (SK_CURSOR, s(flow)))
                .await?;
        }
        self.delete_one(&self.cursors, (PK, s(flow)), (SK_CURSOR, s(FLOW_MARKER))).await?;
        self.forget_layout(flow);
        Ok(cursors.len() + strays)
    }

    /// Forget a partition: its cursor and every offset-map run (its source
    /// topic was deleted and the deletion propagated).
    pub async fn forget_partition(&self, flow: &str, tp: &TopicPartition) -> Result<(), StateError> {
        self.forget_partition_under(flow, tp, &self.partition_pk(flow, tp).await?).await
    }

    /// Forget a partition whose cursor sits under partition key `pk`.
    async fn forget_partition_under(&self, flow: &str, tp: &TopicPartition, pk: &str) -> Result<(), StateError> {
        // A page of runs at a time, oldest first: a compacted topic's map
        // may hold a run per record, too many to hold at once in a
        // function's memory (a plan forgets 16 partitions at once).
        let map = map_pk(flow, tp);
        loop {
            let page = self.runs_below(&map, i64::MAX).await?;
            if page.is_empty() {
                break;
            }
            self.batch_write(&self.offset_map, self.run_deletes(&map, &page)?).await?;
        }
        self.forget_group_syncs(flow, tp).await?;
        self.delete_one(&self.cursors, (PK, s(pk)), (SK_CURSOR, s(partition_sk(tp)))).await
    }

    /// Mark the flow as started, recording the cluster ids of its source
    /// and target the first time (and on a marker written before Ferry
    /// recorded them). Returns whether this was the first time (partitions
    /// seen by the first plan start at the configured StartingPosition,
    /// later ones at their first record) and the ids recorded before, which
    /// the caller compares with the clusters' own.
    pub async fn start_flow(&self, flow: &str, source_cluster_id: &str, target_cluster_id: &str) -> Result<FlowStart, StateError> {
        // This call's own mark on the marker it writes. DynamoDB keeps no
        // token for a single write: when the put's answer is lost, the
        // SDK's copy of it is refused by the marker the first copy wrote,
        // and only the mark tells that marker from one an earlier plan
        // wrote. Read as started before, a first plan would skip the
        // StartingPosition, and a flow that does not detect new topics
        // would have none to copy, then or ever.
        let mark = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        // A forget deleting the marker between the two writes below sends
        // the start round again: the update never makes a marker.
        for _ in 0..3 {
            // A new flow: its marker, with the layout of its keys.
            let created = self
                .client
                .put_item()
                .table_name(&self.cursors)
                .item(PK, s(flow))
                .item(SK_CURSOR, s(FLOW_MARKER))
                .item("started_ms", n(now))
                .item("started_by", s(&mark))
                .item("source_cluster_id", s(source_cluster_id))
                .item("target_cluster_id", s(target_cluster_id))
                .item(KEY_SHARDS, n(i64::from(NEW_FLOW_KEY_SHARDS)))
                .item(FIRST_PLAN_OPEN, AttributeValue::Bool(true))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .bounded(&self.calls)
                .await;
            let ours = match created {
                Ok(_) => true,
                Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(refused) => refused
                        .item()
                        .and_then(|m| m.get("started_by"))
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|by| *by == mark),
                    _ => false,
                },
                Err(e) => return Err(dynamo_err("PutItem", &self.cursors, e)),
            };
            if ours {
                self.remember_layout(flow, NEW_FLOW_KEY_SHARDS);
                return Ok(FlowStart {
                    created: true,
                    started_by: Some(mark),
                    ..self.flow_start(None)
                });
            }
            // Started before: its layout stays as it was (one key for a
            // flow started before Ferry spread them).
            let res = self
                .update_marker(flow)
                .update_expression(
                    "SET started_ms = if_not_exists(started_ms, :now), source_cluster_id = if_not_exists(source_cluster_id, :src), \
                     target_cluster_id = if_not_exists(target_cluster_id, :tgt) ADD plans :one",
                )
                .expression_attribute_values(":now", n(now_ms()))
                .expression_attribute_values(":src", s(source_cluster_id))
                .expression_attribute_values(":tgt", s(target_cluster_id))
                .expression_attribute_values(":one", n(1))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                .send()
                .bounded(&self.calls)
                .await;
            let out = match res {
                Ok(out) => out,
                Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => continue,
                Err(e) => return Err(dynamo_err("UpdateItem", &self.cursors, e)),
            };
            let old = out.attributes().filter(|a| !a.is_empty()).ok_or_else(|| StateError::Malformed {
                table: self.cursors.clone(),
                detail: format!("the marker of flow {flow} answered an update with nothing"),
            })?;
            self.remember_layout(flow, self.layout_of(old)?);
            return Ok(self.flow_start(Some(old)));
        }
        Err(StateError::Dynamo {
            op: "PutItem",
            table: self.cursors.clone(),
            detail: format!(
                "the marker of flow {flow} was deleted and written again three times while this plan started it: is a forget-flow running?"
            ),
        })
    }

    /// Record that the flow's first plan finished: it made a cursor for
    /// every partition it chose, at the configured StartingPosition, so
    /// partitions seen from now on start at their first record. Until
    /// this is written, every plan is the first (see [`FlowStart::first`]).
    /// Only on the marker `start` found: one deleted meanwhile (by a
    /// forget) stays deleted, and one written again since stays open.
    /// With `hold` (this plan's mark from [`Self::claim_first_plan`]), only
    /// while this plan still holds it: a plan that outlived its hold leaves
    /// the first plan to the one that took it.
    pub async fn finish_first_plan(&self, flow: &str, start: &FlowStart, hold: Option<&str>) -> Result<(), StateError> {
        let mut req = self
            .update_marker(flow)
            .update_expression("SET #done = :done REMOVE #open, #claim, #until, #renews")
            .expression_attribute_names("#by", "started_by")
            .expression_attribute_names("#open", FIRST_PLAN_OPEN)
            .expression_attribute_names("#claim", FIRST_PLAN_BY)
            .expression_attribute_names("#until", FIRST_PLAN_UNTIL)
            .expression_attribute_names("#renews", FIRST_PLAN_RENEWS)
            .expression_attribute_names("#done", FIRST_PLAN_DONE)
            .expression_attribute_values(":done", AttributeValue::Bool(true));
        let held = match hold {
            Some(h) => {
                req = req.expression_attribute_values(":hold", s(h));
                " AND #claim = :hold"
            }
            None => "",
        };
        let req = match &start.started_by {
            Some(mark) => req
                .condition_expression(format!("attribute_exists(#pk) AND #by = :mark{held}"))
                .expression_attribute_values(":mark", s(mark)),
            None => req.condition_expression(format!("attribute_exists(#pk) AND attribute_not_exists(#by){held}")),
        };
        let res = req.send().bounded(&self.calls).await;
        conditional("UpdateItem", &self.cursors, res).map(|_| ())
    }

    /// Take the flow's first plan, which no plan has finished, for this
    /// plan until `until_ms` (when it cannot be running any more: its
    /// Lambda's deadline and a margin); `renews`: this plan renews its hold
    /// as it goes (see [`Self::renew_first_plan`]). Refused while another
    /// plan holds it: a plan that sees a first plan with some cursors and
    /// no record of its end cannot tell one still running from one cut
    /// short, and would start its partitions at their first record.
    /// `silent`: a renewing hold (its mark and `until_ms`) the caller has
    /// seen unchanged for longer than its holder goes on without renewing
    /// it; taken as over, if it is still exactly that.
    pub async fn claim_first_plan(
        &self,
        flow: &str,
        until_ms: i64,
        renews: bool,
        silent: Option<(&str, i64)>,
    ) -> Result<FirstPlanClaim, StateError> {
        let mark = uuid::Uuid::new_v4().to_string();
        let over = match silent {
            Some(_) => " OR (#by = :silent_by AND #until = :silent_until AND #renews = :silent_by)",
            None => "",
        };
        let mut req = self
            .update_marker(flow)
            .update_expression(if renews {
                "SET #by = :mark, #until = :until, #renews = :mark"
            } else {
                "SET #by = :mark, #until = :until REMOVE #renews"
            })
            .condition_expression(format!(
                "attribute_exists(#pk) AND #open = :true AND (attribute_not_exists(#until) OR #until < :now{over})"
            ))
            .expression_attribute_names("#open", FIRST_PLAN_OPEN)
            .expression_attribute_names("#by", FIRST_PLAN_BY)
            .expression_attribute_names("#until", FIRST_PLAN_UNTIL)
            .expression_attribute_names("#renews", FIRST_PLAN_RENEWS)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":mark", s(&mark))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now_ms()))
            .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some((by, until)) = silent {
            req = req
                .expression_attribute_values(":silent_by", s(by))
                .expression_attribute_values(":silent_until", n(until));
        }
        match req.send().bounded(&self.calls).await {
            Ok(_) => Ok(FirstPlanClaim::Ours(mark)),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let old = match e.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(refused) => refused.item().cloned(),
                    _ => None,
                };
                let r = old.as_ref().filter(|a| !a.is_empty()).map(|a| ItemReader::new(&self.cursors, a));
                Ok(match r {
                    Some(r) if r.bool(FIRST_PLAN_OPEN) == Some(true) => FirstPlanClaim::Held {
                        until_ms: r.n(FIRST_PLAN_UNTIL).unwrap_or(0),
                        renews: r.s(FIRST_PLAN_RENEWS).is_some_and(|m| Some(&m) == r.s(FIRST_PLAN_BY).as_ref()),
                        by: r.s(FIRST_PLAN_BY).unwrap_or_default(),
                    },
                    _ => FirstPlanClaim::Gone,
                })
            }
            Err(e) => Err(dynamo_err("UpdateItem", &self.cursors, e)),
        }
    }

    /// Keep holding the flow's first plan, taken with
    /// [`Self::claim_first_plan`], until `until_ms` (a plan without a
    /// deadline, renewing as it goes). False when it is no longer this
    /// plan's (finished, or taken after the hold ran out).
    pub async fn renew_first_plan(&self, flow: &str, mark: &str, until_ms: i64) -> Result<bool, StateError> {
        let res = self
            .update_marker(flow)
            .update_expression("SET #until = :until")
            .condition_expression("attribute_exists(#pk) AND #by = :mark")
            .expression_attribute_names("#by", FIRST_PLAN_BY)
            .expression_attribute_names("#until", FIRST_PLAN_UNTIL)
            .expression_attribute_values(":mark", s(mark))
            .expression_attribute_values(":until", n(until_ms))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res)
    }

    /// Give up a first plan taken with [`Self::claim_first_plan`] and not
    /// finished (the plan failed): the next plan may take it at once.
    pub async fn release_first_plan(&self, flow: &str, mark: &str) -> Result<(), StateError> {
        let res = self
            .update_marker(flow)
            .update_expression("REMOVE #by, #until, #renews")
            .condition_expression("attribute_exists(#pk) AND #by = :mark")
            .expression_attribute_names("#by", FIRST_PLAN_BY)
            .expression_attribute_names("#until", FIRST_PLAN_UNTIL)
            .expression_attribute_names("#renews", FIRST_PLAN_RENEWS)
            .expression_attribute_values(":mark", s(mark))
            .send()
            .bounded(&self.calls)
            .await;
        conditional("UpdateItem", &self.cursors, res).map(|_| ())
    }

    /// An update of the flow's existing marker (never one that makes it).
    fn update_marker(&self, flow: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(flow))
            .key(SK_CURSOR, s(FLOW_MARKER))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
    }

    /// Record where the flow's next prune of producer items starts: after
    /// producer id `after`, or from the first (`None`, the last page was
    /// read). A marker deleted meanwhile stays deleted.
    pub async fn set_producers_pruned_after(&self, flow: &str, after: Option<i64>) -> Result<(), StateError> {
        let req = self
            .update_marker(flow)
            .expression_attribute_names("#after", PRODUCERS_PRUNED_AFTER);
        let req = match after {
            Some(pid) => req
                .update_expression("SET #after = :after")
                .expression_attribute_values(":after", n(pid)),
            None => req.update_expression("REMOVE #after"),
        };
        conditional("UpdateItem", &self.cursors, req.send().bounded(&self.calls).await).map(|_| ())
    }

    /// Record that `flow` copies from Kafka cluster `source_cluster_id` to
    /// `target_cluster_id`, whether with IDENTICAL topic names (then the
    /// flow the other way reads its records), and whether it propagates
    /// topic deletions (then the flow the other way leaves a deletion on
    /// its own target to it), and how often its replicator plans, if known
    /// (`plans_every_ms`: a flow back is waited for longer on a slow
    /// schedule; `None` keeps the one registered before). Every plan
    /// writes it.
    pub async fn register_flow_pair(
        &self,
        flow: &str,
        source_cluster_id: &str,
        target_cluster_id: &str,
        identical_names: bool,
        propagates_deletions: bool,
        plans_every_ms: Option<i64>,
    ) -> Result<(), StateError> {
        // An update, not a put: a plan that does not know its replicator's
        // period (`ferry plan` by hand, an earlier Ferry) keeps the one a
        // scheduled plan registered.
        let every = if plans_every_ms.is_some() { ", #every = :every" } else { "" };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.cursors)
            .key(PK, s(pair_pk(source_cluster_id, target_cluster_id)))
            .key(SK_CURSOR, s(flow))
            .update_expression(format!(
                "SET #identical = :identical, #propagates = :propagates, #registered = :now{every}"
            ))
            .expression_attribute_names("#identical", IDENTICAL_NAMES)
            .expression_attribute_names("#propagates", PROPAGATES_DELETIONS)
            .expression_attribute_names("#registered", REGISTERED_MS)
            .expression_attribute_values(":identical", AttributeValue::Bool(identical_names))
            .expression_attribute_values(":propagates", AttributeValue::Bool(propagates_deletions))
            .expression_attribute_values(":now", n(now_ms()));
        if let Some(ms) = plans_every_ms {
            req = req
                .expression_attribute_names("#every", PLANS_EVERY_MS)
                .expression_attribute_values(":every", n(ms));
        }
        req.send()
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("UpdateItem", &self.cursors, e))?;
        Ok(())
    }

    /// The flows, of any replicator on these tables, registered as copying
    /// from `source_cluster_id` to `target_cluster_id` with IDENTICAL names
    /// by a plan since `since_ms` (a replicator whose plans stopped longer
    /// ago, say its stack deleted without `ferry forget-flow`, no longer
    /// counts).
    pub async fn identical_flows_between(
        &self,
        source_cluster_id: &str,
        target_cluster_id: &str,
        since_ms: i64,
    ) -> Result<Vec<String>, StateError> {
        let flows = self
            .registered_flows(source_cluster_id, target_cluster_id, since_ms, &[IDENTICAL_NAMES])
            .await?;
        Ok(flows.into_iter().map(|f| f.flow).collect())
    }

    /// The flows registered, however long ago, as copying from
    /// `source_cluster_id` to `target_cluster_id` with IDENTICAL names
    /// whose last plan propagated topic deletions, with when and how often
    /// they plan (the caller judges which still do). A registration
    /// written before Ferry recorded this counts as not propagating.
    pub async fn identical_flows_propagating_deletions(
        &self,
        source_cluster_id: &str,
        target_cluster_id: &str,
    ) -> Result<Vec<RegisteredFlow>, StateError> {
        self.registered_flows(source_cluster_id, target_cluster_id, 0, &[IDENTICAL_NAMES, PROPAGATES_DELETIONS])
            .await
    }

    /// The flows registered between two clusters since `since_ms` whose
    /// registration has every one of `flags` true.
    async fn registered_flows(
        &self,
        source_cluster_id: &str,
        target_cluster_id: &str,
        since_ms: i64,
        flags: &[&str],
    ) -> Result<Vec<RegisteredFlow>, StateError> {
        let items = self
            .query_all(&self.cursors, PK, s(pair_pk(source_cluster_id, target_cluster_id)))
            .await?;
        let number =
            |i: &HashMap<String, AttributeValue>, k: &str| i.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
        Ok(items
            .iter()
            .filter(|i| {
                flags
                    .iter()
                    .all(|f| i.get(*f).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false))
            })
            .filter_map(|i| {
                Some(RegisteredFlow {
                    flow: i.get(SK_CURSOR).and_then(|v| v.as_s().ok())?.clone(),
                    registered_ms: number(i, REGISTERED_MS).filter(|ms| *ms >= since_ms)?,
                    plans_every_ms: number(i, PLANS_EVERY_MS),
                })
            })
            .collect())
    }

    /// Whether the flow was started by a plan (read-only twin of `start_flow`).
    pub async fn flow_started(&self, flow: &str) -> Result<bool, StateError> {
        Ok(!self.flow_marker(flow).await?.first)
    }

    /// The flow's marker as [`StateStore::start_flow`] would find it,
    /// without writing.
    pub async fn flow_marker(&self, flow: &str) -> Result<FlowStart, StateError> {
        let marker = self
            .get_consistent(&self.cursors, (PK, s(flow)), (SK_CURSOR, s(FLOW_MARKER)))
            .await?;
        Ok(self.flow_start(marker.as_ref()))
    }

    fn flow_start(&self, marker: Option<&HashMap<String, AttributeValue>>) -> FlowStart {
        let r = marker.filter(|a| !a.is_empty()).map(|a| ItemReader::new(&self.cursors, a));
        FlowStart {
            first: r.as_ref().is_none_or(|r| r.bool(FIRST_PLAN_OPEN) == Some(true)),
            created: false,
            legacy: r
                .as_ref()
                .is_some_and(|r| r.bool(FIRST_PLAN_OPEN).is_none() && r.bool(FIRST_PLAN_DONE).is_none()),
            started_by: r.as_ref().and_then(|r| r.s("started_by")),
            source_cluster_id: r.as_ref().and_then(|r| r.s("source_cluster_id")),
            target_cluster_id: r.as_ref().and_then(|r| r.s("target_cluster_id")),
            plans: r
                .as_ref()
                .and_then(|r| r.n("plans"))
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
            producers_pruned_after: r.as_ref().and_then(|r| r.n(PRODUCERS_PRUNED_AFTER)),
        }
    }
}
