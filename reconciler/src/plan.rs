//! From a commit's validated deployments to the desired state: every artifact fetched, verified and cached.

use git2::Oid;

use crate::artifacts::{ArtifactCache, ArtifactError, DvcConfig};
use crate::manifest::Deployment;
use crate::source::GitSource;
use crate::{CachedFile, DesiredModel, DesiredState, DesiredVersion, GoldenSet};

/// The largest golden set read (it is a JSON request with its expected outputs).
const GOLDEN_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Why a commit's artifacts could not be had, and whether that may pass by itself (retry the sync) or is the
/// commit's own fault (refuse it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What went wrong, naming model, version and artifact.
    pub reason: String,
    /// True for failures that may pass (network, deadline, disk): the sync is retried, the commit not refused.
    pub transient: bool,
}

impl From<Rejection> for String {
    fn from(rejection: Rejection) -> Self {
        rejection.reason
    }
}

/// Resolves every artifact the deployments name (models and reference data) into the cache and returns the state
/// to serve. Blocking. The first artifact that cannot be had fails the whole commit, naming model and version.
pub fn desired_state(
    deployments: &[Deployment],
    source: &GitSource,
    commit: Oid,
    cache: &ArtifactCache,
    dvc: &DvcConfig,
) -> Result<DesiredState, Rejection> {
    let context = |what: String| {
        move |e: ArtifactError| Rejection { transient: e.is_transient(), reason: format!("{what}: {e}") }
    };
    let mut models = Vec::with_capacity(deployments.len());
    for deployment in deployments {
        let mut versions = Vec::with_capacity(deployment.versions.len());
        for version in &deployment.versions {
            let what = format!("model '{}' version {}", deployment.name, version.version);
            let path = cache.resolve(&version.model, source, commit, dvc).map_err(context(what.clone()))?;
            let golden = match &version.warmup {
                None => None,
                Some(warmup) => {
                    let json = source
                        .read(commit, &warmup.golden, GOLDEN_MAX_BYTES)
                        .map_err(|e| Rejection { reason: format!("{what}: golden set: {e}"), transient: false })?;
                    Some(GoldenSet { json, tolerance: warmup.tolerance })
                }
            };
            versions.push(DesiredVersion {
                version: version.version,
                path,
                fingerprint: format!("sha256:{}", version.model.sha256),
                io: version.io.clone(),
                golden,
            });
        }
        let reference_data = match &deployment.reference_data {
            None => None,
            Some(artifact) => {
                let what = format!("reference data of model '{}'", deployment.name);
                let path = cache.resolve(artifact, source, commit, dvc).map_err(context(what))?;
                Some(CachedFile { path, sha256: artifact.sha256.clone() })
            }
        };
        models.push(DesiredModel {
            name: deployment.name.clone(),
            versions,
            config: deployment.serving,
            reference_data,
            monitoring: deployment.monitoring.clone(),
            rollout: deployment.rollout.clone(),
        });
    }
    Ok(DesiredState { models, revision: Some(commit.to_string()) })
}
