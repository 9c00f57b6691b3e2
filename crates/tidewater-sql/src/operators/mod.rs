//! Operators that evaluate DataFusion physical expressions on batches.

mod filter;
mod project;

pub use filter::FilterOperator;
pub use project::ProjectOperator;
mod select;

pub use select::{Rename, SelectColumns};
