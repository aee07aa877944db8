//! Domain types shared by every function, and the named payloads that
//! travel between Step Functions states.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// Build one.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What the plan step decided for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionWork {
    /// The source partition.
    pub source: TopicPartition,
    /// The target topic it is written to (same partition index).
    pub target_topic: String,
    /// Source end offset (last stable offset) when planned.
    pub end_offset: i64,
    /// Records between the cursor and the source end offset when planned.
    pub lag: i64,
}

/// Input of the Plan function (the state machine's input).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    /// Maximum partitions in one Replicate invocation (default 16).
    #[serde(default)]
    pub max_partitions_per_batch: Option<usize>,
}

/// Output of the Plan function: one Replicate input per batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOutput {
    /// Replicator name.
    pub replicator: String,
    /// Topics created on the target by this plan.
    pub created_topics: Vec<String>,
    /// The batches, each the input of one Replicate invocation.
    pub batches: Vec<ReplicateInput>,
}

/// Input of one Replicate invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateInput {
    /// Flow id, `<source alias>><target alias>`.
    pub flow: String,
    /// The partitions this invocation owns (for the length of its lease).
    pub partitions: Vec<PartitionWork>,
    /// Stop each partition once its cursor reaches this source end offset
    /// (as seen at plan time); `false` runs until the budget is spent.
    #[serde(default)]
    pub stop_at_plan_end: bool,
}

/// Progress of one partition after a Replicate invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// The source partition.
    pub source: TopicPartition,
    /// Next source offset to replicate.
    pub cursor: i64,
    /// Source end offset last seen.
    pub source_end: i64,
    /// Records written to the target by this invocation.
    pub records: u64,
    /// Bytes (record-batch bytes as produced) written by this invocation.
    pub bytes: u64,
    /// Why this partition stopped: caught-up, budget, lease-lost, error.
    pub stopped: StopReason,
    /// The error, if any (no secrets).
    pub error: Option<String>,
    /// Records found on the target already, written by a previous holder
    /// that stopped before its checkpoint (not written again).
    pub reconciled: u64,
    /// Records the opposite flow wrote, recognised and not sent back.
    #[serde(default)]
    pub filtered_records: u64,
    /// Their bytes (the FilteredBytes metric).
    #[serde(default)]
    pub filtered_bytes: u64,
}

/// Why a partition's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Reached the source end offset.
    CaughtUp,
    /// Time or byte budget spent.
    Budget,
    /// Another worker holds the lease.
    LeaseHeld,
    /// Failed; see `error`.
    Error,
    /// Asked to stop (Ctrl-C).
    Interrupted,
    /// Stopped for this invocation after a recoverable fault (the target
    /// lost its producer state, e.g. after a broker restart); the next
    /// invocation re-leases and reconciles.
    Retry,
}

/// Output of one Replicate invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateOutput {
    /// Per-partition progress.
    pub partitions: Vec<PartitionProgress>,
}
