//! The Plan Lambda function: plans every flow, keeps the batches in the
//! state tables and hands the state machine a reference to each.

use ferry_core::domain::{PlanInput, PlanOutput};
use ferry_engine::Ferry;
use ferry_lambda::{Handled, Instrument};
use lambda_runtime::LambdaEvent;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(handle).await
}

fn handle(ferry: &Ferry, event: LambdaEvent<PlanInput>) -> Handled<'_, PlanOutput> {
    Box::pin(async move {
        ferry.store.ensure_tables().await?;
        async {
            let mut out: PlanOutput = ferry_engine::plan::plan_until(ferry, &event.payload, Some(event.context.deadline())).await?;
            // The state machine carries references to the batches, not
            // their partitions.
            ferry_engine::plan::store_batches(ferry, &mut out).await?;
            Ok(out)
        }
        .instrument(ferry_lambda::step_span(ferry, "plan", None))
        .await
    })
}
