//! The invocation's loop: fetch, produce and checkpoint rounds until the
//! batch is caught up or the budget is spent.

use super::*;

pub(super) async fn run_rounds(
    run: &FlowRun<'_>,
    parts: &mut [Part],
    input: &ReplicateInput,
    budget: &Budget,
    stamp: ProducerStamp,
    filter: &mut Option<LoopFilter>,
) -> Option<FerryError> {
    let FlowRun {
        ferry,
        flow,
        key: flow_key,
        source,
        target,
    } = *run;
    let settings = &ferry.settings;
    let mut hold = Holding::new(
        PassThrough {
            codec: flow.compression,
            min_bytes: settings.pass_through_min_bytes,
            max_bytes: settings.produce_batch_max_bytes,
        },
        settings.held_max_bytes,
    );
    let mut invocation_bytes: u64 = 0;
    let mut backoff = Duration::from_millis(100);
    // A cluster that refused Ferry (credentials, TLS, the secret) after one
    // fresh read of the credentials: it ends the invocation (see
    // `KafkaError::is_refusal`), after what the target acknowledged is
    // checkpointed.
    let mut refused: Option<FerryError> = None;
    let mut round: u64 = 0;
    loop {
        round += 1;
        if refused.is_none() {
            refused = parts.iter_mut().find_map(|p| p.refused.take());
        }
        let out_of_bytes = invocation_bytes >= settings.invocation_max_bytes;
        mark_stops(parts, refused.is_some(), budget, input, out_of_bytes);
        if parts.iter().all(|p| p.done.is_some()) {
            // Whatever the target acknowledged is checkpointed before the
            // leases go back.
            save(run, (target, stamp.producer_id), parts, input).await;
            return refused;
        }
        for p in parts.iter_mut().filter(|p| p.done.is_some() && p.pending.capacity() > 0) {
            p.let_go_of_pending();
        }

        // 1. Build one batch per partition from what was fetched.
        build_batches(run, parts, stamp).await;

        // 2. Produce the built batches and, at the same time, fetch for the
        //    partitions with room for more: the source is read while the
        //    target writes. Never write unless a third of the lease is left:
        //    a worker whose lease is about to lapse renews it first (with
        //    a checkpoint), so a worker that lost its lease cannot write after its
        //    successor reconciled.
        let guard_ms = settings.lease_duration.as_millis() as i64 / 3;
        let now = now_ms();
        let to_send: Vec<usize> = (0..parts.len())
            .filter(|&i| parts[i].done.is_none() && parts[i].inflight.is_some() && parts[i].lease_expires_hint - now > guard_ms)
            .collect();
        // Room for the batch in flight and the next one; and, all
        // partitions together, no more held than the invocation's memory
        // allows (produces drain it first).
        let round_start = Instant::now();
        // Every queue, its slots included (a stopped partition's was let go
        // of above).
        let held: usize = parts.iter().map(Part::held).sum();
        let mut want: Vec<usize> = (0..parts.len())
            .filter(|&i| {
                let p = &parts[i];
                held < settings.held_max_bytes
                    && p.done.is_none()
                    && p.pending_bytes < 2 * settings.produce_batch_max_bytes
                    && p.fetch_after.is_none_or(|t| t <= round_start)
            })
            .collect();
        // An oversized batch first (only the first partition with data gets
        // one); then those that got data least recently: a response held to
        // its cap leaves the last partitions without, and they go first
        // next time.
        want.sort_by_key(|&i| (!parts[i].starved, parts[i].fed_round));
        // What this round's reads may hold, and a fetch no larger than
        // that once it grows as the records read so far grew (a partition's
        // worth at least): what the reads cannot hold is fetched again.
        hold.room = settings.held_max_bytes.saturating_sub(held);
        let request_max = i32::try_from(hold.room / hold.growth()).unwrap_or(i32::MAX).clamp(
            settings.fetch_partition_max_bytes,
            settings.fetch_request_max_bytes.max(settings.fetch_partition_max_bytes),
        );
        // 3. Checkpoint what is due, renew leases, move idle cursors: written
        //    while the fetch and the produce are out, and settled before
        //    their results are (the acknowledgements of this round are the
        //    next checkpoint's).
        let due = due_checkpoints(settings, parts, input);
        if want.is_empty() && to_send.is_empty() && due.is_empty() {
            // Every partition waits for the opposite flow's checkpoint (or
            // for its lease to be renewed).
            let until = parts
                .iter()
                .filter_map(|p| p.fetch_after)
                .fold(round_start + IDLE_TICK, Instant::min);
            tokio::time::sleep_until(until).await;
        }
        let max_wait = if !due.is_empty()
            || parts
                .iter()
                .any(|p| p.done.is_none() && (!p.pending.is_empty() || p.inflight.is_some()))
        {
            0
        } else {
            settings.fetch_max_wait_ms
        };
        if !to_send.is_empty() {
            failpoint::before_produce().await;
        }
        let (fetched, produced, saved) = {
            let shared: &[Part] = parts;
            tokio::join!(
                async {
                    if want.is_empty() {
                        None
                    } else {
                        Some(fetch_round(source, shared, &want, (settings.fetch_partition_max_bytes, request_max), max_wait).await)
                    }
                },
                async {
                    if to_send.is_empty() {
                        None
                    } else {
                        Some(produce_round(target, shared, &to_send).await)
                    }
                },
                write_checkpoints(&ferry.store, (target, stamp.producer_id), flow_key, shared, due)
            )
        };
        settle(run, parts, saved).await;

        let fetch_end = take_fetched(run, parts, fetched, &want, round, &mut hold, filter).await;
        let (acked, produce_end) = take_produced(run, parts, produced).await;
        let round_failed = fetch_end.failed || produce_end.failed;
        if let Some(e) = produce_end.refused.or(fetch_end.refused) {
            refused = Some(e);
        }
        if !acked.is_empty() {
            failpoint::after_produce();
        }
        // The target has these records: they wait in `unsaved` for the next
        // checkpoint.
        invocation_bytes += record_acked(run, parts, acked).await;

        if round_failed && refused.is_none() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(100);
        }
    }
}

/// Stops the partitions this round ends for: a cluster that refused
/// Ferry, an interrupt, the budget spent (time, or the invocation's bytes),
/// or, asked to stop there (`stop_at_plan_end`), the plan's end reached
/// with everything written.
fn mark_stops(parts: &mut [Part], refused: bool, budget: &Budget, input: &ReplicateInput, out_of_bytes: bool) {
    if refused {
        for p in parts.iter_mut().filter(|p| p.done.is_none()) {
            p.done = Some(StopReason::Retry);
        }
    }
    if budget.is_interrupted() {
        for p in parts.iter_mut().filter(|p| p.done.is_none()) {
            p.done = Some(StopReason::Interrupted);
        }
    }
    if Instant::now() + DEADLINE_MARGIN >= budget.deadline || out_of_bytes {
        for p in parts.iter_mut().filter(|p| p.done.is_none()) {
            p.done = Some(StopReason::Budget);
        }
    }
    if input.stop_at_plan_end {
        for p in parts.iter_mut().filter(|p| p.done.is_none()) {
            if p.cursor >= p.work.end_offset && p.pending.is_empty() && p.inflight.is_none() && p.unsaved.is_none() {
                p.done = Some(StopReason::CaughtUp);
            }
        }
    }
}

/// Builds one batch, for each partition with records waiting and none in
/// flight, from the first of them (a source batch passed through alone),
/// stamped with the partition's next sequence.
async fn build_batches(run: &FlowRun<'_>, parts: &mut [Part], stamp: ProducerStamp) {
    let FlowRun { ferry, flow, .. } = *run;
    let settings = &ferry.settings;
    for p in parts
        .iter_mut()
        .filter(|p| p.done.is_none() && p.inflight.is_none() && !p.pending.is_empty())
    {
        let n = batch_len(&p.pending, settings.produce_batch_max_bytes);
        let st = ProducerStamp {
            base_sequence: p.sequence,
            ..stamp
        };
        let built = match p.pending.front() {
            Some(Pending::Batch(b)) => Ok(batch::restamp(b, st)),
            _ => {
                let recs: Vec<SourceRecord> = p
                    .pending
                    .iter()
                    .take(n)
                    .filter_map(|item| match item {
                        Pending::Record(r) => Some(r.clone()),
                        Pending::Batch(_) => None,
                    })
                    .collect();
                batch::build_batch(&recs, flow.compression, st)
            }
        };
        match built {
            Ok(bytes) => p.inflight = Some((bytes, n)),
            Err(e) => {
                let e = KafkaError::Batch {
                    cluster: flow.target.alias.clone(),
                    topic: p.target.topic.clone(),
                    partition: p.target.partition,
                    source: e,
                };
                fail(run, p, &e.into()).await;
            }
        }
    }
}

/// What a round's fetch or produce left for the loop: a cluster's refusal
/// (the invocation ends once what the target acknowledged is
/// checkpointed), or a failure worth trying again after a backoff.
#[derive(Default)]
struct RoundEnd {
    refused: Option<FerryError>,
    failed: bool,
}

/// Takes a fetch round's answers: each partition's records, read as
/// read_committed and through the loop filter, queued to be written; or
/// its error, tried again, followed or stopped on.
async fn take_fetched(
    run: &FlowRun<'_>,
    parts: &mut [Part],
    fetched: Option<Result<RoundResults<FetchedPartition>, KafkaError>>,
    want: &[usize],
    round: u64,
    hold: &mut Holding,
    filter: &mut Option<LoopFilter>,
) -> RoundEnd {
    let FlowRun { ferry, flow, source, .. } = *run;
    let settings = &ferry.settings;
    let mut end = RoundEnd::default();
    match fetched {
        None => {}
        Some(Ok(results)) => {
            for (i, res) in results {
                let p = &mut parts[i];
                match res {
                    Ok(f) => {
                        p.source_end = f.last_stable_offset.max(0);
                        p.starved = f.records.is_empty() && f.last_stable_offset > p.fetch_pos;
                        let read = match read_committed(&ferry.store, &f, p.fetch_pos, source.alias(), &p.work.source, filter, hold).await {
                            // A newer leader epoch at the position: the
                            // log may have been truncated below it.
                            Ok(read) if p.epoch_changes_at(&read) => match Box::pin(check_history(run, p)).await {
                                Ok(true) => Ok(read),
                                Ok(false) => continue,
                                Err(e) if e.is_refusal() => {
                                    end.refused = Some(e);
                                    continue;
                                }
                                Err(e) if e.is_retryable() => {
                                    tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "leader epoch check failed; will retry");
                                    end.failed = true;
                                    continue;
                                }
                                Err(e) => {
                                    fail(run, p, &e).await;
                                    continue;
                                }
                            },
                            other => other,
                        };
                        match read {
                            Ok(read) => {
                                if read.unmapped && p.fetch_after.is_none() {
                                    tracing::debug!(
                                        flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, offset = read.next,
                                        "waiting for the opposite flow to checkpoint the records it wrote here"
                                    );
                                }
                                p.fetch_after = read.unmapped.then(|| Instant::now() + unmapped_recheck(settings));
                                p.note_unmapped_wait(flow, filter.as_ref().and_then(LoopFilter::opposite), read.unmapped, read.next);
                                if !read.records.is_empty() {
                                    p.fed_round = round;
                                } else if read.out_of_room {
                                    // Data was there: first in line next time.
                                    p.starved = true;
                                }
                                for item in read.records {
                                    p.pending_bytes += item.size();
                                    p.pending.push_back(item);
                                }
                                p.fetch_pos = read.next;
                                p.note_epochs(&read.epochs);
                                p.filtered_records += read.filtered_records;
                                p.filtered_bytes += read.filtered_bytes;
                                p.filtered_ts.extend(read.filtered_ts);
                            }
                            Err(e) if e.is_retryable() => {
                                tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "loop-filter lookup failed; will retry");
                                end.failed = true;
                            }
                            Err(e) => fail(run, p, &e).await,
                        }
                    }
                    Err(e) if e.is_refusal() => end.refused = Some(e.into()),
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(flow = %flow.id(), topic = %p.work.source.topic, partition = p.work.source.partition, error = %e, "fetch failed; will retry");
                        end.failed = true;
                    }
                    Err(e) if e.is_offset_out_of_range() => {
                        if let Err(e) = out_of_range(run, p, lease_expires_at(settings)).await {
                            fail(run, p, &e).await;
                        }
                    }
                    Err(e) => fail(run, p, &e.into()).await,
                }
            }
        }
        // The source's answer did not decode, or it does not speak the
        // fetch Ferry needs: the same request would get the same answer,
        // so each partition of the round stops, naming the cause, rather
        // than trying again for ever. (Other protocol errors, such as a
        // connection closed while it was being set up, can pass.)
        Some(Err(e @ (KafkaError::Undecodable { .. } | KafkaError::Unsupported { .. }))) => {
            let e = FerryError::from(e);
            for &i in want {
                fail(run, &mut parts[i], &e).await;
            }
        }
        Some(Err(e)) if e.is_refusal() => end.refused = Some(e.into()),
        Some(Err(e)) => {
            tracing::warn!(flow = %flow.id(), cluster = %flow.source.alias, error = %e, "fetch round failed; will retry");
            end.failed = true;
        }
    }
    end
}

/// Takes a produce round's answers: the base offset of each batch the
/// target acknowledged, by partition; the errors tried again or stopped on.
async fn take_produced(
    run: &FlowRun<'_>,
    parts: &mut [Part],
    produced: Option<Result<RoundResults<i64>, KafkaError>>,
) -> (Vec<(usize, i64)>, RoundEnd) {
    let FlowRun { flow, .. } = *run;
    let mut end = RoundEnd::default();
    let mut acked: Vec<(usize, i64)> = Vec::new();
    match produced {
        None => {}
        Some(Ok(results)) => {
            for (i, res) in results {
                match res {
                    Ok(base) => acked.push((i, base)),
                    Err(e) if e.is_refusal() => end.refused = Some(e.into()),
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(flow = %flow.id(), topic = %parts[i].target.topic, partition = parts[i].target.partition, error = %e, "produce failed; will retry");
                        end.failed = true;
                    }
                    Err(e) => produce_failed(run, &mut parts[i], e).await,
                }
            }
        }
        Some(Err(e)) if e.is_refusal() => end.refused = Some(e.into()),
        Some(Err(e)) => {
            tracing::warn!(flow = %flow.id(), cluster = %flow.target.alias, error = %e, "produce round failed; will retry");
            end.failed = true;
        }
    }
    (acked, end)
}

/// Records what the target acknowledged: each batch's records leave the
/// queue for `unsaved`, with their offset-map runs, until the next
/// checkpoint. Returns the bytes written.
async fn record_acked(run: &FlowRun<'_>, parts: &mut [Part], acked: Vec<(usize, i64)>) -> u64 {
    let mut written: u64 = 0;
    for (i, base) in acked {
        let p = &mut parts[i];
        if p.target_lost {
            continue;
        }
        // Other producers' records only ever push a batch further on;
        // one placed before the end of what Ferry wrote means the
        // target's log lost that (see `target_lost_midway`).
        let expected = p.unsaved.as_ref().map_or(p.target_end, |u| u.target_end);
        if base < expected {
            target_lost_midway(run, p, base, expected).await;
            continue;
        }
        let Some((bytes, n)) = p.inflight.take() else { continue };
        let items = p.take_pending(n);
        let offsets: Vec<i64> = items.iter().flat_map(|item| item.first_offset()..=item.last_offset()).collect();
        p.sequence = batch::next_sequence(p.sequence, offsets.len() as i32);
        let to = p.pending.front().map(Pending::first_offset).unwrap_or(p.fetch_pos);
        let u = p.unsaved.get_or_insert_with(Unsaved::new);
        ferry_core::offset_map::coalesce(&mut u.runs, &runs_for_append(&offsets, base));
        u.to_source = to;
        u.target_end = base + offsets.len() as i64;
        p.written_end = p.written_end.max(base + offsets.len() as i64);
        u.records += offsets.len() as i64;
        u.bytes += bytes.len() as i64;
        u.last_ts = items.last().map(Pending::timestamp);
        u.sequence = p.sequence;
        written += bytes.len() as u64;
    }
    written
}

/// How many of the first `pending` items go into one produced batch: a
/// source batch passed through goes alone; records are built into one at
/// most `max_bytes` (at least one record), and at most
/// `MAX_RUNS_PER_BATCH` offset-map runs (a gap in source offsets, from
/// compaction or aborted transactions, starts a new run).
pub(super) fn batch_len(pending: &VecDeque<Pending>, max_bytes: usize) -> usize {
    if let Some(Pending::Batch(_)) = pending.front() {
        return 1;
    }
    let mut n = 0;
    let mut size = 0;
    let mut runs = 0;
    let mut prev: Option<i64> = None;
    for item in pending {
        let Pending::Record(r) = item else { break };
        let new_run = prev.is_none_or(|o| o + 1 != r.offset);
        if n > 0 && (size + r.approx_size() > max_bytes || (new_run && runs >= MAX_RUNS_PER_BATCH)) {
            break;
        }
        runs += usize::from(new_run);
        prev = Some(r.offset);
        size += r.approx_size();
        n += 1;
    }
    n
}
