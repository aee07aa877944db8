//! Domain types shared by every function, and the named payloads that
//! travel between Step Functions states.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A topic and one of its partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// Flows this plan left to another plan running their first plan
    /// (no batches for them this time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_flows: Vec<String>,
    /// Topics this plan refused to copy (a target topic that conflicts
    /// with its source), each with why and the fix; the flow's other
    /// topics are planned. Not carried in the state machine's payload
    /// (every refused topic's partitions show it as their error, in
    /// `ferry status` and the ReplicatorFailure metric).
    #[serde(skip)]
    pub refused_topics: Vec<RefusedTopic>,
}

/// A source topic a plan refused to copy, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedTopic {
    /// Flow id.
    pub flow: String,
    /// Source topic.
    pub topic: String,
    /// What is wrong and how to fix it.
    pub why: String,
}

/// Input of one Replicate invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateInput {
    /// Flow id, `<source alias>><target alias>`.
    pub flow: String,
    /// The partitions this invocation owns (for the length of its lease).
    /// Written grouped by topic (`compact_work`). Empty in the state
    /// machine, where `stored` names them instead.
    #[serde(with = "compact_work", default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionWork>,
    /// Where the Plan function stored this batch's partitions (the state
    /// machine's payload then does not grow with partitions: Step
    /// Functions refuses a state over 256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredBatch>,
    /// Stop each partition once its cursor reaches this source end offset
    /// (as seen at plan time); `false` runs until the budget is spent.
    #[serde(default)]
    pub stop_at_plan_end: bool,
    /// Spend at most this many seconds, even if the Lambda deadline is later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<u64>,
}

/// A batch of a plan kept in the state tables, by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredBatch {
    /// The plan (one per Plan invocation).
    pub plan: String,
    /// The batch's index in the plan.
    pub batch: usize,
    /// How many partitions it holds (for people reading the execution).
    pub partitions: usize,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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

/// What the Replicate function returns: every partition's progress, and a
/// summary, the only part the state machine keeps (a Map of hundreds of
/// batches must stay under Step Functions' 256 KiB per state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicateResult {
    /// Per-partition progress.
    #[serde(flatten)]
    pub output: ReplicateOutput,
    /// Totals of the invocation.
    pub summary: ReplicateSummary,
}

/// Totals of one Replicate invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateSummary {
    /// Partitions in the batch.
    pub partitions: usize,
    /// Records written to the target.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Records found already written by a crashed holder.
    pub reconciled: u64,
    /// Records of the opposite flow not sent back.
    pub filtered_records: u64,
    /// Records deleted on the source before they were copied (allowed).
    pub lost_records: u64,
    /// Partitions by why they stopped.
    pub stopped: std::collections::BTreeMap<StopReason, usize>,
    /// The first few partitions' errors, `<topic>-<partition>: <error>`,
    /// each cut to a few hundred characters.
    pub errors: Vec<String>,
}

/// Errors a summary keeps, and the characters kept of each: the summary
/// goes into the state machine's payload once per batch (256 KiB in all),
/// so a bad day when every partition stops must stay small; every error is
/// whole in `ferry status` and the function's log.
const SUMMARY_ERRORS: usize = 2;
const SUMMARY_ERROR_CHARS: usize = 240;

impl From<ReplicateOutput> for ReplicateResult {
    fn from(output: ReplicateOutput) -> Self {
        let mut summary = ReplicateSummary {
            partitions: output.partitions.len(),
            ..Default::default()
        };
        for p in &output.partitions {
            summary.records += p.records;
            summary.bytes += p.bytes;
            summary.reconciled += p.reconciled;
            summary.filtered_records += p.filtered_records;
            summary.lost_records += p.lost_records;
            *summary.stopped.entry(p.stopped).or_default() += 1;
            if let Some(e) = p.error.as_deref().filter(|_| summary.errors.len() < SUMMARY_ERRORS) {
                summary
                    .errors
                    .push(format!("{}: {}", p.source, e.chars().take(SUMMARY_ERROR_CHARS).collect::<String>()));
            }
        }
        Self { output, summary }
    }
}

/// `ReplicateInput::partitions` on the wire: one entry per run of
/// partitions of the same topic, `{"topic", "target_topic" (when it
/// differs), "partitions": [[partition, end_offset, lag], ...]}`, about 20
/// bytes a partition instead of 150. Reads the one-object-per-partition
/// form too (inputs written before).
mod compact_work {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{PartitionWork, TopicPartition};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TopicWork {
        topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_topic: Option<String>,
        partitions: Vec<(i32, i64, i64)>,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Topic(TopicWork),
        Partition(PartitionWork),
    }

    pub fn serialize<S: Serializer>(work: &[PartitionWork], s: S) -> Result<S::Ok, S::Error> {
        let mut out: Vec<TopicWork> = Vec::new();
        for w in work {
            let target = (w.target_topic != w.source.topic).then(|| w.target_topic.clone());
            match out.last_mut() {
                Some(t) if t.topic == w.source.topic && t.target_topic == target => {}
                _ => out.push(TopicWork {
                    topic: w.source.topic.clone(),
                    target_topic: target,
                    partitions: Vec::new(),
                }),
            }
            if let Some(t) = out.last_mut() {
                t.partitions.push((w.source.partition, w.end_offset, w.lag));
            }
        }
        out.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PartitionWork>, D::Error> {
        let mut work = Vec::new();
        for e in Vec::<Entry>::deserialize(d)? {
            match e {
                Entry::Partition(w) => work.push(w),
                Entry::Topic(t) => {
                    let target = t.target_topic.unwrap_or_else(|| t.topic.clone());
                    work.extend(t.partitions.into_iter().map(|(p, end_offset, lag)| PartitionWork {
                        source: TopicPartition::new(t.topic.clone(), p),
                        target_topic: target.clone(),
                        end_offset,
                        lag,
                    }));
                }
            }
        }
        Ok(work)
    }
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

/// Over how many DynamoDB partition keys a flow started now spreads its
/// partitions' cursors and group-sync items (the state store's layout,
/// recorded in each flow's marker; the cost model's busiest key).
pub const FLOW_KEY_SHARDS: u32 = 16;

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

    fn work(topic: &str, target: &str, p: i32) -> PartitionWork {
        PartitionWork {
            source: TopicPartition::new(topic, p),
            target_topic: target.to_owned(),
            end_offset: 1_000_000 + i64::from(p),
            lag: i64::from(p) * 7,
        }
    }

    #[test]
    fn batches_travel_grouped_by_topic_and_read_back_the_same() {
        let input = ReplicateInput {
            stored: None,
            flow: "a>b".into(),
            partitions: vec![
                work("orders", "orders", 0),
                work("orders", "orders", 3),
                work("pay", "eu.pay", 1),
                work("orders", "orders", 1),
            ],
            stop_at_plan_end: true,
            max_seconds: None,
        };
        let json = serde_json::to_value(&input).expect("json");
        assert_eq!(
            json["partitions"],
            serde_json::json!([
                {"topic": "orders", "partitions": [[0, 1_000_000, 0], [3, 1_000_003, 21]]},
                {"topic": "pay", "target_topic": "eu.pay", "partitions": [[1, 1_000_001, 7]]},
                {"topic": "orders", "partitions": [[1, 1_000_001, 7]]},
            ])
        );
        let back: ReplicateInput = serde_json::from_value(json).expect("read back");
        assert_eq!(back, input);
        // The one-object-per-partition form of earlier plans still reads.
        let old = r#"{"flow": "a>b", "partitions": [{"source": {"topic": "t", "partition": 2}, "target_topic": "t", "end_offset": 5, "lag": 1}]}"#;
        let read: ReplicateInput = serde_json::from_str(old).expect("old form");
        assert_eq!(
            read.partitions,
            vec![PartitionWork {
                source: TopicPartition::new("t", 2),
                target_topic: "t".into(),
                end_offset: 5,
                lag: 1
            }]
        );
        // A typo is still refused, not read as an empty batch.
        assert!(serde_json::from_str::<ReplicateInput>(r#"{"flow": "a>b", "partitions": [{"topic": "t", "partitons": []}]}"#).is_err());
    }

    #[test]
    fn a_plan_of_2000_partitions_fits_in_a_step_functions_state() {
        // 2,000 partitions of 40 topics with 40-character names, offsets in
        // the billions, in batches of 16: the plan's output was 416 KB in
        // the one-object-per-partition form, past the 256 KiB limit.
        let topics: Vec<String> = (0..40).map(|t| format!("{t:03}-{}", "x".repeat(36))).collect();
        let all: Vec<PartitionWork> = topics
            .iter()
            .flat_map(|t| {
                (0..50).map(move |p| PartitionWork {
                    source: TopicPartition::new(t.clone(), p),
                    target_topic: t.clone(),
                    end_offset: 9_876_543_210,
                    lag: 1_234_567,
                })
            })
            .collect();
        let plan = PlanOutput {
            replicator: "r".into(),
            created_topics: Vec::new(),
            copied_acls: Vec::new(),
            left_flows: Vec::new(),
            refused_topics: Vec::new(),
            batches: all
                .chunks(16)
                .map(|c| ReplicateInput {
                    stored: None,
                    flow: "source>target".into(),
                    partitions: c.to_vec(),
                    stop_at_plan_end: false,
                    max_seconds: None,
                })
                .collect(),
        };
        let size = serde_json::to_vec(&plan).expect("json").len();
        assert!(size < 100 * 1024, "{size} bytes");
    }

    #[test]
    fn the_summary_counts_every_partition_and_keeps_a_few_errors() {
        let progress = |p: i32, stopped, error: Option<&str>| PartitionProgress {
            source: TopicPartition::new("t", p),
            cursor: 0,
            source_end: 0,
            records: 10,
            bytes: 100,
            stopped,
            error: error.map(str::to_owned),
            reconciled: 1,
            filtered_records: 2,
            filtered_bytes: 20,
            lost_records: 0,
            checkpoints: 1,
        };
        let mut parts: Vec<PartitionProgress> = (0..8).map(|p| progress(p, StopReason::Error, Some(&"e".repeat(1000)))).collect();
        parts.push(progress(8, StopReason::CaughtUp, None));
        let r = ReplicateResult::from(ReplicateOutput { partitions: parts });
        let s = &r.summary;
        assert_eq!(
            (s.partitions, s.records, s.bytes, s.reconciled, s.filtered_records),
            (9, 90, 900, 9, 18)
        );
        assert_eq!(s.stopped.get(&StopReason::Error), Some(&8));
        assert_eq!(s.stopped.get(&StopReason::CaughtUp), Some(&1));
        assert_eq!(s.errors.len(), 2);
        assert!(s.errors[0].starts_with("t-0: eee") && s.errors[0].len() < 260, "{}", s.errors[0]);
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["summary"]["stopped"], serde_json::json!({"caught-up": 1, "error": 8}));
        assert_eq!(json["partitions"].as_array().map(Vec::len), Some(9));
    }
}
