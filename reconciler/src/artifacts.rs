//! Artifacts: fetched from where the manifest says, checked against their sha256, and kept in a content-addressed
//! cache (`<data-dir>/artifacts/sha256/<hex>`), so a rollback or a restart needs no network.
//!
//! Everything a manifest names is untrusted (anyone with push access writes manifests), so every source is bounded
//! before it costs anything:
//! - a file in the repository: its size is read from the object database's header before libgit2 inflates it
//!   (whole, in memory: hence a lower cap, [`MAX_GIT_BLOB_BYTES`]), then hashed and written without a copy;
//! - `file://`: only under the operator's `--artifact-root` folders (none: refused), resolved with symlinks
//!   followed and checked again, opened without blocking and read only if it is a regular file (no FIFO, device or
//!   folder), streamed under the size cap;
//! - `https://`: https only, redirects included (at most [`MAX_REDIRECTS`]); every address a host resolves to must
//!   be public (loopback, private, link-local and other special ranges are refused unless the operator allows
//!   private hosts), checked on the addresses the connection then uses, so DNS cannot answer differently in between;
//!   streamed under the size cap and the sync's deadline; no proxy;
//! - DVC pointers: resolved in the operator's `--dvc-store` folders, streamed like files.
//!
//! The cache is trusted only after a re-hash: a cached file is hashed again before each load that uses it (a local
//! user or a disk error cannot substitute a model), and temporary files are created exclusively, without following
//! symlinks, mode 0600, then renamed under their digest once it matches.

use std::fs;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::Oid;
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::durable::{create_exclusive, create_private_dir, open_regular};
use crate::manifest::{ArtifactRef, ArtifactSource, RepoPath};
use crate::source::{GitError, GitSource};

/// The default cap on one artifact streamed into the cache (a download, a file, a DVC object).
pub const MAX_ARTIFACT_BYTES: u64 = 2 << 30;
/// The cap on one artifact read from Git objects: libgit2 inflates a blob whole in memory, so this is what it may
/// cost; larger models belong in DVC or behind a URI.
pub const MAX_GIT_BLOB_BYTES: usize = crate::source::MAX_BLOB_BYTES;
/// Redirects an https download may follow (presigned object-store URLs redirect once or twice).
pub const MAX_REDIRECTS: u32 = 5;

/// Where DVC pointers are resolved: local directories laid out as a DVC cache or a local DVC remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DvcConfig {
    /// Directories to look in, in order (`.dvc/cache`, a shared cache, a local remote).
    pub stores: Vec<PathBuf>,
}

/// What the operator allows manifests to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPolicy {
    /// Folders `file://` artifacts may be read from (`--artifact-root`); none: `file://` is refused.
    pub roots: Vec<PathBuf>,
    /// Allow https hosts at loopback, private and link-local addresses (`--allow-private-artifact-hosts`).
    pub allow_private_hosts: bool,
    /// The largest artifact streamed into the cache (`--max-artifact-bytes`).
    pub max_bytes: u64,
}

impl Default for ArtifactPolicy {
    fn default() -> Self {
        Self { roots: Vec::new(), allow_private_hosts: false, max_bytes: MAX_ARTIFACT_BYTES }
    }
}

/// When the work of a sync must stop: its deadline, or a cancel (superseded, shutdown).
#[derive(Debug, Clone, Default)]
pub struct Deadline {
    /// The instant the sync's time is up, if it has a deadline.
    pub at: Option<Instant>,
    /// Set when the sync is cancelled.
    pub cancel: Arc<AtomicBool>,
}

impl Deadline {
    /// Time left, `None` when there is no deadline.
    fn remaining(&self) -> Option<Duration> {
        self.at.map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn check(&self) -> Result<(), String> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err("stopped: the sync was cancelled (superseded, or shutting down)".to_owned());
        }
        if self.remaining().is_some_and(|d| d.is_zero()) {
            return Err("stopped: the sync's deadline (--sync-timeout) passed".to_owned());
        }
        Ok(())
    }
}

/// The content-addressed store.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    ca_file: Option<PathBuf>,
    /// Only what is cached or in the local clone: a restore or rollback never goes to the network.
    offline: bool,
    policy: ArtifactPolicy,
    deadline: Deadline,
}

/// The longest an https artifact download may take, whole (less when the sync's deadline is nearer).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest a TCP and TLS connect for a download may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinguishes the temporary files of concurrent writers in one process.
static PARTIAL: AtomicU64 = AtomicU64::new(0);

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
    /// The artifact could not be had now, for a reason that may pass (a network failure, a 5xx, a 404 before the
    /// upload, the sync's deadline): the sync is retried with backoff, the commit is not refused.
    #[error("{uri}: {problem}")]
    Unavailable {
        /// The URI (redacted) or file.
        uri: String,
        /// What happened.
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

impl ArtifactError {
    /// Whether the failure may pass by itself, so the sync should be retried rather than the commit refused: the
    /// network, the remote's answers that mean "not now", the deadline, the local disk, a DVC object not pushed yet.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Cache { .. } => true,
            Self::Git(GitError::Cancelled) => true,
            Self::Dvc { problem, .. } => problem.contains(" not found; looked in"),
            Self::Git(_) | Self::Digest { .. } | Self::Uri { .. } => false,
        }
    }
}

// === impl ArtifactCache ===

impl ArtifactCache {
    /// The cache under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("artifacts").join("sha256"),
            ca_file: None,
            offline: false,
            policy: ArtifactPolicy::default(),
            deadline: Deadline::default(),
        }
    }

    /// Trusts the CA certificates in `ca_file` (PEM), besides Mozilla's roots, for https artifacts.
    #[must_use]
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Self {
        self.ca_file = ca_file;
        self
    }

    /// What manifests may name.
    #[must_use]
    pub fn with_policy(mut self, policy: ArtifactPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Stops streaming work at `deadline`.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = deadline;
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

    /// Whether the artifact is cached (not whether its bytes are still right: [`ArtifactCache::resolve`] checks).
    pub fn contains(&self, sha256: &str) -> bool {
        self.path_of(sha256).is_file()
    }

    fn create_dir(&self) -> Result<(), ArtifactError> {
        create_private_dir(&self.dir).map_err(|source| ArtifactError::Cache { path: self.dir.clone(), source })
    }

    /// A new temporary file in the cache, created exclusively (never an existing file or a planted symlink).
    fn partial(&self, expected: &str) -> Result<(PathBuf, fs::File), ArtifactError> {
        self.create_dir()?;
        // A name taken (a file a killed run left, a restarted pid 1 counting from 0 again) is skipped, not an error.
        let mut tries = 0;
        loop {
            let n = PARTIAL.fetch_add(1, Ordering::Relaxed);
            let partial = self.dir.join(format!(".{expected}.{}.{n}.partial", std::process::id()));
            match create_exclusive(&partial) {
                Ok(file) => return Ok((partial, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 64 => tries += 1,
                Err(source) => return Err(ArtifactError::Cache { path: partial, source }),
            }
        }
    }

    /// Removes temporary files a killed run left behind (each up to an artifact's size). Blocking; call it before
    /// the first sync, when no writer runs.
    pub fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.starts_with('.') && n.ends_with(".partial")) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Checks `bytes` against `expected` and stores them; returns the cached path. Written to a temporary file and
    /// renamed, so a crash never leaves a truncated artifact under its digest.
    pub fn store(&self, what: &str, bytes: &[u8], expected: &str) -> Result<PathBuf, ArtifactError> {
        verify(what, bytes, expected)?;
        let path = self.path_of(expected);
        let (partial, mut file) = self.partial(expected)?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        if let Err(source) = written.and_then(|()| fs::rename(&partial, &path)) {
            let _ = fs::remove_file(&partial);
            return Err(ArtifactError::Cache { path, source });
        }
        Ok(path)
    }

    /// Streams `reader` into the cache while hashing it (and feeding `tap`): at most `max_bytes`, stopped by the
    /// sync's deadline, renamed under `expected` only when the digest matches (else the temporary file is removed).
    fn store_stream(
        &self,
        what: &str,
        reader: &mut dyn Read,
        expected: &str,
        max_bytes: u64,
        tap: &mut dyn FnMut(&[u8]),
    ) -> Result<PathBuf, ArtifactError> {
        let path = self.path_of(expected);
        let problem = |problem: String| ArtifactError::Uri { uri: crate::redact::url(what), problem };
        let unavailable = |problem: String| ArtifactError::Unavailable { uri: crate::redact::url(what), problem };
        let (partial, mut file) = self.partial(expected)?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buffer = vec![0u8; 256 * 1024];
        let copied = loop {
            if let Err(stopped) = self.deadline.check() {
                break Err(unavailable(stopped));
            }
            let n = match reader.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(unavailable(format!("read failed: {e}"))),
            };
            total += n as u64;
            if total > max_bytes {
                break Err(problem(format!("is larger than the {max_bytes}-byte limit (--max-artifact-bytes)")));
            }
            hasher.update(&buffer[..n]);
            tap(&buffer[..n]);
            if let Err(source) = file.write_all(&buffer[..n]) {
                break Err(ArtifactError::Cache { path: partial.clone(), source });
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
        let synced = checked.and_then(|()| {
            file.sync_all()
                .and_then(|()| fs::rename(&partial, &path))
                .map_err(|source| ArtifactError::Cache { path: path.clone(), source })
        });
        drop(file);
        if let Err(error) = synced {
            let _ = fs::remove_file(&partial);
            return Err(error);
        }
        Ok(path)
    }

    /// Whether the cached file for `expected` still has that digest; a file that does not is removed (it will be
    /// fetched again). Streamed; stopped by the sync's deadline.
    fn cached_and_sound(&self, expected: &str) -> Result<bool, ArtifactError> {
        let path = self.path_of(expected);
        let mut file = match open_regular(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(ArtifactError::Cache { path, source }),
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            self.deadline
                .check()
                .map_err(|problem| ArtifactError::Unavailable { uri: path.display().to_string(), problem })?;
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(ArtifactError::Cache { path, source }),
            }
        }
        if hex::encode(hasher.finalize()) == expected {
            return Ok(true);
        }
        tracing::warn!(path = %path.display(), "a cached artifact no longer has its digest; removed, fetched again");
        fs::remove_file(&path).map_err(|source| ArtifactError::Cache { path, source })?;
        Ok(false)
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
        let timeout = self.deadline.remaining().map_or(DOWNLOAD_TIMEOUT, |left| left.min(DOWNLOAD_TIMEOUT));
        let config = ureq::Agent::config_builder()
            .https_only(true)
            .max_redirects(MAX_REDIRECTS)
            .proxy(None)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build();
        let resolver = AddressGuard { allow_private: self.policy.allow_private_hosts, inner: Default::default() };
        let agent = ureq::Agent::with_parts(config, ureq::unversioned::transport::DefaultConnector::new(), resolver);
        let response = agent.get(uri).call().map_err(|e| match e {
            ureq::Error::RequireHttpsOnly(to) => {
                problem(format!("redirects to {} (only https is followed)", crate::redact::url(&to)))
            }
            ureq::Error::Other(refused) if refused.is::<Refused>() => problem(refused.to_string()),
            // ureq's message may quote the URL: shown only with its credentials and query redacted.
            e => ArtifactError::Unavailable {
                uri: crate::redact::url(uri),
                problem: format!("download failed: {}", e.to_string().replace(uri, &crate::redact::url(uri))),
            },
        })?;
        let status = response.status();
        if !status.is_success() {
            let problem = format!("the server answered HTTP {status}");
            // "Not now" answers (an object not uploaded yet, an overloaded store) are retried; others refuse.
            let code = status.as_u16();
            if code >= 500 || matches!(code, 404 | 408 | 429) {
                return Err(ArtifactError::Unavailable { uri: crate::redact::url(uri), problem });
            }
            return Err(ArtifactError::Uri { uri: crate::redact::url(uri), problem });
        }
        let max = self.policy.max_bytes;
        let mut reader = response.into_body().into_with_config().limit(max + 1).reader();
        self.store_stream(uri, &mut reader, expected, max, &mut |_| ())
    }

    /// The cached path of `artifact`. A file in the repository is read from the commit and checked every time (it
    /// is local, and a commit whose file does not match its manifest must be refused, cached bytes or not), unless
    /// the same Git object was checked before; DVC and URI artifacts are fetched only when their digest is not
    /// cached. A cached file is re-hashed before it is returned. Blocking.
    pub fn resolve(
        &self,
        artifact: &ArtifactRef,
        source: &GitSource,
        commit: Oid,
        dvc: &DvcConfig,
    ) -> Result<PathBuf, ArtifactError> {
        let expected = artifact.sha256.as_str();
        match &artifact.source {
            ArtifactSource::Repo(path) => {
                // A Git blob already checked against this digest needs no second read: equal object ids are equal
                // bytes. The cached copy is still re-hashed.
                let marker = source.blob_id(commit, path).map(|id| self.dir.join(".verified").join(id.to_string()));
                let checked = |marker: &PathBuf| fs::read_to_string(marker).is_ok_and(|sha| sha == expected);
                if marker.as_ref().is_some_and(checked) && self.cached_and_sound(expected)? {
                    return Ok(self.path_of(expected));
                }
                let what = path.to_string();
                let stored = source.read_with(commit, path, MAX_GIT_BLOB_BYTES, |bytes| {
                    verify(&what, bytes, expected)?;
                    if self.cached_and_sound(expected)? {
                        Ok(self.path_of(expected))
                    } else {
                        self.store(&what, bytes, expected)
                    }
                })??;
                if let Some(marker) = marker {
                    let io = |source| ArtifactError::Cache { path: marker.clone(), source };
                    fs::create_dir_all(self.dir.join(".verified")).map_err(io)?;
                    fs::write(&marker, expected).map_err(io)?;
                }
                Ok(stored)
            }
            _ if self.cached_and_sound(expected)? => Ok(self.path_of(expected)),
            ArtifactSource::Dvc(pointer) => self.fetch_dvc(source, commit, pointer, dvc, expected),
            ArtifactSource::Uri(uri) if self.offline => Err(ArtifactError::Uri {
                uri: crate::redact::url(uri),
                problem: "is not in the artifact cache, and this load uses the local cache only".to_owned(),
            }),
            ArtifactSource::Uri(uri) if uri.starts_with("https://") => self.download(uri, expected),
            ArtifactSource::Uri(uri) => {
                let mut file = self.open_file_uri(uri)?;
                self.store_stream(uri, &mut file, expected, self.policy.max_bytes, &mut |_| ())
            }
        }
    }

    /// Opens a `file://` artifact: under an artifact root (symlinks resolved, then checked), a regular file.
    fn open_file_uri(&self, uri: &str) -> Result<fs::File, ArtifactError> {
        let problem = |problem: String| ArtifactError::Uri { uri: crate::redact::url(uri), problem };
        let Some(path) = uri.strip_prefix("file://") else {
            return Err(problem("only file:// and https:// URIs are fetched (plain http is refused)".to_owned()));
        };
        if self.policy.roots.is_empty() {
            return Err(problem(
                "file:// artifacts are refused: no --artifact-root names a folder they may be read from".to_owned(),
            ));
        }
        let outside = || {
            problem(format!(
                "is outside the artifact roots ({}); file:// artifacts are read only under them",
                self.policy.roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
            ))
        };
        // First by the name alone, so a manifest cannot probe which files exist elsewhere on the host; then resolved
        // (symlinks, `..`) and checked again, so nothing leads out of a root.
        let named = Path::new(path);
        if !named.is_absolute() || !self.policy.roots.iter().any(|root| named.starts_with(root)) {
            return Err(outside());
        }
        let real = fs::canonicalize(named).map_err(|e| problem(e.to_string()))?;
        let inside =
            self.policy.roots.iter().any(|root| fs::canonicalize(root).is_ok_and(|root| real.starts_with(root)));
        if !inside {
            return Err(outside());
        }
        open_regular(&real).map_err(|e| problem(e.to_string()))
    }

    /// Resolves a DVC pointer at `commit` to its object in one of the configured stores and streams it into the
    /// cache, checking md5 and size as well as the manifest's sha256.
    fn fetch_dvc(
        &self,
        source: &GitSource,
        commit: Oid,
        pointer: &RepoPath,
        config: &DvcConfig,
        expected: &str,
    ) -> Result<PathBuf, ArtifactError> {
        let problem = |problem: String| ArtifactError::Dvc { pointer: pointer.to_string(), problem };
        let text = source.read(commit, pointer, 64 * 1024)?;
        let parsed: DvcPointer =
            crate::yaml::from_slice(&text).map_err(|e| problem(format!("not a DVC pointer: {e}")))?;
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
            let mut file = match open_regular(&candidate) {
                Ok(file) => file,
                Err(_) => {
                    looked.push(candidate.display().to_string());
                    continue;
                }
            };
            let shown = candidate.display().to_string();
            let mut hasher = Md5::new();
            let mut size = 0u64;
            let stored = self.store_stream(&shown, &mut file, expected, self.policy.max_bytes, &mut |chunk| {
                hasher.update(chunk);
                size += chunk.len() as u64;
            });
            let actual = hex::encode(hasher.finalize());
            // The bytes are the manifest's (sha256 checked), but the pointer must agree with them too.
            let mismatch = if actual != md5 {
                Some(format!("{shown} has md5 {actual}, the pointer says {md5}"))
            } else {
                out.size.filter(|&s| s != size).map(|s| format!("{shown} is {size} bytes, the pointer says {s}"))
            };
            if let Some(mismatch) = mismatch {
                if let Ok(path) = &stored {
                    let _ = fs::remove_file(path);
                }
                return Err(problem(mismatch));
            }
            return stored;
        }
        Err(problem(format!(
            "object for {} (md5 {md5}) not found; looked in: {}",
            out.path,
            if looked.is_empty() { "no DVC store configured (--dvc-store)".to_owned() } else { looked.join(", ") }
        )))
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

/// An https host refused for the address it resolves to.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// ureq's resolver, refusing hosts that resolve to non-public addresses. The connection uses exactly the addresses
/// returned here, so the check holds for the connect (and for every redirect's host).
#[derive(Debug)]
struct AddressGuard {
    allow_private: bool,
    inner: ureq::unversioned::resolver::DefaultResolver,
}

impl ureq::unversioned::resolver::Resolver for AddressGuard {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        if !self.allow_private {
            if let Some(addr) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(ureq::Error::Other(Box::new(Refused(format!(
                    "{} resolves to {}, a loopback, private or link-local address; refused (artifact hosts must be \
                     public unless --allow-private-artifact-hosts)",
                    uri.host().unwrap_or_default(),
                    addr.ip()
                )))));
            }
        }
        Ok(addrs)
    }
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local (cloud metadata lives at
/// 169.254.169.254), shared (100.64/10), unspecified, broadcast, multicast, documentation, or an IPv6 form of one.
fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || v.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && o[1] & 0xc0 == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && o[1] & 0xfe == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_unique_local()
                || v.is_unicast_link_local()
                || v.is_multicast()
                // IPv4-compatible, NAT64, 6to4 and Teredo carry an IPv4 address that may be private; site-local is
                // deprecated but routed privately.
                || s[..6] == [0; 6]
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || (s[0] == 0x2001 && (s[1] == 0 || s[1] == 0xdb8))
                || s[0] & 0xffc0 == 0xfec0)
        }
    }
}

#[cfg(test)]
mod tests;
