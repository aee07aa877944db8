//! What a group's commit on a target means, from the sync items alone:
//! who wrote it, whether it is the opposite flow's copy, whether the
//! target's log was cut back under it, and whether it was made in a
//! history of the source an unclean leader election replaced.

use super::*;

/// A target commit made before the target's log was last found truncated
/// under Ferry's copies (the cursor's `target_rewinds`, `target_rewound_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LostUnder {
    /// Ferry's own commit (this flow wrote it, or was about to), from a
    /// translation read before the truncation: it may point past records
    /// the group never read, and moves to the new translation, even below
    /// it (never above: re-delivery at worst). Where the log parted, if
    /// known.
    Ferrys(Option<i64>),
    /// Someone else's, past where the log parted: reported, never
    /// overwritten.
    Others(i64),
}

/// Whether the target's commit `current` of a partition was made in a
/// history of its log that the target lost since (`prev`: this flow's
/// last sync of it; `cursor`, read before the translation).
pub(super) fn lost_under(cursor: &CursorItem, prev: Option<&GroupSyncItem>, current: Option<i64>) -> Option<LostUnder> {
    let cur = current?;
    let p = prev?;
    if written_offset(p) == Some(cur) || p.pending_offset == Some(cur) {
        // Counted, not timed: a sync that read its cursors before a rewind
        // and committed after it still made its commit in the old history.
        return (p.written_rewinds.unwrap_or(0) < cursor.target_rewinds).then_some(LostUnder::Ferrys(cursor.target_rewound_from));
    }
    // Someone else's, in place before the rewind (or reported since, and
    // still in place).
    let (at_ms, from) = cursor.target_rewound_ms.zip(cursor.target_rewound_from)?;
    let reported = p.detail.contains(OTHERS_LOST);
    (cur > from && p.target_offset == Some(cur) && (p.checked_ms < at_ms || reported)).then_some(LostUnder::Others(from))
}

/// The translation rule this sync follows. 1 (stored as 0, before rules
/// were counted): one way, a group resumed at the next copy after its
/// commit; 2 (81c9279 on): just after the copy of its last record, before
/// what others wrote on the target since.
pub(crate) const TRANSLATION_RULE: i64 = 2;

/// The words that mark a sync item of a flow whose source holds the
/// opposite flow's copy of the group's commit on its target.
pub(super) const COPY_OF_TARGET: &str = "the opposite flow's copy of it: nothing carried back";

/// The words that mark [`LostUnder::Others`] in a sync item's detail.
pub(super) const OTHERS_LOST: &str = "after this commit, which is not Ferry's";

/// The words that mark a translation that passes over records the group
/// never read (never copied, or deleted on the target): no flag makes a
/// move GO on it.
pub(crate) const SKIPS: &str = "records it never read are passed over";

/// Says, in a sync's detail, that the translation is not exact only until
/// the opposite flow has read the target further (wait, never a skip).
pub(crate) const OPPOSITE_UNREAD: &str = "not exact yet: the opposite flow";

/// The offset a flow itself last wrote on its target, and when: its own
/// commit, or the one it was making when it stopped (the newest there is).
/// An item stored before Ferry kept its own commits: the commit its record
/// is of, while it is.
pub(super) fn own_write(p: &GroupSyncItem) -> Option<(i64, i64)> {
    match p.pending_offset {
        Some(pending) => Some((pending, i64::MAX)),
        None => own_committed(p),
    }
}

/// The commit a flow itself made on its target, and when (see
/// `own_write`), without one it was still making.
pub(super) fn own_committed(p: &GroupSyncItem) -> Option<(i64, i64)> {
    match p.own_commit {
        Some(c) => Some((c, p.own_commit_ms.unwrap_or(p.checked_ms))),
        None => p
            .written_offset
            .filter(|_| p.status == GroupSyncStatus::Synced)
            .map(|w| (w, p.checked_ms)),
    }
}

/// Whether a flow's source commit `source_commit` is the opposite flow's
/// copy (`opposite`: its last sync of the partition; `mine`: this flow's):
/// the offset that flow wrote there (or was writing), later than anything
/// this flow wrote on its own target. That commit came from the group's
/// commit on this flow's target, whatever the group did on this flow's
/// source since (read on, or was reset there): carried back, it could only
/// put an older or a skipping translation over the group's own commit.
/// Once this flow wrote after it, the group may have come back to that same
/// offset by itself (a reset): no longer a copy.
/// Either write the opposite flow knows counts: the one it was making
/// (which may never have landed: it stopped before the commit) and the
/// one it made before.
pub(super) fn is_opposite_write(opposite: Option<&GroupSyncItem>, mine: Option<&GroupSyncItem>, source_commit: i64) -> bool {
    let Some(opposite) = opposite else {
        return false;
    };
    let mine = mine.and_then(own_write).map_or(i64::MIN, |(_, at)| at);
    let pending = opposite.pending_offset.map(|p| (p, i64::MAX));
    [pending, own_committed(opposite)]
        .into_iter()
        .flatten()
        .any(|(offset, at)| offset == source_commit && at > mine)
}

/// The last offset a flow wrote on the target, from its last sync. Items
/// stored before `written_offset` existed hold it in `target_offset`
/// when that sync wrote it or found it in place.
pub(super) fn written_offset(p: &GroupSyncItem) -> Option<i64> {
    p.written_offset.or_else(|| {
        matches!(p.status, GroupSyncStatus::Synced | GroupSyncStatus::UpToDate)
            .then_some(p.target_offset)
            .flatten()
    })
}

/// Where the history a group committed `offset` in (`epoch`: the leader
/// epoch of the last record it read, as Kafka's clients commit it since
/// KIP-320) parts from the source's history that the cursor's leader
/// epochs `history` describe ((first offset, epoch), oldest first), if it
/// does below `offset`: the commit is then in records an unclean leader
/// election replaced, and the group never read the new history's records
/// from there. Found without a request, as Kafka's consumer finds it with
/// the leader's answer: the source's largest epoch at or below `epoch`
/// ends (the next epoch starts) below `offset`. An epoch newer than all
/// the cursor read, older than all it kept, or none (-1): nothing to
/// compare, taken as the same history.
pub(super) fn replaced_from(offset: i64, epoch: i32, history: &[(i64, i32)]) -> Option<i64> {
    if epoch < 0 {
        return None;
    }
    let i = history.iter().rposition(|&(_, e)| e <= epoch)?;
    let &(end, _) = history.get(i + 1)?;
    (end < offset).then_some(end)
}
