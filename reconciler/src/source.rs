//! The Git side of the reconciler: a bare clone of the deploy repository, read straight from Git objects.
//!
//! Everything here is blocking (git2 has no async API, and `Repository` is not `Sync`): the controller calls it from
//! `spawn_blocking`, opening the clone per call and bounding each call with an outer deadline. A cheap remote-head
//! check (ls-remote) decides whether to fetch at all. Files are read from the commit's tree, never from a checkout,
//! so a half-written working tree cannot exist; symlinks are refused so a manifest cannot point outside the repo.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use git2::{Direction, FetchOptions, Oid, RemoteCallbacks, Repository};

use crate::manifest::{RepoPath, MAX_MANIFEST_BYTES};

/// Where and what to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSpec {
    /// The remote: a local path, `file://`, `git://` (more transports come with their credential handling).
    pub url: String,
    /// The branch to follow.
    pub branch: String,
    /// The folder of manifests inside the repository.
    pub path: String,
}

/// A bare clone under the data directory.
pub struct GitSource {
    repo: Repository,
    spec: GitSpec,
    cancel: Arc<AtomicBool>,
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
        Ok(Self { repo, spec, cancel })
    }

    /// The bare clone's folder for a given data directory.
    pub fn clone_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("repo.git")
    }

    fn callbacks(&self) -> RemoteCallbacks<'static> {
        let mut callbacks = RemoteCallbacks::new();
        let cancel = Arc::clone(&self.cancel);
        // Returning false aborts the transfer: how a deadline or shutdown stops a stalled fetch.
        callbacks.transfer_progress(move |_| !cancel.load(Ordering::Relaxed));
        let cancel = Arc::clone(&self.cancel);
        callbacks.sideband_progress(move |_| !cancel.load(Ordering::Relaxed));
        callbacks
    }

    fn refname(&self) -> String {
        format!("refs/heads/{}", self.spec.branch)
    }

    /// The branch head on the remote, without downloading anything (ls-remote).
    pub fn remote_head(&self) -> Result<Oid, GitError> {
        let mut remote = self.repo.remote_anonymous(&self.spec.url).map_err(git("connect"))?;
        let connection = remote.connect_auth(Direction::Fetch, Some(self.callbacks()), None).map_err(git("connect"))?;
        let wanted = self.refname();
        let head = connection.list().map_err(git("ls-remote"))?.iter().find(|h| h.name() == wanted).map(|h| h.oid());
        head.ok_or_else(|| GitError::NoBranch { branch: self.spec.branch.clone(), url: self.spec.url.clone() })
    }

    /// The commit last fetched, if any.
    pub fn local_head(&self) -> Option<Oid> {
        self.repo.refname_to_id(&format!("refs/remotes/origin/{}", self.spec.branch)).ok()
    }

    /// Fetches the branch (full history: the deploy repo is small, and ancestry checks need it) and returns its head.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        let mut remote = self.repo.remote_anonymous(&self.spec.url).map_err(git("fetch"))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        let refspec = format!("+{}:refs/remotes/origin/{}", self.refname(), self.spec.branch);
        let fetched = remote.fetch(&[refspec.as_str()], Some(&mut options), None);
        if self.cancel.load(Ordering::Relaxed) {
            return Err(GitError::Cancelled);
        }
        fetched.map_err(git("fetch"))?;
        self.local_head()
            .ok_or_else(|| GitError::NoBranch { branch: self.spec.branch.clone(), url: self.spec.url.clone() })
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
        let tree = self.repo.find_commit(commit).and_then(|c| c.tree()).map_err(git("read commit"))?;
        let folder = self.spec.path.trim_end_matches('/');
        let file_error = |path: &str, problem: &str| GitError::File {
            path: path.to_owned(),
            commit: commit.to_string(),
            problem: problem.to_owned(),
        };
        let entry = tree.get_path(Path::new(folder)).map_err(|_| file_error(folder, "no such folder"))?;
        let folder_tree = entry
            .to_object(&self.repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|_| file_error(folder, "not a folder"))?;
        let mut files = Vec::new();
        for entry in folder_tree.iter() {
            let Ok(name) = entry.name() else { continue };
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            let path = format!("{folder}/{name}");
            files.push((path.clone(), self.blob(&entry, &path, commit, MAX_MANIFEST_BYTES)?));
        }
        files.sort();
        Ok(files)
    }

    /// The bytes of `path` at `commit`: a regular file, not a symlink. Blobs are read whole (libgit2 inflates
    /// them in memory), so models should live in DVC or behind URIs rather than in Git itself.
    pub fn read(&self, commit: Oid, path: &RepoPath, max_bytes: usize) -> Result<Vec<u8>, GitError> {
        let tree = self.repo.find_commit(commit).and_then(|c| c.tree()).map_err(git("read commit"))?;
        let entry = tree.get_path(Path::new(path.as_str())).map_err(|_| GitError::File {
            path: path.to_string(),
            commit: commit.to_string(),
            problem: "no such file (a symlinked folder on the way counts as missing)".to_owned(),
        })?;
        self.blob(&entry, path.as_str(), commit, max_bytes)
    }

    /// The Git object id of the regular file `path` at `commit`, without reading it. Equal ids mean equal bytes.
    pub fn blob_id(&self, commit: Oid, path: &RepoPath) -> Option<Oid> {
        let tree = self.repo.find_commit(commit).and_then(|c| c.tree()).ok()?;
        let entry = tree.get_path(Path::new(path.as_str())).ok()?;
        matches!(entry.filemode(), 0o100644 | 0o100755).then(|| entry.id())
    }

    fn blob(
        &self,
        entry: &git2::TreeEntry<'_>,
        path: &str,
        commit: Oid,
        max_bytes: usize,
    ) -> Result<Vec<u8>, GitError> {
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
        let blob = entry.to_object(&self.repo).and_then(|o| o.peel_to_blob()).map_err(git("read file"))?;
        if blob.size() > max_bytes {
            return Err(problem(format!("is {} bytes; the limit is {max_bytes}", blob.size())));
        }
        Ok(blob.content().to_vec())
    }
}

#[cfg(test)]
pub(crate) mod tests;
