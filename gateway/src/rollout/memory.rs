//! What a rollout decided, kept in the data dir (`rollouts.json`) so a restart does not undo it: a rolled-back
//! candidate is not tried again by a restarted replica, and a promoted one keeps serving. A decision belongs to the
//! rollout's identity (the model, both artifacts' digests and the spec): a commit that changes any of them is a new
//! rollout with its own analysis.
//!
//! Bounded: the last [`MAX_RECORDS`] decisions, a file of at most [`MAX_BYTES`]; a file that cannot be read is
//! reported and ignored (the rollouts then start from their first step).

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Phase;

/// Decisions kept.
pub const MAX_RECORDS: usize = 256;
/// The largest file read back: 256 records of at most 512 characters of reason (4 bytes each at most) and short
/// fields fit in well under it.
const MAX_BYTES: u64 = 1 << 20;
/// Characters of a reason kept.
const MAX_REASON_CHARS: usize = 512;

/// One remembered decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The rollout's identity (see [`identity`]).
    pub identity: String,
    /// The model, for a person reading the file.
    pub model: String,
    /// `promoted`, `complete`, `rolled_back`, `aborted` or `concluded`.
    pub phase: String,
    /// Why.
    pub reason: String,
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
}

/// The file, and its records in memory.
#[derive(Debug)]
pub struct Memory {
    path: Option<PathBuf>,
    records: Mutex<Vec<Record>>,
}

/// A rollout's identity: SHA-256 of the model, the stable's and the candidate's fingerprints and the spec, in hex.
pub fn identity(model: &str, stable: &str, candidate: &str, spec: &reconciler::manifest::RolloutSpec) -> String {
    let mut hasher = Sha256::new();
    for part in [model, stable, candidate, &format!("{spec:?}")] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

impl Memory {
    /// Decisions kept in memory only (model-directory mode, tests).
    pub fn in_memory() -> Self {
        Self { path: None, records: Mutex::default() }
    }

    /// The decisions in `path`, read now. Blocking.
    pub fn open(path: PathBuf) -> Self {
        let records = match reconciler::durable::read_bounded(&path, MAX_BYTES) {
            Ok(None) => Vec::new(),
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %path.display(), %error, "the rollout decisions cannot be read; rollouts start from their first step");
                Vec::new()
            }),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "the rollout decisions cannot be read; rollouts start from their first step");
                Vec::new()
            }
        };
        Self { path: Some(path), records: Mutex::new(records) }
    }

    /// The last decision remembered for `identity`.
    pub fn recall(&self, identity: &str) -> Option<Record> {
        self.records.lock().ok()?.iter().rev().find(|r| r.identity == identity).cloned()
    }

    /// Remembers a decision that ends or settles a rollout, and writes the file. Blocking.
    pub fn remember(&self, identity: &str, model: &str, phase: Phase, reason: &str) {
        let Ok(mut records) = self.records.lock() else { return };
        records.retain(|r| r.identity != identity);
        if records.len() == MAX_RECORDS {
            records.remove(0);
        }
        // A reason may quote a peer's or a person's words: kept short and printable, so 256 records stay far below
        // the size the file is read back at.
        let reason: String =
            reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_REASON_CHARS).collect();
        records.push(Record {
            identity: identity.to_owned(),
            model: model.to_owned(),
            phase: phase.as_str().to_owned(),
            reason,
            at_unix_ms: monitor::feedback::unix_ms(std::time::SystemTime::now()),
        });
        let Some(path) = &self.path else { return };
        let written = serde_json::to_vec_pretty(&*records)
            .map_err(std::io::Error::other)
            .and_then(|bytes| reconciler::durable::write_atomic(path, &bytes));
        if let Err(error) = written {
            tracing::error!(file = %path.display(), %error, "a rollout decision could not be written; a restart may repeat the rollout");
        }
    }
}

/// The phase a remembered decision restores, if it is one a rollout can start in.
pub fn restored_phase(record: &Record) -> Option<Phase> {
    Phase::ALL.into_iter().find(|p| p.as_str() == record.phase && !p.is_active())
}
