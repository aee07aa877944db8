//! Kafka: connections, cluster operations and record batches.

pub mod acls;
pub mod batch;
pub mod client;
pub mod connection;
pub mod error;
pub mod groups;
pub mod peek;
pub mod redacted;
pub mod scram;
pub mod security;
pub mod throttle;
pub mod txn;

pub use client::{EpochEnd, FetchedPartition, Isolation, KafkaCluster, OffsetSpec, TopicConfig, TopicMeta};
pub use error::{KafkaError, LookupFault, ProduceRefusal};
pub use groups::{Committed, GroupListing, GroupState};
pub use peek::NextRecord;
pub use security::{SaslSource, Security, SecuritySpec, TrustSource};
