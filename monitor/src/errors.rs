//! Errors of the monitor.

use std::path::PathBuf;

/// What went wrong in the monitor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference data could not be read or parsed as CSV.
    #[error("cannot read reference data {path}: {source}")]
    ReadReference {
        /// The file, or `<memory>` for in-memory data.
        path: PathBuf,
        /// The CSV or I/O error.
        #[source]
        source: csv::Error,
    },
    /// The reference data has a header but no row.
    #[error("reference data {path} has no rows")]
    EmptyReference {
        /// The file.
        path: PathBuf,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
