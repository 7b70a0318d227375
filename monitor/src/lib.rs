//! The monitoring side of Vane. Today: reading a model's reference data (the features it was trained on), which the
//! demo uses to build example requests and which the drift statistics (monitor issue) will compare live traffic
//! against. This crate knows nothing of HTTP or ONNX Runtime; its reads are blocking, so callers run them off the
//! async threads.

mod errors;
pub mod reference;

pub use errors::{Error, Result};
pub use reference::{Column, ColumnValues, ReferenceData};
