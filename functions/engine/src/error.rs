//! Handler errors, and the one place that names them for Step Functions.

use ferry_adapters::kafka::KafkaError;
use ferry_adapters::state::StateError;
use ferry_core::config::ConfigError;

/// A handler failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FerryError {
    /// The replicator definition is wrong; nothing was written.
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// An input payload names something the configuration does not have.
    #[error("bad input: {0}")]
    Input(String),
    /// Something this step depends on is not ready yet; a later attempt
    /// goes on.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A cluster answers with another cluster id than the one the flow's
    /// state was written for. Nothing is written until an operator decides.
    #[error(transparent)]
    ClusterReplaced(Box<ClusterReplaced>),
    /// A partition cannot go on without an operator's decision.
    #[error("{tp} on cluster {cluster}: {what}. Fix: {fix}")]
    PartitionStopped {
        /// The source partition.
        tp: ferry_core::domain::TopicPartition,
        /// Cluster alias where it happened.
        cluster: String,
        /// What happened, with offsets.
        what: String,
        /// What the operator can do.
        fix: String,
    },
}

/// A cluster answering with another cluster id than the one a flow's state
/// was written for: its cursors and offset maps describe a log that is not
/// there.
#[derive(Debug, thiserror::Error)]
#[error(
    "flow {flow}: its state was written for {role} cluster {alias} with cluster id {recorded}, but {bootstrap} now answers \
     as cluster id {current}, so the stored cursors and offset maps describe another cluster's log. Nothing was written. \
     Fix: if kafka-clusters.json names the wrong brokers, correct it; if the cluster was replaced on purpose, start this \
     flow's state afresh with `ferry forget-flow --flow '{flow_id}' --yes` (same --name and --table-prefix; it deletes \
     the flow's cursors, offset maps and group syncs in tables {cursors} and {offset_map}), or use another replicator name"
)]
pub struct ClusterReplaced {
    /// The flow's key in the state tables.
    pub flow: String,
    /// The flow's id: `<source alias>><target alias>`.
    pub flow_id: String,
    /// "source" or "target".
    pub role: &'static str,
    /// The cluster's alias in kafka-clusters.json.
    pub alias: String,
    /// Its bootstrap brokers.
    pub bootstrap: String,
    /// The cluster id the state was written for.
    pub recorded: String,
    /// The cluster id it answers with now.
    pub current: String,
    /// The cursors table.
    pub cursors: String,
    /// The offset-map table.
    pub offset_map: String,
}

impl FerryError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            FerryError::Kafka(e) => e.is_retryable(),
            FerryError::State(e) => e.is_retryable(),
            FerryError::NotReady(_) => true,
            FerryError::Config(_) | FerryError::Input(_) | FerryError::PartitionStopped { .. } | FerryError::ClusterReplaced(_) => false,
        }
    }

    /// A copy of this error when it is a refusal (`is_refusal`).
    pub fn refusal_copy(&self) -> Option<FerryError> {
        match self {
            FerryError::Kafka(e) => e.refusal_copy().map(FerryError::Kafka),
            _ => None,
        }
    }

    /// Whether a cluster refused Ferry (credentials, TLS, the secret
    /// holding them): retrying within this invocation cannot help, so it
    /// ends at once with the cause (`Ferry.AuthError`). The next scheduled
    /// execution tries again; a long-running `ferry run` waits and tries.
    pub fn is_refusal(&self) -> bool {
        matches!(self, FerryError::Kafka(e) if e.is_refusal())
    }

    /// The stable `error_type` Step Functions' Retry and Catch match on.
    /// These names are part of Ferry's interface: change them only together
    /// with `infra/statemachine/`.
    pub fn error_type(&self) -> &'static str {
        match self {
            FerryError::Config(_) => "Ferry.ConfigError",
            // The definition does not fit the cluster (an MSK cluster
            // without the listener of the configured authentication).
            FerryError::Kafka(k) if k.is_misconfiguration() => "Ferry.ConfigError",
            FerryError::Input(_) => "Ferry.InputError",
            e if e.is_refusal() => "Ferry.AuthError",
            e if e.is_retryable() => "Ferry.Retryable",
            _ => "Ferry.Fatal",
        }
    }
}
