//! Ferry's pure logic: configuration, planning, offset maps and the payloads
//! that travel between the functions. No AWS and no Kafka I/O lives here.

pub mod acls;
pub mod config;
pub mod cost;
pub mod domain;
pub mod groups;
pub mod metrics;
pub mod offset_map;
pub mod plan;
pub mod readiness;
pub mod topic_config;
