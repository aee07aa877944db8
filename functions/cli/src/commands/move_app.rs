//! `ferry move`: may this application start on the other cluster now, and
//! where will it resume there?

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ferry_engine::moves::{move_app, MoveReport, MoveRequest};
use ferry_engine::Settings;

use super::report::NO_GO;
use super::status::format_ms;
use crate::{build, describe, Common};

#[derive(Debug, Args)]
pub(crate) struct MoveArgs {
    #[command(flatten)]
    common: Common,
    /// A consumer group of the application (repeat for each).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// The topics the application produces, comma-separated: the flow must
    /// have copied them to their end before it starts on the other side.
    #[arg(long, value_delimiter = ',', value_name = "T,...")]
    topics: Vec<String>,
    /// The cluster the application moves to: a cluster id of
    /// kafka-clusters.json (`ApacheKafkaClusterId` or the MSK ARN).
    #[arg(long, value_name = "CLUSTER_ID")]
    to: String,
    /// How long to wait for replication to catch up before NO-GO.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    wait: u64,
    /// GO even where a group's translation is not exact: records it
    /// consumed will be delivered again (never skipped).
    #[arg(long)]
    allow_redelivery: bool,
    /// Print the verdict and every offset as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn move_cmd(args: MoveArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    let req = MoveRequest {
        groups: args.groups,
        topics: args.topics.into_iter().filter(|t| !t.is_empty()).collect(),
        to: args.to,
        wait: Duration::from_secs(args.wait),
        allow_redelivery: args.allow_redelivery,
    };
    let report = move_app(&ferry, &req, &mut |line| eprintln!("ferry move: {line}"))
        .await
        .map_err(|e| describe(&e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print_report(&report);
    }
    Ok(if report.go() { ExitCode::SUCCESS } else { ExitCode::from(NO_GO) })
}

fn print_report(r: &MoveReport) {
    let what: Vec<String> = r
        .groups
        .iter()
        .map(|g| format!("group {g}"))
        .chain(r.topics.iter().map(|t| format!("topic {t}")))
        .collect();
    println!(
        "move {} from {} to {} (flow {} of replicator {})",
        what.join(", "),
        r.from,
        r.to,
        r.flow,
        r.replicator
    );
    if !r.produced.is_empty() {
        let n = r.produced.len();
        println!("produced: {n} partition(s) copied to their end ({} s waited)", r.waited_ms / 1000);
    }
    if !r.resume.is_empty() {
        println!(
            "{:<24} {:<24} {:>5} {:>12} {:>12} {:>6}  {:<24} {:<24}",
            "GROUP", "TOPIC", "PART", "COMMIT_FROM", "RESUME_AT", "EXACT", "FIRST_RECORD_KEY", "FIRST_RECORD_TIME"
        );
        for p in &r.resume {
            let (key, ts) = match &p.next_record {
                Some(rec) => (rec.key.clone().unwrap_or_else(|| "(null key)".into()), format_ms(rec.timestamp_ms)),
                None => ("(end of log: the next record produced)".into(), "-".into()),
            };
            let exact = if p.exact {
                "yes".to_owned()
            } else {
                format!("no:{}", p.redelivered)
            };
            println!(
                "{:<24} {:<24} {:>5} {:>12} {:>12} {:>6}  {:<24} {:<24}",
                p.group, p.topic, p.partition, p.source_offset, p.offset, exact, key, ts
            );
        }
    }
    match (&r.reason, &r.fix) {
        (Some(reason), fix) => {
            println!("NO-GO: {reason}");
            if let Some(fix) = fix {
                println!("  fix: {fix}");
            }
        }
        (None, _) => {
            let recorded = if r.recorded {
                " (recorded: `ferry status` shows where each group lives)"
            } else {
                ""
            };
            println!("GO: start the application on {}{recorded}", r.to);
        }
    }
}
