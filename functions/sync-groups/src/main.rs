//! The SyncGroups Lambda function: translates committed consumer-group
//! offsets and commits them on the targets, for every flow with
//! ConsumerGroupReplication.

use ferry_engine::groups::SyncGroupsOutput;
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
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<serde_json::Value>| async move {
        let ferry = ferry.as_ref().map_err(diagnostic)?;
        let out: SyncGroupsOutput = ferry_engine::groups::sync_groups(ferry).await.map_err(|e| diagnostic(&e))?;
        Ok::<_, Diagnostic>(out)
    }))
    .await
}
