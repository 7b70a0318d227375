//! Errors of the desired-state sources.

use std::io;
use std::path::PathBuf;

/// What went wrong while reading the desired state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory of the model repository could not be read.
    #[error("cannot read model directory {path}: {source}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A model folder holds no numeric version folder with a `model.onnx`.
    #[error("model '{model}' in {path} has no version: expected {path}/<number>/model.onnx")]
    NoVersions {
        /// The model's name.
        model: String,
        /// The model's folder.
        path: PathBuf,
    },
    /// A version folder lacks its `model.onnx`.
    #[error("version folder {path} has no model.onnx")]
    MissingModelFile {
        /// The version folder.
        path: PathBuf,
    },
    /// A model folder's name cannot be used in a URL path.
    #[error("model folder name {name:?} in {dir} is not a valid model name (use letters, digits, '_', '-' and '.')")]
    InvalidModelName {
        /// The folder name.
        name: String,
        /// The repository directory.
        dir: PathBuf,
    },
    /// A model's `config.yaml` is unreadable or invalid.
    #[error("invalid model config {path}: {message}")]
    ModelConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The repository holds no model at all.
    #[error("no models found in {dir}: expected {dir}/<model>/<version>/model.onnx")]
    Empty {
        /// The repository directory.
        dir: PathBuf,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
