//! What the tests that run the `vane` binary in its own process share: the repository's models, one test at a time
//! where a process's memory or timing is measured, and that process's memory as the kernel reports it.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository's `models/` folder.
pub(crate) fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// Tests that measure one process's memory or latency run one at a time, so a sibling's load does not stall the
/// process under test (on two cores a stalled thread holds freed memory in its allocator's queue longer).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the one-at-a-time lock for the rest of the test.
pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A `/proc/<pid>/status` field given in kB (`VmRSS:`, `VmHWM:`), in bytes; `None` once the process is gone.
pub(crate) fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix(field))?;
    kb.trim().trim_end_matches(" kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
}
