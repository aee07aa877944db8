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
    /// A manual backfill: start these topics at a chosen position.
    #[serde(default)]
    pub backfill: Option<Backfill>,
    /// Let each Replicate invocation stop once its partitions reach the end
    /// offsets seen by this plan (an execution that finishes when caught up,
    /// e.g. for a backfill), instead of using its whole time budget.
    #[serde(default)]
    pub stop_at_plan_end: bool,
    /// Cap each Replicate invocation at this many seconds (below the Lambda
    /// timeout), for a faster cadence.
    #[serde(default)]
    pub replicate_max_seconds: Option<u64>,
}

/// A manual backfill: replicate named topics from a chosen position. Only
/// partitions Ferry has not written anything for yet can be (re)started:
/// moving a partition that already replicated backwards would write its
/// records out of order on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    /// Source topic names (exact), each selected by a flow.
    pub topics: Vec<String>,
    /// Where to start.
    pub from: BackfillFrom,
}

/// Where a backfill starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackfillFrom {
    /// The first record still on the source.
    #[serde(rename = "EARLIEST")]
    Earliest,
    /// The first record with a timestamp at or after this (ms since the epoch).
    #[serde(rename = "TIMESTAMP")]
    Timestamp(i64),
}

/// Output of the Plan function: one Replicate input per batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOutput {
    /// Replicator name.
    pub replicator: String,
    /// Topics created on the target by this plan.
    pub created_topics: Vec<String>,
    /// Topic ACLs created on the target by this plan, in words.
    #[serde(default)]
    pub copied_acls: Vec<String>,
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
    /// Spend at most this many seconds, even if the Lambda deadline is later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<u64>,
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
    /// Records deleted on the source before they were replicated, skipped
    /// because the operator allowed it (the DataLoss metric).
    #[serde(default)]
    pub lost_records: u64,
    /// Checkpoints (DynamoDB transactions of cursor and offset map) this
    /// invocation wrote for the partition.
    #[serde(default)]
    pub checkpoints: u64,
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

impl std::str::FromStr for BackfillFrom {
    type Err = String;

    /// `EARLIEST`, milliseconds since the epoch, or a UTC time
    /// `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
    fn from_str(v: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{v:?} is not a starting position: give EARLIEST, milliseconds since the epoch, or a UTC time like 2026-11-25T08:00:00Z"
            )
        };
        if v.eq_ignore_ascii_case("earliest") {
            return Ok(Self::Earliest);
        }
        if let Ok(ms) = v.parse::<i64>() {
            return if ms >= 0 { Ok(Self::Timestamp(ms)) } else { Err(bad()) };
        }
        let t = v.strip_suffix('Z').ok_or_else(bad)?;
        let (date, time) = t.split_once('T').ok_or_else(bad)?;
        let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
        let d: Vec<&str> = date.split('-').collect();
        let (secs, millis) = match time.split_once('.') {
            Some((hms, frac)) if !frac.is_empty() && frac.len() <= 3 => (hms, num(&format!("{frac:0<3}"))?),
            Some(_) => return Err(bad()),
            None => (time, 0),
        };
        let h: Vec<&str> = secs.split(':').collect();
        if d.len() != 3 || h.len() != 3 {
            return Err(bad());
        }
        let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
        let (hh, mm, ss) = (num(h[0])?, num(h[1])?, num(h[2])?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 || y < 1970 {
            return Err(bad());
        }
        // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Ok(Self::Timestamp(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_positions_parse() {
        assert_eq!("EARLIEST".parse(), Ok(BackfillFrom::Earliest));
        assert_eq!("1700000000000".parse(), Ok(BackfillFrom::Timestamp(1_700_000_000_000)));
        assert_eq!("1970-01-01T00:00:00Z".parse(), Ok(BackfillFrom::Timestamp(0)));
        assert_eq!("2026-11-25T08:00:00.5Z".parse(), Ok(BackfillFrom::Timestamp(1_795_593_600_500)));
        assert_eq!("2000-03-01T00:00:00Z".parse(), Ok(BackfillFrom::Timestamp(951_868_800_000)));
        for bad in [
            "yesterday",
            "-5",
            "2026-13-01T00:00:00Z",
            "2026-11-25 08:00:00",
            "2026-11-25T08:00:00",
        ] {
            assert!(bad.parse::<BackfillFrom>().is_err(), "{bad}");
        }
        // The state machine's input form.
        let b: Backfill = serde_json::from_str(r#"{"topics": ["orders"], "from": {"TIMESTAMP": 5}}"#).expect("json");
        assert_eq!(b.from, BackfillFrom::Timestamp(5));
        let b: Backfill = serde_json::from_str(r#"{"topics": ["orders"], "from": "EARLIEST"}"#).expect("json");
        assert_eq!(b.from, BackfillFrom::Earliest);
    }
}
