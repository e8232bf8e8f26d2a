//! omnisync: keeps local folders in sync with remote servers and plain directories.

pub mod agent;
pub mod buf;
pub mod coalesce;
pub mod config;
pub mod engine;
pub mod exec;
pub mod filter;
pub mod job;
pub mod model;
#[cfg(target_os = "linux")]
pub mod mount;
pub mod plan;
pub mod remote;
pub mod scan;
pub mod schedule;
pub mod state;
pub mod watch;
