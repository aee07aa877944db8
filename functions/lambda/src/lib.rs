//! The Lambda functions, one binary each (`src/bin/`: ferry-plan,
//! ferry-replicate, ferry-sync-groups, ferry-report), and what they share:
//! JSON logs, the replicator built from the function's environment, the
//! serving loop, and errors turned into a `Diagnostic` (through
//! [`StepError`]) whose `error_type` is the stable name the state
//! machine's Retry and Catch match (see `ferry_engine::error`).

use ferry_core::metrics::{emf_lines, Datum, MetricDetail, NAMESPACE};
use ferry_engine::{Ferry, FerryError};
use std::future::Future;
use std::pin::Pin;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
pub use tracing::Instrument;

/// One invocation's work, borrowing the replicator. Its error becomes the
/// invocation's [`StepError`] in [`serve`].
pub type Handled<'a, O> = Pin<Box<dyn Future<Output = Result<O, FerryError>> + 'a>>;

/// Serve a function: JSON logs, the replicator from the environment (an
/// error there is every invocation's answer, so Step Functions sees the
/// cause), and for each invocation the warm environment's reset (a wait an
/// earlier invocation's refusal left is not this one's: see
/// `Ferry::begin_invocation`), then `handler`, whose error is counted
/// (see [`failure`]) and answered as its [`StepError`].
pub async fn serve<I, O, F>(handler: F) -> Result<(), lambda_runtime::Error>
where
    I: DeserializeOwned + Send,
    O: Serialize + Send,
    F: for<'a> Fn(&'a Ferry, LambdaEvent<I>) -> Handled<'a, O>,
{
    init_tracing();
    let ferry = ferry_from_env().await;
    let (ferry, handler) = (&ferry, &handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<I>| async move {
        let ferry = ferry.as_ref().map_err(StepError::from)?;
        ferry.begin_invocation();
        handler(ferry, event).await.map_err(|e| failure(ferry, &e))
    }))
    .await
}

/// JSON logs on stdout, filtered by `RUST_LOG`, never with the debug and
/// trace events that carry credentials (`ferry_adapters::aws::may_log`).
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .finish()
        .with(tracing_subscriber::filter::filter_fn(ferry_adapters::aws::may_log))
        .init();
}

/// The replicator from the function's environment (`FERRY_*`), with
/// DynamoDB and Secrets Manager from the standard AWS environment. An error is kept and
/// returned by every invocation, so Step Functions sees the cause.
pub async fn ferry_from_env() -> Result<Ferry, FerryError> {
    let aws = ferry_adapters::aws::load().await;
    Ferry::from_env(&aws)
}

/// An invocation's error as Step Functions sees it: its type, the stable
/// name the state machine's Retry and Catch match (`Ferry.Retryable`,
/// `Ferry.AuthError`, ...: `FerryError::error_type`), and its message. The
/// Lambda runtime reports it through `From` (`Diagnostic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// The error type Step Functions matches.
    pub error_type: &'static str,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl From<&FerryError> for StepError {
    fn from(e: &FerryError) -> Self {
        StepError {
            error_type: e.error_type(),
            message: e.to_string(),
        }
    }
}

impl From<FerryError> for StepError {
    fn from(e: FerryError) -> Self {
        StepError::from(&e)
    }
}

impl From<StepError> for Diagnostic {
    fn from(e: StepError) -> Self {
        Diagnostic {
            error_type: e.error_type.to_owned(),
            error_message: e.message,
        }
    }
}

/// A failed invocation as Step Functions sees it; a cluster's refusal
/// (credentials, TLS, its secret) also counts in that cluster's
/// `AuthError` metric at once, since the execution then ends before the
/// Report step would count it.
pub fn failure(ferry: &Ferry, e: &FerryError) -> StepError {
    if let FerryError::Kafka(k) = e {
        if let Some(cluster) = k.refusing_cluster() {
            use ferry_core::metrics::{dim, name, Unit};
            emit_metrics(&[Datum::new(
                name::AUTH_ERROR,
                Unit::Count,
                1.0,
                &ferry.spec.name,
                &[(dim::CLUSTER, cluster)],
            )]);
        }
    }
    StepError::from(e)
}

/// The environment variables that ask for metrics per topic and per group.
pub use ferry_core::metrics::{GROUP_METRICS_ENV, TOPIC_METRICS_ENV};

/// Publish metrics in CloudWatch's embedded metric format: one JSON
/// document per stdout line, which Lambda's log delivery turns into
/// metrics with no API call.
/// Points per topic or group become metrics per topic or group only when
/// the stack's `TopicMetrics` or `GroupMetrics` parameter sets
/// `FERRY_TOPIC_METRICS=true` or `FERRY_GROUP_METRICS=true`.
pub fn emit_metrics(data: &[Datum]) {
    let now = ferry_adapters::state::now_ms();
    for line in emf_lines(NAMESPACE, now, data, MetricDetail::from_env()) {
        println!("{line}");
    }
}

/// The span every log line of one invocation carries: the replicator, the
/// step and (for Replicate) the flow, next to each line's own fields
/// (cluster, topic, partition, group).
pub fn step_span(ferry: &Ferry, step: &'static str, flow: Option<&str>) -> tracing::Span {
    tracing::info_span!("step", replicator = %ferry.spec.name, step, flow = flow.unwrap_or("*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reaches_step_functions_as_its_type_and_message() {
        let e = FerryError::Input("flow \"a>b\" is not in the configuration".into());
        let d = Diagnostic::from(StepError::from(e));
        assert_eq!(d.error_type, "Ferry.InputError");
        assert!(d.error_message.contains("a>b"), "{}", d.error_message);
        let d = Diagnostic::from(StepError::from(FerryError::NotReady("lease held".into())));
        assert_eq!(
            (d.error_type.as_str(), d.error_message.as_str()),
            ("Ferry.Retryable", "not ready: lease held")
        );
    }
}
