//! Helpers shared by the integration tests of this crate.

#![allow(dead_code)]

pub mod cases;
pub mod checkpoint;
pub mod oracle;
pub mod query;
