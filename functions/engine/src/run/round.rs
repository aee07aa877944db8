//! One round of the loop: a plan, then every batch's Replicate at once.
//! With `once`, the end offsets the first plan saw stay each partition's
//! goal, so the run ends when the source as it was at start is across.

use std::collections::HashMap;

use ferry_core::domain::{PlanInput, StopReason, TopicPartition};

use crate::context::Ferry;
use crate::error::FerryError;
use crate::replicate::Budget;

/// One round's plan, as the loop runs it.
#[derive(Debug, Default)]
pub(crate) struct Planned {
    /// Topics the plan created on targets.
    pub(crate) created_topics: Vec<String>,
    /// ACLs it copied, in words.
    pub(crate) copied_acls: Vec<String>,
    /// The batches, each one Replicate's input.
    pub(crate) batches: Vec<ferry_core::domain::ReplicateInput>,
    /// Flows left to another plan running their first plan: not caught up.
    pub(crate) left_flows: Vec<String>,
    /// Topics the plan refused to copy (the others were planned).
    pub(crate) refused_topics: Vec<ferry_core::domain::RefusedTopic>,
}

impl Planned {
    /// The partitions planned.
    pub(crate) fn partitions(&self) -> usize {
        self.batches.iter().map(|b| b.partitions.len()).sum()
    }

    /// Records behind on the sources, as the plan saw them.
    pub(crate) fn behind(&self) -> u64 {
        self.batches.iter().flat_map(|b| &b.partitions).map(|w| w.lag.max(0) as u64).sum()
    }
}

/// What one round's Replicates did, together.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// Records and bytes written to the targets.
    pub(crate) records: u64,
    /// See `records`.
    pub(crate) bytes: u64,
    /// Records found already on a target (a takeover's reconcile).
    pub(crate) reconciled: u64,
    /// Records the opposite flow wrote, not copied back, and their bytes.
    pub(crate) filtered: u64,
    /// See `filtered`.
    pub(crate) filtered_bytes: u64,
    /// Whether every partition reached its goal.
    pub(crate) all_caught_up: bool,
    /// Partitions that stopped on an error, with it.
    pub(crate) stopped: Vec<(TopicPartition, String)>,
    /// Replicates that failed as a whole.
    pub(crate) failed: Vec<FerryError>,
    /// Partitions not caught up that did not fail, and why they stopped.
    pub(crate) waiting: Vec<(TopicPartition, StopReason)>,
    /// Some partition's cursor moved since the round before (records
    /// copied, filtered, reconciled, skipped: progress of any kind).
    pub(crate) moved: bool,
}

impl Round {
    /// Whether the round, which copied nothing, could do nothing more by
    /// waiting for records: no cursor moved (records filtered, reconciled
    /// or skipped are progress too) and no partition of its own ran the
    /// round's time (each was leased by another worker, stopped on an
    /// error or paused for a fault, or its Replicate failed; or none was
    /// planned).
    pub(crate) fn could_do_nothing(&self) -> bool {
        !self.moved && !self.waiting.iter().any(|(_, r)| *r == StopReason::Budget)
    }

    /// What the partitions not caught up wait for, in words (a few named).
    pub(crate) fn waiting(&self, left_flows: &[String]) -> String {
        let mut parts: Vec<String> = left_flows
            .iter()
            .map(|f| format!("flow {f}'s first plan, running in another plan"))
            .collect();
        for (reason, words) in [
            (
                StopReason::LeaseHeld,
                "leased by another worker (a running replicator: --once copies only what no other worker holds)",
            ),
            (
                StopReason::Retry,
                "paused after a fault the next round retries (see the warnings above)",
            ),
            (
                StopReason::Budget,
                "stopped at the round's end without a record copied (waiting on the source, the target or the state store)",
            ),
        ] {
            let tps: Vec<&TopicPartition> = self.waiting.iter().filter(|(_, r)| *r == reason).map(|(tp, _)| tp).collect();
            if !tps.is_empty() {
                let named: Vec<String> = tps.iter().take(5).map(|tp| tp.to_string()).collect();
                let more = if tps.len() > 5 {
                    format!(" and {} more", tps.len() - 5)
                } else {
                    String::new()
                };
                parts.push(format!("{} {words}: {}{more}", tps.len(), named.join(", ")));
            }
        }
        if parts.is_empty() {
            "no partition reported why".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The loop's memory across rounds.
#[derive(Debug, Default)]
pub(crate) struct Rounds {
    /// Stop at the first plan's end offsets (`--once`).
    once: bool,
    /// Those end offsets, by flow and source partition.
    start_ends: HashMap<(String, TopicPartition), i64>,
    /// Each partition's cursor after the last round it was held in.
    cursors: HashMap<(String, TopicPartition), i64>,
}

impl Rounds {
    /// A loop; `once`: each partition's goal is the end offset the first
    /// plan that saw it found.
    pub(crate) fn new(once: bool) -> Self {
        Rounds {
            once,
            start_ends: HashMap::new(),
            cursors: HashMap::new(),
        }
    }

    /// Plan one round (see `plan::plan`), with `--once`'s goals.
    pub(crate) async fn plan(&mut self, ferry: &Ferry) -> Result<Planned, FerryError> {
        // Layouts read again each round, as each invocation reads them.
        ferry.store.clear_layouts();
        let plan = crate::plan::plan(ferry, &PlanInput::default()).await?;
        let mut batches = plan.batches;
        for b in &mut batches {
            b.stop_at_plan_end = self.once;
            for w in &mut b.partitions {
                let end = *self.start_ends.entry((b.flow.clone(), w.source.clone())).or_insert(w.end_offset);
                w.end_offset = end;
            }
        }
        Ok(Planned {
            created_topics: plan.created_topics,
            copied_acls: plan.copied_acls,
            batches,
            left_flows: plan.left_flows,
            refused_topics: plan.refused_topics,
        })
    }

    /// Every batch's Replicate at once, within `budget`.
    pub(crate) async fn replicate(&mut self, ferry: &Ferry, planned: &Planned, budget: &Budget) -> Round {
        let results = futures::future::join_all(planned.batches.iter().map(|b| crate::replicate::replicate(ferry, b, budget))).await;
        let mut round = Round {
            all_caught_up: true,
            ..Round::default()
        };
        for (batch, res) in planned.batches.iter().zip(results) {
            match res {
                Ok(out) => {
                    for p in out.partitions {
                        if p.cursor >= 0 {
                            let before = self.cursors.insert((batch.flow.clone(), p.source.clone()), p.cursor);
                            round.moved |= before != Some(p.cursor);
                        }
                        round.records += p.records;
                        round.bytes += p.bytes;
                        round.reconciled += p.reconciled;
                        round.filtered += p.filtered_records;
                        round.filtered_bytes += p.filtered_bytes;
                        match p.stopped {
                            StopReason::CaughtUp => {}
                            StopReason::Error => {
                                round.all_caught_up = false;
                                round.stopped.push((p.source, p.error.unwrap_or_default()));
                            }
                            reason => {
                                round.all_caught_up = false;
                                round.waiting.push((p.source, reason));
                            }
                        }
                    }
                }
                Err(e) => {
                    round.all_caught_up = false;
                    round.failed.push(e);
                }
            }
        }
        round
    }
}
