//! The Plan Lambda function: wires clients, then calls `ferry_engine::plan`.

use ferry_core::domain::{PlanInput, PlanOutput};
use ferry_engine::{Ferry, FerryError};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

fn diagnostic(e: FerryError) -> Diagnostic {
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
    lambda_runtime::run(service_fn(move |event: LambdaEvent<PlanInput>| async move {
        let ferry = ferry.as_ref().map_err(|e| Diagnostic {
            error_type: e.error_type().to_owned(),
            error_message: e.to_string(),
        })?;
        ferry.store.ensure_tables().await.map_err(|e| diagnostic(e.into()))?;
        let out: PlanOutput = ferry_engine::plan::plan(ferry, &event.payload).await.map_err(diagnostic)?;
        Ok::<_, Diagnostic>(out)
    }))
    .await
}
