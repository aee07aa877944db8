//! Moving a partition's cursor back under its lease: where the source's
//! history parts from what Ferry copied (source_history), or where the
//! target lost Ferry's copies (target_log).

use super::*;

/// Move `p`'s cursor back to `to` under its lease, with the offset map
/// from there dropped (see [`StateStore::rewind_cursor`]): `below`, the
/// source leader epochs read below `to`; `target_end`, the target's new
/// end when its log lost Ferry's copies (its stored epoch is then gone).
pub(super) async fn rewind(
    run: &FlowRun<'_>,
    p: &mut Part,
    to: i64,
    below: Vec<(i64, i32)>,
    target_end: Option<i64>,
) -> Result<(), StateError> {
    p.last_run = run
        .ferry
        .store
        .rewind_cursor(run.key, &p.lease, p.cursor, to, p.last_run, &below, target_end)
        .await?;
    p.cursor = to;
    p.fetch_pos = to;
    p.history = below;
    p.epochs.clear();
    if let Some(end) = target_end {
        p.target_end = end;
        p.target_epoch = None;
    }
    Ok(())
}
