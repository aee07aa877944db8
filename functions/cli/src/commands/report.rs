//! `ferry readiness` and `ferry report`: the Report step, run in-process.

use std::process::ExitCode;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use clap::Args;
use ferry_core::metrics::{emf_lines, Datum, MetricDetail, NAMESPACE};
use ferry_core::readiness::Thresholds;
use ferry_engine::Settings;

use crate::{build, describe, Common};

/// Exit code of a NO-GO verdict (1 and 2 are failures to decide).
pub(crate) const NO_GO: u8 = 3;
/// Data points per PutMetricData request.
const PUT_BATCH: usize = 500;

#[derive(Debug, Args)]
pub(crate) struct ReadinessArgs {
    #[command(flatten)]
    common: Common,
    /// Print the verdict and every criterion as JSON.
    #[arg(long)]
    json: bool,
    /// GO needs MessageLag (all replicated partitions) below this.
    #[arg(long, default_value_t = Thresholds::default().max_message_lag)]
    max_message_lag: i64,
    /// GO needs the oldest unreplicated record to be younger than this.
    #[arg(long, default_value_t = Thresholds::default().max_latency_ms / 1000)]
    max_latency_seconds: i64,
    /// GO needs each group's SumOffsetLag on the two clusters to differ by at most this.
    #[arg(long, default_value_t = Thresholds::default().max_offset_lag_gap)]
    max_offset_lag_gap: i64,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    common: Common,
    /// Print the whole report (topics, clusters, groups, readiness) as JSON.
    #[arg(long, conflicts_with = "emf")]
    json: bool,
    /// Print the metrics in CloudWatch's embedded metric format, one
    /// document per line, as the Lambda functions log them.
    #[arg(long)]
    emf: bool,
    /// Also send the metrics to CloudWatch with PutMetricData (the
    /// standard AWS environment says where).
    #[arg(long)]
    publish: bool,
    /// Metrics per topic too (a `Topic` dimension), for --emf and
    /// --publish: CloudWatch bills each metric by the month, so these cost
    /// in proportion to the topics. Without it (and without
    /// FERRY_TOPIC_METRICS=true, as the functions read it), points per
    /// topic are metrics of the replicator only (the topic stays in each
    /// EMF line).
    #[arg(long)]
    topic_metrics: bool,
    /// Metrics per consumer group too (a `ConsumerGroup` dimension), for
    /// --emf and --publish: these cost in proportion to the groups. Without
    /// it (and without FERRY_GROUP_METRICS=true), a group's points are
    /// metrics of its cluster and of the replicator (the group stays in
    /// each EMF line).
    #[arg(long)]
    group_metrics: bool,
}

pub(crate) async fn readiness(args: ReadinessArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    let thresholds = Thresholds {
        max_message_lag: args.max_message_lag,
        max_latency_ms: args.max_latency_seconds.saturating_mul(1000),
        max_offset_lag_gap: args.max_offset_lag_gap,
    };
    let report = ferry_engine::report::report(&ferry, &thresholds).await.map_err(|e| describe(&e))?;
    let verdict = &report.readiness;
    if args.json {
        println!("{}", serde_json::to_string_pretty(verdict).map_err(|e| e.to_string())?);
    } else {
        println!("{:<6} {:<30} {:<28} {:<36} NEEDS", "", "METRIC", "CRITERION", "MEASURED");
        for c in &verdict.criteria {
            println!(
                "{:<6} {:<30} {:<28} {:<36} {}",
                if c.go { "GO" } else { "NO-GO" },
                c.metric,
                c.name,
                c.measured,
                c.required
            );
        }
        println!("ferry: {}", if verdict.go { "GO: every criterion passes" } else { "NO-GO" });
    }
    Ok(if verdict.go { ExitCode::SUCCESS } else { ExitCode::from(NO_GO) })
}

pub(crate) async fn report(args: ReportArgs) -> Result<ExitCode, String> {
    let ferry = build(&args.common, Settings::default()).await?;
    let report = ferry_engine::report::report(&ferry, &Thresholds::default())
        .await
        .map_err(|e| describe(&e))?;
    let data = report.metrics();
    let from_env = MetricDetail::from_env();
    let detail = MetricDetail {
        per_topic: args.topic_metrics || from_env.per_topic,
        per_group: args.group_metrics || from_env.per_group,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else if args.emf {
        for line in emf_lines(NAMESPACE, report.generated_ms, &data, detail) {
            println!("{line}");
        }
    } else {
        println!("{:<32} {:<60} {:>14} UNIT", "METRIC", "DIMENSIONS", "VALUE");
        for d in &data {
            let dims: Vec<String> = d.dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<32} {:<60} {:>14} {}", d.name, dims.join(","), d.value, d.unit.as_str());
        }
    }
    if args.publish {
        publish(&data, report.generated_ms, detail).await?;
        eprintln!("ferry: published {} data points to CloudWatch namespace {NAMESPACE}", data.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Send the data points to CloudWatch.
async fn publish(data: &[Datum], at_ms: i64, detail: MetricDetail) -> Result<(), String> {
    let aws = ferry_adapters::aws::load().await;
    let client = aws_sdk_cloudwatch::Client::new(&aws);
    let at = aws_sdk_cloudwatch::primitives::DateTime::from_millis(at_ms);
    // As the functions' EMF declares them: each point without the Topic
    // or ConsumerGroup, with it too when asked, and of the replicator
    // alone (what the alarms watch).
    let mut points: Vec<(&Datum, Vec<&(&'static str, String)>)> = Vec::new();
    for d in data {
        let rolled = MetricDetail::default().kept(&d.dimensions);
        let asked = detail.kept(&d.dimensions);
        if asked.len() != rolled.len() {
            points.push((d, asked));
        }
        if rolled.len() > 1 && rolled[0].0 == ferry_core::metrics::dim::REPLICATOR {
            points.push((d, vec![rolled[0]]));
        }
        points.push((d, rolled));
    }
    for chunk in points.chunks(PUT_BATCH) {
        let metrics = chunk
            .iter()
            .map(|(d, dims)| {
                let mut m = MetricDatum::builder()
                    .metric_name(d.name)
                    .value(d.value)
                    .unit(StandardUnit::from(d.unit.as_str()))
                    .timestamp(at);
                for (k, v) in dims {
                    m = m.dimensions(Dimension::builder().name(*k).value(v).build());
                }
                m.build()
            })
            .collect();
        client
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(metrics))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "CloudWatch PutMetricData failed: {}. Fix: check the AWS credentials and region (or AWS_ENDPOINT_URL) of this environment",
                    ferry_adapters::aws::describe(&e)
                )
            })?;
    }
    Ok(())
}
