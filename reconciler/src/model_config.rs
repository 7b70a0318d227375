//! Per-model serving settings: how a model's versions are batched, queued and run. Every field is optional; what is
//! not set falls back to the server's defaults. In a model directory they come from `<model>/config.yaml`; the Git
//! manifests will carry the same block.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// The file a model folder may hold.
pub const CONFIG_FILE: &str = "config.yaml";

/// The most worker threads (and sessions) a model's config may ask for per version.
pub const MAX_WORKERS: usize = 64;
/// The most queue slots a model's config may ask for per version (allocated when the version loads).
pub const MAX_QUEUE_CAPACITY: usize = 65_536;
/// The most ONNX Runtime intra-op threads a model's config may ask for per session.
pub const MAX_INTRA_THREADS: usize = 64;
/// The longest run a model's config may let run on a request's thread.
pub const MAX_INLINE_MAX_RUN: Duration = Duration::from_millis(1);

/// Serving settings of one model (all versions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Most rows in one batch the dynamic batcher forms, and in one request; 0 or 1 turns batching off (and the
    /// per-request row limit with it).
    pub max_batch_size: Option<usize>,
    /// How long the batcher waits, from the oldest queued request, for more rows; 0 batches only what is already
    /// queued, never waiting.
    #[serde(default, with = "humantime_serde")]
    pub max_queue_delay: Option<Duration>,
    /// Worker threads, each with its own ONNX Runtime session.
    pub workers: Option<usize>,
    /// Requests that may wait in the queue before new ones are refused with 503.
    pub queue_capacity: Option<usize>,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: Option<usize>,
    /// A version whose single-request runs take at most this long runs requests on the thread that decoded them
    /// when it can (`0s`: always on its worker threads).
    #[serde(default, with = "humantime_serde")]
    pub inline_max_run: Option<Duration>,
}

// === impl ModelConfig ===

impl ModelConfig {
    /// Parses YAML text; unknown fields and zero counts are errors. `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self> {
        let config: Self =
            crate::yaml::from_str(text).map_err(|message| Error::ModelConfig { path: origin.into(), message })?;
        config.validated().map_err(|message| Error::ModelConfig { path: origin.into(), message })
    }

    /// The config itself if its values are usable. The file comes from whoever can push to the deploy repository
    /// (untrusted), so each count that costs threads or memory at load has a ceiling: zero or more than the ceiling
    /// is refused (a queue's slots are allocated up front; each worker is a thread and an ONNX Runtime session), and
    /// `inline_max_run` may not let a model hold a request thread for more than [`MAX_INLINE_MAX_RUN`].
    pub fn validated(self) -> std::result::Result<Self, String> {
        let counts = [
            ("workers", self.workers, MAX_WORKERS),
            ("queue_capacity", self.queue_capacity, MAX_QUEUE_CAPACITY),
            ("intra_threads", self.intra_threads, MAX_INTRA_THREADS),
        ];
        for (field, value, most) in counts {
            match value {
                Some(0) => return Err(format!("{field} must be at least 1")),
                Some(n) if n > most => return Err(format!("{field} is {n}; at most {most}")),
                _ => {}
            }
        }
        match self.inline_max_run {
            Some(run) if run > MAX_INLINE_MAX_RUN => {
                Err(format!("inline_max_run is {run:?}; at most {MAX_INLINE_MAX_RUN:?} (it blocks a request thread)"))
            }
            _ => Ok(self),
        }
    }

    /// Reads `<model_dir>/config.yaml` if it exists; no file means all defaults. Blocking.
    pub fn read(model_dir: &Path) -> Result<Self> {
        Self::read_with_monitoring(model_dir).map(|(config, _)| config)
    }

    /// [`ModelConfig::read`], plus the file's optional `monitoring:` block (the manifest's
    /// [`crate::manifest::Monitoring`]), which turns on drift monitoring in a model directory.
    pub fn read_with_monitoring(model_dir: &Path) -> Result<(Self, Option<crate::manifest::Monitoring>)> {
        let path = model_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Self::default(), None)),
            Err(e) => return Err(Error::ModelConfig { path, message: e.to_string() }),
        };
        // The serving fields and the optional monitoring block, unknown fields refused; an empty file is the
        // defaults.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ConfigFile {
            max_batch_size: Option<usize>,
            #[serde(default, with = "humantime_serde")]
            max_queue_delay: Option<Duration>,
            workers: Option<usize>,
            queue_capacity: Option<usize>,
            intra_threads: Option<usize>,
            #[serde(default, with = "humantime_serde")]
            inline_max_run: Option<Duration>,
            #[serde(default)]
            monitoring: Option<crate::manifest::Monitoring>,
        }
        let bad = |message: String| Error::ModelConfig { path: path.clone(), message };
        let file: Option<ConfigFile> = crate::yaml::from_str(&text).map_err(bad)?;
        let Some(file) = file else { return Ok((Self::default(), None)) };
        let config = Self {
            max_batch_size: file.max_batch_size,
            max_queue_delay: file.max_queue_delay,
            workers: file.workers,
            queue_capacity: file.queue_capacity,
            intra_threads: file.intra_threads,
            inline_max_run: file.inline_max_run,
        };
        Ok((config.validated().map_err(bad)?, file.monitoring))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_yaml(text, Path::new("config.yaml"))
    }

    #[test]
    fn every_field_parses_and_absent_ones_stay_unset() {
        let config =
            parse("max_batch_size: 32\nmax_queue_delay: 250us\nworkers: 2\nqueue_capacity: 8\nintra_threads: 1\n")
                .unwrap();
        assert_eq!(config.max_batch_size, Some(32));
        assert_eq!(config.max_queue_delay, Some(Duration::from_micros(250)));
        assert_eq!((config.workers, config.queue_capacity, config.intra_threads), (Some(2), Some(8), Some(1)));
        assert_eq!(parse("{}").unwrap(), ModelConfig::default());
        assert_eq!(parse("max_queue_delay: 0s").unwrap().max_queue_delay, Some(Duration::ZERO));
        assert_eq!(parse("inline_max_run: 50us").unwrap().inline_max_run, Some(Duration::from_micros(50)));
    }

    #[test]
    fn unknown_fields_bad_durations_and_zero_counts_are_refused() {
        let err = parse("max_batch: 3").unwrap_err().to_string();
        assert!(err.contains("unknown field `max_batch`"), "{err}");
        let err = parse("max_queue_delay: soon").unwrap_err().to_string();
        assert!(err.contains("config.yaml"), "{err}");
        let err = parse("workers: 0").unwrap_err().to_string();
        assert!(err.contains("workers must be at least 1"), "{err}");
    }

    /// A pushed config cannot ask for a million threads, a queue of a billion slots, or a request thread held for
    /// an hour; the ceilings themselves are accepted.
    #[test]
    fn counts_and_the_inline_limit_past_their_ceilings_are_refused() {
        for (text, message) in [
            ("workers: 65", "workers is 65; at most 64"),
            ("queue_capacity: 1000000000", "queue_capacity is 1000000000; at most 65536"),
            ("intra_threads: 1000", "intra_threads is 1000; at most 64"),
            ("inline_max_run: 1h", "inline_max_run is 3600s; at most 1ms"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(message), "{text}: {err}");
        }
        let ceilings = parse("workers: 64\nqueue_capacity: 65536\nintra_threads: 64\ninline_max_run: 1ms\n").unwrap();
        assert_eq!(ceilings.inline_max_run, Some(MAX_INLINE_MAX_RUN));
    }

    /// The documented example in `configs/` parses and sets every field.
    #[test]
    fn the_example_in_configs_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/model-config.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = ModelConfig::from_yaml(&text, &path).unwrap();
        assert_eq!(config.max_batch_size, Some(64));
        assert_eq!(config.max_queue_delay, Some(Duration::from_micros(300)));
        assert!(config.workers.is_some() && config.queue_capacity.is_some() && config.intra_threads.is_some());
    }
}
