//! YAML parsing for everything a deploy repository holds (manifests, DVC pointers): one place, with budgets.

/// Parses `bytes` (UTF-8 YAML, one document) into `T`.
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_yaml::from_slice(bytes).map_err(|e| e.to_string())
}
