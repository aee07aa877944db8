//! Before writing: fence the previous holders' producers, so that nothing
//! of theirs lands after the reconcile reads what they wrote.

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
