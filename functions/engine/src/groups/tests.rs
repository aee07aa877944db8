use super::{in_turn, is_opposite_write, lost_under, replaced_from, LostUnder};
use ferry_adapters::state::{CursorItem, GroupSyncItem, GroupSyncStatus};
use ferry_core::domain::TopicPartition;

fn synced(written: Option<i64>, rewinds: Option<i64>, target: i64, checked_ms: i64) -> GroupSyncItem {
    GroupSyncItem {
        group: "g".into(),
        tp: TopicPartition::new("t", 0),
        target_topic: Some("t".into()),
        target_topic_id: None,
        source_offset: 120,
        metadata: None,
        translated: written,
        exact: true,
        target_offset: Some(target),
        written_offset: written,
        written_rewinds: rewinds,
        own_commit: written,
        own_commit_ms: written.map(|_| checked_ms),
        carried_source_offset: None,
        copy_source_offset: None,
        pending_offset: None,
        redelivered: 0,
        status: GroupSyncStatus::UpToDate,
        detail: String::new(),
        checked_ms,
        rule: 2,
    }
}

#[test]
fn a_commit_made_before_the_target_lost_copies_is_told_by_count_not_time() {
    let rewound = |n: i64| CursorItem {
        target_rewinds: n,
        target_rewound_ms: (n > 0).then_some(1_000),
        target_rewound_from: (n > 0).then_some(100),
        ..CursorItem::default()
    };
    // Ferry's commit 140 from a cursor that counted no rewind; the
    // target lost copies once since: moved, wherever it points.
    assert_eq!(
        lost_under(&rewound(1), Some(&synced(Some(140), Some(0), 140, 500)), Some(140)),
        Some(LostUnder::Ferrys(Some(100)))
    );
    // Also when the sync that wrote it read its cursors before the
    // rewind and finished after it (its check time says nothing), and
    // in items from before Ferry counted (none stored: 0).
    assert_eq!(
        lost_under(&rewound(1), Some(&synced(Some(140), Some(0), 140, 5_000)), Some(140)),
        Some(LostUnder::Ferrys(Some(100)))
    );
    assert_eq!(
        lost_under(&rewound(1), Some(&synced(Some(140), None, 140, 5_000)), Some(140)),
        Some(LostUnder::Ferrys(Some(100)))
    );
    // Below where the log parted too: a second truncation may have
    // parted it lower first (only ever moved down to the translation).
    assert_eq!(
        lost_under(&rewound(2), Some(&synced(Some(90), Some(1), 90, 500)), Some(90)),
        Some(LostUnder::Ferrys(Some(100)))
    );
    // Made from a cursor that counted the rewind: the new history's.
    assert_eq!(
        lost_under(&rewound(1), Some(&synced(Some(140), Some(1), 140, 500)), Some(140)),
        None
    );
    assert_eq!(lost_under(&rewound(0), Some(&synced(Some(140), None, 140, 500)), Some(140)), None);
    // Someone else's commit past where the log parted, there before the
    // rewind: reported; after it, or below where it parted: not.
    let theirs = synced(Some(130), Some(0), 165, 500);
    assert_eq!(lost_under(&rewound(1), Some(&theirs), Some(165)), Some(LostUnder::Others(100)));
    assert_eq!(
        lost_under(&rewound(1), Some(&synced(Some(130), Some(0), 165, 5_000)), Some(165)),
        None
    );
    assert_eq!(lost_under(&rewound(1), Some(&synced(Some(130), Some(0), 95, 500)), Some(95)), None);
    // No commit, or never synced: nothing to say.
    assert_eq!(lost_under(&rewound(1), Some(&theirs), None), None);
    assert_eq!(lost_under(&rewound(1), None, Some(140)), None);
}

#[test]
fn a_sync_takes_the_groups_in_turn_from_where_the_last_one_stopped() {
    let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let all = g(&["a", "b", "c", "d"]);
    assert_eq!(in_turn(all.clone(), None), all);
    assert_eq!(in_turn(all.clone(), Some("c")), g(&["c", "d", "a", "b"]));
    // The group it stopped at is gone: the next one after it.
    assert_eq!(in_turn(all.clone(), Some("bb")), g(&["c", "d", "a", "b"]));
    assert_eq!(in_turn(all.clone(), Some("z")), all);
    assert_eq!(in_turn(all.clone(), Some("a")), all);
}

/// The source's history: epoch 0 from offset 0, epoch 2 from 100 (an
/// unclean election at 100 replaced what a replica had there in 0).
#[test]
fn a_commit_in_a_replaced_history_resumes_where_the_histories_part() {
    let history = [(0, 0), (100, 2)];
    assert_eq!(replaced_from(140, 0, &history), Some(100), "read 100..139 in epoch 0: replaced");
    assert_eq!(replaced_from(100, 0, &history), None, "read up to 99 in epoch 0: the same history");
    assert_eq!(replaced_from(60, 0, &history), None);
    assert_eq!(replaced_from(140, 2, &history), None, "the new history's epoch");
    assert_eq!(replaced_from(140, 1, &history), Some(100), "an epoch the source never had");
    assert_eq!(replaced_from(140, 5, &history), None, "newer than all read: nothing to compare");
    assert_eq!(replaced_from(140, -1, &history), None, "no epoch committed");
    assert_eq!(replaced_from(140, 0, &[]), None, "no epochs kept");
}

#[test]
fn a_commit_the_opposite_flow_wrote_last_or_was_writing_is_its_copy() {
    // The opposite flow committed 140 here at 500; this flow never wrote.
    let wrote = synced(Some(140), Some(0), 140, 500);
    assert!(is_opposite_write(Some(&wrote), None, 140));
    // The group read on from it, or an operator reset it: the group's own.
    assert!(!is_opposite_write(Some(&wrote), None, 150));
    assert!(!is_opposite_write(Some(&wrote), None, 100));
    // This flow wrote on its own target after it (at 600): the group may
    // have come back to 140 by itself since.
    let mine_later = synced(Some(30), Some(0), 30, 600);
    let mine_earlier = synced(Some(30), Some(0), 30, 400);
    assert!(!is_opposite_write(Some(&wrote), Some(&mine_later), 140));
    assert!(is_opposite_write(Some(&wrote), Some(&mine_earlier), 140));
    // A sync that stopped between its commit and the record of it: the
    // newest write there is.
    let stopped = GroupSyncItem {
        pending_offset: Some(160),
        ..wrote.clone()
    };
    assert!(is_opposite_write(Some(&stopped), Some(&mine_later), 160));
    // Its commit may never have landed: the one it made before is still
    // its copy (on 51b08a9, only the pending one counted).
    assert!(is_opposite_write(Some(&stopped), Some(&mine_earlier), 140));
    assert!(!is_opposite_write(Some(&stopped), Some(&mine_later), 140));
    // One that found 140 in place never wrote it: the group's own.
    let found = GroupSyncItem {
        own_commit: None,
        own_commit_ms: None,
        ..wrote.clone()
    };
    assert!(!is_opposite_write(Some(&found), None, 140));
    // Stored before Ferry kept its own commits: one while its sync says it
    // committed.
    let legacy = GroupSyncItem {
        status: GroupSyncStatus::Synced,
        ..found.clone()
    };
    assert!(is_opposite_write(Some(&legacy), None, 140));
    assert!(!is_opposite_write(None, None, 140));
}
