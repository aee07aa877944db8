//! What a failed produce or an out-of-range fetch does to a partition.

use super::*;

/// The target refused a batch. Producer-state faults (the broker lost or
/// fenced Ferry's producer, e.g. after a restart) end this invocation for
/// the partition; the next one reconciles. Anything else stops the
/// partition with what to change, naming the source offsets involved.
pub(super) async fn produce_failed(run: &FlowRun<'_>, p: &mut Part, e: KafkaError) {
    let FlowRun { ferry, flow, .. } = *run;
    let (Some(refusal), KafkaError::Broker { error, detail, .. }) = (e.produce_refusal(), &e) else {
        fail(run, p, &e.into()).await;
        return;
    };
    let n = p.inflight.as_ref().map(|(_, n)| *n).unwrap_or(0);
    let records: i64 = p
        .pending
        .iter()
        .take(n)
        .map(|item| item.last_offset() - item.first_offset() + 1)
        .sum();
    let first = p.pending.front().map(Pending::first_offset).unwrap_or(p.cursor);
    let last = p.pending.get(n.saturating_sub(1)).map(Pending::last_offset).unwrap_or(first);
    let batch_bytes = p.inflight.as_ref().map(|(b, _)| b.len()).unwrap_or(0);
    let fix = match refusal {
        ProduceRefusal::ProducerState => {
            tracing::warn!(
                replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.target.alias, topic = %p.target.topic,
                partition = p.target.partition, cause = %e,
                "target refused this producer: fenced by a worker that took the partition over, or the target lost its state; the batch was not written, and the partition resumes after a reconcile"
            );
            p.done = Some(StopReason::Retry);
            return;
        }
        ProduceRefusal::TooLarge => format!(
            "raise max.message.bytes on target topic {} above {batch_bytes} bytes{}",
            p.target.topic,
            if records > 1 {
                format!(", or lower --produce-batch-max-bytes below it ({records} records were in one batch; a source batch that size is then split)")
            } else {
                " (a source record is that large)".to_owned()
            }
        ),
        ProduceRefusal::Timestamp => format!(
            "the record timestamps are outside target topic {}'s message.timestamp.before.max.ms / message.timestamp.after.max.ms: widen them",
            p.target.topic
        ),
        ProduceRefusal::NotAuthorized => format!(
            "grant Ferry's principal WRITE (and IDEMPOTENT_WRITE on the cluster for Kafka before 3.0) on target topic {}",
            p.target.topic
        ),
        ProduceRefusal::InvalidRecords => {
            format!("the target refused the records ({detail}); check target topic {}'s settings such as cleanup.policy=compact needing keys", p.target.topic)
        }
        ProduceRefusal::Other => format!("see the broker's message ({detail})"),
    };
    let stopped = FerryError::PartitionStopped {
        tp: p.work.source.clone(),
        cluster: flow.target.alias.clone(),
        what: format!(
            "target topic {} partition {} refused source offsets {first}..={last}: {error}",
            p.target.topic, p.target.partition
        ),
        fix,
    };
    fail(run, p, &stopped).await;
}

/// The cursor points at source records that no longer exist. Never skip
/// silently: stop with the lost range, unless the operator allowed resuming.
pub(super) async fn out_of_range(run: &FlowRun<'_>, p: &mut Part, lease_expires_ms: i64) -> Result<(), FerryError> {
    let FlowRun {
        ferry,
        flow,
        key: flow_key,
        source,
        ..
    } = *run;
    if !p.pending.is_empty() || p.unsaved.is_some() {
        // Records fetched before the gap go out first; the gap is handled
        // once they are checkpointed, which is asked for now.
        p.flush_soon = true;
        return Ok(());
    }
    let tp = std::slice::from_ref(&p.work.source);
    let earliest = source.list_offsets(tp, OffsetSpec::Earliest, false).await?[&p.work.source];
    let latest = source.list_offsets(tp, OffsetSpec::Latest, false).await?[&p.work.source];
    if p.fetch_pos > latest {
        // Past the end: a truncated log says where it diverged.
        if p.last_epoch().is_some() && !Box::pin(check_history(run, p)).await? {
            return Ok(());
        }
        return Err(past_the_end(flow, p, p.fetch_pos, latest));
    }
    if !ferry.settings.resume_after_data_loss {
        return Err(FerryError::PartitionStopped {
            tp: p.work.source.clone(),
            cluster: flow.source.alias.clone(),
            what: format!(
                "source offsets {}..{earliest} were deleted (retention or DeleteRecords) before Ferry replicated them; {} records would be lost",
                p.fetch_pos,
                earliest - p.fetch_pos
            ),
            fix: "raise the source topic's retention and replicate faster, or accept the loss with --resume-after-data-loss (a deployed stack: its ResumeAfterDataLoss parameter, for one execution)".into(),
        });
    }
    tracing::error!(
        replicator = %ferry.spec.name, flow = %flow.id(), cluster = %flow.source.alias, topic = %p.work.source.topic,
        partition = p.work.source.partition, lost_from = p.fetch_pos, lost_to = earliest, lost_records = earliest - p.fetch_pos,
        "DataLoss: source records were deleted before replication; resuming at the earliest offset as configured"
    );
    let mut cp = checkpoint_for(p, earliest, lease_expires_ms);
    // The epoch of the record before `earliest` is not known (deleted).
    cp.leader_epochs = Vec::new();
    ferry.store.checkpoint(flow_key, &p.lease, &cp).await?;
    p.apply(&cp);
    p.lost_records += (earliest - p.fetch_pos) as u64;
    p.fetch_pos = earliest;
    Ok(())
}
