//! The desired state: the whole set of models and versions that should be served, as one value.

use std::path::PathBuf;

use crate::manifest::{IoSpec, Monitoring};
use crate::ModelConfig;

/// Everything that should be served. It is applied as a whole: the gateway builds every model in it before any
/// request sees the new set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    /// The models, sorted by name.
    pub models: Vec<DesiredModel>,
    /// The Git commit this state comes from, if it comes from Git.
    pub revision: Option<String>,
}

/// One model and the versions of it that should be served.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredModel {
    /// The name clients use in `/v2/models/{name}`.
    pub name: String,
    /// The versions, in ascending order; the last one is the default for requests that name no version.
    pub versions: Vec<DesiredVersion>,
    /// How the model is batched, queued and run.
    pub config: ModelConfig,
    /// The reference data the monitor compares this model's traffic with, if declared.
    pub reference_data: Option<CachedFile>,
    /// How the monitor samples, windows and judges this model's traffic.
    pub monitoring: Option<Monitoring>,
    /// How traffic moves from the stable version to a candidate, if a rollout is in progress.
    pub rollout: Option<crate::manifest::RolloutSpec>,
}

/// A verified file on local disk and its sha256.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachedFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its lower-case hex sha256.
    pub sha256: String,
}

/// One version of a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredVersion {
    /// The version number clients use in `/versions/{v}`.
    pub version: u64,
    /// Where the ONNX file is.
    pub path: PathBuf,
    /// Identifies the artifact's content: equal fingerprints mean the loaded model can be kept as it is. A model
    /// directory uses the file's size and modification time; a Git source uses its sha256.
    pub fingerprint: String,
    /// The inputs and outputs the model must have, if declared; checked before any traffic.
    pub io: Option<IoSpec>,
    /// A golden set the warm-up must reproduce, if declared.
    pub golden: Option<GoldenSet>,
}

/// A golden set: a V2 inference request body with the expected outputs beside the inputs, and the tolerance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoldenSet {
    /// JSON: `{"inputs": [...V2 tensors...], "outputs": [...V2 tensors with data...]}`.
    pub json: Vec<u8>,
    /// Largest absolute difference allowed per element.
    pub tolerance: f64,
}

// === impl DesiredModel ===

impl DesiredModel {
    /// The version served to requests that name none: the highest, as in Triton and TF Serving; during a rollout,
    /// the stable one (the rollout moves traffic from there).
    pub fn default_version(&self) -> Option<&DesiredVersion> {
        match &self.rollout {
            Some(rollout) => self.versions.iter().find(|v| v.version == rollout.stable),
            None => self.versions.last(),
        }
    }
}
