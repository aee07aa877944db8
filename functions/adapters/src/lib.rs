//! Ferry's adapters: the Kafka wire client (one connection and auth layer
//! for every API, requests and responses from `kafka-protocol`), the
//! record-batch codec, and the DynamoDB state store.

pub mod aws;
pub mod definition;
pub mod kafka;
pub mod msk;
pub mod state;
