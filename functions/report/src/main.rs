//! The Report Lambda function: measures lag, latency, failures, cluster
//! pings and consumer groups, publishes them as metrics (embedded metric
//! format, no API call), and returns the readiness verdict.

use ferry_core::readiness::Thresholds;
use ferry_engine::report::Report;
use ferry_engine::FerryError;
use ferry_lambda::{diagnostic, Instrument};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
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
    ferry_lambda::init_tracing();
    let ferry = ferry_lambda::ferry_from_env().await;
    let ferry = &ferry;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let ferry = ferry.as_ref().map_err(diagnostic)?;
        // A warm environment: a wait an earlier invocation's refusal left
        // is not this one's; it tries again at once (see begin_invocation).
        ferry.begin_invocation();
        let input: ReportInput = match event.payload {
            v @ serde_json::Value::Object(_) => serde_json::from_value(v).map_err(|e| {
                diagnostic(&FerryError::Input(format!(
                    "Report input: {e}. Fix: give thresholds as {{\"thresholds\": {{\"max_message_lag\": 1000, \"max_latency_ms\": 90000, \"max_offset_lag_gap\": 1000}}}}, or no thresholds for these defaults"
                )))
            })?,
            _ => ReportInput::default(),
        };
        let report: Report = ferry_engine::report::report(ferry, &input.thresholds.unwrap_or_default())
            .instrument(ferry_lambda::step_span(ferry, "report", None))
            .await
            .map_err(|e| ferry_lambda::failure(ferry, &e))?;
        ferry_lambda::emit_metrics(&report.metrics());
        Ok::<_, Diagnostic>(report)
    }))
    .await
}
