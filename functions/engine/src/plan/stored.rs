//! The plan's batches kept in the state tables: the Plan function stores
//! them and hands the state machine a reference to each (its payload then
//! does not grow with partitions), and each Replicate reads its own back.

use ferry_core::domain::{PartitionWork, PlanOutput, RefusedTopic, ReplicateInput, StoredBatch};

use crate::context::Ferry;
use crate::error::FerryError;

/// How long a plan's batches are kept (an execution reads them within its
/// minutes; the state tables' time to live removes them after this).
pub const PLAN_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Keep `out`'s batches in the state tables and leave in it only a
/// reference to each (`ReplicateInput::stored`): what the Plan function
/// hands the state machine, whose payload then holds a few dozen bytes a
/// batch whatever the partitions.
pub async fn store_batches(ferry: &Ferry, out: &mut PlanOutput) -> Result<(), FerryError> {
    let plan = uuid::Uuid::new_v4().simple().to_string();
    let texts = out
        .batches
        .iter()
        .map(|b| serde_json::to_string(b).map_err(|e| FerryError::Input(format!("a batch of the plan: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    fits_one_item(&out.batches, &texts)?;
    let expires = (std::time::SystemTime::now() + PLAN_KEPT)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    ferry.store.put_plan_batches(&ferry.spec.name, &plan, &texts, expires).await?;
    // A first plan may create hundreds of topics: the state keeps a few
    // names (the Plan function's log names each).
    keep_first(&mut out.created_topics, PLAN_NAMES_KEPT);
    keep_first(&mut out.copied_acls, PLAN_NAMES_KEPT);
    keep_first_refused(&mut out.refused_topics, PLAN_NAMES_KEPT);
    for (i, b) in out.batches.iter_mut().enumerate() {
        b.stored = Some(StoredBatch {
            plan: plan.clone(),
            batch: i,
            partitions: b.partitions.len(),
        });
        b.partitions = Vec::new();
    }
    Ok(())
}

/// The most bytes of one stored batch: DynamoDB refuses an item over
/// 400 KB; the rest is the item's keys and attribute names, with room.
pub const STORED_BATCH_MAX_BYTES: usize = 380 * 1024;

/// Each stored batch fits one DynamoDB item (see `STORED_BATCH_MAX_BYTES`).
fn fits_one_item(batches: &[ReplicateInput], texts: &[String]) -> Result<(), FerryError> {
    if let Some((b, text)) = batches.iter().zip(texts).find(|(_, t)| t.len() > STORED_BATCH_MAX_BYTES) {
        return Err(FerryError::Input(format!(
            "a batch of flow {} holds {} partitions, {} bytes stored: past the {STORED_BATCH_MAX_BYTES} bytes Ferry keeps \
             in one DynamoDB item (whose limit is 400 KB). Nothing was stored. Fix: a smaller max_partitions_per_batch in \
             the execution's input, or none (the plan then takes at most {} per batch)",
            b.flow,
            b.partitions.len(),
            text.len(),
            ferry_core::plan::MAX_GROWN_PARTITIONS_PER_BATCH
        )));
    }
    Ok(())
}

/// Names of created topics (and copied ACLs) the state machine's payload
/// keeps.
const PLAN_NAMES_KEPT: usize = 10;

/// Keep the first `n` of `names`, and say how many more there were.
fn keep_first(names: &mut Vec<String>, n: usize) {
    if names.len() > n {
        let more = names.len() - n;
        names.truncate(n);
        names.push(format!("and {more} more (the Plan function's log names each)"));
    }
}

/// Keep the first `n` refused topics, each with its reason (up to a few
/// hundred bytes), and one entry that says how many more there were: a
/// replicator refused every topic (started under another name on tables
/// where its topics have a writer) would pass Step Functions' 256 KiB.
fn keep_first_refused(refused: &mut Vec<RefusedTopic>, n: usize) {
    if refused.len() > n {
        let more = refused.len() - n;
        refused.truncate(n);
        refused.push(RefusedTopic {
            flow: String::new(),
            topic: format!("and {more} more"),
            why: "the Plan function's log names each (TopicRefused), and `ferry status` shows each partition's".to_owned(),
        });
    }
}

/// The partitions of a Replicate invocation: given, or read back from the
/// plan that stored them.
pub async fn batch_partitions(ferry: &Ferry, input: &ReplicateInput) -> Result<Vec<PartitionWork>, FerryError> {
    let Some(r) = &input.stored else {
        return Ok(input.partitions.clone());
    };
    let text = ferry.store.plan_batch(&ferry.spec.name, &r.plan, r.batch).await?.ok_or_else(|| {
        FerryError::Input(format!(
            "batch {} of plan {} is not in the state tables (a plan's batches are kept {} hours, for the execution that made \
             it): start a new execution",
            r.batch,
            r.plan,
            PLAN_KEPT.as_secs() / 3600
        ))
    })?;
    let stored: ReplicateInput = serde_json::from_str(&text)
        .map_err(|e| FerryError::Input(format!("batch {} of plan {} in the state tables: {e}", r.batch, r.plan)))?;
    if stored.flow != input.flow || stored.partitions.len() != r.partitions {
        return Err(FerryError::Input(format!(
            "batch {} of plan {} in the state tables is for flow {} with {} partitions, not flow {} with {}",
            r.batch,
            r.plan,
            stored.flow,
            stored.partitions.len(),
            input.flow,
            r.partitions
        )));
    }
    Ok(stored.partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::domain::TopicPartition;

    #[test]
    fn thousands_of_refused_topics_leave_the_plan_output_small() {
        let mut refused: Vec<RefusedTopic> = (0..5000)
            .map(|i| RefusedTopic {
                flow: "source>target".into(),
                topic: format!("topic-{i:05}"),
                why: "w".repeat(900),
            })
            .collect();
        keep_first_refused(&mut refused, PLAN_NAMES_KEPT);
        assert_eq!(refused.len(), PLAN_NAMES_KEPT + 1);
        assert_eq!(refused[0].topic, "topic-00000");
        assert_eq!(refused[PLAN_NAMES_KEPT].topic, "and 4990 more");
        let bytes = serde_json::to_string(&refused).map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(bytes < 16 * 1024, "{bytes}");
        let mut few = refused[..3].to_vec();
        keep_first_refused(&mut few, PLAN_NAMES_KEPT);
        assert_eq!(few.len(), 3);
    }

    #[test]
    fn a_batch_past_one_dynamodb_item_is_refused_with_the_fix() {
        let batch = |n: usize| ReplicateInput {
            flow: "source>target".into(),
            partitions: (0..n)
                .map(|p| PartitionWork {
                    source: TopicPartition::new("t", i32::try_from(p).unwrap_or(0)),
                    target_topic: "t".into(),
                    end_offset: 0,
                    lag: 0,
                })
                .collect(),
            stored: None,
            stop_at_plan_end: false,
            max_seconds: None,
        };
        let small = [batch(2), batch(3)];
        let texts: Vec<String> = small.iter().map(|b| serde_json::to_string(b).unwrap_or_default()).collect();
        assert!(fits_one_item(&small, &texts).is_ok());
        let texts = vec![texts[0].clone(), "x".repeat(STORED_BATCH_MAX_BYTES + 1)];
        let e = fits_one_item(&small, &texts).expect_err("too large").to_string();
        assert!(
            e.contains("holds 3 partitions") && e.contains("max_partitions_per_batch") && e.contains("Nothing was stored"),
            "{e}"
        );
    }
}
