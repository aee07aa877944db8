//! The Replicate Lambda function: wires clients, then calls
//! `ferry_engine::replicate` with the invocation's deadline as its budget.

use ferry_core::domain::{ReplicateInput, ReplicateOutput};
use ferry_engine::replicate::Budget;
use ferry_engine::{Ferry, FerryError};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

fn diagnostic(e: &FerryError) -> Diagnostic {
    Diagnostic {
        error_type: e.error_type().to_owned(),
        error_message: e.to_string(),
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let aws = aws_config::load_from_env().await;
    let ferry = Ferry::from_env(aws_sdk_dynamodb::Client::new(&aws));
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
