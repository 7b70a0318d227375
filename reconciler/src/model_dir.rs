//! A Triton-style model repository on disk: `DIR/<model>/<version>/model.onnx`.
//!
//! Rules, as in Triton: every folder of `DIR` is a model; inside it, every folder whose name is a number is a
//! version and must hold `model.onnx`; other folders and files (reference data, notes) are ignored, and so are
//! files at the top level and hidden entries. A model with no version is an error, not a silent skip, so a typo in
//! a folder name is seen at once. A model folder may hold `config.yaml` ([`ModelConfig`]) with its serving settings.

use std::fs;
use std::path::Path;

use crate::{DesiredModel, DesiredState, DesiredVersion, Error, ModelConfig, Result};

/// The file each version folder must contain.
pub const MODEL_FILE: &str = "model.onnx";

/// Reads the repository at `dir` into a [`DesiredState`]. Blocking: call it off the async threads.
pub fn scan(dir: &Path) -> Result<DesiredState> {
    let mut models = Vec::new();
    for entry in read_dir(dir)? {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        if !is_valid_model_name(&name) {
            return Err(Error::InvalidModelName { name, dir: dir.to_path_buf() });
        }
        let versions = scan_versions(&path)?;
        if versions.is_empty() {
            return Err(Error::NoVersions { model: name, path });
        }
        let (config, monitoring) = ModelConfig::read_with_monitoring(&path)?;
        // Monitoring is opt-in (a `monitoring:` block in config.yaml), and then needs the reference data beside it.
        let reference_data = match &monitoring {
            None => None,
            Some(_) => Some(reference_file(&path)?),
        };
        models.push(DesiredModel { name, versions, config, reference_data, monitoring, rollout: None });
    }
    if models.is_empty() {
        return Err(Error::Empty { dir: dir.to_path_buf() });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(DesiredState { models, revision: None })
}

/// The files a model folder's reference data may be in, in the order they are looked for.
pub const REFERENCE_FILES: [&str; 2] = ["reference.csv", "reference.parquet"];

/// The model folder's reference data, hashed (the hash is its identity: the profile is rebuilt when it changes).
fn reference_file(model_dir: &Path) -> Result<crate::CachedFile> {
    use sha2::{Digest, Sha256};
    let Some(path) = REFERENCE_FILES.iter().map(|f| model_dir.join(f)).find(|p| p.is_file()) else {
        return Err(Error::ModelConfig {
            path: model_dir.join(crate::model_config::CONFIG_FILE),
            message: format!("monitoring needs the reference data beside it: {}", REFERENCE_FILES.join(" or ")),
        });
    };
    let mut hasher = Sha256::new();
    let mut file =
        fs::File::open(&path).map_err(|e| Error::ModelConfig { path: path.clone(), message: e.to_string() })?;
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| Error::ModelConfig { path: path.clone(), message: e.to_string() })?;
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(crate::CachedFile { path, sha256 })
}

/// Whether `name` can be a model name: non-empty ASCII letters, digits, `_`, `-` and `.` (safe in a URL path).
pub fn is_valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn scan_versions(model_dir: &Path) -> Result<Vec<DesiredVersion>> {
    let mut versions = Vec::new();
    for entry in read_dir(model_dir)? {
        let path = entry.path();
        let Some(version) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if !path.is_dir() {
            continue;
        }
        let file = path.join(MODEL_FILE);
        if !file.is_file() {
            return Err(Error::MissingModelFile { path });
        }
        let fingerprint = fingerprint(&file)?;
        versions.push(DesiredVersion { version, path: file, fingerprint, ..DesiredVersion::default() });
    }
    versions.sort_by_key(|v| v.version);
    Ok(versions)
}

/// Size and modification time: a rewritten or replaced file changes at least one of them.
fn fingerprint(file: &Path) -> Result<String> {
    let metadata = fs::metadata(file).map_err(|source| Error::ReadDir { path: file.into(), source })?;
    let modified =
        metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    Ok(format!("size={},mtime={}.{:09}", metadata.len(), modified.as_secs(), modified.subsec_nanos()))
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let wrap = |source| Error::ReadDir { path: dir.to_path_buf(), source };
    fs::read_dir(dir).map_err(wrap)?.collect::<std::io::Result<Vec<_>>>().map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    #[test]
    fn reads_models_and_versions_in_order_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "b/10/model.onnx");
        touch(dir.path(), "b/9/model.onnx");
        touch(dir.path(), "a/1/model.onnx");
        touch(dir.path(), "a/reference.csv");
        touch(dir.path(), "a/notes/readme.md");
        touch(dir.path(), "README.md");
        touch(dir.path(), ".git/1/model.onnx");
        let state = scan(dir.path()).unwrap();
        let names: Vec<_> = state.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let b: Vec<_> = state.models[1].versions.iter().map(|v| v.version).collect();
        assert_eq!(b, [9, 10], "numeric order, not lexical");
        assert_eq!(state.models[1].default_version().unwrap().version, 10);
        assert_eq!(state.models[0].versions[0].path, dir.path().join("a/1/model.onnx"));
    }

    #[test]
    fn a_version_folder_without_its_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a/1/model.onnx");
        fs::create_dir_all(dir.path().join("a/2")).unwrap();
        let err = scan(dir.path()).unwrap_err();
        assert!(matches!(err, Error::MissingModelFile { .. }), "{err}");
        assert!(err.to_string().contains("a/2 has no model.onnx"), "{err}");
    }

    #[test]
    fn a_model_without_versions_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a/1/model.onnx");
        touch(dir.path(), "b/latest/model.onnx");
        let err = scan(dir.path()).unwrap_err();
        assert!(matches!(&err, Error::NoVersions { model, .. } if model == "b"), "{err}");
    }

    #[test]
    fn an_empty_or_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(scan(dir.path()), Err(Error::Empty { .. })));
        assert!(matches!(scan(&dir.path().join("nope")), Err(Error::ReadDir { .. })));
    }

    #[test]
    fn a_model_config_is_read_and_a_rewritten_file_changes_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a/1/model.onnx");
        fs::write(dir.path().join("a/config.yaml"), "max_batch_size: 8\n").unwrap();
        let first = scan(dir.path()).unwrap();
        assert_eq!(first.models[0].config.max_batch_size, Some(8));
        fs::write(dir.path().join("a/1/model.onnx"), b"longer content").unwrap();
        let second = scan(dir.path()).unwrap();
        assert_ne!(first.models[0].versions[0].fingerprint, second.models[0].versions[0].fingerprint);
        fs::write(dir.path().join("a/config.yaml"), "max_batch_size: [").unwrap();
        assert!(matches!(scan(dir.path()), Err(Error::ModelConfig { .. })));
    }

    #[test]
    fn model_names_must_be_url_safe() {
        assert!(is_valid_model_name("breast_cancer-v.2"));
        for bad in ["", ".hidden", "a b", "a/b", "é", "a?b"] {
            assert!(!is_valid_model_name(bad), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a b/1/model.onnx");
        assert!(matches!(scan(dir.path()), Err(Error::InvalidModelName { .. })));
    }
}
