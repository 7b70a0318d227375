//! The desired-state side of Vane: which models and versions should be served.
//!
//! Sources: a Triton-style model directory ([`model_dir::scan`]), and Git repositories of deployment manifests
//! ([`manifest`]), which produce the same [`DesiredState`]. This crate never loads a model: it only says what should
//! be loaded, and the gateway builds and swaps the model set from it. It runs no threads of its own and does
//! blocking file-system reads, so callers run it off the async threads.

pub mod artifacts;
pub mod controller;
pub mod durable;
mod errors;
pub mod known_hosts;
pub mod manifest;
pub mod metrics;
pub mod model_config;
pub mod model_dir;
pub mod plan;
pub mod redact;
pub mod signers;
pub mod source;
mod state;
pub mod yaml;

pub use errors::{Error, Result};
pub use model_config::ModelConfig;
pub use state::{CachedFile, DesiredModel, DesiredState, DesiredVersion, GoldenSet};
