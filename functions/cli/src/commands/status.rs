//! `ferry status`: per partition and per group, where replication stands.

use std::process::ExitCode;

use clap::Args;
use ferry_engine::Settings;

use crate::{build, describe, Common};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    common: Common,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn status(args: StatusArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    let st = ferry_engine::status::status(&ferry).await.map_err(|e| describe(&e))?;
    if !st.missing_tables.is_empty() {
        eprintln!(
            "ferry: nothing to show yet: table(s) {} do not exist. `ferry run` (or the Plan step) creates them; \
             if it has run, check --name and --table-prefix (now {:?}).",
            st.missing_tables.join(", "),
            args.common.table_prefix
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = st.partitions;
    println!(
        "{:<16} {:<24} {:>5} {:>12} {:>12} {:>10} {:>7} {:>9} {:>10}  {:<24} ERROR",
        "FLOW", "TOPIC", "PART", "SOURCE_END", "CURSOR", "LAG", "LAG_S", "REC/S", "BYTES/S", "LAST_RECORD"
    );
    let waiting: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.backfill_from
                .map(|from| format!("{} {}-{} from offset {from}", r.flow, r.topic, r.partition))
        })
        .collect();
    for r in rows {
        let ts = r.last_record_timestamp_ms.map(format_ms).unwrap_or_else(|| "-".into());
        // A partition the flow no longer copies has no lag of its own to close.
        let (lag, lag_s) = match r.not_copied {
            Some(_) => ("-".into(), "-".into()),
            None => (r.lag.to_string(), r.lag_seconds.map_or("-".into(), |s| s.to_string())),
        };
        println!(
            "{:<16} {:<24} {:>5} {:>12} {:>12} {:>10} {:>7} {:>9} {:>10}  {:<24} {}",
            r.flow,
            r.topic,
            r.partition,
            r.source_end_offset,
            r.cursor,
            lag,
            lag_s,
            r.records_per_s,
            r.bytes_per_s,
            ts,
            r.not_copied.or(r.last_error).unwrap_or_default()
        );
    }
    if !waiting.is_empty() {
        println!();
        println!(
            "Backfills waiting for the partition's next holder (dropped if it replicates records first): {}",
            waiting.join(", ")
        );
    }
    if !st.groups.is_empty() {
        println!();
        println!(
            "{:<16} {:<24} {:<24} {:>5} {:>12} {:>12} {:>12}  {:<18} {:<24} DETAIL",
            "FLOW", "GROUP", "TOPIC", "PART", "SOURCE", "TRANSLATED", "TARGET", "STATUS", "LAST_SYNC"
        );
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        for g in st.groups {
            println!(
                "{:<16} {:<24} {:<24} {:>5} {:>12} {:>12} {:>12}  {:<18} {:<24} {}",
                g.flow,
                g.group,
                g.topic,
                g.partition,
                g.source_offset,
                opt(g.translated_offset),
                opt(g.target_offset),
                g.status,
                format_ms(g.checked_ms),
                g.detail
            );
        }
    }
    if !st.moves.is_empty() {
        println!();
        println!(
            "{:<32} {:<12} {:<12} {:<24} {:>5}  RESUMED_AT",
            "GROUP", "LIVES_ON", "MOVED_FROM", "SINCE", "MOVES"
        );
        for m in st.moves {
            println!(
                "{:<32} {:<12} {:<12} {:<24} {:>5}  {}",
                m.group,
                m.lives_on,
                m.moved_from,
                format_ms(m.since_ms),
                m.moves,
                m.offsets.join(" ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339 UTC from milliseconds since the epoch, without a date crate.
pub(crate) fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}
