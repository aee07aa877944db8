//! `ferry forget-flow`: delete one flow's replication state.

use std::process::ExitCode;

use clap::Args;
use ferry_engine::Settings;

use crate::{build, describe, Common};

#[derive(Debug, Args)]
pub(crate) struct ForgetFlowArgs {
    #[command(flatten)]
    common: Common,
    /// The flow, as `ferry status` names it: `<source alias>><target alias>`.
    #[arg(long)]
    flow: String,
    /// Delete. Without it, only say what would be deleted.
    #[arg(long)]
    yes: bool,
}

pub(crate) async fn forget_flow(args: ForgetFlowArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    let flow = ferry.flow(&args.flow).map_err(|e| describe(&e))?;
    let key = ferry.flow_key(flow);
    let state_error = |e: ferry_adapters::state::StateError| describe(&e.into());
    let cursors = ferry.store.list_cursors(&key).await.map_err(state_error)?;
    let now = ferry_adapters::state::now_ms();
    if let Some(c) = cursors.iter().find(|c| c.lease_owner.is_some() && c.lease_expires_ms > now) {
        return Err(format!(
            "flow {key}: partition {} is leased by {} for {} s more, so a replicator is running it; nothing was deleted. \
             Fix: stop it first (disable the Step Functions schedule, or stop `ferry run`), then run this again",
            c.tp,
            c.lease_owner.as_deref().unwrap_or_default(),
            (c.lease_expires_ms - now) / 1000 + 1
        ));
    }
    if !args.yes {
        println!(
            "ferry: would delete the state of flow {key}: {} partition cursors with their offset maps, the flow's marker and its \
             group syncs; the next plan then starts the flow at its StartingPosition. Nothing was deleted: add --yes to delete.",
            cursors.len()
        );
        return Ok(ExitCode::from(2));
    }
    let n = ferry.store.forget_flow(&key).await.map_err(state_error)?;
    println!("ferry: forgot flow {key} ({n} partitions); the next plan starts it as new, at its StartingPosition");
    Ok(ExitCode::SUCCESS)
}
