//! The Replicate Lambda function: `ferry_engine::replicate` with the
//! invocation's deadline as its budget, then the invocation's throughput
//! and failures as metrics.

use ferry_core::domain::{ReplicateInput, ReplicateOutput, ReplicateResult};
use ferry_core::metrics::{dim, name, replicate_metrics, Datum, Unit};
use ferry_engine::replicate::Budget;
use ferry_engine::Ferry;
use ferry_lambda::{Handled, Instrument};
use lambda_runtime::LambdaEvent;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ferry_lambda::serve(handle).await
}

fn handle(ferry: &Ferry, event: LambdaEvent<ReplicateInput>) -> Handled<'_, ReplicateResult> {
    Box::pin(async move {
        let budget = Budget::for_lambda(event.context.deadline(), event.payload.max_seconds);
        let started = std::time::Instant::now();
        let clusters = flow_clusters(ferry, &event.payload.flow);
        let throttled_before: Vec<u64> = clusters.iter().map(|c| c.throttle_ms()).collect();
        let span = ferry_lambda::step_span(ferry, "replicate", Some(&event.payload.flow));
        let out: ReplicateOutput = ferry_engine::replicate::replicate(ferry, &event.payload, &budget)
            .instrument(span)
            .await?;
        let mut data = replicate_metrics(&ferry.spec.name, &out, started.elapsed().as_secs_f64());
        for (c, before) in clusters.iter().zip(throttled_before) {
            let ms = c.throttle_ms().saturating_sub(before) as f64;
            data.push(Datum::new(
                name::THROTTLE_TIME,
                Unit::Milliseconds,
                ms,
                &ferry.spec.name,
                &[(dim::CLUSTER, c.alias())],
            ));
        }
        ferry_lambda::emit_metrics(&data);
        Ok(ReplicateResult::from(out))
    })
}

/// The source and target clients of a flow (none if the flow is unknown:
/// the replicate call then fails with the reason).
fn flow_clusters(ferry: &Ferry, flow: &str) -> Vec<std::sync::Arc<ferry_adapters::kafka::KafkaCluster>> {
    let Ok(flow) = ferry.flow(flow) else {
        return Vec::new();
    };
    [&flow.source.id, &flow.target.id]
        .into_iter()
        .filter_map(|id| ferry.cluster(id).ok())
        .collect()
}
