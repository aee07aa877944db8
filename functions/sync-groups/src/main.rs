//! The SyncGroups Lambda function: translates committed consumer-group
//! offsets and commits them on the targets, for every flow with
//! ConsumerGroupReplication.

use ferry_core::metrics::{name, Datum, Unit};
use ferry_engine::groups::{SyncGroupsOutput, SYNC_DEADLINE_MARGIN};
use ferry_engine::replicate::Budget;
use ferry_lambda::{diagnostic, Instrument};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

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
        // No group is started in the invocation's last seconds: Lambda
        // would stop it mid-group; the groups left go first next time.
        let deadline = Budget::for_lambda(event.context.deadline(), None).deadline - SYNC_DEADLINE_MARGIN;
        let out: SyncGroupsOutput = ferry_engine::groups::sync_groups(ferry, Some(deadline))
            .instrument(ferry_lambda::step_span(ferry, "sync-groups", None))
            .await
            .map_err(|e| ferry_lambda::failure(ferry, &e))?;
        let deferred: usize = out.flows.iter().map(|f| f.deferred).sum();
        ferry_lambda::emit_metrics(&[Datum::new(
            name::GROUPS_DEFERRED,
            Unit::Count,
            deferred as f64,
            &ferry.spec.name,
            &[],
        )]);
        Ok::<_, Diagnostic>(out)
    }))
    .await
}
