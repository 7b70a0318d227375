//! The monitoring side of Vane: reading a model's reference data, the drift and quality statistics ([`stats`],
//! conventions of `shared/drift-cases`), the drift report shared by the live monitor and `vane drift` ([`drift`],
//! [`offline`], [`html`]). This crate knows nothing of HTTP or ONNX Runtime; its reads are blocking, so callers run them off the
//! async threads.

pub mod alerts;
pub mod data_quality;
pub mod drift;
mod errors;
pub mod feedback;
pub mod html;
pub mod live;
pub mod notify;
pub mod offline;
pub mod reference;
pub mod shards;
pub mod stats;
pub mod stream;
pub mod table;

pub use errors::{Error, Result};
pub use reference::{Column, ColumnValues, ReferenceData};
