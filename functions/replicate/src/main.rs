//! The Replicate Lambda function: wires clients, then calls
//! `ferry_engine::replicate` with the invocation's deadline as its budget.

use ferry_core::domain::{ReplicateInput, ReplicateOutput};
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
        let out: ReplicateOutput = ferry_engine::replicate::replicate(ferry, &event.payload, &budget)
            .await
            .map_err(|e| diagnostic(&e))?;
        Ok::<_, Diagnostic>(out)
    }))
    .await
}
