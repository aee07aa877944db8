//! One file per `ferry` command.

pub(crate) mod backfill;
pub(crate) mod cost;
pub(crate) mod deploy;
pub(crate) mod forget_flow;
pub(crate) mod move_app;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod status;
