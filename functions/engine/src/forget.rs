//! Forgetting a flow (`ferry forget-flow`): when its state may be
//! deleted, and the deletion. Nothing is deleted while a replicator runs
//! the flow, nor, unless asked, while an opposite flow translates group
//! positions through it (see `groups::translating_through`).

use ferry_adapters::state::now_ms;

use crate::context::Ferry;
use crate::error::FerryError;

/// What [`forget_flow`] found, or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The flow's state key.
    pub key: String,
    /// How many partition cursors it had.
    pub partitions: usize,
    /// Whether the state was deleted (false: only checked).
    pub deleted: bool,
}

/// Check that the state of flow `flow_id` may be deleted, and delete it
/// when `delete` is set: its cursors with their offset maps, its marker
/// and pair registration, its group syncs (what they recorded of Ferry's
/// commits is kept apart, under `groups::forgotten_key`, for the flows that
/// take its topics over). The next plan then starts it as new, at its
/// StartingPosition. Refused (nothing deleted) while a partition's lease
/// is held, and, unless `break_opposite`, while an
/// opposite flow may translate group commits through the flow's state
/// (its copies are on its target, between the clusters it was started
/// between).
///
/// Also refused while a partition's last holder has not recorded its
/// writes settled (it stopped after writing past its last checkpoint),
/// unless `copies_again`: the flow hands its target topics over where its
/// cursors stand, and what that holder wrote past them only the flow's own
/// next holder would find on the target; a flow taking the topic over
/// copies those records again.
pub async fn forget_flow(
    ferry: &Ferry,
    flow_id: &str,
    delete: bool,
    break_opposite: bool,
    copies_again: bool,
) -> Result<Forgotten, FerryError> {
    let flow = ferry.flow(flow_id)?;
    let key = ferry.flow_key(flow);
    let cursors = ferry.store.list_cursors(&key).await?;
    let now = now_ms();
    if let Some(c) = cursors.iter().find(|c| c.lease_owner.is_some() && c.lease_expires_ms > now) {
        return Err(FerryError::NotReady(format!(
            "flow {key}: partition {} is leased by {} for {} s more, so a replicator is running it; nothing was deleted. \
             Fix: stop it first (disable the Step Functions schedule, or stop `ferry run`), then run this again",
            c.tp,
            c.lease_owner.as_deref().unwrap_or_default(),
            (c.lease_expires_ms - now) / 1000 + 1
        )));
    }
    if let Some(c) = cursors.iter().find(|c| !copies_again && c.producer_id >= 0 && !c.writes_settled) {
        return Err(FerryError::NotReady(format!(
            "flow {key}: partition {}'s last holder stopped without recording its writes settled (it crashed or was stopped \
             after writing past its last checkpoint): only the flow's own next holder finds those copies on the target, and a \
             flow taking its topics over where its cursors stand would copy them again; nothing was deleted. Fix: let the flow \
             run once more (`ferry run --once` with its --name and definition, or its schedule), then run this again; if it \
             cannot run any more, add --accept-copies-again",
            c.tp
        )));
    }
    if !break_opposite {
        let opposites = crate::groups::translating_through(ferry, flow, &cursors).await?;
        if !opposites.is_empty() {
            let list = opposites.join(", ");
            return Err(FerryError::Input(format!(
                "flow {key} copied records onto {} that the opposite flow {list} translates consumer-group positions through \
                 (this flow's offset map, and its record of the group commits it made there): without them, a group moved back \
                 from {} to {} could resume past records it never read. Nothing was deleted. To stop this flow while {list} \
                 goes on (the migration is done and the flow back stays for a rollback): remove it from the replicator's \
                 definition, or stop its replicator, and leave its state, which {list} keeps reading. To delete it anyway \
                 (both clusters were replaced, {list} is retired too, or no group will move back): add \
                 --break-opposite-translation",
                flow.target.alias, flow.target.alias, flow.source.alias
            )));
        }
    }
    let partitions = if delete {
        // Its record of the group commits it made on the target stays,
        // under another key: a flow taking its topics over counts those
        // commits as Ferry's (see `groups::handed_commits`), not as an
        // operator's resets it must never move.
        let kept = crate::groups::bequest(ferry, &key).await?;
        ferry.store.put_group_syncs(&crate::groups::forgotten_key(&key), &kept).await?;
        ferry.store.forget_flow(&key).await?
    } else {
        cursors.len()
    };
    Ok(Forgotten {
        key,
        partitions,
        deleted: delete,
    })
}
