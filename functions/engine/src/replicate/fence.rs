//! Before writing: fence the previous holders' producers, and reconcile
//! what they wrote and did not checkpoint.

use super::*;

/// Fence the previous holders that may still have a write on its way to
/// the partitions taken from them (see `kafka::txn`): one sequence per
/// holder, all holders at once. A partition that cannot be fenced is not
/// reconciled or written.
pub(super) async fn fence_all(run: &FlowRun<'_>, parts: &mut [Part], which: &BTreeMap<(String, i64), Vec<usize>>) {
    let FlowRun { ferry, flow, target, .. } = *run;
    let results = join_all(which.iter().map(|((id, pid), idx)| {
        let tps: Vec<TopicPartition> = idx.iter().map(|&i| parts[i].target.clone()).collect();
        async move { target.fence(id, *pid, &tps).await }
    }))
    .await;
    for (((id, pid), idx), res) in which.iter().zip(results) {
        match res {
            Ok(fenced) => {
                let failed = fenced.failed.len();
                for (tp, e) in fenced.failed {
                    let e = FerryError::from(with_grant_hint(e, &ferry.spec.name));
                    if let Some(&i) = idx.iter().find(|&&i| parts[i].target == tp) {
                        fail(run, &mut parts[i], &e).await;
                    }
                }
                tracing::info!(
                    replicator = %ferry.spec.name, flow = %flow.id(), transactional_id = %id, producer_id = pid,
                    partitions = idx.len() - failed, fenced = fenced.same_producer,
                    "fenced the previous holder on the partitions taken from it"
                );
            }
            Err(e) => {
                let e = FerryError::from(with_grant_hint(e, &ferry.spec.name));
                for &i in idx {
                    fail(run, &mut parts[i], &e).await;
                }
            }
        }
    }
}

/// Reconcile the partitions `which` (index, previous holder): one
/// ListOffsets for all of them, then a read of the target only where it
/// holds records after the last checkpoint (after a clean release, none).
pub(super) async fn reconcile_all(
    run: &FlowRun<'_>,
    parts: &mut [Part],
    which: &[(usize, PrevHolder)],
    ends: &mut TargetEnds,
    filter: &mut Option<LoopFilter>,
) {
    let FlowRun { target, .. } = *run;
    for &(i, prev) in which {
        let p = &mut parts[i];
        // With the leader's epoch, read before the holder's records are:
        // what the reconcile finds below `end` is in that epoch's history
        // or an older one's (see `CursorItem::target_leader_epoch`).
        let (end, epoch) = match ends.remove(&p.target) {
            Some(Ok(found)) => found,
            Some(Err(e)) => {
                fail(run, p, &e.into()).await;
                continue;
            }
            None => {
                fail(run, p, &target.unknown_partition(&p.target).into()).await;
                continue;
            }
        };
        if end <= p.target_end {
            continue;
        }
        let epoch = (epoch >= 0).then_some(epoch);
        if let Err(e) = reconcile(run, p, prev, (end, epoch), filter).await {
            fail(run, p, &e).await;
        }
    }
}
