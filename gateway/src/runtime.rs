//! The process's one ONNX Runtime environment.
//!
//! ONNX Runtime allows one environment per process, even after the first is dropped, so it lives in a `OnceLock`
//! (tests run as threads of one process and share it). The library is opened with `ort::init_from` rather than
//! `ort`'s lazy default, which panics with a bare "dlopen failed" when the file is missing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::errors::RuntimeError;

/// The run-time override for the library's path. A relative value is resolved next to the executable, which is how
/// a container or package ships the library beside the binary.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// The path `gateway/build.rs` fetched the library to, empty when the build was told to fetch nothing.
const BAKED_DYLIB: &str = env!("VANE_ORT_DYLIB");

static ENVIRONMENT: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// The environment, loading ONNX Runtime on first use. The outcome of the first call is kept, failure included.
pub fn environment() -> Result<&'static Environment, RuntimeError> {
    ENVIRONMENT.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Where the library will be looked for, and why: `ORT_DYLIB_PATH` if set, else the path baked in at build time.
pub fn dylib_path() -> Result<(PathBuf, &'static str), RuntimeError> {
    if let Some(value) = std::env::var_os(DYLIB_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        let path = if path.is_relative() { beside_executable(&path) } else { path };
        return Ok((path, DYLIB_ENV));
    }
    if BAKED_DYLIB.is_empty() {
        return Err(RuntimeError::NotConfigured);
    }
    Ok((PathBuf::from(BAKED_DYLIB), "the path fetched at build time"))
}

fn beside_executable(relative: &Path) -> PathBuf {
    match std::env::current_exe() {
        Ok(exe) => exe.parent().map_or_else(|| relative.to_path_buf(), |dir| dir.join(relative)),
        Err(_) => relative.to_path_buf(),
    }
}

fn load() -> Result<Environment, RuntimeError> {
    let (path, origin) = dylib_path()?;
    if !path.is_file() {
        return Err(RuntimeError::NotFound { path, origin });
    }
    let load_error = |message: String| RuntimeError::Load { path: path.clone(), origin, message };
    let builder = ort::init_from(&path).map_err(|e| load_error(e.to_string()))?;
    builder.with_name("vane").build().map_err(|e| load_error(e.to_string()))
}
