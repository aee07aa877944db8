//! The SyncGroups Lambda function: translates committed consumer-group
//! offsets and commits them on the targets, for every flow with
//! ConsumerGroupReplication.

use ferry_core::metrics::{name, Datum, Unit};
use ferry_engine::groups::{SyncGroupsOutput, SYNC_DEADLINE_MARGIN};
use ferry_engine::replicate::Budget;
use ferry_engine::Ferry;
use ferry_lambda::{Handled, Instrument};
use lambda_runtime::LambdaEvent;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(handle).await
}

fn handle(ferry: &Ferry, event: LambdaEvent<serde_json::Value>) -> Handled<'_, SyncGroupsOutput> {
    Box::pin(async move {
        // No group is started in the invocation's last seconds: Lambda
        // would stop it mid-group; the groups left go first next time.
        let deadline = Budget::for_lambda(event.context.deadline(), None).deadline - SYNC_DEADLINE_MARGIN;
        let out: SyncGroupsOutput = ferry_engine::groups::sync_groups(ferry, Some(deadline), None)
            .instrument(ferry_lambda::step_span(ferry, "sync-groups", None))
            .await?;
        let deferred: usize = out.flows.iter().map(|f| f.deferred).sum();
        ferry_lambda::emit_metrics(&[Datum::new(
            name::GROUPS_DEFERRED,
            Unit::Count,
            deferred as f64,
            &ferry.spec.name,
            &[],
        )]);
        Ok(out)
    })
}
