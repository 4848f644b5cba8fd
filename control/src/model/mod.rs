//! The resource model: what users write (serde types), how it is loaded, defaulted
//! and validated.
//!
//! `load` reads files/directories/stdin into [`load::Loaded`] resources, running
//! `defaults::apply` and `validate::validate` on each; any problem rejects the whole load.

pub mod defaults;
pub mod load;
pub mod types;
pub mod validate;

pub use load::{
    Format, LoadError, LoadErrorKind, LoadErrors, LoadReport, Loaded, MAX_REPORTED_ERRORS, Origin,
    empty_set_error, load_path, load_paths, load_reader, load_set, load_str, load_text, parse_str,
};
pub use types::*;
pub use validate::FieldError;
