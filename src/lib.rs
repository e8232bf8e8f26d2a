//! omnisync: keeps local folders in sync with remote servers and plain directories.

pub mod job;
pub mod model;
