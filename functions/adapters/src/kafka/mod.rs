//! Kafka: connections, cluster operations and record batches.

pub mod batch;
pub mod client;
pub mod connection;
pub mod error;

pub use client::{FetchedPartition, KafkaCluster, OffsetSpec, TopicConfig, TopicMeta};
pub use error::KafkaError;
