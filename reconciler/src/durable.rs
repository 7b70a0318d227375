//! The loop's durable state: what it applied, refused and tried, kept in `<data-dir>/state.json` so a restart (a
//! rescheduled pod, a crash, a Git outage) serves the last applied commit from the local clone and cache before it
//! talks to the remote, and does not retry a head it refused before.
//!
//! Written whole and atomically (a new file created exclusively beside it, synced, renamed over it, the folder
//! synced), so a `kill -9` at any point leaves the old state or the new one, never a torn file. A file that cannot be
//! read or parsed is reported and ignored: the loop starts from Git as it would on a first start.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::controller::SyncStatus;

/// The state file's format; a file with another number is ignored (reported, then rewritten).
const FORMAT: u32 = 1;
/// The largest state file read. It holds at most [`REFUSED_KEPT`] reasons and the status history, far below this.
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;
/// Refused commits remembered (newest first); an older refused head is tried again if it ever comes back.
pub const REFUSED_KEPT: usize = 32;
/// How often a start may find the same commit still being applied (the process died during its sync) before that
/// commit is refused: once may be an eviction or a deploy, twice in a row is a commit that kills the process.
pub const INTERRUPTED_LIMIT: u32 = 2;

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    /// [`FORMAT`].
    pub format: u32,
    /// The remote, branch and folder this state is about; state for another is ignored.
    pub source: String,
    /// A digest of the operator's policy (artifact sources and limits, signers) when the state was written: refusals
    /// made under another policy are tried again (the operator may have fixed what refused them).
    #[serde(default)]
    pub policy: String,
    /// The status as last reported (history, applied, attempted and refused commits).
    pub status: SyncStatus,
    /// The branch head when an admin rollback pinned an older commit; the pin holds until the head moves.
    pub pinned_at_head: Option<String>,
    /// The commit a sync was fetching, validating or loading when this was written, and how many starts in a row
    /// found it so (cleared when the sync ends, however it ends).
    pub in_progress: Option<Attempt>,
}

/// A refused commit and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The commit id.
    pub commit: String,
    /// The reason, as the status showed it.
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// A sync that had begun on `commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The commit id.
    pub commit: String,
    /// Syncs of it that began and never ended (the process stopped during them), this one included.
    pub attempts: u32,
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct DurableStore {
    path: PathBuf,
}

impl DurableStore {
    /// The state file in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join("state.json") }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state for `source`: `Ok(None)` when there is none yet (first start, or state about another source),
    /// `Err` with a message when the file exists but cannot be used. Blocking.
    pub fn load(&self, source: &str) -> Result<Option<Durable>, String> {
        let shown = self.path.display();
        let file = match open_regular(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("state file {shown}: {e}")),
        };
        let mut text = Vec::new();
        file.take(MAX_STATE_BYTES + 1).read_to_end(&mut text).map_err(|e| format!("state file {shown}: {e}"))?;
        if text.len() as u64 > MAX_STATE_BYTES {
            return Err(format!("state file {shown} is larger than {MAX_STATE_BYTES} bytes"));
        }
        let durable: Durable =
            serde_json::from_slice(&text).map_err(|e| format!("state file {shown} is not valid: {e}"))?;
        if durable.format != FORMAT {
            return Err(format!("state file {shown} has format {}, this build reads {FORMAT}", durable.format));
        }
        if durable.source != source {
            tracing::warn!(file = %shown, was = %durable.source, now = %source, "the state file is about another repository, branch or folder; starting from Git");
            return Ok(None);
        }
        Ok(Some(durable))
    }

    /// Writes `durable` atomically. Blocking.
    pub fn save(&self, durable: &Durable) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&Durable { format: FORMAT, ..durable.clone() })?;
        write_atomic(&self.path, &bytes)
    }
}

/// Replaces `path` with `bytes` whole: a new file created exclusively beside it (0600, never through a symlink),
/// synced, renamed over it, and the folder synced. Blocking.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover from a killed writer of this pid is ours to replace; create_new then refuses anything planted.
    let _ = fs::remove_file(&temporary);
    let mut file = create_exclusive(&temporary)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&temporary, path)) {
        let _ = fs::remove_file(&temporary);
        return Err(e);
    }
    // The rename is durable once the folder is.
    fs::File::open(dir)?.sync_all()
}

/// Reads `path` whole if it is a regular file of at most `max` bytes: `Ok(None)` when it does not exist. Blocking.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = match open_regular(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("{} is larger than {max} bytes", path.display())));
    }
    Ok(Some(bytes))
}

/// Creates the data dir (mode 0700) if it is missing, and refuses one that others could write to: Vane loads the
/// models cached there, so a folder another local user can write is a way to plant one. Blocking.
pub fn ensure_private_dir(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("no data dir: set --data-dir (none of STATE_DIRECTORY, XDG_STATE_HOME and HOME is set)".into());
    }
    let shown = path.display();
    create_private_dir(path).map_err(|e| format!("data dir {shown}: {e}"))?;
    let meta = fs::symlink_metadata(path).map_err(|e| format!("data dir {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("data dir {shown} is not a folder (a symlink is refused too)"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        #[allow(unsafe_code)]
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!("data dir {shown} belongs to uid {}, not to this process (uid {me})", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "data dir {shown} is writable by other users (mode {:o}); a local user could plant a model there: \
                 chmod 700 it, or name another with --data-dir",
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// Creates `path` and its missing parents, mode 0700 (what exists is left as it is).
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Where a service keeps its state when the operator names no `--data-dir`: systemd's `$STATE_DIRECTORY`, else
/// `$XDG_STATE_HOME/vane`, else `~/.local/state/vane`; never the shared temp dir.
pub fn default_data_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("STATE_DIRECTORY") {
        // systemd may list several, separated by colons; the first is ours.
        let first = dir.to_string_lossy().split(':').next().map(PathBuf::from);
        return first.map(|d| d.join("vane"));
    }
    var("XDG_STATE_HOME").or_else(|| var("HOME").map(|h| h.join(".local/state"))).map(|d| d.join("vane"))
}

/// Creates `path` for writing: it must not exist, and a symlink in its place is refused rather than followed. Mode
/// 0600: what Vane writes in its data dir is for it alone.
pub(crate) fn create_exclusive(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    options.open(path)
}

/// Opens `path` for reading if it is a regular file, without following a symlink in its last component and without
/// blocking on a FIFO or device (opened non-blocking, then checked on the handle, so nothing can be swapped in
/// between the check and the read).
pub(crate) fn open_regular(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a symlink; only regular files are read")
        } else {
            e
        }
    })?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() { "a folder" } else { "not a regular file (a FIFO, socket or device)" };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {what}; only regular files are read"),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_garbage_or_another_source_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::new(dir.path());
        assert_eq!(store.load("repo main deploy"), Ok(None), "no file yet");
        let mut durable = Durable { source: "repo main deploy".into(), ..Durable::default() };
        durable.status.refused.push_front(Refusal { commit: "abc".into(), reason: "bad".into(), at_unix_ms: 1 });
        durable.in_progress = Some(Attempt { commit: "def".into(), attempts: 1 });
        store.save(&durable).unwrap();
        let loaded = store.load("repo main deploy").unwrap().unwrap();
        assert_eq!(loaded, Durable { format: FORMAT, ..durable.clone() });
        assert_eq!(store.load("other main deploy"), Ok(None));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);

        fs::write(store.path(), b"{\"format\": 1, \"sou").unwrap();
        let error = store.load("repo main deploy").unwrap_err();
        assert!(error.contains("is not valid"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn the_data_dir_is_created_private_and_a_shared_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        let error = ensure_private_dir(&dir).unwrap_err();
        assert!(error.contains("writable by other users (mode 1777)"), "{error}");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(ensure_private_dir(&link).unwrap_err().contains("not a folder"));
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_neither_followed_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"secret").unwrap();
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(create_exclusive(&planted).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"secret");
        let error = open_regular(&planted).unwrap_err().to_string();
        assert!(error.contains("symlink"), "{error}");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let error = open_regular(&fifo).unwrap_err().to_string();
        assert!(error.contains("FIFO"), "{error}");
        let error = open_regular(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(error.contains("device"), "{error}");
    }
}
