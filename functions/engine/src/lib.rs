//! Ferry's handlers: plan, replicate and status. The Lambda functions and
//! the `ferry` CLI both call these, so what runs in Lambda is what runs on
//! a laptop.

pub mod context;
pub mod error;
pub mod forget;
pub mod groups;
pub mod loop_filter;
pub mod moves;
pub mod opposite;
pub mod plan;
pub mod replicate;
pub mod report;
pub mod run;
pub mod status;

pub use context::{Ferry, Settings};
pub use error::FerryError;
