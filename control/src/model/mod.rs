//! The resource model: what users write (serde types), how it is loaded, defaulted
//! and validated.

pub mod types;

pub use types::*;
