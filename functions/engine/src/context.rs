//! What every handler needs: the validated replicator, a client per
//! cluster, the state store, and the tunables.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_adapters::kafka::scram::ScramHash;
use ferry_adapters::kafka::{KafkaCluster, SaslSource, Security, SecuritySpec, TrustSource};
use ferry_adapters::state::StateStore;
use ferry_core::config::{ClusterAuth, ClusterSpec, FlowSpec, ReplicatorSpec, ScramMechanism};

use crate::error::FerryError;

/// Tunables, each with a default named for what it is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// DynamoDB table-name prefix (`<prefix>-cursors`, `<prefix>-offset-map`).
    pub table_prefix: String,
    /// Partitions per Replicate invocation (more when `max_concurrency`
    /// needs it, see `ferry_core::plan::partitions_per_batch`).
    pub max_partitions_per_batch: usize,
    /// Replicate invocations the state machine runs at once (its Map's
    /// `MaxConcurrency`): a plan makes no more batches than this where it
    /// can. `None`: no bound (a local run).
    pub max_concurrency: Option<usize>,
    /// Bytes fetched per partition per request.
    pub fetch_partition_max_bytes: i32,
    /// Bytes one fetch request may bring back, all its partitions
    /// together: a batch of hundreds of partitions, all behind, would
    /// otherwise be answered with the per-partition size hundreds of times.
    pub fetch_request_max_bytes: i32,
    /// Record bytes one invocation holds, fetched and not yet acknowledged
    /// by the target, all its partitions together: past it, nothing more is
    /// fetched until produces drain it. With `fetch_request_max_bytes` per
    /// leader, what bounds a Replicate's memory whatever its batch's size.
    pub held_max_bytes: usize,
    /// Uncompressed record bytes per produced batch (at least one record is
    /// always sent; keep this below the target's `max.message.bytes`).
    pub produce_batch_max_bytes: usize,
    /// A fetched source batch at least this large (and at most
    /// `produce_batch_max_bytes`), already in the flow's target codec and
    /// needing no rewrite, goes to the target as it is, its records never
    /// decompressed or re-encoded. Smaller ones are merged into batches of
    /// up to `produce_batch_max_bytes` (one produce request carries one
    /// batch per partition). `usize::MAX` turns pass-through off.
    pub pass_through_min_bytes: usize,
    /// Longest a fetch waits for new data.
    pub fetch_max_wait_ms: i32,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
    /// A Replicate that finds a partition leased by one that plans to stop
    /// within this long waits and takes it over at once, rather than leave
    /// it to the next execution (a gap of up to the schedule's period).
    /// At least the schedule's period, for every hand-off to have a
    /// successor waiting; zero turns the wait off.
    pub handoff_wait: Duration,
    /// Bytes one Replicate invocation writes before it stops.
    pub invocation_max_bytes: u64,
    /// Acknowledged bytes a partition may hold without a checkpoint: one
    /// checkpoint (cursor and offset map, one DynamoDB transaction) covers
    /// several produced batches. A crash before it costs nothing but a
    /// longer reconcile of the target's tail.
    pub checkpoint_max_bytes: u64,
    /// How long acknowledged records may wait for their checkpoint. Status,
    /// group offset translation and the cursor lag behind the target by at
    /// most this much.
    pub checkpoint_interval: Duration,
    /// Kafka request timeout.
    pub request_timeout: Duration,
    /// When source records were deleted (retention, DeleteRecords) before
    /// Ferry replicated them: `false` stops the partition with an error
    /// naming the lost range; `true` records the loss and resumes at the
    /// earliest offset.
    pub resume_after_data_loss: bool,
    /// How long one sync of one consumer group holds its lease (see
    /// `StateStore::acquire_group_sync`): a sync that dies leaves its
    /// groups to the syncs after this.
    pub group_sync_lease: Duration,
    /// At most this many DynamoDB calls under way at once in this process
    /// (`ferry_adapters::state::CALLS_IN_FLIGHT` for the `ferry` command,
    /// which runs every batch in one process); `None`, the functions'
    /// default: as they come.
    pub state_calls_in_flight: Option<usize>,
    /// How long a producer item whose records are all below their
    /// partitions' log starts is kept before a plan deletes it: a reader
    /// that fetched one of them just before it went may look its producer
    /// up only now. At least the longest a fetch and its lookup can be
    /// apart: Lambda's 15-minute limit on an invocation.
    pub producer_prune_grace: Duration,
    /// How often this replicator plans, if known: the template's
    /// `ScheduleRate` (a `rate(...)`), `ferry run`'s round. Registered with
    /// each flow, for a flow back in another replicator to judge whether
    /// this one still plans (see `opposite::FLOW_BACK_ALIVE`).
    pub plans_every: Option<Duration>,
}

/// [`Settings::handoff_wait`] by default: the template's 1-minute
/// schedule, and the time a Plan takes before its Replicates start.
pub const DEFAULT_HANDOFF_WAIT_SECONDS: u64 = 75;

/// Default DynamoDB table prefix.
pub fn default_table_prefix() -> String {
    "ferry".into()
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            table_prefix: default_table_prefix(),
            max_partitions_per_batch: ferry_core::plan::DEFAULT_MAX_PARTITIONS_PER_BATCH,
            max_concurrency: None,
            fetch_partition_max_bytes: 1024 * 1024,
            fetch_request_max_bytes: 64 * 1024 * 1024,
            held_max_bytes: 256 * 1024 * 1024,
            produce_batch_max_bytes: 900 * 1024,
            pass_through_min_bytes: 256 * 1024,
            fetch_max_wait_ms: 500,
            lease_duration: Duration::from_secs(30),
            handoff_wait: Duration::from_secs(DEFAULT_HANDOFF_WAIT_SECONDS),
            invocation_max_bytes: 2 * 1024 * 1024 * 1024,
            checkpoint_max_bytes: 8 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(4),
            request_timeout: Duration::from_secs(30),
            resume_after_data_loss: false,
            group_sync_lease: Duration::from_secs(120),
            state_calls_in_flight: None,
            producer_prune_grace: Duration::from_secs(15 * 60),
            plans_every: None,
        }
    }
}

/// Renewing holds on flows' first plans a process's plans found, by flow
/// key: the holder's mark, the hold's end it wrote last, and when this
/// process first saw that pair.
pub(crate) type SeenHolds = Arc<std::sync::Mutex<HashMap<String, (String, i64, std::time::Instant)>>>;

/// A replicator ready to run.
#[derive(Debug, Clone)]
pub struct Ferry {
    /// The validated definition.
    pub spec: Arc<ReplicatorSpec>,
    /// State store.
    pub store: StateStore,
    /// One client per cluster id.
    pub clusters: Arc<HashMap<String, Arc<KafkaCluster>>>,
    /// Tunables.
    pub settings: Settings,
    /// Holds on flows' first plans this process's plans found renewing,
    /// and since when each was seen unchanged (`plan::first_plan`).
    pub(crate) first_plan_holds: SeenHolds,
}

impl Ferry {
    /// Build clients for every cluster the spec names, with DynamoDB,
    /// Secrets Manager and MSK's API reached through `aws`. Connects (and
    /// looks MSK brokers up) lazily.
    pub fn new(spec: ReplicatorSpec, aws: &aws_config::SdkConfig, settings: Settings) -> Result<Self, FerryError> {
        let dynamo = ferry_adapters::state::dynamodb_client(aws);
        let mut clusters = HashMap::new();
        for flow in &spec.flows {
            for c in [&flow.source, &flow.target] {
                if !clusters.contains_key(&c.id) {
                    let security = Security::new(&c.alias, security_spec(c)?, Some(aws));
                    let mut client = KafkaCluster::new(&c.alias, c.bootstrap.clone(), settings.request_timeout).with_security(security);
                    // An MSK cluster given by its ARN alone: its brokers
                    // are looked up at the first connection.
                    if let Some(lookup) = c.msk_lookup() {
                        client = client.with_msk_lookup(ferry_adapters::msk::MskBootstrap::new(lookup, aws));
                    }
                    clusters.insert(c.id.clone(), Arc::new(client));
                }
            }
        }
        let store = StateStore::new(dynamo, &settings.table_prefix);
        Ok(Self {
            store: match settings.state_calls_in_flight {
                Some(n) => store.with_calls_in_flight(n),
                None => store,
            },
            spec: Arc::new(spec),
            clusters: Arc::new(clusters),
            settings,
            first_plan_holds: Default::default(),
        })
    }

    /// The flow with this id.
    pub fn flow(&self, id: &str) -> Result<&FlowSpec, FerryError> {
        self.spec.flows.iter().find(|f| f.id() == id).ok_or_else(|| {
            let known: Vec<String> = self.spec.flows.iter().map(FlowSpec::id).collect();
            FerryError::Input(format!(
                "flow {id:?} is not in the configuration (known: {known:?}). Fix: name it as `ferry status` does, \
                 `<source alias>><target alias>`, with the same --replication-info and --kafka-clusters"
            ))
        })
    }

    /// The state key of a flow: `<replicator>/<flow id>`.
    pub fn flow_key(&self, flow: &FlowSpec) -> String {
        format!("{}/{}", self.spec.name, flow.id())
    }

    /// At the start of each invocation: forget the waits earlier refusals
    /// left on every cluster (see `KafkaCluster::forget_auth_wait`), and
    /// the flows' key layouts read before (a flow forgotten and started
    /// again meanwhile may be laid out anew: `StateStore::clear_layouts`).
    pub fn begin_invocation(&self) {
        for c in self.clusters.values() {
            c.forget_auth_wait();
        }
        self.store.clear_layouts();
    }

    /// The client of a cluster.
    pub fn cluster(&self, id: &str) -> Result<Arc<KafkaCluster>, FerryError> {
        self.clusters
            .get(id)
            .cloned()
            .ok_or_else(|| FerryError::Input(format!("cluster {id:?} is not configured")))
    }
}

/// Environment variables the Lambda functions read their definition from.
pub mod env {
    /// Replicator name.
    pub const NAME: &str = "FERRY_REPLICATOR_NAME";
    /// The directory holding `kafka-clusters.json` and
    /// `replication-info.json`: where the template's definition layer is
    /// mounted (`/opt`). How a deployed stack is given its definition,
    /// which Lambda's 4 KB of environment could not hold.
    pub const DEFINITION_DIR: &str = "FERRY_DEFINITION_DIR";
    /// The fingerprint of the definition the stack's parameters were
    /// written for (`ferry deploy-parameters`); required with
    /// [`DEFINITION_DIR`], whose files must match it.
    pub const DEFINITION_SHA256: &str = "FERRY_DEFINITION_SHA256";
    /// `kafka-clusters.json` content, for local runs without the layer.
    pub const KAFKA_CLUSTERS: &str = "FERRY_KAFKA_CLUSTERS";
    /// `replication-info.json` content, for local runs without the layer.
    pub const REPLICATION_INFO: &str = "FERRY_REPLICATION_INFO";
    /// DynamoDB table prefix.
    pub const TABLE_PREFIX: &str = "FERRY_TABLE_PREFIX";
    /// `true` to resume at the earliest offset after source data loss.
    pub const RESUME_AFTER_DATA_LOSS: &str = "FERRY_RESUME_AFTER_DATA_LOSS";
    /// The state machine's `MaxConcurrency` (the Plan function's batches).
    pub const MAX_CONCURRENCY: &str = "FERRY_MAX_CONCURRENCY";
    /// Seconds a Replicate waits for a lease whose holder is about to give
    /// it back ([`super::Settings::handoff_wait`]); 0 to never wait.
    pub const HANDOFF_WAIT_SECONDS: &str = "FERRY_HANDOFF_WAIT_SECONDS";
    /// Seconds a partition's acknowledged records may wait for their
    /// checkpoint ([`super::Settings::checkpoint_interval`]), the
    /// template's `CheckpointSeconds`.
    pub const CHECKPOINT_SECONDS: &str = "FERRY_CHECKPOINT_SECONDS";
    /// The template's `ScheduleRate` ([`super::Settings::plans_every`]).
    pub const SCHEDULE_RATE: &str = "FERRY_SCHEDULE_RATE";
    /// The function's memory (MB), as Lambda sets it.
    pub const LAMBDA_MEMORY_MB: &str = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE";
}

impl Ferry {
    /// Build from the Lambda environment (see [`env`]).
    pub fn from_env(aws: &aws_config::SdkConfig) -> Result<Self, FerryError> {
        let var = |k: &str| {
            std::env::var(k).map_err(|_| {
                FerryError::Input(format!(
                    "environment variable {k} is not set. The template sets {} and {} (the definition layer); a local run may give \
                 {} and {} instead",
                    env::NAME,
                    env::DEFINITION_DIR,
                    env::KAFKA_CLUSTERS,
                    env::REPLICATION_INFO
                ))
            })
        };
        let name = var(env::NAME)?;
        let spec = match std::env::var_os(env::DEFINITION_DIR) {
            Some(dir) => {
                if std::env::var_os(env::KAFKA_CLUSTERS).is_some() || std::env::var_os(env::REPLICATION_INFO).is_some() {
                    return Err(FerryError::Input(format!(
                        "both {} and {}/{} are set: the definition must come from one place. Fix: unset {} and {}",
                        env::DEFINITION_DIR,
                        env::KAFKA_CLUSTERS,
                        env::REPLICATION_INFO,
                        env::KAFKA_CLUSTERS,
                        env::REPLICATION_INFO
                    )));
                }
                definition_from_dir(&name, std::path::Path::new(&dir), &var(env::DEFINITION_SHA256)?)?
            }
            None => ferry_core::config::load(
                &name,
                env::KAFKA_CLUSTERS,
                &var(env::KAFKA_CLUSTERS)?,
                env::REPLICATION_INFO,
                &var(env::REPLICATION_INFO)?,
            )?,
        };
        let mut settings = Settings::default();
        if let Ok(p) = std::env::var(env::TABLE_PREFIX) {
            settings.table_prefix = p;
        }
        settings.resume_after_data_loss = std::env::var(env::RESUME_AFTER_DATA_LOSS).is_ok_and(|v| v == "true");
        if let Ok(rate) = std::env::var(env::SCHEDULE_RATE) {
            settings.plans_every = ferry_core::plan::schedule_period(&rate);
            if settings.plans_every.is_none() {
                tracing::warn!(
                    schedule = %rate,
                    "the schedule is not a rate(...) expression: its period is not registered with the flows, and a flow back in \
                     another replicator takes this one for stopped 15 minutes (or three of a period registered before) after its \
                     last plan, whatever the schedule (a topic deleted on that flow's target is then copied again rather than its \
                     deletion propagated)"
                );
            }
        }
        // What Lambda gives the function (MB): a quarter for the records
        // held, a sixteenth per fetch request (one per source leader).
        if let Some(mb) = std::env::var(env::LAMBDA_MEMORY_MB)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            settings.held_max_bytes = (mb << 20) / 4;
            settings.fetch_request_max_bytes = i32::try_from((mb << 20) / 16).unwrap_or(i32::MAX);
        }
        if let Ok(v) = std::env::var(env::MAX_CONCURRENCY) {
            match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => settings.max_concurrency = Some(n),
                _ => {
                    return Err(FerryError::Input(format!(
                        "{} is {v:?}: it must be a whole number of at least 1 (the template sets it to the MaxConcurrency \
                         parameter). Fix: give MaxConcurrency a number",
                        env::MAX_CONCURRENCY
                    )))
                }
            }
        }
        if let Ok(v) = std::env::var(env::HANDOFF_WAIT_SECONDS) {
            settings.handoff_wait = Duration::from_secs(v.trim().parse::<u64>().map_err(|_| {
                FerryError::Input(format!(
                    "{} is {v:?}: it must be a whole number of seconds (0 never waits). Fix: give at least the \
                     schedule's period in seconds, such as 75 for rate(1 minute)",
                    env::HANDOFF_WAIT_SECONDS
                ))
            })?);
        }
        if let Ok(v) = std::env::var(env::CHECKPOINT_SECONDS) {
            settings.checkpoint_interval = checkpoint_seconds(&v)?;
        }
        Self::new(spec, aws, settings)
    }
}

/// [`env::CHECKPOINT_SECONDS`]'s value: whole seconds, from 1 to half the
/// lease (each lease is renewed by a checkpoint then anyway).
fn checkpoint_seconds(v: &str) -> Result<Duration, FerryError> {
    let most = Settings::default().lease_duration.as_secs() / 2;
    match v.trim().parse::<u64>() {
        Ok(n) if (1..=most).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(FerryError::Input(format!(
            "{} is {v:?}: it must be a whole number of seconds from 1 to {most} (the template sets it to the \
             CheckpointSeconds parameter). Fix: give CheckpointSeconds such a number; 4 is the default",
            env::CHECKPOINT_SECONDS
        ))),
    }
}

/// The definition as the template's layer gives it: the two files in
/// `dir`, which must be the pair whose fingerprint the stack's parameters
/// carry (`expected`).
fn definition_from_dir(name: &str, dir: &std::path::Path, expected: &str) -> Result<ferry_core::config::ReplicatorSpec, FerryError> {
    use ferry_adapters::definition::{fingerprint, KAFKA_CLUSTERS_FILE, REPLICATION_INFO_FILE};
    if dir.as_os_str().is_empty() {
        return Err(FerryError::Input(format!(
            "{} is empty. Fix: set it to the folder holding {KAFKA_CLUSTERS_FILE} and {REPLICATION_INFO_FILE} (/opt in the \
             template: the definition layer)",
            env::DEFINITION_DIR
        )));
    }
    let read = |f: &str| {
        let path = dir.join(f);
        std::fs::read_to_string(&path)
            .map(|text| (path.display().to_string(), text))
            .map_err(|e| {
                FerryError::Input(format!(
                    "cannot read {}: {e}. The stack's definition layer puts {KAFKA_CLUSTERS_FILE} and {REPLICATION_INFO_FILE} there. \
                 Fix: run `ferry deploy-parameters` beside template.yaml (it writes ferry-definition/), then `sam build` and \
                 `sam deploy`",
                    path.display()
                ))
            })
    };
    let (clusters_file, clusters) = read(KAFKA_CLUSTERS_FILE)?;
    let (info_file, info) = read(REPLICATION_INFO_FILE)?;
    let found = fingerprint(&clusters, &info);
    if found != expected {
        return Err(FerryError::Input(format!(
            "the definition in {} (fingerprint {found}) is not the one this stack's parameters were written for ({expected}): \
             the layer and the parameters file come from different `ferry deploy-parameters` runs (another replicator's, or an \
             older one). Fix: run `ferry deploy-parameters` once for replicator {name} beside template.yaml and deploy the \
             parameters file and ferry-definition/ it writes together",
            dir.display()
        )));
    }
    Ok(ferry_core::config::load(name, &clusters_file, &clusters, &info_file, &info)?)
}

/// How to reach a cluster: its TLS trust and SASL mechanism.
fn security_spec(c: &ClusterSpec) -> Result<SecuritySpec, FerryError> {
    let sasl = match &c.auth {
        ClusterAuth::None => None,
        ClusterAuth::Scram { mechanism, secret_arn } => Some(SaslSource::Scram {
            hash: match mechanism {
                ScramMechanism::Sha256 => ScramHash::Sha256,
                ScramMechanism::Sha512 => ScramHash::Sha512,
            },
            secret_arn: secret_arn.clone(),
        }),
        ClusterAuth::MskIam => Some(SaslSource::MskIam {
            // arn:aws:kafka:<region>:<account>:cluster/<name>/<uuid>
            region: c
                .id
                .split(':')
                .nth(3)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| FerryError::Input(format!("cluster {}: no region in the MSK cluster ARN {}", c.alias, c.id)))?,
        }),
    };
    let tls = c.tls.as_ref().map(|t| match (&t.root_ca_secret_arn, &c.auth) {
        (Some(arn), _) => TrustSource::Secret(arn.clone()),
        (None, ClusterAuth::Scram { .. }) => TrustSource::ScramSecretOrPublicRoots,
        (None, _) => TrustSource::PublicRoots,
    });
    Ok(SecuritySpec { tls, sasl })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_seconds_are_whole_seconds_up_to_half_the_lease() {
        assert_eq!(checkpoint_seconds("4").ok(), Some(Duration::from_secs(4)));
        assert_eq!(checkpoint_seconds(" 15 ").ok(), Some(Duration::from_secs(15)));
        for bad in ["0", "16", "2.5", "", "ten", "-1"] {
            let e = checkpoint_seconds(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                e.contains("FERRY_CHECKPOINT_SECONDS") && e.contains("from 1 to 15") && e.contains("Fix:"),
                "{bad}: {e}"
            );
        }
    }
}
