//! `ferry forget-flow`: delete one flow's replication state (the rule for
//! when it may is the engine's `forget` module).

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
    /// Delete even though an opposite flow (copying back under the same
    /// names) translates consumer-group positions through this flow's
    /// state: a group moved back may then resume past records it never
    /// read. For clusters that were replaced, or an opposite flow retired
    /// too.
    #[arg(long)]
    break_opposite_translation: bool,
    /// Delete even though a partition's last holder stopped after writing
    /// past its last checkpoint (its writes not settled): a flow that takes
    /// the topic over copies those records again. For a flow that cannot
    /// run any more; otherwise let it run once first.
    #[arg(long)]
    accept_copies_again: bool,
}

pub(crate) async fn forget_flow(args: ForgetFlowArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    let f = ferry_engine::forget::forget_flow(
        &ferry,
        &args.flow,
        args.yes,
        args.break_opposite_translation,
        args.accept_copies_again,
    )
    .await
    .map_err(|e| describe(&e))?;
    if !f.deleted {
        println!(
            "ferry: would delete the state of flow {}: {} partition cursors with their offset maps, the flow's marker and its \
             group syncs; the next plan then starts the flow at its StartingPosition. Nothing was deleted: add --yes to delete.",
            f.key, f.partitions
        );
        return Ok(ExitCode::from(2));
    }
    println!(
        "ferry: forgot flow {} ({} partitions); the next plan starts it as new, at its StartingPosition",
        f.key, f.partitions
    );
    Ok(ExitCode::SUCCESS)
}
