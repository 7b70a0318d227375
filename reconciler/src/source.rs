//! The Git side of the reconciler: a bare clone of the deploy repository, read straight from Git objects.
//!
//! Everything here is blocking (git2 has no async API, and `Repository` is not `Sync`): the controller calls it from
//! `spawn_blocking`, opening the clone per call and bounding each call with an outer deadline. A cheap remote-head
//! check (ls-remote) decides whether to fetch at all. Files are read from the commit's tree, never from a checkout,
//! so a half-written working tree cannot exist; symlinks are refused so a manifest cannot point outside the repo.
//!
//! Transports: a local path, `file://`, `git://`, `https://` (a token as the password, never sent over plain
//! `http://`) and `ssh://` or `user@host:path` (a key file or the ssh agent; the host key must be in a known_hosts
//! file, see [`crate::known_hosts`]). libgit2's connect and read timeouts are set once at start-up with
//! [`set_global_options`]; the controller's outer deadline cancels a transfer that still makes no progress.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Duration;

use git2::{CertificateCheckStatus, Cred, CredentialType, Direction, FetchOptions, Oid, RemoteCallbacks, Repository};

use crate::known_hosts::{self, KnownHosts, Verdict};
use crate::manifest::{RepoPath, MAX_MANIFEST_BYTES};

/// Where and what to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSpec {
    /// The remote: a local path, `file://`, `git://`, `https://`, `ssh://` or `user@host:path`.
    pub url: String,
    /// The branch to follow.
    pub branch: String,
    /// The folder of manifests inside the repository.
    pub path: String,
    /// Credentials and host-key checking for https and ssh remotes.
    pub auth: GitAuth,
    /// The most one fetch may download (pack bytes, what it writes to the data dir); past it the fetch is aborted.
    pub max_fetch_bytes: u64,
}

/// The default bound on one fetch: a deploy repository of manifests is kilobytes; models kept in Git make it more.
pub const MAX_FETCH_BYTES: u64 = 1 << 30;
/// The largest file read from Git objects (libgit2 inflates a blob whole in memory); for a local remote, the
/// largest new file a fetch may bring.
pub const MAX_BLOB_BYTES: usize = 256 << 20;
/// New commits one check of a local remote walks.
const MAX_WALKED_COMMITS: usize = 100_000;
/// New files and folders one check of a local remote reads the size of.
const MAX_WALKED_BLOBS: usize = 1_000_000;
/// Manifests one commit's deploy folder may hold.
pub const MAX_MANIFESTS: usize = 1024;
/// Bytes of manifests one commit may hold, all files together.
pub const MAX_MANIFEST_TOTAL_BYTES: usize = 16 << 20;

/// How to authenticate to an https or ssh remote.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GitAuth {
    /// https: a token sent as the password (GitHub, GitLab and Gitea all take personal or app tokens this way).
    pub token: Option<String>,
    /// https: the user name sent with the token [default: the URL's, else `git`]. GitLab wants `oauth2` for OAuth
    /// tokens, Bitbucket `x-token-auth`; GitHub and Gitea accept any.
    pub username: Option<String>,
    /// ssh: a private key file; without one the ssh agent (`SSH_AUTH_SOCK`) is asked.
    pub ssh_key: Option<PathBuf>,
    /// ssh: the key's passphrase, if it has one.
    pub ssh_passphrase: Option<String>,
    /// ssh: the known_hosts file the server's host key must be listed in [default: `~/.ssh/known_hosts`].
    pub known_hosts: Option<PathBuf>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("GitAuth")
            .field("token", &redacted(&self.token))
            .field("username", &self.username)
            .field("ssh_key", &self.ssh_key)
            .field("ssh_passphrase", &redacted(&self.ssh_passphrase))
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl GitSpec {
    /// A spec with no credentials (enough for local, `file://` and `git://` remotes).
    pub fn new(url: impl Into<String>, branch: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            branch: branch.into(),
            path: path.into(),
            auth: GitAuth::default(),
            max_fetch_bytes: MAX_FETCH_BYTES,
        }
    }
}

/// Process-wide libgit2 settings, applied once before any thread uses Git: connect and read timeouts for network
/// remotes, and an extra CA bundle for https remotes behind a private CA (the system's bundle is found by default).
#[derive(Debug, Clone, Default)]
pub struct GlobalOptions {
    /// The longest a TCP connect to a remote may take.
    pub connect_timeout: Option<Duration>,
    /// The longest one read from or write to a remote may block.
    pub io_timeout: Option<Duration>,
    /// A PEM file of CA certificates trusted for https remotes.
    pub ca_file: Option<PathBuf>,
}

/// Applies `options` to libgit2.
///
/// Call it once, from `main`, before any thread is started: libgit2 keeps these in unsynchronised C globals.
#[allow(unsafe_code)]
pub fn set_global_options(options: &GlobalOptions) -> Result<(), String> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: git2 documents these setters as modifying C globals without synchronisation; they are sound when no
    // other thread uses libgit2 at the time. `main` calls this before building the async runtime or any thread,
    // and nothing else in Vane calls it.
    unsafe {
        if let Some(timeout) = options.connect_timeout {
            git2::opts::set_server_connect_timeout_in_milliseconds(millis(timeout))
                .map_err(|e| format!("git connect timeout: {e}"))?;
        }
        if let Some(timeout) = options.io_timeout {
            git2::opts::set_server_timeout_in_milliseconds(millis(timeout))
                .map_err(|e| format!("git read timeout: {e}"))?;
        }
        if let Some(file) = &options.ca_file {
            git2::opts::set_ssl_cert_file(file).map_err(|e| format!("CA file {}: {e}", file.display()))?;
        }
    }
    Ok(())
}

/// A bare clone under the data directory.
pub struct GitSource {
    repo: Repository,
    spec: GitSpec,
    cancel: Arc<AtomicBool>,
    /// Why the last host-key check refused the server: libgit2 replaces the callback's message with a generic one.
    host_key_refusal: Arc<std::sync::Mutex<Option<String>>>,
    /// Set when a fetch was aborted for downloading more than the spec allows.
    oversized: Arc<AtomicBool>,
}

/// What went wrong talking to Git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed (connect, fetch, read).
    #[error("git {operation} failed: {source}")]
    Git {
        /// What was being done.
        operation: &'static str,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// The branch does not exist on the remote.
    #[error("branch '{branch}' not found on {url}")]
    NoBranch {
        /// The branch.
        branch: String,
        /// The remote.
        url: String,
    },
    /// A file the commit should hold is not there, or not a regular file.
    #[error("{path} at commit {commit}: {problem}")]
    File {
        /// The path.
        path: String,
        /// The commit.
        commit: String,
        /// What is wrong.
        problem: String,
    },
    /// A fetch was larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The remote is not there (a local path that does not exist).
    #[error("{0}")]
    Unreachable(String),
    /// The ssh server's host key is not trusted.
    #[error("{0}")]
    HostKey(String),
    /// The operation was cancelled (deadline or shutdown).
    #[error("git operation cancelled")]
    Cancelled,
}

fn git(operation: &'static str) -> impl FnOnce(git2::Error) -> GitError {
    move |source| GitError::Git { operation, source }
}

// === impl GitSource ===

impl GitSource {
    /// Opens (creating it the first time) the bare clone in `dir`. `cancel` aborts a transfer in progress.
    pub fn open(dir: &Path, spec: GitSpec, cancel: Arc<AtomicBool>) -> Result<Self, GitError> {
        let repo = match Repository::open_bare(dir) {
            Ok(repo) => repo,
            Err(_) => Repository::init_bare(dir).map_err(git("init"))?,
        };
        Ok(Self { repo, spec, cancel, host_key_refusal: Arc::default(), oversized: Arc::default() })
    }

    /// The clone itself, for reads this type does not wrap (signature checks).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The bare clone's folder for a given data directory.
    pub fn clone_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("repo.git")
    }

    fn callbacks(&self) -> RemoteCallbacks<'static> {
        let mut callbacks = RemoteCallbacks::new();
        let cancel = Arc::clone(&self.cancel);
        // Returning false aborts the transfer: how a deadline or shutdown stops a stalled fetch, and how a push too
        // large to fetch is stopped before it fills the data dir.
        let (max, oversized) = (self.spec.max_fetch_bytes, Arc::clone(&self.oversized));
        callbacks.transfer_progress(move |progress| {
            if progress.received_bytes() as u64 > max {
                oversized.store(true, Ordering::Relaxed);
                return false;
            }
            !cancel.load(Ordering::Relaxed)
        });
        let cancel = Arc::clone(&self.cancel);
        callbacks.sideband_progress(move |_| !cancel.load(Ordering::Relaxed));
        callbacks.credentials(credentials(self.spec.url.clone(), self.spec.auth.clone()));
        let known_hosts = self.spec.auth.known_hosts.clone().or_else(default_known_hosts);
        let port = ssh_port(&self.spec.url);
        let refusal = Arc::clone(&self.host_key_refusal);
        callbacks.certificate_check(move |cert, host| {
            // X.509 (https) is left to libgit2 and OpenSSL: the system's CA bundle, or the configured CA file.
            let Some(hostkey) = cert.as_hostkey().and_then(|k| k.hostkey()) else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            check_host_key(known_hosts.as_deref(), host, port, hostkey)
                .map(|()| CertificateCheckStatus::CertificateOk)
                .map_err(|message| {
                    let error = git2::Error::from_str(&message);
                    *refusal.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
                    error
                })
        });
        callbacks
    }

    /// Maps a libgit2 error, preferring the host-key check's own reason when it refused the server.
    fn network_error(&self, operation: &'static str) -> impl FnOnce(git2::Error) -> GitError + '_ {
        move |source| {
            let refusal = self.host_key_refusal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            match refusal {
                Some(reason) => GitError::HostKey(reason),
                None => GitError::Git { operation, source },
            }
        }
    }

    fn refname(&self) -> String {
        format!("refs/heads/{}", self.spec.branch)
    }

    /// The branch head on the remote, without downloading anything (ls-remote).
    pub fn remote_head(&self) -> Result<Oid, GitError> {
        self.check_local_remote()?;
        let mut remote = self.repo.remote_anonymous(&self.spec.url).map_err(git("connect"))?;
        let connection = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks()), None)
            .map_err(self.network_error("connect"))?;
        let wanted = self.refname();
        let head = connection.list().map_err(git("ls-remote"))?.iter().find(|h| h.name() == wanted).map(|h| h.oid());
        head.ok_or_else(|| GitError::NoBranch {
            branch: self.spec.branch.clone(),
            url: crate::redact::url(&self.spec.url),
        })
    }

    /// A remote on this machine (a path or `file://`) that is not there: libgit2 reports it as "unsupported URL
    /// protocol", which sends an operator looking in the wrong place.
    fn check_local_remote(&self) -> Result<(), GitError> {
        let Some(path) = local_path(&self.spec.url) else { return Ok(()) };
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(GitError::Unreachable(format!("the remote {path} is not a folder, so not a Git repository"))),
            Err(e) => Err(GitError::Unreachable(format!(
                "the remote {path} cannot be read ({e}): moved, deleted, or a volume not mounted"
            ))),
        }
    }

    /// The commit last fetched, if any.
    pub fn local_head(&self) -> Option<Oid> {
        self.repo.refname_to_id(&format!("refs/remotes/origin/{}", self.spec.branch)).ok()
    }

    /// For a remote on this machine, checks what a fetch of `head` would bring before fetching it: libgit2's local
    /// transport builds the pack in memory, inflating every new blob (a 1 GiB file of zeros, 1 MB packed, cost
    /// 1 GiB of resident memory before any size check could run). So the new commits' trees are walked in the
    /// remote's object database and each new blob's size read from its header: one over [`MAX_BLOB_BYTES`], or more
    /// than `--max-fetch-bytes` in all, refuses the commit. Network remotes send a pack that libgit2's indexer
    /// streams, bounded by the transfer callback instead. `Ok(None)`: nothing to refuse.
    pub fn check_local_fetch(&self, head: Oid) -> Result<Option<String>, GitError> {
        let Some(path) = local_path(&self.spec.url) else { return Ok(None) };
        let remote =
            Repository::open_bare(path).or_else(|_| Repository::open(path)).map_err(git("open the local remote"))?;
        let odb = remote.odb().map_err(git("open the local remote"))?;
        let local = self.repo.odb().map_err(git("open the clone"))?;
        let mut walk = remote.revwalk().map_err(git("walk the new commits"))?;
        walk.push(head).map_err(git("walk the new commits"))?;
        if let Some(known) = self.local_head() {
            // Not in the remote after a force-push: then everything reachable is walked.
            let _ = walk.hide(known);
        }
        let mut seen = std::collections::HashSet::new();
        let mut total = 0u64;
        let mut refusal = None;
        for (walked, commit) in walk.enumerate() {
            if walked >= MAX_WALKED_COMMITS {
                return Ok(Some(format!("more than {MAX_WALKED_COMMITS} new commits to fetch at once")));
            }
            let commit = commit.map_err(git("walk the new commits"))?;
            if self.cancel.load(Ordering::Relaxed) {
                return Err(GitError::Cancelled);
            }
            // Folders are objects too (the local transport packs them in memory as well): each new one is size-checked
            // from its header before it is read.
            let mut folders = vec![(String::new(), commit_tree(&remote, commit)?.id())];
            while let Some((folder, id)) = folders.pop() {
                let size = odb.read_header(id).map_or(0, |(size, _)| size);
                if size > MAX_TREE_BYTES {
                    refusal = Some(format!(
                        "folder '{folder}' in commit {commit} is a {size}-byte object; the limit is {MAX_TREE_BYTES}"
                    ));
                    break;
                }
                total += size as u64;
                let tree = remote.find_tree(id).map_err(git("read a new commit"))?;
                for entry in tree.iter() {
                    let id = entry.id();
                    if !seen.insert(id) || local.exists(id) {
                        continue;
                    }
                    if seen.len() > MAX_WALKED_BLOBS {
                        refusal = Some(format!("more than {MAX_WALKED_BLOBS} new files and folders to fetch at once"));
                        break;
                    }
                    let name = format!("{folder}{}", entry.name().unwrap_or("?"));
                    match entry.kind() {
                        Some(git2::ObjectType::Tree) => folders.push((format!("{name}/"), id)),
                        Some(git2::ObjectType::Blob) => {
                            let size = odb.read_header(id).map_or(0, |(size, _)| size as u64);
                            total += size;
                            if size > MAX_BLOB_BYTES as u64 {
                                refusal = Some(format!(
                                    "{name} in commit {commit} is {size} bytes; files over {MAX_BLOB_BYTES} bytes are \
                                     refused before the fetch (keep large artifacts in DVC or behind a URI)"
                                ));
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                if refusal.is_none() && total > self.spec.max_fetch_bytes {
                    refusal = Some(format!(
                        "the new commits hold more than {} bytes of files (--max-fetch-bytes); refused before the fetch",
                        self.spec.max_fetch_bytes
                    ));
                }
                if refusal.is_some() {
                    break;
                }
            }
            if refusal.is_some() {
                return Ok(refusal);
            }
        }
        Ok(None)
    }

    /// Fetches the branch (full history: the deploy repo is small, and ancestry checks need it) and returns its head.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        self.check_local_remote()?;
        let mut remote = self.repo.remote_anonymous(&self.spec.url).map_err(git("fetch"))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        let refspec = format!("+{}:refs/remotes/origin/{}", self.refname(), self.spec.branch);
        let fetched = remote.fetch(&[refspec.as_str()], Some(&mut options), None);
        if self.oversized.load(Ordering::Relaxed) {
            return Err(GitError::TooLarge(format!(
                "the fetch downloaded more than {} bytes (--max-fetch-bytes) and was stopped",
                self.spec.max_fetch_bytes
            )));
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(GitError::Cancelled);
        }
        fetched.map_err(self.network_error("fetch"))?;
        self.local_head().ok_or_else(|| GitError::NoBranch {
            branch: self.spec.branch.clone(),
            url: crate::redact::url(&self.spec.url),
        })
    }

    /// Whether `descendant` has `ancestor` in its history (or is it): false means history was rewritten.
    pub fn descends_from(&self, descendant: Oid, ancestor: Oid) -> Result<bool, GitError> {
        if descendant == ancestor {
            return Ok(true);
        }
        self.repo.graph_descendant_of(descendant, ancestor).map_err(git("ancestry check"))
    }

    /// The manifests (`*.yaml`, `*.yml`) directly in the deploy folder at `commit`, as (path, bytes).
    pub fn manifests(&self, commit: Oid) -> Result<Vec<(String, Vec<u8>)>, GitError> {
        let tree = commit_tree(&self.repo, commit)?;
        let folder = self.spec.path.trim_end_matches('/');
        let file_error = |path: &str, problem: &str| GitError::File {
            path: path.to_owned(),
            commit: commit.to_string(),
            problem: problem.to_owned(),
        };
        let entry = tree.get_path(Path::new(folder)).map_err(|_| file_error(folder, "no such folder"))?;
        check_object_size(&self.repo, entry.id(), MAX_TREE_BYTES, "the deploy folder")?;
        let folder_tree = entry
            .to_object(&self.repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|_| file_error(folder, "not a folder"))?;
        let mut files = Vec::new();
        let mut total = 0usize;
        for entry in folder_tree.iter() {
            let Ok(name) = entry.name() else { continue };
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            let path = format!("{folder}/{name}");
            if files.len() == MAX_MANIFESTS {
                return Err(file_error(folder, &format!("holds more than {MAX_MANIFESTS} manifests")));
            }
            let bytes = self.blob_with(&entry, &path, commit, MAX_MANIFEST_BYTES, <[u8]>::to_vec)?;
            total += bytes.len();
            if total > MAX_MANIFEST_TOTAL_BYTES {
                let problem = format!("its manifests hold more than {MAX_MANIFEST_TOTAL_BYTES} bytes together");
                return Err(file_error(folder, &problem));
            }
            files.push((path, bytes));
        }
        files.sort();
        Ok(files)
    }

    /// The bytes of `path` at `commit`: a regular file, not a symlink, at most `max_bytes` (checked before the blob
    /// is inflated).
    pub fn read(&self, commit: Oid, path: &RepoPath, max_bytes: usize) -> Result<Vec<u8>, GitError> {
        self.read_with(commit, path, max_bytes, <[u8]>::to_vec)
    }

    /// Calls `use_bytes` with the bytes of `path` at `commit` without copying them. libgit2 inflates a blob whole in
    /// memory, so its size is read from the object database's header first and a blob over `max_bytes` is refused
    /// before it costs anything.
    pub fn read_with<T>(
        &self,
        commit: Oid,
        path: &RepoPath,
        max_bytes: usize,
        use_bytes: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, GitError> {
        let tree = commit_tree(&self.repo, commit)?;
        let entry = tree.get_path(Path::new(path.as_str())).map_err(|_| GitError::File {
            path: path.to_string(),
            commit: commit.to_string(),
            problem: "no such file (a symlinked folder on the way counts as missing)".to_owned(),
        })?;
        self.blob_with(&entry, path.as_str(), commit, max_bytes, use_bytes)
    }

    /// The Git object id of the regular file `path` at `commit`, without reading it. Equal ids mean equal bytes.
    pub fn blob_id(&self, commit: Oid, path: &RepoPath) -> Option<Oid> {
        let tree = commit_tree(&self.repo, commit).ok()?;
        let entry = tree.get_path(Path::new(path.as_str())).ok()?;
        matches!(entry.filemode(), 0o100644 | 0o100755).then(|| entry.id())
    }

    fn blob_with<T>(
        &self,
        entry: &git2::TreeEntry<'_>,
        path: &str,
        commit: Oid,
        max_bytes: usize,
        use_bytes: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, GitError> {
        let problem = |problem: String| GitError::File { path: path.to_owned(), commit: commit.to_string(), problem };
        match entry.filemode() {
            0o100644 | 0o100755 => {}
            0o120000 => {
                return Err(problem(
                    "is a symlink; symlinks are refused so nothing can point outside the repository".into(),
                ))
            }
            _ => return Err(problem("is not a regular file".into())),
        }
        // The header holds the inflated size: read without inflating (a 1 GiB blob of zeros packs to 1 MB).
        let (size, kind) = self.repo.odb().and_then(|odb| odb.read_header(entry.id())).map_err(git("read file"))?;
        if kind != git2::ObjectType::Blob {
            return Err(problem(format!("is a {kind}, not a file")));
        }
        if size > max_bytes {
            return Err(problem(format!(
                "is {size} bytes; the limit is {max_bytes} (read before the blob is inflated; larger artifacts belong \
                 in DVC or behind a URI)"
            )));
        }
        let blob = self.repo.find_blob(entry.id()).map_err(git("read file"))?;
        Ok(use_bytes(blob.content()))
    }
}

/// The credentials callback: libgit2 calls it again after each refusal, so each kind is offered once and a second
/// request for it is an error that says so (rather than a loop).
fn credentials(
    url: String,
    auth: GitAuth,
) -> impl FnMut(&str, Option<&str>, CredentialType) -> Result<Cred, git2::Error> + 'static {
    let mut offered = CredentialType::empty();
    move |_, url_user, allowed| {
        let refuse = |what: &str| Err(git2::Error::from_str(what));
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if offered.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return refuse("the remote refused the token (VANE_GIT_TOKEN): wrong, expired, or without read access");
            }
            offered |= CredentialType::USER_PASS_PLAINTEXT;
            let Some(token) = &auth.token else {
                return refuse("the remote asks for credentials; set VANE_GIT_TOKEN to a token with read access");
            };
            if !url.starts_with("https://") {
                return refuse("a token is only sent over https://, never plain http");
            }
            let user = auth.username.as_deref().or(url_user).unwrap_or("git");
            return Cred::userpass_plaintext(user, token);
        }
        let user = url_user.unwrap_or("git");
        if allowed.contains(CredentialType::SSH_KEY) {
            if offered.contains(CredentialType::SSH_KEY) {
                return refuse(match &auth.ssh_key {
                    Some(_) => "the ssh server refused the key (--ssh-key)",
                    None => "the ssh server refused the agent's keys (set --ssh-key to use a key file)",
                });
            }
            offered |= CredentialType::SSH_KEY;
            return match &auth.ssh_key {
                Some(key) => Cred::ssh_key(user, None, key, auth.ssh_passphrase.as_deref()),
                None => Cred::ssh_key_from_agent(user),
            };
        }
        if allowed.contains(CredentialType::USERNAME) && !offered.contains(CredentialType::USERNAME) {
            offered |= CredentialType::USERNAME;
            return Cred::username(user);
        }
        refuse("the remote asks for a kind of credentials Vane does not have (a token for https, a key for ssh)")
    }
}

/// Checks an ssh server's host key against the known_hosts file, as `StrictHostKeyChecking yes` does.
fn check_host_key(file: Option<&Path>, host: &str, port: u16, key: &[u8]) -> Result<(), String> {
    let Some(file) = file else {
        return Err("no known_hosts file: set --ssh-known-hosts (host keys are never accepted blindly)".to_owned());
    };
    let shown = if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") };
    let fingerprint = known_hosts::fingerprint(key);
    match KnownHosts::load(file)?.check(host, port, key) {
        Verdict::Known => Ok(()),
        Verdict::Unknown => Err(format!(
            "host key of {shown} ({fingerprint}) is not in {}; check the fingerprint with the server's owner, \
             then add it (ssh-keyscan -p {port} {host})",
            file.display()
        )),
        Verdict::Changed => Err(format!(
            "HOST KEY CHANGED for {shown}: it presented {fingerprint}, which {} does not list for it; someone may be \
             in the middle, or the key was rotated: refusing to connect",
            file.display()
        )),
        Verdict::Revoked => {
            Err(format!("host key of {shown} ({fingerprint}) is marked @revoked in {}", file.display()))
        }
    }
}

/// The most a commit object may hold (message, headers, signature) before it is read: libgit2 inflates it whole.
pub const MAX_COMMIT_BYTES: usize = 1 << 20;
/// The most a tree object (one folder's listing) may hold before it is read.
pub const MAX_TREE_BYTES: usize = 8 << 20;

/// Refuses an object over `max` bytes from its header, before libgit2 inflates it.
fn check_object_size(repo: &Repository, id: Oid, max: usize, what: &str) -> Result<(), GitError> {
    let (size, _) = repo.odb().and_then(|odb| odb.read_header(id)).map_err(git("read an object header"))?;
    if size > max {
        return Err(GitError::TooLarge(format!(
            "{what} ({id}) is a {size}-byte object; the limit is {max} (read before it is inflated)"
        )));
    }
    Ok(())
}

/// `commit`'s root tree, both sizes checked from their headers first.
fn commit_tree(repo: &Repository, commit: Oid) -> Result<git2::Tree<'_>, GitError> {
    check_object_size(repo, commit, MAX_COMMIT_BYTES, "commit")?;
    let commit_object = repo.find_commit(commit).map_err(git("read commit"))?;
    check_object_size(repo, commit_object.tree_id(), MAX_TREE_BYTES, "the commit's root folder")?;
    commit_object.tree().map_err(git("read commit"))
}

/// Checks `commit`'s size from its header (before a signature check reads it whole).
pub fn check_commit_size(source: &GitSource, commit: Oid) -> Result<(), GitError> {
    check_object_size(&source.repo, commit, MAX_COMMIT_BYTES, "commit")
}

/// The path of a remote on this machine: `file://` URLs and plain paths (no scheme, not scp-like `host:path`).
fn local_path(url: &str) -> Option<&str> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(path);
    }
    if url.contains("://") {
        return None;
    }
    // scp-like `user@host:path` or `host:path`: a colon before the first slash.
    let scp_like = url.find(':').is_some_and(|colon| url.find('/').is_none_or(|slash| colon < slash));
    (!scp_like).then_some(url)
}

fn default_known_hosts() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ssh/known_hosts"))
}

/// The port of an `ssh://` URL (22 when not given, and for scp-like `user@host:path`).
fn ssh_port(url: &str) -> u16 {
    let Some(rest) = ["ssh://", "ssh+git://", "git+ssh://"].iter().find_map(|scheme| url.strip_prefix(scheme)) else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

#[cfg(test)]
pub(crate) mod tests;
