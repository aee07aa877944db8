//! The DynamoDB state store: cursors and leases per (flow, topic,
//! partition), and offset-mapping runs. Every write that moves a cursor or
//! a lease is conditional on the lease epoch, so a worker whose lease was
//! taken over can never move state again.

mod backfills;
mod calls;
mod checkpoint;
mod client;
mod cursor;
mod error;
mod flows;
mod groups;
mod moves;
mod offset_map;
mod plans;
mod producers;
mod schema;
mod writers;

pub use calls::{CALLS_IN_FLIGHT, PERMIT_WAIT};
pub use checkpoint::{Checkpoint, MAX_TRANSACTION_ITEMS};
pub use client::dynamodb_client;
pub use cursor::{CursorItem, Lease, ProducerRecord, Rate};
pub use error::StateError;
pub use flows::{FirstPlanClaim, FlowStart, RegisteredFlow};
pub use groups::{GroupSyncItem, GroupSyncStatus};
pub use moves::MoveItem;
pub use offset_map::RunKey;
pub use plans::EXPIRES_AT;
pub use producers::ProducerItem;
pub use schema::{format_leader_epochs, now_ms, parse_leader_epochs, StateStore, NEW_FLOW_KEY_SHARDS};
pub use writers::{handover_partitions, stopped_at, Handover, Taken, TopicWriter};
