//! `ferry backfill`: start named topics from EARLIEST or a time,
//! in-process or as a Step Functions execution.

use std::process::ExitCode;

use clap::Args;
use ferry_core::domain::PlanInput;
use ferry_engine::Settings;

use crate::{build, describe, Common};

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    #[command(flatten)]
    common: Common,
    /// Source topics, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    topics: Vec<String>,
    /// EARLIEST, milliseconds since the epoch, or a UTC time (2026-11-25T08:00:00Z).
    #[arg(long, default_value = "EARLIEST")]
    from: String,
    /// Start an execution of this deployed state machine with the backfill
    /// as its input, instead of planning in-process.
    #[arg(long, value_name = "ARN")]
    state_machine_arn: Option<String>,
}

pub(crate) async fn backfill(args: BackfillArgs) -> Result<ExitCode, String> {
    let from: ferry_core::domain::BackfillFrom = args.from.parse()?;
    // A backfill execution ends once caught up with what its plan saw; the
    // scheduled executions carry on from there.
    let input = PlanInput {
        backfill: Some(ferry_core::domain::Backfill {
            topics: args.topics.clone(),
            from,
        }),
        stop_at_plan_end: true,
        ..PlanInput::default()
    };
    if let Some(arn) = &args.state_machine_arn {
        let json = serde_json::to_string(&input).map_err(|e| e.to_string())?;
        let aws = ferry_adapters::aws::load().await;
        let out = aws_sdk_sfn::Client::new(&aws)
            .start_execution()
            .state_machine_arn(arn)
            .name(format!("backfill-{}", uuid::Uuid::new_v4().simple()))
            .input(&json)
            .send()
            .await
            .map_err(|e| format!("could not start an execution of {arn}: {}", ferry_adapters::aws::describe(&e)))?;
        println!("ferry: started backfill execution {} with input {json}", out.execution_arn());
        return Ok(ExitCode::SUCCESS);
    }
    let ferry = build(&args.common, Settings::default()).await?;
    ferry.store.ensure_tables().await.map_err(|e| e.to_string())?;
    let plan = ferry_engine::plan::plan(&ferry, &input).await.map_err(|e| describe(&e))?;
    let starts: Vec<String> = plan
        .batches
        .iter()
        .flat_map(|b| b.partitions.iter().filter(|w| args.topics.contains(&w.source.topic)))
        .map(|w| format!("{} ({} records to go)", w.source, w.lag))
        .collect();
    println!("ferry: backfill planned: {}", starts.join(", "));
    // Partitions a worker holds now: started by their next holder.
    let mut waiting = Vec::new();
    for flow in &ferry.spec.flows {
        let cursors = ferry.store.list_cursors(&ferry.flow_key(flow)).await.map_err(|e| e.to_string())?;
        waiting.extend(
            cursors
                .iter()
                .filter_map(|c| c.backfill_from.map(|from| format!("{} (from offset {from})", c.tp))),
        );
    }
    if !waiting.is_empty() {
        println!(
            "ferry: leased by a running worker, started by its next holder unless they replicate records first: {}",
            waiting.join(", ")
        );
    }
    let refused: Vec<&ferry_core::domain::RefusedTopic> = plan.refused_topics.iter().filter(|r| args.topics.contains(&r.topic)).collect();
    for r in &refused {
        eprintln!(
            "ferry: flow {}: topic {} is refused, not copied: {}. Its backfill waits until a plan copies it",
            r.flow, r.topic, r.why
        );
    }
    println!("ferry: `ferry run` (or the next scheduled execution) replicates them");
    Ok(if refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
