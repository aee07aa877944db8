//! The Report Lambda function: measures lag, latency, failures, cluster
//! pings and consumer groups, publishes them as metrics (embedded metric
//! format, no API call), and returns the readiness verdict.

use ferry_core::readiness::Thresholds;
use ferry_engine::report::Report;
use ferry_engine::Ferry;
use ferry_engine::FerryError;
use ferry_lambda::{Handled, Instrument};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;

/// The input: optional readiness thresholds; anything else is ignored
/// (the state machine passes the previous state's output).
#[derive(Debug, Default, Deserialize)]
struct ReportInput {
    #[serde(default)]
    thresholds: Option<Thresholds>,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(handle).await
}

fn handle(ferry: &Ferry, event: LambdaEvent<serde_json::Value>) -> Handled<'_, Report> {
    Box::pin(async move {
        let input: ReportInput = match event.payload {
            v @ serde_json::Value::Object(_) => serde_json::from_value(v).map_err(|e| {
                FerryError::Input(format!(
                    "Report input: {e}. Fix: give thresholds as {{\"thresholds\": {{\"max_message_lag\": 1000, \"max_latency_ms\": 90000, \"max_offset_lag_gap\": 1000}}}}, or no thresholds for these defaults"
                ))
            })?,
            _ => ReportInput::default(),
        };
        let report: Report = ferry_engine::report::report(ferry, &input.thresholds.unwrap_or_default())
            .instrument(ferry_lambda::step_span(ferry, "report", None))
            .await?;
        ferry_lambda::emit_metrics(&report.metrics());
        Ok(report)
    })
}
