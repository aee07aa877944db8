//! Leasing a batch's partitions: after waiting for a holder about to stop
//! (see `handoff`), every partition at once, each set up for copying (a
//! rewind that stopped midway finished, the newest offset-map run read, a
//! backfill asked for started). What the previous holders left to fence
//! and reconcile is noted as each lease is read.

use super::*;

/// What leasing a batch found.
pub(super) struct Leased {
    /// The partitions leased, in the batch's order.
    pub(super) parts: Vec<Part>,
    /// Those another worker holds, stopped `LeaseHeld`.
    pub(super) skipped: Vec<PartitionProgress>,
    /// Partitions a previous holder wrote to (index in `parts`), with its producer id.
    pub(super) to_reconcile: Vec<(usize, PrevHolder)>,
    /// Those whose holder may still have a write on its way, by its
    /// transactional id and producer id: fenced before the reconcile reads.
    pub(super) to_fence: BTreeMap<(String, i64), Vec<usize>>,
    /// When the wait for a holder about to stop ended, from `started`.
    pub(super) waited_at: Duration,
}

/// Lease every partition of `partitions` that no one else holds.
pub(super) async fn lease_all(
    run: &FlowRun<'_>,
    partitions: &[PartitionWork],
    budget: &Budget,
    owner: &str,
    started: std::time::Instant,
) -> Result<Leased, FerryError> {
    let FlowRun {
        ferry,
        flow,
        key: flow_key,
        target,
        ..
    } = *run;
    let handoff = handoff::Handoff::wait_for_holder(run, partitions, budget, owner).await;
    let waited_at = started.elapsed();
    let ends_ms = handoff::planned_stop_ms(budget);
    let leased = join_all(partitions.iter().map(|work| async {
        let (lease, item) = handoff.acquire(run, &work.source, owner, ends_ms).await?;
        let setup = async {
            failpoint::lease_setup(&work.source)?;
            // A rewind that stopped midway: its runs past the cursor go first.
            if item.map_trim_from.is_some() {
                ferry.store.trim_runs_past_cursor(flow_key, &lease, item.next_source_offset).await?;
            }
            // The lease's cursor item holds the newest run whole.
            let last_run = ferry.store.newest_stored_run(flow_key, &work.source).await?.map(|mut run| {
                item.patch(&mut run);
                run
            });
            let item = backfill::start_requested(run, &lease, item, last_run.as_ref()).await?;
            Ok::<_, StateError>((item, last_run))
        }
        .await;
        Ok::<_, StateError>((lease, setup))
    }))
    .await;
    // A failure leasing or setting up any partition ends the invocation,
    // with every lease taken given back first (see `release::give_back`).
    let mut failed: Option<FerryError> = None;
    let mut taken: Vec<Lease> = Vec::new();
    let mut parts: Vec<Part> = Vec::new();
    let mut skipped: Vec<PartitionProgress> = Vec::new();
    let mut to_reconcile: Vec<(usize, PrevHolder)> = Vec::new();
    let mut to_fence: BTreeMap<(String, i64), Vec<usize>> = BTreeMap::new();
    for (work, res) in partitions.iter().zip(leased) {
        match res {
            Ok((lease, Err(e))) => {
                taken.push(lease);
                failed.get_or_insert(e.into());
            }
            Ok((lease, Ok((item, last_run)))) => {
                target.expect_topic_id(&work.target_topic, item.target_topic_id.as_deref());
                parts.push(Part::new(work.clone(), lease, &item, last_run));
                // Remember who wrote what: reconcile needs the previous holder's producer id.
                if item.producer_id >= 0 && item.next_target_offset.is_some_and(|t| t >= 0) {
                    to_reconcile.push((
                        parts.len() - 1,
                        PrevHolder {
                            producer_id: item.producer_id,
                            next_sequence: item.producer_next_sequence,
                        },
                    ));
                }
                if let Some(id) = item.transactional_id.filter(|_| item.producer_id >= 0 && !item.writes_settled) {
                    to_fence.entry((id, item.producer_id)).or_default().push(parts.len() - 1);
                }
            }
            Err(StateError::LeaseHeld { tp, owner, .. }) => {
                tracing::info!(flow = %flow.id(), topic = %tp.topic, partition = tp.partition, holder = %owner, "partition leased by another worker; skipping");
                skipped.push(PartitionProgress {
                    source: work.source.clone(),
                    cursor: -1,
                    source_end: work.end_offset,
                    records: 0,
                    bytes: 0,
                    stopped: StopReason::LeaseHeld,
                    error: None,
                    reconciled: 0,
                    filtered_records: 0,
                    filtered_bytes: 0,
                    lost_records: 0,
                    checkpoints: 0,
                });
            }
            Err(e) => {
                failed.get_or_insert(e.into());
            }
        }
    }
    if let Some(e) = failed {
        taken.extend(parts.iter().map(|p| p.lease.clone()));
        release::give_back(run, &taken).await;
        return Err(e);
    }
    Ok(Leased {
        parts,
        skipped,
        to_reconcile,
        to_fence,
        waited_at,
    })
}
