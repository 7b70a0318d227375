//! Artifacts: fetched from where the manifest says, checked against their sha256, and kept in a content-addressed
//! cache (`<data-dir>/artifacts/sha256/<hex>`), so a rollback or a restart needs no network.
//!
//! `https://` artifacts are downloaded with `ureq` (blocking, like the rest of this module; rustls with Mozilla's
//! roots, plus a configured CA file), streamed to a temporary file while hashed, and renamed under their digest only
//! when it matches; redirects are followed (presigned object-store URLs), other non-2xx answers are errors naming the
//! status.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::Oid;
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::manifest::{ArtifactRef, ArtifactSource, RepoPath};
use crate::source::{GitError, GitSource};

/// The largest artifact read from Git objects or a file (libgit2 inflates blobs whole in memory).
pub const MAX_ARTIFACT_BYTES: usize = 2 << 30;

/// Where DVC pointers are resolved: local directories laid out as a DVC cache or a local DVC remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DvcConfig {
    /// Directories to look in, in order (`.dvc/cache`, a shared cache, a local remote).
    pub stores: Vec<PathBuf>,
}

/// The content-addressed store.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    ca_file: Option<PathBuf>,
    /// Only what is cached or in the local clone: a restore or rollback never goes to the network.
    offline: bool,
}

/// The longest an https artifact download may take, whole.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest a TCP and TLS connect for a download may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an artifact could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Reading from Git failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The bytes do not have the digest the manifest names.
    #[error("{what} has sha256 {actual}, but the manifest says {expected}")]
    Digest {
        /// The artifact.
        what: String,
        /// The manifest's digest.
        expected: String,
        /// The bytes' digest.
        actual: String,
    },
    /// A DVC pointer is malformed, or its object is nowhere to be found or does not match it.
    #[error("DVC pointer {pointer}: {problem}")]
    Dvc {
        /// The pointer file.
        pointer: String,
        /// What is wrong.
        problem: String,
    },
    /// A URI artifact could not be read.
    #[error("{uri}: {problem}")]
    Uri {
        /// The URI.
        uri: String,
        /// What is wrong.
        problem: String,
    },
    /// The cache could not be written.
    #[error("artifact cache {path}: {source}")]
    Cache {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

#[derive(serde::Deserialize)]
struct DvcPointer {
    outs: Vec<DvcOut>,
}

#[derive(serde::Deserialize)]
struct DvcOut {
    md5: String,
    #[serde(default)]
    size: Option<u64>,
    path: String,
}

// === impl ArtifactCache ===

impl ArtifactCache {
    /// The cache under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("artifacts").join("sha256"), ca_file: None, offline: false }
    }

    /// Trusts the CA certificates in `ca_file` (PEM), besides Mozilla's roots, for https artifacts.
    #[must_use]
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Self {
        self.ca_file = ca_file;
        self
    }

    /// Resolves from the cache and the local clone only: an artifact that would have to be downloaded is an error.
    #[must_use]
    pub fn offline(mut self) -> Self {
        self.offline = true;
        self
    }

    /// Where an artifact with this digest is (or would be) kept.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Whether the artifact is cached.
    pub fn contains(&self, sha256: &str) -> bool {
        self.path_of(sha256).is_file()
    }

    /// Checks `bytes` against `expected` and stores them; returns the cached path. Written to a temporary name and
    /// renamed, so a crash never leaves a truncated artifact under its digest.
    pub fn store(&self, what: &str, bytes: &[u8], expected: &str) -> Result<PathBuf, ArtifactError> {
        verify(what, bytes, expected)?;
        let path = self.path_of(expected);
        let io = |source| ArtifactError::Cache { path: path.clone(), source };
        fs::create_dir_all(&self.dir).map_err(io)?;
        let partial = self.dir.join(format!(".{expected}.partial"));
        let mut file = fs::File::create(&partial).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&partial, &path).map_err(io)?;
        Ok(path)
    }

    /// Streams `reader` into the cache while hashing it: at most `max_bytes`, renamed under `expected` only when the
    /// digest matches (else the partial file is removed). For downloads too large to hold in memory.
    fn store_stream(
        &self,
        what: &str,
        reader: &mut dyn Read,
        expected: &str,
        max_bytes: u64,
    ) -> Result<PathBuf, ArtifactError> {
        let path = self.path_of(expected);
        let io = |source| ArtifactError::Cache { path: path.clone(), source };
        fs::create_dir_all(&self.dir).map_err(io)?;
        let partial = self.dir.join(format!(".{expected}.partial"));
        let mut file = fs::File::create(&partial).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buffer = vec![0u8; 256 * 1024];
        let copied = loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    break Err(ArtifactError::Uri { uri: crate::redact::url(what), problem: format!("download: {e}") })
                }
            };
            total += n as u64;
            if total > max_bytes {
                break Err(ArtifactError::Uri {
                    uri: crate::redact::url(what),
                    problem: format!("is over the {max_bytes}-byte limit"),
                });
            }
            hasher.update(&buffer[..n]);
            if let Err(e) = file.write_all(&buffer[..n]) {
                break Err(io(e));
            }
        };
        let actual = hex::encode(hasher.finalize());
        let checked = copied.and_then(|()| {
            if actual == expected {
                Ok(())
            } else {
                Err(ArtifactError::Digest { what: crate::redact::url(what), expected: expected.to_owned(), actual })
            }
        });
        if let Err(error) = checked.and_then(|()| file.sync_all().map_err(io)) {
            drop(file);
            let _ = fs::remove_file(&partial);
            return Err(error);
        }
        fs::rename(&partial, &path).map_err(io)?;
        Ok(path)
    }

    /// Downloads an https artifact into the cache.
    fn download(&self, uri: &str, expected: &str) -> Result<PathBuf, ArtifactError> {
        let problem = |problem: String| ArtifactError::Uri { uri: crate::redact::url(uri), problem };
        let roots = match &self.ca_file {
            None => ureq::tls::RootCerts::WebPki,
            Some(file) => {
                let pem = fs::read(file).map_err(|e| problem(format!("CA file {}: {e}", file.display())))?;
                let certs = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                if certs.is_empty() {
                    return Err(problem(format!("CA file {} holds no PEM certificate", file.display())));
                }
                // The configured CA plus the system's bundle when there is one (a private CA beside public ones).
                let system = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
                    .iter()
                    .find_map(|path| fs::read(path).ok())
                    .unwrap_or_default();
                let system = ureq::tls::parse_pem(&system).filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                });
                ureq::tls::RootCerts::from(certs.into_iter().chain(system))
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(DOWNLOAD_TIMEOUT))
            .http_status_as_error(false)
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        let response = agent.get(uri).call().map_err(|e| problem(format!("download failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(problem(format!("the server answered HTTP {status}")));
        }
        let mut reader = response.into_body().into_with_config().limit(MAX_ARTIFACT_BYTES as u64 + 1).reader();
        self.store_stream(uri, &mut reader, expected, MAX_ARTIFACT_BYTES as u64)
    }

    /// The cached path of `artifact`. A file in the repository is read from the commit and checked every time (it
    /// is local, and a commit whose file does not match its manifest must be refused, cached bytes or not); DVC and
    /// URI artifacts are fetched only when their digest is not cached yet. Blocking.
    pub fn resolve(
        &self,
        artifact: &ArtifactRef,
        source: &GitSource,
        commit: Oid,
        dvc: &DvcConfig,
    ) -> Result<PathBuf, ArtifactError> {
        // A Git blob already checked against this digest needs no second read: equal object ids are equal bytes.
        let blob = match &artifact.source {
            ArtifactSource::Repo(path) => source.blob_id(commit, path),
            _ => None,
        };
        let marker = blob.map(|id| self.dir.join(".verified").join(id.to_string()));
        if let Some(marker) = &marker {
            if self.contains(&artifact.sha256) && fs::read_to_string(marker).is_ok_and(|sha| sha == artifact.sha256) {
                return Ok(self.path_of(&artifact.sha256));
            }
        }
        let (what, bytes) = match &artifact.source {
            ArtifactSource::Repo(path) => (path.to_string(), source.read(commit, path, MAX_ARTIFACT_BYTES)?),
            _ if self.contains(&artifact.sha256) => return Ok(self.path_of(&artifact.sha256)),
            ArtifactSource::Dvc(pointer) => (pointer.to_string(), read_dvc(source, commit, pointer, dvc)?),
            ArtifactSource::Uri(uri) if self.offline => {
                return Err(ArtifactError::Uri {
                    uri: crate::redact::url(uri),
                    problem: "is not in the artifact cache, and this load uses the local cache only".to_owned(),
                })
            }
            ArtifactSource::Uri(uri) if uri.starts_with("https://") => return self.download(uri, &artifact.sha256),
            ArtifactSource::Uri(uri) => (uri.clone(), read_uri(uri)?),
        };
        let path = if self.contains(&artifact.sha256) {
            verify(&what, &bytes, &artifact.sha256)?;
            self.path_of(&artifact.sha256)
        } else {
            self.store(&what, &bytes, &artifact.sha256)?
        };
        if let Some(marker) = marker {
            let io = |source| ArtifactError::Cache { path: marker.clone(), source };
            fs::create_dir_all(self.dir.join(".verified")).map_err(io)?;
            fs::write(&marker, &artifact.sha256).map_err(io)?;
        }
        Ok(path)
    }
}

fn verify(what: &str, bytes: &[u8], expected: &str) -> Result<(), ArtifactError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if actual == expected {
        Ok(())
    } else {
        Err(ArtifactError::Digest { what: crate::redact::url(what), expected: expected.to_owned(), actual })
    }
}

/// Resolves a DVC pointer at `commit` to its object in one of the configured stores, checking md5 and size.
fn read_dvc(source: &GitSource, commit: Oid, pointer: &RepoPath, config: &DvcConfig) -> Result<Vec<u8>, ArtifactError> {
    let problem = |problem: String| ArtifactError::Dvc { pointer: pointer.to_string(), problem };
    let text = source.read(commit, pointer, 64 * 1024)?;
    let parsed: DvcPointer = serde_yaml::from_slice(&text).map_err(|e| problem(format!("not a DVC pointer: {e}")))?;
    let [out] = parsed.outs.as_slice() else {
        return Err(problem(format!("has {} outs; exactly one is supported", parsed.outs.len())));
    };
    let md5 = out.md5.to_ascii_lowercase();
    if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) || md5.ends_with(".dir") {
        return Err(problem(format!("md5 {:?} is not a file digest (directories are not supported)", out.md5)));
    }
    // DVC 3 stores objects under files/md5/<2>/<30>; DVC 2 under <2>/<30>.
    let (head, tail) = md5.split_at(2);
    let candidates = config
        .stores
        .iter()
        .flat_map(|store| [store.join("files/md5").join(head).join(tail), store.join(head).join(tail)]);
    let mut looked = Vec::new();
    for candidate in candidates {
        match fs::read(&candidate) {
            Ok(bytes) => {
                let actual = hex::encode(Md5::digest(&bytes));
                if actual != md5 {
                    return Err(problem(format!("{} has md5 {actual}, the pointer says {md5}", candidate.display())));
                }
                if let Some(size) = out.size.filter(|&s| s != bytes.len() as u64) {
                    return Err(problem(format!(
                        "{} is {} bytes, the pointer says {size}",
                        candidate.display(),
                        bytes.len()
                    )));
                }
                return Ok(bytes);
            }
            Err(_) => looked.push(candidate.display().to_string()),
        }
    }
    Err(problem(format!(
        "object for {} (md5 {md5}) not found; looked in: {}",
        out.path,
        if looked.is_empty() { "no DVC store configured (--dvc-store)".to_owned() } else { looked.join(", ") }
    )))
}

fn read_uri(uri: &str) -> Result<Vec<u8>, ArtifactError> {
    let problem = |problem: String| ArtifactError::Uri { uri: crate::redact::url(uri), problem };
    match uri.strip_prefix("file://") {
        Some(path) => {
            let metadata = fs::metadata(path).map_err(|e| problem(e.to_string()))?;
            if metadata.len() > MAX_ARTIFACT_BYTES as u64 {
                return Err(problem(format!("is {} bytes; the limit is {MAX_ARTIFACT_BYTES}", metadata.len())));
            }
            fs::read(path).map_err(|e| problem(e.to_string()))
        }
        None => Err(problem("only file:// and https:// URIs are fetched (plain http is refused)".to_owned())),
    }
}

#[cfg(test)]
mod tests;
