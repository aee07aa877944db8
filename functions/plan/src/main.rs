//! The Plan Lambda function: wires clients, then calls `ferry_engine::plan`.

use ferry_core::domain::{PlanInput, PlanOutput};
use ferry_lambda::{diagnostic, Instrument};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::init_tracing();
    let ferry = ferry_lambda::ferry_from_env().await;
    let ferry = &ferry;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<PlanInput>| async move {
        let ferry = ferry.as_ref().map_err(diagnostic)?;
        // A warm environment: a wait an earlier invocation's refusal left
        // is not this one's; it tries again at once (see begin_invocation).
        ferry.begin_invocation();
        ferry.store.ensure_tables().await.map_err(|e| diagnostic(&e.into()))?;
        let out: PlanOutput = async {
            let mut out = ferry_engine::plan::plan(ferry, &event.payload).await?;
            // The state machine carries references to the batches, not
            // their partitions.
            ferry_engine::plan::store_batches(ferry, &mut out).await?;
            Ok(out)
        }
        .instrument(ferry_lambda::step_span(ferry, "plan", None))
        .await
        .map_err(|e| ferry_lambda::failure(ferry, &e))?;
        Ok::<_, Diagnostic>(out)
    }))
    .await
}
