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

impl FerryError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            FerryError::Kafka(e) => e.is_retryable(),
            FerryError::State(e) => e.is_retryable(),
            FerryError::NotReady(_) => true,
            FerryError::Config(_) | FerryError::Input(_) | FerryError::PartitionStopped { .. } => false,
        }
    }

    /// The stable `error_type` Step Functions' Retry and Catch match on.
    /// These names are part of Ferry's interface: change them only together
    /// with `infra/statemachine/`.
    pub fn error_type(&self) -> &'static str {
        match self {
            FerryError::Config(_) => "Ferry.ConfigError",
            FerryError::Input(_) => "Ferry.InputError",
            e if e.is_retryable() => "Ferry.Retryable",
            _ => "Ferry.Fatal",
        }
    }
}
