//! The Replicate Lambda function: wires clients, then calls
//! `ferry_engine::replicate` with the invocation's deadline as its budget,
//! and publishes the invocation's throughput and failures as metrics.

use ferry_core::domain::{ReplicateInput, ReplicateOutput};
use ferry_core::metrics::replicate_metrics;
use ferry_engine::replicate::Budget;
use ferry_lambda::diagnostic;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::init_tracing();
    let ferry = ferry_lambda::ferry_from_env().await;
    let ferry = &ferry;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ReplicateInput>| async move {
        let ferry = ferry.as_ref().map_err(diagnostic)?;
        let budget = Budget::for_lambda(event.context.deadline(), event.payload.max_seconds);
        let started = std::time::Instant::now();
        let out: ReplicateOutput = ferry_engine::replicate::replicate(ferry, &event.payload, &budget)
            .await
            .map_err(|e| diagnostic(&e))?;
        ferry_lambda::emit_metrics(&replicate_metrics(&ferry.spec.name, &out, started.elapsed().as_secs_f64()));
        Ok::<_, Diagnostic>(out)
    }))
    .await
}
