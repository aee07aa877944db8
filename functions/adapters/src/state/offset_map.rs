//! The offset map: runs of consecutive source offsets and where they
//! landed on the target, read whole with the cursor's open run.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use ferry_core::domain::TopicPartition;
use ferry_core::offset_map::OffsetRun;

use super::calls::Bounded;
use super::error::dynamo_err;
use super::schema::{delete_request, map_pk, n, s, ItemReader, BY_TARGET, PK_MAP, SK_MAP};
use super::{CursorItem, StateError, StateStore};

pub(super) fn run_from_item(table: &str, i: &HashMap<String, AttributeValue>) -> Result<OffsetRun, StateError> {
    let r = ItemReader::new(table, i);
    Ok(OffsetRun {
        source_start: r.req_n(SK_MAP)?,
        target_start: r.req_n("target_start")?,
        length: r.req_n("run_length")?,
    })
}

/// Which coordinate of an offset-map run a lookup goes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKey {
    /// The source offset (the table's sort key).
    Source,
    /// The target offset (the `by_target` index).
    Target,
}

impl RunKey {
    fn index_and_key(self) -> (Option<&'static str>, &'static str) {
        match self {
            RunKey::Source => (None, SK_MAP),
            RunKey::Target => (Some(BY_TARGET), "target_start"),
        }
    }
}

/// Runs one Query reads when pruning or forgetting a map.
const RUNS_PAGE: usize = 1_000;
/// Pages one prune of a partition deletes at most (10,000 runs).
pub const PRUNE_PAGES_PER_CALL: usize = 10;

impl StateStore {
    /// Requests deleting the offset-map runs `runs` of a partition.
    pub(super) fn run_deletes(&self, pk: &str, runs: &[OffsetRun]) -> Result<Vec<WriteRequest>, StateError> {
        runs.iter()
            .map(|r| delete_request(&self.offset_map, (PK_MAP, s(pk)), (SK_MAP, n(r.source_start))))
            .collect()
    }

    /// The newest offset-map run of a partition, whole (see
    /// [`CursorItem::open_run`]).
    pub async fn last_run(&self, flow: &str, tp: &TopicPartition) -> Result<Option<OffsetRun>, StateError> {
        // The cursor first: see `StateStore::runs_from`.
        let cursor = self.get_cursor(flow, tp).await?;
        let mut run = self.newest_stored_run(flow, tp).await?;
        if let (Some(c), Some(r)) = (&cursor, run.as_mut()) {
            c.patch(r);
        }
        Ok(run)
    }

    /// The newest run's item in the offset-map table, as stored: its
    /// length may be short of the run's (the cursor item holds it whole;
    /// [`CursorItem::patch`] lengthens it).
    pub async fn newest_stored_run(&self, flow: &str, tp: &TopicPartition) -> Result<Option<OffsetRun>, StateError> {
        let out = self
            .client
            .query()
            .table_name(&self.offset_map)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK_MAP)
            .expression_attribute_values(":pk", s(map_pk(flow, tp)))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("Query", &self.offset_map, e))?;
        out.items().first().map(|i| run_from_item(&self.offset_map, i)).transpose()
    }

    /// Delete the runs that end at or below `below` (the source log-start
    /// offset: no committed group offset can point there any more), always
    /// keeping the newest run, the only one a holder extends. Returns how
    /// many were deleted. A page of runs at a time, up to
    /// [`PRUNE_PAGES_PER_CALL`] pages: a partition's turn to be pruned comes
    /// once in several plans, and a busy transactional source adds
    /// hundreds of runs a minute (a gap at every commit marker).
    pub async fn prune_runs(&self, flow: &str, tp: &TopicPartition, below: i64) -> Result<usize, StateError> {
        let mut pruned = 0;
        for _ in 0..PRUNE_PAGES_PER_CALL {
            let page = self.prune_page(flow, tp, below).await?;
            pruned += page;
            // A page short of full: what is left below is live or none.
            if page < RUNS_PAGE {
                break;
            }
        }
        Ok(pruned)
    }

    async fn prune_page(&self, flow: &str, tp: &TopicPartition, below: i64) -> Result<usize, StateError> {
        let pk = map_pk(flow, tp);
        // Most plans find nothing to prune: one Query, no cursor read. Where
        // there are candidates, the cursor is read and then the runs again
        // (see `runs_from`): the run it holds open, and any started after
        // it, are live whatever their items say.
        if self.runs_below(&pk, below).await?.is_empty() {
            return Ok(0);
        }
        let open = self.get_cursor(flow, tp).await?;
        let mut doomed = self.runs_below(&pk, below).await?;
        if let Some(c) = &open {
            doomed.iter_mut().for_each(|r| c.patch(r));
            let live_from = c.open_run.map(|r| r.source_start).unwrap_or(i64::MAX);
            doomed.retain(|r| r.source_start < live_from);
        }
        doomed.retain(|r| r.source_end() <= below);
        if doomed.is_empty() {
            return Ok(0);
        }
        let newest = self.newest_stored_run(flow, tp).await?.map(|r| r.source_start);
        doomed.retain(|r| Some(r.source_start) != newest);
        self.batch_write(&self.offset_map, self.run_deletes(&pk, &doomed)?).await?;
        Ok(doomed.len())
    }

    /// Up to [`RUNS_PAGE`] stored runs of map partition `pk` starting below `below`
    /// that end at or below it by their items (which may be short of the
    /// open run: the caller checks with the cursor).
    pub(super) async fn runs_below(&self, pk: &str, below: i64) -> Result<Vec<OffsetRun>, StateError> {
        let resp = self
            .client
            .query()
            .table_name(&self.offset_map)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk AND #sk < :below")
            .expression_attribute_names("#pk", PK_MAP)
            .expression_attribute_names("#sk", SK_MAP)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":below", n(below))
            .limit(RUNS_PAGE as i32)
            .send()
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("Query", &self.offset_map, e))?;
        let mut runs = resp
            .items()
            .iter()
            .map(|i| run_from_item(&self.offset_map, i))
            .collect::<Result<Vec<_>, _>>()?;
        runs.retain(|r| r.source_end() <= below);
        Ok(runs)
    }

    /// All stored runs of a partition, in source order.
    pub async fn runs(&self, flow: &str, tp: &TopicPartition) -> Result<Vec<OffsetRun>, StateError> {
        // The cursor before the runs: a checkpoint in between can only make
        // the runs read longer than the cursor's, never shorter (see
        // `StateStore::runs_from`).
        let cursor = self.get_cursor(flow, tp).await?;
        let items = self.query_all(&self.offset_map, PK_MAP, s(map_pk(flow, tp))).await?;
        let mut runs = items
            .iter()
            .map(|i| run_from_item(&self.offset_map, i))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(c) = &cursor {
            runs.iter_mut().for_each(|r| c.patch(r));
        }
        Ok(runs)
    }

    /// Runs of a partition by `key` (of `index`, if any): with `after`,
    /// up to `limit` starting after `at`, ascending, from `start` (the
    /// key a previous page ended at), with where this page ended when
    /// more may follow; else the last one starting at or before `at`.
    #[allow(clippy::too_many_arguments)]
    async fn query_runs(
        &self,
        flow: &str,
        tp: &TopicPartition,
        index: Option<&str>,
        key: &str,
        at: i64,
        after: bool,
        limit: i32,
        start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<(Vec<OffsetRun>, Option<HashMap<String, AttributeValue>>), StateError> {
        let op = if after { ">" } else { "<=" };
        let out = self
            .client
            .query()
            .table_name(&self.offset_map)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(format!("#pk = :pk AND #k {op} :at"))
            .expression_attribute_names("#pk", PK_MAP)
            .expression_attribute_names("#k", key)
            .expression_attribute_values(":pk", s(map_pk(flow, tp)))
            .expression_attribute_values(":at", n(at))
            .scan_index_forward(after)
            .limit(limit)
            .set_consistent_read(Some(true))
            .set_exclusive_start_key(start)
            .send()
            .bounded(&self.calls)
            .await
            .map_err(|e| dynamo_err("Query", &self.offset_map, e))?;
        let runs = out
            .items()
            .iter()
            .map(|i| run_from_item(&self.offset_map, i))
            .collect::<Result<_, _>>()?;
        Ok((runs, out.last_evaluated_key().cloned()))
    }

    /// The runs of a partition from the one starting at or before `at` (by
    /// `by`) on: at most `limit` + 1 of them, sorted, as they stood when
    /// `cursor` was read: the open run lengthened from it, and what later
    /// checkpoints added cut away.
    ///
    /// `cursor` must have been read before this call. Read in that order,
    /// every run the cursor counts is in the answer, whole (read the other
    /// way round, a checkpoint in between could close the run the cursor
    /// holds open and leave it short). And cut back to the cursor, the
    /// answer is one state of the map: a translation that takes its
    /// cursor from the same read never meets a run it does not count
    /// (one a later checkpoint added past records it has not seen yet).
    pub async fn runs_from(
        &self,
        flow: &str,
        tp: &TopicPartition,
        by: RunKey,
        at: i64,
        limit: i32,
        cursor: Option<&CursorItem>,
    ) -> Result<Vec<OffsetRun>, StateError> {
        Ok(self.runs_from_until(flow, tp, by, at, limit, usize::MAX, cursor, |_| true).await?.0)
    }

    /// [`Self::runs_from`] read on, a page at a time, until `answered`
    /// says the runs read so far answer the caller's question or the
    /// partition has none left: with `true` when it stopped at `max` runs
    /// unanswered. The first page is `first` runs; most lookups end there,
    /// but a source the log cleaner compacted makes a run of each record it
    /// left between two it removed.
    #[allow(clippy::too_many_arguments)]
    pub async fn runs_from_until(
        &self,
        flow: &str,
        tp: &TopicPartition,
        by: RunKey,
        at: i64,
        first: i32,
        max: usize,
        cursor: Option<&CursorItem>,
        answered: impl Fn(&[OffsetRun]) -> bool,
    ) -> Result<(Vec<OffsetRun>, bool), StateError> {
        const PAGE: i32 = 1_000;
        let (index, key) = by.index_and_key();
        let (mut runs, _) = self.query_runs(flow, tp, index, key, at, false, 1, None).await?;
        runs = as_of(runs, cursor);
        let (mut limit, mut start) = (first, None);
        loop {
            let (page, next) = self.query_runs(flow, tp, index, key, at, true, limit, start).await?;
            runs.extend(as_of(page, cursor));
            if next.is_none() || answered(&runs) {
                return Ok((runs, false));
            }
            if runs.len() >= max {
                return Ok((runs, true));
            }
            (limit, start) = (PAGE, next);
        }
    }

    /// The runs around `at` (by `by`): the one starting at or before it
    /// and the first starting after it (all a translation needs), the
    /// newest lengthened from `cursor`, read before (see [`Self::runs_from`]).
    pub async fn runs_around(
        &self,
        flow: &str,
        tp: &TopicPartition,
        by: RunKey,
        at: i64,
        cursor: Option<&CursorItem>,
    ) -> Result<Vec<OffsetRun>, StateError> {
        self.runs_from(flow, tp, by, at, 1, cursor).await
    }
}

/// Runs as they stood when `cursor` was read: the open run lengthened from
/// it, and what later checkpoints added cut away.
fn as_of(mut runs: Vec<OffsetRun>, cursor: Option<&CursorItem>) -> Vec<OffsetRun> {
    if let Some(c) = cursor {
        runs.iter_mut().for_each(|r| c.patch(r));
        runs.retain(|r| r.source_start < c.next_source_offset);
        runs.iter_mut()
            .for_each(|r| r.length = r.length.min(c.next_source_offset - r.source_start));
    }
    runs
}
